"""Train any SAE of :mod:`dictopt.solvers.sae` on a streamed activation source.

The trainer never holds the data set: it iterates ``source.iter_chunks()`` (once per epoch),
shuffles rows within each chunk with a seeded generator and re-batches them. Everything is
deterministic for a given seed, and a checkpoint can be resumed to the bit-identical result
of an uninterrupted run (the batch stream is replayed, which is cheap next to training).

Registered solvers: ``sae-relu``, ``sae-topk``, ``sae-batchtopk``, ``sae-jumprelu``,
``sae-matryoshka``, ``sae-mp`` (``fit(source, *, K, lam, seed, progress, **options)``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import re
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch
from tqdm.auto import tqdm

from dictopt.data.sources import ActivationSource, as_source
from dictopt.problem import Dictionary, explained_variance
from dictopt.solvers.adam import CpuAdam
from dictopt.solvers.registry import register_solver
from dictopt.solvers.sae import SAE, SAEConfig, get_sae_class, make_config, make_sae
from dictopt.solvers.sae.base import check_nonnegative, check_positive
from dictopt.validation import DictoptInputError, check_finite, check_lambda, check_positive_int

log = logging.getLogger(__name__)

NORMALIZE_CHOICES = ("none", "expected_average_only_in")
B_DEC_INIT_CHOICES = ("zeros", "mean", "geometric_median")


class TrainingDivergedError(RuntimeError):
    """The loss became non-finite; the step was not applied."""


@dataclass
class TrainConfig:
    """Training hyperparameters (the architecture's own live in ``sae``)."""

    sae: SAEConfig
    """The architecture config (``d_in``, ``d_sae``, ``k``, ``l1_coefficient``, ...)."""
    total_steps: int = 2000
    """Optimiser steps."""
    batch_size: int = 256
    """Rows per step."""
    lr: float = 1e-3
    """Adam learning rate after warm-up."""
    adam_beta1: float = 0.9
    """Adam β₁."""
    adam_beta2: float = 0.999
    """Adam β₂."""
    lr_warm_up_steps: int = 0
    """Linear learning-rate warm-up from 0 over this many steps."""
    lr_decay_steps: int = 0
    """Linear decay to 0 over the final this-many steps."""
    coefficient_warm_up_steps: int = 0
    """Linear warm-up of the sparsity coefficient (L1 or L0) from 0 over this many steps."""
    dead_feature_window: int = 20_000
    """A latent is dead when it has not fired on the last this-many training rows (tokens)."""
    resample_dead_every: int = 0
    """Resample dead latents every this-many steps (0: never)."""
    normalize_activations: str = "none"
    """``"none"`` or ``"expected_average_only_in"``: scale inputs by ``c`` so that the mean
    squared norm is ``d_in`` (estimated on ``init_rows`` rows); ``c`` is folded into the weights
    at the end, so the result acts on raw activations."""
    b_dec_init_method: str = "geometric_median"
    """``"zeros"``, ``"mean"`` or ``"geometric_median"`` of the first ``init_rows`` rows."""
    init_rows: int = 4096
    """Rows read (streamed) to estimate ``b_dec`` and the normalisation factor."""
    lam: float | None = None
    """λ of THEORY §1 on raw activations. For L1 architectures (``relu``) it sets
    ``l1_coefficient = 2 c λ`` (``c`` the normalisation factor) so that the trained SAE's own
    λ is exactly this one; an error for other architectures."""
    log_every: int = 10
    """Record loss, L0, explained variance and dead fraction every this-many steps."""
    checkpoint_every: int = 0
    """Save a checkpoint every this-many steps (0: only at the end, when a folder is given)."""
    keep_checkpoints: int = 2
    """Checkpoints kept in the folder (oldest removed first)."""
    autocast_bf16: bool = False
    """bfloat16 autocast of the forward pass on CUDA (ignored on CPU)."""
    device: str = "cpu"
    """Torch device for training."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`DictoptInputError` naming the first bad field."""
        if not isinstance(self.sae, SAEConfig):
            raise DictoptInputError(f"sae: expected an SAEConfig, got {type(self.sae).__name__}")
        self.sae.validate()
        for name in ("total_steps", "batch_size", "dead_feature_window", "init_rows",
                     "log_every", "keep_checkpoints"):
            setattr(self, name, check_positive_int(getattr(self, name), name))
        for name in ("lr_warm_up_steps", "lr_decay_steps", "coefficient_warm_up_steps",
                     "resample_dead_every", "checkpoint_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value or value < 0:
                raise DictoptInputError(f"{name}: must be an integer ≥ 0, got {value!r}")
            setattr(self, name, int(value))
        self.lr = check_positive(self.lr, "lr")
        for name in ("adam_beta1", "adam_beta2"):
            beta = check_nonnegative(getattr(self, name), name)
            if beta >= 1:
                raise DictoptInputError(f"{name}: must be in [0, 1), got {beta}")
        if self.normalize_activations not in NORMALIZE_CHOICES:
            raise DictoptInputError(
                f"normalize_activations: expected one of {NORMALIZE_CHOICES}, "
                f"got {self.normalize_activations!r}"
            )
        if self.b_dec_init_method not in B_DEC_INIT_CHOICES:
            raise DictoptInputError(
                f"b_dec_init_method: expected one of {B_DEC_INIT_CHOICES}, "
                f"got {self.b_dec_init_method!r}"
            )
        if self.lam is not None:
            self.lam = check_lambda(self.lam)
            if not hasattr(self.sae, "l1_coefficient"):
                raise DictoptInputError(
                    f"lam: the {self.sae.architecture!r} architecture has no L1 objective"
                )
        try:
            torch.device(self.device)
        except RuntimeError as err:
            raise DictoptInputError(f"device: {err}") from err

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["sae"] = self.sae.to_dict()
        return out


@dataclass
class TrainLog:
    """Metrics recorded every ``log_every`` steps (on the training batch)."""

    step: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    mse: list[float] = field(default_factory=list)
    l0: list[float] = field(default_factory=list)
    explained_variance: list[float] = field(default_factory=list)
    dead_fraction: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    coefficient_scale: list[float] = field(default_factory=list)
    tokens: int = 0
    seconds: float = 0.0

    def append(self, **values: float) -> None:
        for name, value in values.items():
            getattr(self, name).append(value)

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable (stored in ``dictionary.meta["train_log"]``)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainLog:
        return cls(**values)


class TrainResult(NamedTuple):
    """The trained SAE (normalisation folded in: it acts on raw activations) and its log."""

    sae: SAE
    log: TrainLog


# --------------------------------------------------------------------------------------------
# Data: streamed batches.
# --------------------------------------------------------------------------------------------


class BatchStream:
    """Endless batches from a source: epochs of chunks, rows shuffled within each chunk.

    Deterministic for a given seed; :meth:`skip` replays batches without returning them.
    """

    def __init__(self, source: ActivationSource, batch_size: int, seed: int) -> None:
        self.source = source
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.epoch = 0
        self._it = self._batches()

    def _batches(self) -> Iterator[torch.Tensor]:
        carry: torch.Tensor | None = None
        while True:
            for chunk in self.source.iter_chunks():
                rows = chunk.data
                rows = rows[torch.randperm(rows.shape[0], generator=self.generator)]
                if carry is not None and carry.shape[0]:
                    rows = torch.cat([carry, rows.to(carry.dtype)], dim=0)
                n_full = rows.shape[0] // self.batch_size * self.batch_size
                for lo in range(0, n_full, self.batch_size):
                    yield rows[lo : lo + self.batch_size]
                carry = rows[n_full:]
            self.epoch += 1

    def __iter__(self) -> Iterator[torch.Tensor]:
        return self

    def __next__(self) -> torch.Tensor:
        return next(self._it)

    def skip(self, n: int) -> None:
        for _ in range(n):
            next(self._it)


def first_rows(source: ActivationSource, n: int) -> torch.Tensor:
    """Up to ``n`` rows from the start of the source (streamed, float64).

    Parameters
    ----------
    source:
        The activations.
    n:
        How many rows.

    Returns
    -------
    torch.Tensor
        ``[min(n, N), d]`` float64.
    """
    parts, have = [], 0
    for chunk in source.iter_chunks():
        parts.append(chunk.data[: n - have].to(torch.float64))
        have += parts[-1].shape[0]
        if have >= n:
            break
    return torch.cat(parts, dim=0)


def initial_bias(x_ND: torch.Tensor, method: str) -> torch.Tensor | None:
    """The decoder bias to start from (one of :data:`B_DEC_INIT_CHOICES`): ``None`` for
    ``zeros`` (keep the model's own), else the mean or the geometric median of ``x_ND``.

    Parameters
    ----------
    x_ND:
        Rows to estimate it from.
    method:
        ``zeros``, ``mean`` or ``geometric_median``.

    Returns
    -------
    torch.Tensor | None
        ``[d]``, or ``None`` for ``zeros``.
    """
    if method == "mean":
        return x_ND.mean(dim=0)
    if method == "geometric_median":
        return geometric_median(x_ND)
    return None


def geometric_median(x_ND: torch.Tensor, *, max_iter: int = 200, tol: float = 1e-9) -> torch.Tensor:
    """Weiszfeld's iteration for ``argmin_b Σ_n ‖x_n − b‖`` (starts at the mean).

    Parameters
    ----------
    x_ND:
        Points.
    max_iter:
        Bound on iterations.
    tol:
        Stop when a step moves less than this.

    Returns
    -------
    torch.Tensor
        ``[d]``.
    """
    b = x_ND.mean(dim=0)
    for _ in range(max_iter):
        dist = (x_ND - b).norm(dim=1).clamp_min(1e-12)
        w = 1.0 / dist
        new = (w[:, None] * x_ND).sum(dim=0) / w.sum()
        if float((new - b).norm()) <= tol * (1 + float(b.norm())):
            return new
        b = new
    return b


# --------------------------------------------------------------------------------------------
# The training loop.
# --------------------------------------------------------------------------------------------


def _lr_factor(cfg: TrainConfig, step: int) -> float:
    factor = 1.0
    if cfg.lr_warm_up_steps:
        factor = min(factor, (step + 1) / cfg.lr_warm_up_steps)
    if cfg.lr_decay_steps:
        factor = min(factor, (cfg.total_steps - step) / cfg.lr_decay_steps)
    return max(factor, 0.0)


def _coefficient_scale(cfg: TrainConfig, step: int) -> float:
    if not cfg.coefficient_warm_up_steps:
        return 1.0
    return min(1.0, (step + 1) / cfg.coefficient_warm_up_steps)


#: ``checkpoint_<run tag>_step_<step>.pt``; files written before run tags existed have no tag.
CHECKPOINT_RE = re.compile(r"checkpoint_(?:(?P<tag>[0-9a-f]{12})_)?step_(?P<step>\d+)\.pt")
#: Training settings that may change on resume (the length of the run and its bookkeeping).
RESUMABLE_FIELDS = ("total_steps", "checkpoint_every", "keep_checkpoints", "log_every")


class CheckpointFile(NamedTuple):
    """A checkpoint in a folder: its path, the run tag in its name (``None``: legacy) and step."""

    path: Path
    tag: str | None
    step: int


def _checkpoints(folder: Path) -> list[CheckpointFile]:
    """Every checkpoint file in ``folder`` (any run), oldest step first; other files ignored."""
    found = []
    for p in folder.iterdir() if folder.is_dir() else ():
        m = CHECKPOINT_RE.fullmatch(p.name)
        if m and p.is_file():
            found.append(CheckpointFile(p, m["tag"], int(m["step"])))
    return sorted(found, key=lambda c: (c.step, c.path.name))


def run_identity(cfg: TrainConfig, seed: int, source: ActivationSource,
                 sae: SAE | None = None) -> dict[str, Any]:
    """What makes two training runs the same run: configuration, seed, data, starting SAE.

    Parameters
    ----------
    cfg:
        The training configuration (fields of :data:`RESUMABLE_FIELDS` excluded).
    seed:
        The run's seed.
    source:
        The data; identified by :meth:`ActivationSource.fingerprint` (shape, dtype, hashes of
        its first and last chunks).
    sae:
        The SAE training continues from, if any (hash of its weights).

    Returns
    -------
    dict
        JSON-serialisable; its hash (:func:`run_tag`) names the run's checkpoint files.
    """
    config = cfg.to_dict()
    for key in RESUMABLE_FIELDS:
        config.pop(key)
    start = None
    if sae is not None:
        digest = hashlib.sha256()
        for name, tensor in sorted(sae.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        start = digest.hexdigest()
    return {"config": config, "seed": seed, "data": source.fingerprint(), "start_sae": start}


def run_tag(identity: dict[str, Any]) -> str:
    """12 hex digits of the SHA-256 of ``identity`` (canonical JSON).

    Parameters
    ----------
    identity:
        A run identity (:func:`run_identity`).

    Returns
    -------
    str
        The tag carried in the run's checkpoint names.
    """
    text = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def identity_difference(mine: dict[str, Any], theirs: Any) -> str:
    """A short description of what differs between two run identities.

    Parameters
    ----------
    mine:
        This run's identity.
    theirs:
        The identity recorded in a checkpoint (anything; not a dict for old checkpoints).

    Returns
    -------
    str
        For messages, e.g. ``"different seed 1 vs 0; config (lr)"``.
    """
    if not isinstance(theirs, dict):
        return "it records no run identity (written by an older dictopt)"
    parts = []
    if mine.get("seed") != theirs.get("seed"):
        parts.append(f"seed {theirs.get('seed')!r} vs {mine.get('seed')!r}")
    for section in ("config", "data"):
        a, b = mine.get(section) or {}, theirs.get(section) or {}
        keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        if keys:
            parts.append(f"{section} ({', '.join(keys[:6])})")
    if mine.get("start_sae") != theirs.get("start_sae"):
        parts.append("starting SAE")
    return "different " + "; ".join(parts) if parts else "a different run"


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint's state dict (``weights_only``: no code runs), or a clear error.

    Parameters
    ----------
    path:
        The checkpoint file.

    Returns
    -------
    dict[str, Any]
        The saved state.

    Raises
    ------
    DictoptInputError
        When the file is unreadable, holds Python objects other than tensors, or is no dict.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is bad input here
        text = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        if "weights_only" in text or "pickle" in text.lower():
            text = "it holds Python objects other than tensors, which dictopt never loads"
        raise DictoptInputError(f"{path}: unreadable checkpoint ({text})") from err
    if not isinstance(state, dict):
        raise DictoptInputError(f"{path}: not a dictopt checkpoint (a {type(state).__name__})")
    return state


class _Trainer:
    def __init__(
        self,
        source: ActivationSource,
        cfg: TrainConfig,
        seed: int,
        identity: dict[str, Any] | None = None,
    ) -> None:
        self.source = source
        self.identity = identity if identity is not None else run_identity(cfg, seed, source)
        self.tag = run_tag(identity)
        self.cfg = cfg
        self.seed = seed
        self.device = torch.device(cfg.device)
        self.resample_gen = torch.Generator().manual_seed(seed + 2)
        self.log = TrainLog()
        self.step = 0
        self.scale = 1.0
        self.sae: SAE
        self.optimizer: torch.optim.Optimizer | CpuAdam
        self.since_fired_K: torch.Tensor

    # -- setup -------------------------------------------------------------------------------
    def fresh(self, sae: SAE | None) -> None:
        cfg = self.cfg
        if sae is not None and cfg.normalize_activations != "none":
            raise DictoptInputError(
                "normalize_activations: must be 'none' when continuing a given SAE"
            )
        if sae is None:
            sae = make_sae(dataclasses.replace(cfg.sae), seed=self.seed)
            init = first_rows(self.source, cfg.init_rows)
            if cfg.normalize_activations == "expected_average_only_in":
                self.scale = math.sqrt(self.source.d / float((init**2).sum(dim=1).mean()))
            init = init * self.scale
            b0 = initial_bias(init, cfg.b_dec_init_method)
            if b0 is not None:
                with torch.no_grad():
                    sae.b_dec.copy_(b0)
            if cfg.lam is not None:
                sae.cfg.l1_coefficient = 2 * self.scale * cfg.lam  # type: ignore[attr-defined]
        self.sae = sae.to(self.device).train()
        self._make_optimizer()
        self.since_fired_K = torch.zeros(sae.d_sae, dtype=torch.int64, device=self.device)

    def _make_optimizer(self) -> None:
        betas = (self.cfg.adam_beta1, self.cfg.adam_beta2)
        if self.device.type == "cpu":  # the same arithmetic without torch.optim's overhead
            self.optimizer = CpuAdam(self.sae.parameters(), lr=self.cfg.lr, betas=betas)
        else:
            self.optimizer = torch.optim.Adam(self.sae.parameters(), lr=self.cfg.lr, betas=betas)

    def state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "scale": self.scale,
            "sae_config": self.sae.cfg.to_dict(),
            "sae": self.sae.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "since_fired": self.since_fired_K.cpu(),
            "resample_generator": self.resample_gen.get_state(),
            "log": self.log.as_dict(),
            "train_config": self.cfg.to_dict(),
            "seed": self.seed,
            "run_identity": self.identity,
            "run_tag": self.tag,
        }

    def restore(self, path: Path) -> None:
        """Load a checkpoint of this run; any unreadable or foreign content is bad input."""
        state = read_checkpoint(path)
        if state.get("run_identity") != self.identity:
            raise DictoptInputError(
                f"{path}: checkpoint of another run "
                f"({identity_difference(self.identity, state.get('run_identity'))}); resume "
                "with the same data and settings, or start a fresh folder"
            )
        try:
            sae_cfg = get_sae_class(self.cfg.sae.architecture).config_class.from_dict(
                state["sae_config"]
            )
            sae = get_sae_class(sae_cfg.architecture)(sae_cfg)
            sae.load_state_dict(state["sae"])
            sae.to(self.device).train()
            self.sae = sae
            self._make_optimizer()
            self.optimizer.load_state_dict(state["optimizer"])
            self.step = int(state["step"])
            self.scale = float(state["scale"])
            self.since_fired_K = state["since_fired"].to(self.device)
            self.resample_gen.set_state(state["resample_generator"])
            self.log = TrainLog.from_dict(state["log"])
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            raise DictoptInputError(
                f"{path}: checkpoint content is incomplete or inconsistent "
                f"({type(err).__name__}: {str(err)[:200]})"
            ) from err

    def save(self, folder: Path) -> Path:
        """Write this run's checkpoint atomically; prune only this run's older ones."""
        from dictopt.atomic import atomic_file

        path = folder / f"checkpoint_{self.tag}_step_{self.step}.pt"
        with atomic_file(path) as tmp:
            torch.save(self.state(), tmp)
        own = [c for c in _checkpoints(folder) if c.tag == self.tag]
        # Later steps are left over from an earlier identical run that this one restarted.
        stale = [c for c in own if c.step > self.step]
        kept = [c for c in own if c.step <= self.step]
        for old in stale + kept[: -self.cfg.keep_checkpoints]:
            old.path.unlink(missing_ok=True)
        return path

    # -- one step ----------------------------------------------------------------------------
    def train_step(self, batch: torch.Tensor) -> dict[str, float] | None:
        """One optimiser step; metrics on logging steps, else ``None``."""
        cfg, sae = self.cfg, self.sae
        x = batch.to(dtype=sae.W_dec.dtype, device=self.device) * self.scale
        check_finite(x, "activations", where=f"(training batch of step {self.step})")
        dead = self.since_fired_K >= cfg.dead_feature_window
        coef = _coefficient_scale(cfg, self.step)
        lr = cfg.lr * _lr_factor(cfg, self.step)
        autocast = cfg.autocast_bf16 and self.device.type == "cuda"
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=autocast):
            out = sae.training_forward(x, coefficient_scale=coef, dead_mask_K=dead)
        if not bool(torch.isfinite(out.loss.detach())):
            raise TrainingDivergedError(
                f"training loss is {float(out.loss.detach())} at step {self.step}; the step was "
                "not applied (lower lr, or check the data scale / normalize_activations)"
            )
        self.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        sae.remove_parallel_decoder_grad()
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        sae.constrain()
        sae.update_buffers(out)
        with torch.no_grad():
            fired = (out.acts > 0).any(dim=0)
            self.since_fired_K += x.shape[0]
            self.since_fired_K[fired] = 0
        self.step += 1
        if cfg.resample_dead_every and self.step % cfg.resample_dead_every == 0:
            self.resample(x, out.recon.detach())
        if self.step % cfg.log_every and self.step != cfg.total_steps:
            return None
        with torch.no_grad():
            return {
                "loss": float(out.loss),
                "mse": float(out.losses["mse"]),
                "l0": float((out.acts > 0).sum(dim=1).to(torch.float64).mean()),
                "explained_variance": explained_variance(x, out.recon.detach()),
                "dead_fraction": float(dead.to(torch.float64).mean()),
                "lr": lr,
                "coefficient_scale": coef,
            }

    @torch.no_grad()
    def resample(self, x_ND: torch.Tensor, recon_ND: torch.Tensor) -> None:
        """Point dead latents at inputs the SAE reconstructs badly (Bricken et al. 2023)."""
        dead_idx = (self.since_fired_K >= self.cfg.dead_feature_window).nonzero().flatten()
        if dead_idx.numel() == 0:
            return
        err_ND = (x_ND - recon_ND).to(torch.float64).cpu()
        weights = (err_ND**2).sum(dim=1)
        n_pick = min(dead_idx.numel(), int((weights > 0).sum()))
        if n_pick == 0:
            return
        # One latent per input, without replacement: with replacement, a batch dominated by a
        # few badly reconstructed rows sends hundreds of latents to the same direction
        # (duplicate atoms). Latents left over stay dead until the next resampling.
        dead_idx = dead_idx[:n_pick]
        picks = torch.multinomial(weights, n_pick, replacement=False, generator=self.resample_gen)
        dirs = err_ND[picks]
        dirs = dirs / dirs.norm(dim=1, keepdim=True).clamp_min(1e-12)
        self.sae.reinit_latents(dead_idx, dirs.to(self.device))
        # Fresh Adam moments for the reinitialised latents.
        params = dict(self.sae.named_parameters())
        for name, axis in self.sae.latent_axes().items():
            state = self.optimizer.state.get(params[name], {})
            for key in ("exp_avg", "exp_avg_sq"):
                if key in state:
                    state[key].index_fill_(axis, dead_idx, 0)
        self.since_fired_K[dead_idx] = 0
        log.debug("step %d: resampled %d dead latents", self.step, dead_idx.numel())


def train_sae(
    source: Any,
    cfg: TrainConfig,
    *,
    seed: int = 0,
    progress: bool = True,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    sae: SAE | None = None,
    overwrite_checkpoints: bool = False,
) -> TrainResult:
    """Train an SAE on a streamed activation source.

    Parameters
    ----------
    source:
        Anything :func:`dictopt.data.sources.as_source` accepts (array, tensor, ``.npy`` path,
        shard folder, source). Only chunks and ``init_rows`` rows are ever held in memory.
    cfg:
        Training and architecture hyperparameters; ``cfg.sae.d_in`` must equal the data width.
    seed:
        Seeds initialisation, batch order and resampling (same seed → same result).
    progress:
        Show a tqdm bar with loss, L0, explained variance and dead fraction.
    checkpoint_dir:
        Folder for checkpoints (every ``cfg.checkpoint_every`` steps and at the end). Each
        checkpoint records the run's identity (:func:`run_identity`: configuration, seed, a
        fingerprint of the data) and carries its hash in its name; only the run's own files
        are pruned, and files that are not checkpoints are ignored.
    resume:
        Continue from the newest checkpoint of this run in ``checkpoint_dir`` (the result
        equals an uninterrupted run bit for bit). A truncated or unreadable newest checkpoint
        falls back to the previous one with a warning. Checkpoints of another run only (other
        data, configuration or seed) are refused, naming what differs.
    overwrite_checkpoints:
        Allow a fresh run into a folder holding another run's checkpoints (they are kept; by
        default this is refused, so two runs never mix).
    sae:
        Continue training this SAE instead of a fresh one (its ``cfg`` must match ``cfg.sae``
        in architecture and sizes). It is trained in place; a failing step (non-finite data
        or loss) raises before touching it.

    Returns
    -------
    TrainResult
        ``(sae, log)``; the SAE has any activation normalisation folded into its weights.
    """
    src = as_source(source)
    folder = _validate_training(src, cfg, sae, checkpoint_dir, resume)
    trainer = _Trainer(src, cfg, seed, run_identity(cfg, seed, src, sae))
    _start_or_resume(trainer, sae, folder, resume, overwrite_checkpoints)
    _run_steps(trainer, src, cfg, seed, folder, progress)
    saved_last = cfg.checkpoint_every and trainer.step % cfg.checkpoint_every == 0
    if folder is not None and not saved_last:
        trainer.save(folder)
    result = trainer.sae.eval()
    if trainer.scale != 1.0:
        result.fold_activation_norm(trainer.scale)
    return TrainResult(result, trainer.log)


def _validate_training(
    src: Any, cfg: TrainConfig, sae: SAE | None, checkpoint_dir: str | Path | None,
    resume: bool,
) -> Path | None:
    """Refuse a width, SAE or checkpoint folder that does not fit; the folder as a Path."""
    if src.d != cfg.sae.d_in:
        raise DictoptInputError(
            f"activations: width {src.d} does not match the SAE's d_in = {cfg.sae.d_in}"
        )
    if sae is not None and (
        sae.architecture != cfg.sae.architecture
        or (sae.d_in, sae.d_sae) != (cfg.sae.d_in, cfg.sae.d_sae)
    ):
        raise DictoptInputError(
            f"sae: a {sae.architecture} SAE [{sae.d_in}→{sae.d_sae}] does not match the config "
            f"({cfg.sae.architecture} [{cfg.sae.d_in}→{cfg.sae.d_sae}])"
        )
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if resume and folder is None:
        raise DictoptInputError("resume: needs checkpoint_dir")
    if folder is not None and folder.exists() and not folder.is_dir():
        raise DictoptInputError(f"checkpoint_dir: {folder} is a file, not a folder")
    return folder


def _start_or_resume(
    trainer: _Trainer, sae: SAE | None, folder: Path | None, resume: bool,
    overwrite_checkpoints: bool,
) -> None:
    """Restore the run's newest checkpoint (``resume``) or start fresh, refusing to mix runs."""
    existing = _checkpoints(folder) if folder is not None else []
    own = [c for c in existing if c.tag == trainer.tag]
    others = [c for c in existing if c.tag != trainer.tag]
    if resume and own:
        _restore_newest(trainer, own)
    elif resume and others:
        state = read_checkpoint(others[-1].path)
        raise DictoptInputError(
            f"resume: {folder} holds checkpoints of another run only "
            f"({identity_difference(trainer.identity, state.get('run_identity'))}, "
            f"newest {others[-1].path.name}); resume with the same data and settings, or "
            "start a fresh folder"
        )
    else:
        if others and not overwrite_checkpoints:
            raise DictoptInputError(
                f"checkpoint_dir: {folder} holds checkpoints of another run "
                f"({others[-1].path.name}); use another folder, resume=True to continue this "
                "run, or overwrite_checkpoints=True to share the folder"
            )
        trainer.fresh(sae)


def _run_steps(
    trainer: _Trainer, src: Any, cfg: TrainConfig, seed: int, folder: Path | None,
    progress: bool,
) -> None:
    """Train until ``cfg.total_steps``, logging metrics and checkpointing into ``folder``."""
    stream = BatchStream(src, cfg.batch_size, seed + 1)
    stream.skip(trainer.step)
    start = time.perf_counter()
    bar = tqdm(
        total=cfg.total_steps,
        initial=trainer.step,
        desc=f"train {cfg.sae.architecture} SAE",
        disable=not progress,
        leave=False,
    )
    try:
        while trainer.step < cfg.total_steps:
            metrics = trainer.train_step(next(stream))
            trainer.log.tokens += cfg.batch_size
            bar.update(1)
            if metrics is not None:
                trainer.log.append(step=trainer.step, **metrics)
                bar.set_postfix(
                    loss=f"{metrics['loss']:.4g}",
                    L0=f"{metrics['l0']:.1f}",
                    EV=f"{metrics['explained_variance']:.3f}",
                    dead=f"{metrics['dead_fraction']:.2f}",
                )
            if folder is not None and cfg.checkpoint_every and (
                trainer.step % cfg.checkpoint_every == 0
            ):
                trainer.save(folder)
    finally:
        bar.close()
        trainer.log.seconds += time.perf_counter() - start


# --------------------------------------------------------------------------------------------
# Registered solvers.
# --------------------------------------------------------------------------------------------

def _restore_newest(trainer: _Trainer, own: list[CheckpointFile]) -> None:
    """Restore the newest readable checkpoint of the run, warning about each one skipped."""
    for i, ckpt in enumerate(reversed(own)):
        try:
            trainer.restore(ckpt.path)
            return
        except DictoptInputError as err:
            if i == len(own) - 1:
                raise
            warnings.warn(f"{err}; falling back to the previous checkpoint", stacklevel=3)


_TRAIN_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)} - {"sae", "lam"}
_CALL_OPTIONS = {"checkpoint_dir", "resume", "overwrite_checkpoints"}


