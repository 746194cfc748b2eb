"""The SAE trainer: recovery of planted atoms, streaming, determinism, resume, bad input."""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest
import torch

from dictopt.data.sources import ArraySource
from dictopt.data.worlds import make_world
from dictopt.problem import objective
from dictopt.solvers.registry import get_solver
from dictopt.solvers.sae import make_config, make_sae
from dictopt.solvers.sae.presets import TOY_RECOVERY
from dictopt.solvers.train import (
    BatchStream,
    TrainConfig,
    fit_sae,
    geometric_median,
    train_sae,
)
from dictopt.validation import DictoptInputError

#: Settings under which each architecture recovers the independent toy world (3-5 s CPU each).
RECOVERY = TOY_RECOVERY

#: Matryoshka falls short of 90 % here (benchmark: 0.75, 0.83, 0.67 over seeds 0-2): with
#: equally frequent independent features its prefix losses pull the first latents towards
#: mixtures. Asserted at what it reaches, so a regression still fails; see the benchmark.
RECOVERED = {"matryoshka": 0.7}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture()
def available_providers(monkeypatch):
    """Registry providers that exist on this branch (the classical solvers live elsewhere)."""
    import importlib.util

    from dictopt.solvers import registry

    present = [m for m in registry.SOLVER_PROVIDERS if importlib.util.find_spec(m) is not None]
    monkeypatch.setattr(registry, "SOLVER_PROVIDERS", present)


@pytest.fixture(scope="module")
def toy():
    """The independent world at test size: d=16, 24 true atoms, ~2 active per point."""
    return make_world("independent", n=8192, d=16, k=24, p=0.08, seed=0)


def recovery(true_KD: np.ndarray, learned_KD: np.ndarray, threshold: float) -> float:
    """Fraction of true atoms whose best learned atom has cosine ≥ ``threshold``."""
    cos = true_KD @ (learned_KD / np.linalg.norm(learned_KD, axis=1, keepdims=True)).T
    return float((cos.max(axis=1) >= threshold).mean())


class NoWholeLoad(ArraySource):
    """A source that refuses to be loaded whole and counts passes over its chunks."""

    passes = 0

    def to_tensor(self):  # pragma: no cover - failing is the point
        raise AssertionError("the trainer must stream, not load everything")

    def _raw_chunks(self):
        type(self).passes += 1
        yield from super()._raw_chunks()


def small_cfg(arch="topk", d=16, K=32, **train):
    opts = {"topk": {"k": 2}, "relu": {"l1_coefficient": 0.4}, "jumprelu": {},
            "batchtopk": {"k": 2.0}, "matryoshka": {"k": 2.0}, "mp": {"k": 2}}[arch]
    sae = make_config(arch, d_in=d, d_sae=K, **opts)
    return TrainConfig(sae=sae, **{"total_steps": 40, "batch_size": 64, **train})


# -- recovery --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(RECOVERY))
def test_recovers_independent_atoms(name, toy):
    arch = name.removesuffix("-unit")
    opts = dict(RECOVERY[name])
    lam = opts.pop("lam", None)
    src = NoWholeLoad(toy.x.astype(np.float32))
    D = fit_sae(arch, src, K=48, lam=lam, seed=0, progress=False, total_steps=3000, **opts)
    assert recovery(toy.atoms, D.atoms.numpy(), 0.95) >= RECOVERED.get(name, 0.9)
    log = D.meta["train_log"]
    assert log["explained_variance"][-1] > 0.8
    assert len(log["step"]) == 300 and log["step"][-1] == 3000
    if lam is not None:
        assert D.lam == pytest.approx(lam, rel=1e-12)


# -- streaming, determinism, resume ----------------------------------------------------------


def test_batch_stream_covers_every_row_once_per_epoch():
    x = torch.arange(50, dtype=torch.float64).reshape(25, 2)
    stream = BatchStream(ArraySource(x, chunk_size=7), batch_size=5, seed=3)
    rows = torch.cat([next(stream) for _ in range(5)])
    assert sorted(rows[:, 0].tolist()) == sorted(x[:, 0].tolist())
    again = BatchStream(ArraySource(x, chunk_size=7), batch_size=5, seed=3)
    again.skip(2)
    assert torch.equal(next(again), rows[10:15])


def test_trainer_streams_epochs_without_loading_everything(toy):
    NoWholeLoad.passes = 0
    src = NoWholeLoad(toy.x[:500], chunk_size=128)
    cfg = small_cfg(total_steps=20, batch_size=100)  # 2000 rows = 4 epochs of 500
    train_sae(src, cfg, progress=False)
    assert NoWholeLoad.passes >= 5  # init rows + 4 epochs


