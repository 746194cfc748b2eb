"""Hierarchy worlds from SAELens's synthetic module and SAEs trained by SAELens's own trainer.

Nothing here imports dictopt: the world, its true feature activations and the trained SAE come
from SAELens alone, so the truth computed from them (:mod:`.truth`) is independent of the code
being scored. Trained SAEs are cached on disk (``cache_dir``) keyed by the setting's name.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple
from unittest import mock

import numpy as np
import torch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorldSpec:
    """A SAELens hierarchy world: ``n_features`` features in ``d`` dimensions."""

    n_features: int = 64
    """Number of true features (the first ones form the hierarchy forest, the rest are free)."""
    d: int = 32
    """Dimension of the activations (superposition when ``n_features > d``)."""
    depth: int = 1
    """Hierarchy depth: 1 = roots with leaf children; 2 = roots, children, grandchildren."""
    roots: int = 8
    """Number of hierarchy trees."""
    branching: int = 3
    """Children per parent (all mutually exclusive)."""
    p_root: float = 0.15
    """Firing probability of a root."""
    p_child: float = 0.3
    """Firing probability of a child before gating by its parent (and mutual exclusion)."""
    p_free: float = 0.04
    """Firing probability of the features outside the hierarchy."""
    magnitude_std: float = 0.0
    """Standard deviation of firing magnitudes (mean 1)."""
    seed: int = 0


@dataclass(frozen=True)
class SaeSpec:
    """An SAE trained on a world with SAELens's ``train_toy_sae``."""

    arch: str = "standard"
    """``standard`` (ReLU + L1) or ``topk``."""
    width: int = 48
    """``d_sae``."""
    l1: float = 3e-2
    """SAELens ``l1_coefficient`` (standard only)."""
    k: int = 4
    """``k`` (topk only)."""
    samples: int = 3_000_000
    """Training samples (``training_samples`` of ``train_toy_sae``)."""
    lr: float = 3e-3
    seed: int = 0


class Setting(NamedTuple):
    world: WorldSpec
    sae: SaeSpec

    @property
    def name(self) -> str:
        w, s = self.world, self.sae
        tag = f"l1{s.l1:g}" if s.arch == "standard" else f"k{s.k}"
        return f"d{w.depth}-s{w.seed}-w{s.width}-{s.arch}-{tag}"

    def key(self) -> str:
        blob = json.dumps({"world": asdict(self.world), "sae": asdict(self.sae)}, sort_keys=True)
        return hashlib.sha1(blob.encode()).hexdigest()[:12]


class World(NamedTuple):
    """A generated world: the feature dictionary, the hierarchy edges and a generator."""

    features: np.ndarray
    """True feature directions (unit rows)."""
    parent: dict[int, int]
    """Child feature → its parent feature."""
    generator: Any
    """SAELens ``ActivationGenerator`` (true feature activations)."""
    feature_dict: Any
    """SAELens ``FeatureDictionary`` (activations → hidden vectors)."""

    def ancestors(self, f: int) -> list[int]:
        out = []
        while f in self.parent:
            f = self.parent[f]
            out.append(f)
        return out

    def edges(self) -> list[tuple[int, int]]:
        """Every (descendant, ancestor) pair: a descendant fires only with its ancestors."""
        return [(c, a) for c in sorted(self.parent) for a in self.ancestors(c)]


def make_world(spec: WorldSpec) -> World:
    """Build the world with SAELens's synthetic module (deterministic in ``spec.seed``)."""
    from sae_lens.synthetic import (
        ActivationGenerator,
        FeatureDictionary,
        HierarchyConfig,
        generate_hierarchy,
        hierarchy_modifier,
    )

    hcfg = HierarchyConfig(
        total_root_nodes=spec.roots, branching_factor=spec.branching, max_depth=spec.depth,
        mutually_exclusive_portion=1.0,
    )
    hier = generate_hierarchy(spec.n_features, hcfg, seed=spec.seed)
    parent: dict[int, int] = {}
    depth_of: dict[int, int] = {}

    def walk(node: Any, depth: int) -> None:
        depth_of[node.feature_index] = depth
        for ch in node.children:
            parent[ch.feature_index] = node.feature_index
            walk(ch, depth + 1)

    for root in hier.roots:
        walk(root, 0)
    probs = torch.full((spec.n_features,), spec.p_free)
    for f, dep in depth_of.items():
        probs[f] = spec.p_root if dep == 0 else spec.p_child
    torch.manual_seed(spec.seed)
    gen = ActivationGenerator(
        spec.n_features, probs, std_firing_magnitudes=spec.magnitude_std,
        mean_firing_magnitudes=1.0, modify_activations=hierarchy_modifier(hier.roots),
    )
    fd = FeatureDictionary(spec.n_features, spec.d, seed=spec.seed)
    feats = fd.feature_vectors.detach().double().numpy()
    feats = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    return World(feats, parent, gen, fd)


def sample(world: World, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(true activations [n, F], hidden activations [n, d])``, float64, seeded."""
    torch.manual_seed(seed)
    with torch.no_grad():
        f = world.generator(n)
        x = world.feature_dict(f)
    return f.double().numpy(), x.double().numpy()


def train_sae(world: World, spec: SaeSpec, d: int) -> Any:
    """Train with SAELens's ``train_toy_sae`` (its progress bar silenced)."""
    import sae_lens as sl
    from sae_lens.synthetic import train_toy_sae

    torch.manual_seed(spec.seed)
    if spec.arch == "standard":
        sae = sl.StandardTrainingSAE(sl.StandardTrainingSAEConfig(
            d_in=d, d_sae=spec.width, l1_coefficient=spec.l1))
    elif spec.arch == "topk":
        sae = sl.TopKTrainingSAE(sl.TopKTrainingSAEConfig(d_in=d, d_sae=spec.width, k=spec.k))
    else:
        raise ValueError(f"unknown arch {spec.arch!r}")
    from tqdm.auto import tqdm

    quiet = functools.partial(tqdm, disable=True)
    with mock.patch("sae_lens.training.sae_trainer.tqdm", quiet):
        train_toy_sae(sae, world.feature_dict, world.generator, training_samples=spec.samples,
                      batch_size=1024, lr=spec.lr)
    return sae


def trained_folder(setting: Setting, cache_dir: Path) -> Path:
    """The SAELens inference folder of the setting's SAE (trained once, then cached)."""
    folder = Path(cache_dir) / f"{setting.name}-{setting.key()}"
    if (folder / "cfg.json").exists():
        return folder
    world = make_world(setting.world)
    log.info("training %s", setting.name)
    sae = train_sae(world, setting.sae, setting.world.d)
    tmp = folder.with_suffix(".tmp")
    sae.save_inference_model(str(tmp))
    tmp.rename(folder)
    return folder


def load_sae(folder: Path) -> Any:
    """The SAELens inference SAE saved in ``folder``."""
    from sae_lens import SAE

    return SAE.load_from_disk(str(folder))


def sae_codes(sae: Any, x_ND: np.ndarray) -> np.ndarray:
    """SAELens's own encoding of ``x`` (float64 numpy)."""
    with torch.no_grad():
        return sae.encode(torch.as_tensor(x_ND, dtype=torch.float32)).double().numpy()