def fit_sae(
    architecture: str,
    source: Any,
    *,
    K: int,
    lam: float | None = None,
    seed: int = 0,
    progress: bool = True,
    **options: Any,
) -> Dictionary:
    """Train an SAE of ``architecture`` and return its canonical :class:`Dictionary`.

    ``options`` are fields of the architecture's config (``k``, ``l1_coefficient``, ...) or of
    :class:`TrainConfig` (``total_steps``, ``lr``, ...), plus ``checkpoint_dir``/``resume``.
    For ``relu``, ``lam`` (THEORY §1, raw activations) sets ``l1_coefficient = 2cλ``; other
    architectures have no λ and ignore it with a warning.

    Parameters
    ----------
    architecture:
        A registered SAE architecture (``relu``, ``topk``, ...).
    source:
        The activations ``[N, d]`` (anything :func:`dictopt.data.sources.as_source` accepts).
    K:
        Number of latents.
    lam:
        λ for architectures with an L1 objective.
    seed:
        Seeds the training (:func:`train_sae`).
    progress:
        Show a progress bar.
    options:
        Config, training and call options (above); unknown names are refused.

    Returns
    -------
    Dictionary
        The trained SAE's canonical dictionary; ``meta`` records the solver, seed, training
        config and training log.
    """
    src = as_source(source)
    K = check_positive_int(K, "K")
    sae_cls = get_sae_class(architecture)
    sae_fields = {f.name for f in dataclasses.fields(sae_cls.config_class)} - {"d_in", "d_sae"}
    unknown = sorted(set(options) - sae_fields - _TRAIN_FIELDS - _CALL_OPTIONS)
    if unknown:
        raise DictoptInputError(
            f"unknown option(s) {unknown} for solver sae-{architecture}; known: "
            f"{sorted(sae_fields | _TRAIN_FIELDS | _CALL_OPTIONS)}"
        )
    sae_opts = {k: v for k, v in options.items() if k in sae_fields}
    train_opts = {k: v for k, v in options.items() if k in _TRAIN_FIELDS}
    call_opts = {k: v for k, v in options.items() if k in _CALL_OPTIONS}
    has_l1 = "l1_coefficient" in sae_fields
    if lam is not None and not has_l1:
        warnings.warn(
            f"sae-{architecture} has no L1 objective; lam={lam} is ignored (the checker can "
            "infer an implied λ)",
            stacklevel=2,
        )
        lam = None
    if has_l1 and lam is None and "l1_coefficient" not in sae_opts:
        raise DictoptInputError(f"lam: solver sae-{architecture} needs λ (or l1_coefficient)")
    sae_cfg = make_config(architecture, d_in=src.d, d_sae=K, **sae_opts)
    cfg = TrainConfig(sae=sae_cfg, lam=lam, **train_opts)
    sae, train_log = train_sae(src, cfg, seed=seed, progress=progress, **call_opts)
    meta = {
        "solver": f"sae-{architecture}",
        "seed": seed,
        "train_config": cfg.to_dict(),
        "train_log": train_log.as_dict(),
    }
    return sae.to_dictionary(meta=meta)


def _register(architecture: str, summary: str, needs_lam: bool) -> None:
    def fit(
        source: Any,
        *,
        K: int,
        lam: float | None = None,
        seed: int = 0,
        progress: bool = True,
        **options: Any,
    ) -> Dictionary:
        return fit_sae(architecture, source, K=K, lam=lam, seed=seed, progress=progress, **options)

    fit.__doc__ = f"Train a {architecture} SAE (see :func:`fit_sae`)."
    register_solver(f"sae-{architecture}", summary, needs_lam=needs_lam)(fit)


_register("relu", "ReLU SAE, L1 weighted by decoder norm (λ = l1_coefficient/2)", True)
_register("topk", "TopK SAE with AuxK dead-latent loss (--set k=...)", False)
_register("batchtopk", "BatchTopK SAE, inference with a global threshold (--set k=...)", False)
_register("jumprelu", "JumpReLU SAE, L0 penalty, straight-through threshold", False)
_register("matryoshka", "Matryoshka BatchTopK SAE, nested prefix losses", False)
_register("mp", "matching-pursuit SAE (greedy nonnegative residual pursuit)", False)