def test_same_seed_same_result_other_seed_differs(toy):
    cfg = small_cfg()
    a, _ = train_sae(toy.x, cfg, seed=5, progress=False)
    b, _ = train_sae(toy.x, cfg, seed=5, progress=False)
    c, _ = train_sae(toy.x, cfg, seed=6, progress=False)
    assert torch.equal(a.W_dec, b.W_dec) and torch.equal(a.W_enc, b.W_enc)
    assert not torch.equal(a.W_dec, c.W_dec)


@pytest.mark.parametrize("arch", ["topk", "batchtopk", "jumprelu", "relu"])
def test_resume_equals_uninterrupted(arch, toy, tmp_path):
    cfg = small_cfg(arch, total_steps=30, checkpoint_every=15, keep_checkpoints=5,
                    resample_dead_every=10, dead_feature_window=64,
                    normalize_activations="expected_average_only_in")
    full, full_log = train_sae(toy.x, cfg, seed=1, progress=False, checkpoint_dir=tmp_path / "a")
    # "Crash" after step 15: keep only that checkpoint, then resume.
    (tmp_path / "b").mkdir()
    (step15,) = (tmp_path / "a").glob("checkpoint_*_step_15.pt")
    shutil.copy(step15, tmp_path / "b")
    resumed, log = train_sae(
        toy.x, cfg, seed=1, progress=False, checkpoint_dir=tmp_path / "b", resume=True
    )
    for name, tensor in full.state_dict().items():
        assert torch.equal(tensor, resumed.state_dict()[name]), name
    assert log.loss == full_log.loss and log.step == full_log.step


def test_resume_refuses_a_different_configuration(toy, tmp_path):
    train_sae(toy.x, small_cfg(total_steps=10), progress=False, checkpoint_dir=tmp_path)
    with pytest.raises(DictoptInputError, match=r"another run only \(different config \(lr\)"):
        train_sae(toy.x, small_cfg(total_steps=20, lr=0.01), progress=False,
                  checkpoint_dir=tmp_path, resume=True)


# -- conversions made by the trainer ---------------------------------------------------------


def test_normalisation_is_folded_and_lambda_kept(toy):
    x = toy.x * 7.0  # far from unit scale
    D = fit_sae("relu", x, K=32, lam=0.5, seed=0, progress=False, total_steps=50,
                normalize_activations="expected_average_only_in")
    sae = D.encoder
    c = sae.cfg.activation_scaling_factor
    assert c == pytest.approx(np.sqrt(16 / (x**2).sum(1).mean()), rel=0.05)
    assert D.lam == pytest.approx(0.5, rel=1e-12)
    xb = torch.tensor(x[:200], dtype=torch.float32)
    canonical = objective(D.to(torch.float64), xb, D.encode(xb).double()).loss
    assert 2 * canonical == pytest.approx(sae.loss(xb), rel=1e-5)


def test_geometric_median_minimises_sum_of_distances():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 3, generator=g, dtype=torch.float64)
    x[:20] += 50  # outliers pull the mean, not the median
    m = geometric_median(x)
    total = (x - m).norm(dim=1).sum()
    for _ in range(20):
        other = m + torch.randn(3, generator=g, dtype=torch.float64) * 0.05
        assert total <= (x - other).norm(dim=1).sum()
    assert float(m.norm()) < float(x.mean(0).norm())


def test_resampling_revives_dead_latents(toy):
    """Latents killed by a huge negative encoder bias never fire again (zero gradient) unless
    resampling points them at badly reconstructed inputs."""
    fired = {}
    for every in (0, 20):
        cfg = small_cfg("relu", total_steps=60, dead_feature_window=320,
                        resample_dead_every=every)
        sae = make_sae(cfg.sae, seed=0)
        with torch.no_grad():
            sae.b_enc[:8] = -100.0
        train_sae(toy.x, cfg, seed=0, progress=False, sae=sae)
        fired[every] = int((sae.encode(toy.x)[:, :8] > 0).any(dim=0).sum())
    assert fired[0] == 0
    assert fired[20] >= 6


def test_resampling_never_sends_two_latents_to_one_input(toy):
    """More dead latents than rows in a batch dominated by one badly reconstructed row: each
    resampled latent gets its own input (no duplicate atoms); the rest wait for the next
    resampling."""
    cfg = small_cfg("relu", total_steps=1, batch_size=16, resample_dead_every=1,
                    dead_feature_window=1)
    sae = make_sae(cfg.sae, seed=0)
    x = torch.as_tensor(toy.x[:16], dtype=torch.float32).clone()
    x[0] *= 100.0  # one row carries almost all of the squared error
    from dictopt.solvers.train import _Trainer  # the resampling step itself

    trainer = _Trainer(ArraySource(toy.x), cfg, seed=0)
    trainer.fresh(sae)
    trainer.since_fired_K[:] = cfg.dead_feature_window  # every latent is dead
    before = sae.W_dec.detach().clone()
    with torch.no_grad():
        trainer.resample(x, torch.zeros_like(x))
    moved = (sae.W_dec.detach() != before).any(dim=1)
    nonzero_rows = int((x.abs().sum(dim=1) > 0).sum())
    assert int(moved.sum()) == nonzero_rows  # one latent per row with an error to explain
    dirs = torch.nn.functional.normalize(sae.W_dec.detach()[moved].double(), dim=1)
    cos = dirs @ dirs.T - torch.eye(nonzero_rows, dtype=torch.float64)
    assert float(cos.max()) < 0.99


