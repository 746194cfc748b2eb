"""Against the real SAELens (optional extra ``saelens``): SAEs saved by SAELens's own code for
every architecture load in dictopt with identical codes and reconstructions; dictopt's
SAELens export loads back in SAELens; the λ conversion matches SAELens's own training loss;
an SAE trained by SAELens's trainer on a dictopt world is checked end to end by the CLI.
Skipped cleanly when sae-lens is not installed."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import sae_lens as sl
import torch

from dictopt.io import export, load  # noqa: E402
from dictopt.problem import objective  # noqa: E402

warnings.filterwarnings("ignore", category=UserWarning)
D_IN, K, N = 12, 40, 256
TOL = 1e-5


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn(N, D_IN, generator=g) * 2 + 0.5


def randomise(sae, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sae.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.3
            p.copy_(noise.abs() if name == "threshold" else noise)
    return sae


def maxdiff(a, b) -> float:
    return float((a.detach().double() - b.detach().double()).abs().max())


INFERENCE = {
    "standard": lambda: sl.StandardSAE(sl.StandardSAEConfig(d_in=D_IN, d_sae=K)),
    "topk": lambda: sl.TopKSAE(sl.TopKSAEConfig(d_in=D_IN, d_sae=K, k=5)),
    "topk_rescaled": lambda: sl.TopKSAE(sl.TopKSAEConfig(
        d_in=D_IN, d_sae=K, k=5, rescale_acts_by_decoder_norm=True)),
    "jumprelu": lambda: sl.JumpReLUSAE(sl.JumpReLUSAEConfig(d_in=D_IN, d_sae=K)),
    "gated": lambda: sl.GatedSAE(sl.GatedSAEConfig(d_in=D_IN, d_sae=K)),
    "standard_no_bdec_in": lambda: sl.StandardSAE(sl.StandardSAEConfig(
        d_in=D_IN, d_sae=K, apply_b_dec_to_input=False)),
}


@pytest.mark.parametrize("name", sorted(INFERENCE))
def test_saelens_inference_saes(tmp_path, x, name):
    sae = randomise(INFERENCE[name]())
    sae.save_model(tmp_path)
    D = load(tmp_path)
    f, rec = sae.encode(x), sae.decode(sae.encode(x))
    assert maxdiff(D.decode(D.encode(x)), rec) < TOL
    if name == "topk_rescaled":  # SAELens codes are in unit-decoder units: canonical codes
        assert maxdiff(D.encode(x), f) < TOL
    else:
        assert maxdiff(D.encoder.encode(x), f) < TOL
    assert D.meta["library"] == "sae_lens"


TRAINING = {
    "batchtopk": lambda: sl.BatchTopKTrainingSAE(sl.BatchTopKTrainingSAEConfig(
        d_in=D_IN, d_sae=K, k=4)),
    "matryoshka_batchtopk": lambda: sl.MatryoshkaBatchTopKTrainingSAE(
        sl.MatryoshkaBatchTopKTrainingSAEConfig(d_in=D_IN, d_sae=K, k=4,
                                                matryoshka_widths=[10, 20, K])),
    "jumprelu_training": lambda: sl.JumpReLUTrainingSAE(sl.JumpReLUTrainingSAEConfig(
        d_in=D_IN, d_sae=K)),
    "topk_training": lambda: sl.TopKTrainingSAE(sl.TopKTrainingSAEConfig(
        d_in=D_IN, d_sae=K, k=5, rescale_acts_by_decoder_norm=True)),
}


@pytest.mark.parametrize("name", sorted(TRAINING))
def test_saelens_training_checkpoints(tmp_path, x, name):
    """Training checkpoints (save_model) and inference exports (save_inference_model) both
    load; both match SAELens's inference SAE."""
    sae = randomise(TRAINING[name]())
    if hasattr(sae, "topk_threshold"):
        sae.topk_threshold = torch.tensor(0.35, dtype=torch.double)
    sae.save_inference_model(tmp_path / "inference")
    sae.save_model(tmp_path / "training")
    ref = sl.SAE.load_from_disk(tmp_path / "inference")
    rec = ref.decode(ref.encode(x))
    for sub in ("inference", "training"):
        D = load(tmp_path / sub)
        assert maxdiff(D.decode(D.encode(x)), rec) < TOL, sub
        assert maxdiff(D.encode(x), ref.encode(x) * ref.W_dec.norm(dim=1)) < 1e-4, sub


@pytest.mark.parametrize("arch,fields", [("relu", {"l1_coefficient": 0.6}), ("topk", {"k": 3}),
                                         ("batchtopk", {"k": 3.0}), ("jumprelu", {})])
def test_dictopt_export_loads_in_saelens(tmp_path, x, arch, fields):
    from dictopt.solvers.sae import make_config, make_sae

    sae = make_sae(make_config(arch, d_in=D_IN, d_sae=K, **fields), seed=1)
    randomise(sae, seed=2)
    if arch == "batchtopk":
        sae.topk_threshold.fill_(0.3)
    D = sae.to_dictionary()
    export(D, tmp_path, "saelens")
    ref = sl.SAE.load_from_disk(tmp_path)
    assert maxdiff(ref.decode(ref.encode(x)), D.decode(D.encode(x))) < TOL
    assert maxdiff(ref.encode(x), D.encoder.encode(x)) < TOL


