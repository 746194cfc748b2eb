"""SAEs in memory and streamed sources (issue 19): an SAE object checked on a callable source
gives the same report as the same SAE saved by its library and checked on a ``.npy`` file."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

import dictopt
from dictopt.check import check
from dictopt.data.sources import StreamSource, as_source
from dictopt.io import as_dictionary, load, save_dictionary
from dictopt.validation import DictoptInputError

warnings.filterwarnings("ignore", category=UserWarning)
D_IN, K, N = 10, 24, 1500


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return (torch.randn(N, D_IN, generator=g) * 1.5 + 0.3).float()


def batches_of(x: torch.Tensor, size: int = 256):
    """A callable returning a fresh iterator of batches (what a model hook wrapper gives)."""
    def stream():
        for lo in range(0, x.shape[0], size):
            yield x[lo:lo + size]
    return stream


def same_report(a, b) -> None:
    """Counts, labels, violations and every loss term equal (loss to 1e-6)."""
    sa, sb = a.summary, b.summary
    assert sa["counts"] == sb["counts"]
    assert sa["labels"] == sb["labels"]
    assert sa["N"] == sb["N"] == N
    for key in ("loss", "reconstruction", "sparsity", "lam"):
        assert math.isclose(sa[key], sb[key], rel_tol=1e-6, abs_tol=1e-9), key
    # the same violations (ties in the ranking may order differently: chunk sums differ)
    key = lambda v: (v.condition, v.i if v.i is not None else -1, v.j if v.j is not None else -1)  # noqa: E731
    assert sorted(map(key, a.violations)) == sorted(map(key, b.violations))


def test_import_dictopt_exposes_subpackages():
    assert dictopt.io.load is load
    assert dictopt.check.check is check
    assert "plots" in dir(dictopt)
    with pytest.raises(AttributeError):
        dictopt.no_such_thing  # noqa: B018


# ---- SAELens objects ------------------------------------------------------------------------

try:
    import sae_lens as sl
except ImportError:  # the saelens extra is optional
    sl = None
needs_saelens = pytest.mark.skipif(sl is None, reason="sae-lens is not installed")


def _randomise(sae, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sae.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.4
            p.copy_(noise.abs() if "threshold" in name else noise)
    return sae


SAELENS = {
    "standard": (lambda: sl.StandardSAE(sl.StandardSAEConfig(d_in=D_IN, d_sae=K)), 0.05),
    "topk": (lambda: sl.TopKSAE(sl.TopKSAEConfig(d_in=D_IN, d_sae=K, k=4)), 0.1),
    "jumprelu": (lambda: sl.JumpReLUSAE(sl.JumpReLUSAEConfig(d_in=D_IN, d_sae=K)), 0.1),
    "gated": (lambda: sl.GatedSAE(sl.GatedSAEConfig(d_in=D_IN, d_sae=K)), 0.1),
    "batchtopk": (lambda: sl.BatchTopKTrainingSAE(
        sl.BatchTopKTrainingSAEConfig(d_in=D_IN, d_sae=K, k=4)), 0.1),
    "matryoshka": (lambda: sl.MatryoshkaBatchTopKTrainingSAE(
        sl.MatryoshkaBatchTopKTrainingSAEConfig(d_in=D_IN, d_sae=K, k=4,
                                                matryoshka_widths=[8, K])), 0.1),
}


@needs_saelens
@pytest.mark.parametrize("name", sorted(SAELENS))
def test_saelens_object_matches_saved_folder(tmp_path, x, name):
    make, lam = SAELENS[name]
    sae = _randomise(make())
    if hasattr(sae, "topk_threshold"):
        sae.topk_threshold = torch.tensor(0.3, dtype=torch.double)
    in_memory = check(sae, batches_of(x), lam=lam, hull=False)
    sae.save_model(tmp_path / "sae")
    np.save(tmp_path / "x.npy", x.numpy())
    saved = check(load(tmp_path / "sae"), tmp_path / "x.npy", lam=lam, hull=False)
    same_report(in_memory, saved)
    assert in_memory.summary["codes"] == "own"


@needs_saelens
def test_saelens_standard_lambda_convention_without_saving(x):
    """λ = l1_coefficient / 2, as for the folder (no lam given)."""
    sae = sl.StandardTrainingSAE(sl.StandardTrainingSAEConfig(d_in=D_IN, d_sae=K,
                                                              l1_coefficient=0.3))
    d = load(sae)
    assert d.lam == pytest.approx(0.15)
    assert "l1_coefficient / 2" in d.meta["lam_conversion"]
    assert d.meta["format"] == "saelens (in memory)"


@needs_saelens
def test_saelens_topk_without_lam_names_implied(x):
    sae = sl.TopKSAE(sl.TopKSAEConfig(d_in=D_IN, d_sae=K, k=4))
    with pytest.raises(DictoptInputError, match=r"--lam implied.*median"):
        check(sae, x)


@needs_saelens
def test_saelens_scaled_activations_need_the_factor():
    sae = sl.StandardSAE(sl.StandardSAEConfig(d_in=D_IN, d_sae=K,
                                              normalize_activations="expected_average_only_in"))
    with pytest.raises(DictoptInputError, match="activation_scaling_factor"):
        as_dictionary(sae, lam=0.1)
    d = as_dictionary(sae, lam=0.1, activation_scaling_factor=2.0)
    # folded exactly as SAELens does: W_dec / s before canonicalisation, so atoms are unchanged
    ref = sae.W_dec.detach().double()
    assert torch.allclose(d.atoms.double(), ref / ref.norm(dim=1, keepdim=True), atol=1e-6)
    assert torch.allclose(d.bias.double(), sae.b_dec.detach().double() / 2, atol=1e-6)


@needs_saelens
def test_state_dict_with_saelens_names(x):
    sae = _randomise(sl.StandardSAE(sl.StandardSAEConfig(d_in=D_IN, d_sae=K)))
    a = check(dict(sae.state_dict()), x, lam=0.05, hull=False)
    b = check(sae, x, lam=0.05, hull=False)
    same_report(a, b)


# ---- dictopt's own SAE, sklearn, other state dicts ------------------------------------------


def test_dictopt_sae_module_matches_saved_folder(tmp_path, x):
    from dictopt.solvers.train import fit_sae

    d = fit_sae("relu", x, K=K, lam=0.05, seed=0, total_steps=60, batch_size=128,
                progress=False)
    module = d.encoder  # the trained torch module itself
    in_memory = check(module, batches_of(x, 300), hull=False)
    save_dictionary(d, tmp_path / "sae")
    np.save(tmp_path / "x.npy", x.numpy())
    saved = check(load(tmp_path / "sae"), tmp_path / "x.npy", hull=False)
    same_report(in_memory, saved)


def test_sklearn_estimator_and_dictionary_learning_state_dict(x):
    from sklearn.decomposition import DictionaryLearning

    est = DictionaryLearning(n_components=6, alpha=0.2, max_iter=5, positive_code=True,
                             fit_algorithm="cd", transform_algorithm="lasso_cd",
                             random_state=0).fit(x[:200].double().numpy())
    d = as_dictionary(est)
    assert d.lam == pytest.approx(0.2) and d.K == 6
    g = torch.Generator().manual_seed(1)
    state = {"encoder.weight": torch.randn(K, D_IN, generator=g),
             "encoder.bias": torch.randn(K, generator=g),
             "decoder.weight": torch.randn(D_IN, K, generator=g),
             "bias": torch.randn(D_IN, generator=g)}
    dl = as_dictionary(state, lam=0.1)
    assert dl.meta["library"] == "dictionary_learning" and dl.K == K


def test_unsupported_object_names_what_is_accepted():
    with pytest.raises(DictoptInputError, match="SAELens SAE object"):
        check(object(), torch.zeros(3, 2))


# ---- streamed sources -----------------------------------------------------------------------


def test_stream_source_learns_n_and_rejects_one_shot_iterators(x):
    src = as_source(batches_of(x, 400))
    assert isinstance(src, StreamSource) and src.n is None and src.d == D_IN
    assert sum(c.data.shape[0] for c in src.iter_chunks()) == N
    assert src.n == N
    with pytest.raises(DictoptInputError, match="one-shot iterator"):
        as_source(iter([x]))


def test_stream_that_changes_between_passes_is_an_error(x):
    calls = []

    def shrinking():
        calls.append(1)
        return iter([x[: N // len(calls)]])

    src = as_source(shrinking)
    list(src.iter_chunks())
    with pytest.raises(DictoptInputError, match="same rows every time"):
        list(src.iter_chunks())


def test_dataloader_and_hook_shaped_batches_give_the_array_report(x):
    from torch.utils.data import DataLoader, TensorDataset

    from dictopt.solvers.sae import make_config, make_sae

    module = make_sae(make_config("relu", d_in=D_IN, d_sae=K, dtype="float32"), seed=0)
    d = as_dictionary(module, lam=0.05)
    ref = check(d, x, hull=False)
    loader = DataLoader(TensorDataset(x), batch_size=200, shuffle=False)
    same_report(check(d, loader, hull=False), ref)

    def hook_like():  # [batch, seq, d] as a residual-stream hook gives them
        for lo in range(0, N, 300):
            yield x[lo:lo + 300].reshape(10, 30, D_IN)
    same_report(check(d, hook_like, hull=False), ref)