# -- solvers registry ------------------------------------------------------------------------


def test_solvers_registered(available_providers):
    for arch in ("relu", "topk", "batchtopk", "jumprelu", "matryoshka", "mp"):
        spec = get_solver(f"sae-{arch}")
        assert spec.needs_lam == (arch == "relu")


def test_lam_ignored_with_warning_for_topk(toy):
    with pytest.warns(UserWarning, match="ignored"):
        D = fit_sae("topk", toy.x, K=16, lam=0.1, progress=False, total_steps=5, k=2)
    assert D.lam is None


def test_unknown_option_named(toy):
    with pytest.raises(DictoptInputError, match="unknown option.*'kk'"):
        fit_sae("topk", toy.x, K=16, progress=False, kk=3)


def test_relu_needs_lambda(toy):
    with pytest.raises(DictoptInputError, match="needs λ"):
        fit_sae("relu", toy.x, K=16, progress=False, total_steps=5)


# -- bad input -------------------------------------------------------------------------------


def test_mismatched_width(toy):
    with pytest.raises(DictoptInputError, match="width 16 does not match the SAE's d_in = 10"):
        train_sae(toy.x, small_cfg(d=10), progress=False)


def test_k_larger_than_K(toy):
    with pytest.raises(DictoptInputError, match="exceeds"):
        fit_sae("topk", toy.x, K=4, k=5, progress=False)


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [("lr", -1.0, "lr"), ("lr", 0.0, "lr"), ("batch_size", 0, "batch_size"),
     ("adam_beta1", 1.0, "adam_beta1"), ("coefficient_warm_up_steps", -3, "warm_up"),
     ("normalize_activations", "layer", "normalize_activations"),
     ("b_dec_init_method", "median", "b_dec_init_method"), ("lam", -0.5, "lam")],
)
def test_bad_train_config(field, value, match):
    with pytest.raises(DictoptInputError, match=match):
        small_cfg("relu", **{field: value})


def test_lam_rejected_for_non_l1_architecture():
    with pytest.raises(DictoptInputError, match="no L1 objective"):
        small_cfg("topk", lam=0.1)


def test_nan_batch_clear_error_and_state_intact(toy, tmp_path):
    """A NaN in the stream stops training before the bad step; the SAE and checkpoint hold the
    last good state."""
    x = toy.x[:640].copy()
    x[600, 3] = np.nan  # in the second chunk of 320 rows: raised when step 5 needs it
    cfg = small_cfg(total_steps=40, checkpoint_every=5)
    good, _ = train_sae(toy.x[:640], small_cfg(total_steps=5), seed=0, progress=False)
    start = good.to_dictionary().encoder  # a trained SAE to continue from
    sae = type(start).from_saved(start.config(), {**start.tensors(), "W_dec": start.W_dec,
                                                  "b_dec": start.b_dec})
    with pytest.raises(DictoptInputError, match="row 600"):
        train_sae(ArraySource(x, chunk_size=320), cfg, seed=0, progress=False, sae=sae,
                  checkpoint_dir=tmp_path)
    params = [p.detach() for p in sae.parameters()]
    assert all(bool(torch.isfinite(p).all()) for p in params)
    assert not torch.equal(sae.W_dec, start.W_dec)  # it did train for the good batches
    (step5,) = tmp_path.glob("checkpoint_*_step_5.pt")
    state = torch.load(step5, weights_only=True)
    assert all(bool(torch.isfinite(t).all()) for t in state["sae"].values())
    # Re-running the good steps from the same start reproduces the in-place state exactly.
    replay = type(start).from_saved(start.config(), {**start.tensors(), "W_dec": start.W_dec,
                                                     "b_dec": start.b_dec})
    train_sae(ArraySource(toy.x[:640], chunk_size=320), small_cfg(total_steps=5), seed=0,
              progress=False, sae=replay)
    assert torch.equal(replay.W_dec, sae.W_dec)


def test_diverging_loss_is_not_applied(toy):
    cfg = small_cfg("relu", total_steps=3, batch_size=32)
    huge = toy.x[:64] * 1e30  # finite in float32, but its squared error overflows
    with pytest.raises(RuntimeError, match="not applied"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train_sae(huge, cfg, progress=False)