def test_lambda_matches_saelens_training_loss(tmp_path, x):
    """SAELens's own standard training loss equals 2 × the canonical loss at the loaded λ."""
    from sae_lens.saes.sae import TrainStepInput

    c = 0.7
    sae = randomise(sl.StandardTrainingSAE(sl.StandardTrainingSAEConfig(
        d_in=D_IN, d_sae=K, l1_coefficient=c)), seed=3)
    with torch.no_grad():
        sae.W_dec.mul_(torch.linspace(0.5, 2.0, K)[:, None])  # non-unit decoder norms
    out = sae.training_forward_pass(TrainStepInput(
        sae_in=x, coefficients={"l1": c}, dead_neuron_mask=None, n_training_steps=0,
        is_logging_step=False))
    sae.save_inference_model(tmp_path)
    D = load(tmp_path)
    assert D.lam == pytest.approx(c / 2)
    canon = objective(D.to(torch.float64), x.double(), D.encode(x).double()).loss
    assert float(out.loss.detach()) == pytest.approx(2 * canon, rel=1e-5)


def _check_cli(folder, x_path, out) -> dict:
    from dictopt.cli import main

    rc = main(["check", str(folder), "--activations", str(x_path), "--json", str(out),
               "--quiet", "--certify", "5", "--no-hull"])
    assert rc == 0
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def world_x(tmp_path_factory):
    from dictopt.data.worlds import make_world

    world = make_world("hierarchy", seed=0, n=1500)
    path = tmp_path_factory.mktemp("world") / "x.npy"
    np.save(path, world.x.astype(np.float32))
    return world, path


def test_saelens_trained_sae_checked_end_to_end(tmp_path, world_x):
    """A small SAE trained by SAELens's own SAETrainer (solver ``saelens-standard``) on
    dictopt's hierarchy world, saved by SAELens, then
    ``dictopt check DIR --activations X.npy --json out.json``: exit 0 and a sane report."""
    import dictopt.integrations.saelens  # noqa: F401  (registers the saelens-* solvers)
    from dictopt.solvers.registry import get_solver

    world, x_path = world_x
    K_sae = 2 * world.atoms.shape[0]
    D = get_solver("saelens-standard").fit(
        x_path, K=K_sae, lam=0.025, total_steps=150, lr=3e-3, progress=False,
        out_dir=tmp_path / "saelens",
    )
    assert D.meta["solver"] == "saelens-standard" and D.lam == pytest.approx(0.025)
    cfg = json.loads((tmp_path / "saelens" / "cfg.json").read_text())
    details = cfg["metadata"]["training_architecture_details"]
    assert details["l1_coefficient"] == pytest.approx(0.05)  # SAELens's own config: 2λ
    rep = _check_cli(tmp_path / "saelens", x_path, tmp_path / "r.json")
    s = rep["summary"]
    assert s["lam"] == pytest.approx(0.025)  # l1_coefficient / 2
    assert s["K"] == K_sae and s["N"] == world.x.shape[0]
    assert s["explained_variance"] > 0.8, s["explained_variance"]
    assert 0 < s["l0"] < K_sae and len(rep["atoms"]) == K_sae


def test_saelens_topk_trainer_keeps_k(tmp_path, world_x):
    """``saelens-topk``: SAELens's TopK SAE, loaded back with exactly k active latents."""
    import dictopt.integrations.saelens  # noqa: F401  (registers the saelens-* solvers)
    from dictopt.solvers.registry import get_solver

    world, x_path = world_x
    D = get_solver("saelens-topk").fit(
        x_path, K=32, k=3, total_steps=60, progress=False, b_dec_init="geometric_median"
    )
    x = torch.as_tensor(world.x[:200], dtype=torch.float32)
    assert ((D.encode(x) > 0).sum(dim=1) <= 3).all()


@pytest.mark.parametrize(
    "solver, kwargs, match",
    [
        ("saelens-standard", {"lam": 0.1, "momentum": 0.9}, "unknown option"),
        ("saelens-standard", {"lam": 0.0}, "lam"),
        ("saelens-topk", {}, "needs k"),
        ("saelens-standard", {"lam": 0.1, "b_dec_init": "median"}, "b_dec_init"),
    ],
)
def test_saelens_trainer_bad_input(world_x, solver, kwargs, match):
    import dictopt.integrations.saelens  # noqa: F401  (registers the saelens-* solvers)
    from dictopt.solvers.registry import get_solver
    from dictopt.validation import DictoptInputError

    _, x_path = world_x
    with pytest.raises(DictoptInputError, match=match):
        get_solver(solver).fit(x_path, K=8, progress=False, total_steps=1, **kwargs)


@pytest.mark.slow
def test_dictopt_trained_sae_checked_the_same_way(tmp_path, world_x):
    """The same command works unchanged on a dictopt-trained SAE (slow: dictopt's trainer)."""
    from dictopt.io import save_dictionary
    from dictopt.solvers.train import fit_sae

    world, x_path = world_x
    K_sae = 2 * world.atoms.shape[0]
    D = fit_sae("relu", world.x.astype(np.float32), K=K_sae, lam=0.025, total_steps=300,
                batch_size=256, progress=False)
    save_dictionary(D, tmp_path / "dictopt")
    s = _check_cli(tmp_path / "dictopt", x_path, tmp_path / "r.json")["summary"]
    assert s["lam"] == pytest.approx(0.025) and s["K"] == K_sae
    assert s["explained_variance"] > 0.9
