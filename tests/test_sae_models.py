"""SAE architectures: exact canonicalisation, save/load, encoders against reference maths."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dictopt.io.native import load_dictionary, read_config, save_dictionary
from dictopt.problem import Dictionary, get_encoder_class, objective
from dictopt.solvers.sae import (
    SAE_CLASSES,
    BatchTopKSAE,
    JumpReLUSAE,
    MatryoshkaSAEConfig,
    make_config,
    make_sae,
    matching_pursuit,
)
from dictopt.validation import DictoptInputError

ARCH_OPTIONS = {
    "relu": {"l1_coefficient": 0.3},
    "topk": {"k": 3},
    "batchtopk": {"k": 3.0},
    "matryoshka": {"k": 3.0, "matryoshka_widths": [4, 8, 16]},
    "jumprelu": {"l0_coefficient": 0.2, "jumprelu_init_threshold": 0.05},
    "mp": {"k": 3},
}
TOPK_FAMILY = ["topk", "batchtopk", "matryoshka", "mp", "jumprelu"]


pytestmark = pytest.mark.usefixtures("one_thread")


def random_sae(arch: str, *, d: int = 8, K: int = 16, seed: int = 0, **overrides):
    """An SAE with random, non-canonical weights (atom norms far from 1, nonzero biases)."""
    opts = {**ARCH_OPTIONS[arch], **overrides}
    sae = make_sae(make_config(arch, d_in=d, d_sae=K, dtype="float64", **opts), seed=seed)
    g = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        sae.W_dec.mul_(torch.rand(K, 1, generator=g, dtype=torch.float64) * 2 + 0.3)
        sae.b_dec.copy_(torch.randn(d, generator=g, dtype=torch.float64) * 0.3)
        if sae.has_encoder_weights:
            sae.b_enc.copy_(torch.randn(K, generator=g, dtype=torch.float64) * 0.1)
    if isinstance(sae, BatchTopKSAE):
        sae.topk_threshold.fill_(0.2)
    return sae


def batch(n: int = 64, d: int = 8, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# -- canonicalisation -------------------------------------------------------------------------


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    l1=st.floats(0.01, 3.0),
    d=st.integers(2, 10),
    K=st.integers(1, 20),
    unit=st.booleans(),
)
def test_relu_canonical_loss_is_half_the_sae_loss(seed, l1, d, K, unit):
    sae = random_sae("relu", d=d, K=K, seed=seed, l1_coefficient=l1, unit_norm_decoder=unit)
    if unit:
        sae.constrain()
    x = batch(d=d, seed=seed + 1)
    D = sae.to_dictionary()
    assert D.lam == pytest.approx(l1 / 2, rel=1e-15)
    assert torch.allclose(D.atoms.norm(dim=1), torch.ones(K, dtype=torch.float64), atol=1e-12)
    canonical = objective(D, x, D.encode(x)).loss
    assert 2 * canonical == pytest.approx(sae.loss(x), rel=1e-6, abs=1e-9)


def test_relu_loss_conversion_is_not_vacuous():
    """The codes really are rescaled: with raw codes the λ-equation fails."""
    sae = random_sae("relu")
    x = batch()
    D = sae.to_dictionary()
    raw = sae.encode(x)
    assert not torch.allclose(D.code_scale, torch.ones_like(D.code_scale), atol=0.1)
    wrong = Dictionary(D.atoms, D.bias, lam=D.lam)  # no rescaling of the codes
    assert objective(wrong, x, raw).loss * 2 != pytest.approx(sae.loss(x), rel=1e-3)


@pytest.mark.parametrize("arch", TOPK_FAMILY)
def test_codes_and_reconstructions_identical_after_canonicalisation(arch):
    sae = random_sae(arch)
    x = batch()
    D = sae.to_dictionary()
    raw = sae.encode(x)
    canon = D.encode(x)
    assert D.lam is None
    assert torch.equal(canon > 0, raw > 0)  # same support
    assert torch.allclose(canon, raw * sae.W_dec.norm(dim=1).detach(), rtol=1e-14, atol=0)
    assert torch.allclose(D.decode(canon), sae(x), rtol=0, atol=1e-12)
    assert float(canon.min()) >= 0


def test_encoder_is_a_frozen_copy():
    sae = random_sae("topk")
    x = batch()
    D = sae.to_dictionary()
    before = D.encode(x).clone()
    with torch.no_grad():
        sae.W_enc.mul_(-1)
    assert torch.equal(D.encode(x), before)


@pytest.mark.parametrize("arch", sorted(ARCH_OPTIONS))
def test_fold_activation_norm_is_exact(arch):
    """Training on c·x then folding c gives the same codes on x and reconstructions / c."""
    sae = random_sae(arch)
    x, c = batch(), 3.7
    codes_scaled = sae.encode(c * x)
    recon_scaled = sae(c * x)
    loss_scaled = sae.loss(c * x)
    sae.fold_activation_norm(c)
    assert torch.allclose(sae.encode(x), codes_scaled, rtol=1e-12, atol=1e-12)
    assert torch.allclose(sae(x), recon_scaled / c, rtol=1e-12, atol=1e-12)
    assert sae.loss(x) == pytest.approx(loss_scaled / c**2, rel=1e-10)
    assert sae.cfg.activation_scaling_factor == pytest.approx(c)


# -- save / load through dictopt.io.native ----------------------------------------------------


@pytest.mark.parametrize("arch", sorted(ARCH_OPTIONS))
def test_native_round_trip(arch, tmp_path):
    sae = random_sae(arch)
    x = batch()
    D = sae.to_dictionary(meta={"note": "round trip"})
    save_dictionary(D, tmp_path / arch)
    cfg = read_config(tmp_path / arch)
    assert cfg["architecture"] == arch
    assert cfg["encoder"]["d_sae"] == 16 and cfg["meta"]["note"] == "round trip"
    E = load_dictionary(tmp_path / arch)
    assert isinstance(E.encoder, SAE_CLASSES[arch])
    assert E.lam == D.lam
    if sae.has_encoder_weights:
        # The encoder's own tensors and b_dec are stored verbatim: identical codes.
        assert torch.equal(E.encoder.encode(x), D.encoder.encode(x))
    # W_dec is saved as atoms·code_scale, equal to the original only to rounding (1 ulp), so
    # decoder-dependent quantities (all canonical codes; MP's pursuit) agree to 1e-12.
    assert torch.allclose(E.encode(x), D.encode(x), rtol=1e-12, atol=1e-14)
    assert torch.equal(E.encode(x) > 0, D.encode(x) > 0)
    assert torch.allclose(E.decode(E.encode(x)), D.decode(D.encode(x)), rtol=0, atol=1e-12)


def test_encoders_registered_under_their_architecture():
    for arch, cls in SAE_CLASSES.items():
        assert get_encoder_class(arch) is cls


def test_batchtopk_saves_threshold_vector_like_saelens():
    sae = random_sae("batchtopk")
    thr = sae.tensors()["threshold"]
    assert thr.shape == (16,) and bool((thr == 0.2).all())
    tensors = {**sae.tensors(), "W_dec": sae.W_dec.detach(), "b_dec": sae.b_dec.detach()}
    tensors["threshold"] = torch.linspace(0, 1, 16, dtype=torch.float64)
    with pytest.raises(DictoptInputError, match="threshold"):
        BatchTopKSAE.from_saved(sae.config(), tensors)


def test_from_saved_rejects_bad_tensors():
    sae = random_sae("relu")
    tensors = {**sae.tensors(), "W_dec": sae.W_dec.detach(), "b_dec": sae.b_dec.detach()}
    bad = dict(tensors, W_enc=tensors["W_enc"].T)  # dictionary_learning orientation
    with pytest.raises(DictoptInputError, match="W_enc"):
        type(sae).from_saved(sae.config(), bad)
    missing = {k: v for k, v in tensors.items() if k != "b_enc"}
    with pytest.raises(DictoptInputError, match="b_enc"):
        type(sae).from_saved(sae.config(), missing)
    jr = random_sae("jumprelu")
    jt = {**jr.tensors(), "W_dec": jr.W_dec.detach(), "b_dec": jr.b_dec.detach()}
    jt["threshold"] = -jt["threshold"]
    with pytest.raises(DictoptInputError, match="threshold"):
        JumpReLUSAE.from_saved(jr.config(), jt)


# -- encoders against reference mathematics ---------------------------------------------------


def test_topk_keeps_exactly_the_k_largest():
    sae = random_sae("topk", k=3)
    x = batch()
    pre = sae.hidden_pre(x).detach()
    codes = sae.encode(x)
    for n in range(x.shape[0]):
        top = set(torch.argsort(pre[n], descending=True)[:3].tolist())
        on = set(codes[n].nonzero().flatten().tolist())
        assert on == {j for j in top if pre[n, j] > 0}
        assert torch.equal(codes[n, list(on)], pre[n, list(on)])


def test_batchtopk_training_keeps_k_times_batch_and_threshold_tracks_minimum():
    sae = random_sae("batchtopk", k=2.5)
    x = batch(n=40)
    out = sae.training_forward(x)
    assert int((out.acts > 0).sum()) == 100  # 2.5 × 40, every pre-activation is distinct
    sae.threshold_updates.zero_()
    sae.update_buffers(out)  # the first update sets θ to the smallest kept activation
    assert float(sae.topk_threshold) == pytest.approx(float(out.acts.detach()[out.acts > 0].min()))


def naive_pursuit(r: np.ndarray, W: np.ndarray, k: int) -> np.ndarray:
    """Matching pursuit written the textbook way: correlations recomputed from the residual."""
    codes = np.zeros((r.shape[0], W.shape[0]))
    norms = np.linalg.norm(W, axis=1)
    for n in range(r.shape[0]):
        res = r[n].copy()
        for _ in range(k):
            corr = W @ res
            j = int(np.argmax(corr / norms))
            alpha = max(corr[j] / norms[j] ** 2, 0.0)
            codes[n, j] += alpha
            res = res - alpha * W[j]
    return codes


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.integers(1, 6))
def test_matching_pursuit_matches_textbook_pursuit(seed, k):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(12, 6, generator=g, dtype=torch.float64)
    r = torch.randn(20, 6, generator=g, dtype=torch.float64)
    fast = matching_pursuit(r, W, k).numpy()
    assert np.allclose(fast, naive_pursuit(r.numpy(), W.numpy(), k), atol=1e-10)
    assert fast.min() >= 0
    # Each step removes the best direction: the residual never grows.
    assert np.all(np.linalg.norm(r.numpy() - fast @ W.numpy(), axis=1)
                  <= np.linalg.norm(r.numpy(), axis=1) + 1e-12)


def test_jumprelu_threshold_gradient_is_the_rectangle_estimator():
    """dL/dθ_k = Σ_n -(θ_k/ε)·1[|pre-θ|<ε/2]·dL/df (JumpReLU) - (1/ε)·1[...]·coef (L0)."""
    sae = random_sae("jumprelu", jumprelu_bandwidth=0.5, jumprelu_init_threshold=0.3)
    x = batch()
    out = sae.training_forward(x)
    out.loss.backward()
    with torch.no_grad():
        pre = sae.hidden_pre(x)
        theta, eps = sae.threshold, 0.5
        window = ((pre - theta).abs() < eps / 2).to(pre.dtype)
        dL_df = 2 * (out.recon - x) @ sae.W_dec.T / x.shape[0]
        expected = (-(theta / eps) * window * dL_df).sum(0)
        expected += (-(1 / eps) * window * sae.cfg.l0_coefficient / x.shape[0]).sum(0)
    assert torch.allclose(sae.threshold.grad, expected, atol=1e-12)
    assert bool(window.any())


def test_matryoshka_loss_adds_prefix_reconstructions():
    sae = random_sae("matryoshka")
    x = batch()
    with torch.no_grad():
        out = sae.training_forward(x)
    assert set(out.losses) == {"mse", "mse_prefix_4", "mse_prefix_8", "aux"}
    a = out.acts
    expected = sum(
        float(((a[:, :w] @ sae.W_dec[:w] + sae.b_dec - x) ** 2).sum(1).mean()) for w in (4, 8, 16)
    )
    assert float(out.loss) == pytest.approx(expected, rel=1e-12)


def test_unit_norm_constraint_removes_parallel_gradient():
    sae = random_sae("topk")
    sae.constrain()
    sae.training_forward(batch()).loss.backward()
    sae.remove_parallel_decoder_grad()
    along = (sae.W_dec.grad * sae.W_dec).sum(1)
    assert torch.allclose(along, torch.zeros_like(along), atol=1e-12)


# -- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arch", "fields", "match"),
    [
        ("topk", {"k": 17}, "k: 17 exceeds"),
        ("mp", {"k": 40}, "k: 40 exceeds"),
        ("batchtopk", {"k": 16.5}, "exceeds"),
        ("topk", {"k": 0}, "k"),
        ("relu", {"l1_coefficient": -0.1}, "l1_coefficient"),
        ("relu", {"l1_coefficient": float("nan")}, "l1_coefficient"),
        ("topk", {"aux_loss_coefficient": -1.0}, "aux_loss_coefficient"),
        ("jumprelu", {"l0_coefficient": -2.0}, "l0_coefficient"),
        ("jumprelu", {"jumprelu_bandwidth": 0.0}, "jumprelu_bandwidth"),
        ("relu", {"dtype": "int8"}, "dtype"),
        ("matryoshka", {"k": 4.0, "matryoshka_widths": [8, 4]}, "increasing"),
        ("matryoshka", {"k": 4.0, "matryoshka_widths": [2, 8]}, "below k"),
        ("relu", {"unknown_field": 1}, "unknown field"),
    ],
)
def test_bad_config_is_rejected(arch, fields, match):
    with pytest.raises(DictoptInputError, match=match):
        make_config(arch, d_in=8, d_sae=16, **fields)


def test_bad_sizes_rejected():
    with pytest.raises(DictoptInputError, match="d_sae"):
        make_config("relu", d_in=8, d_sae=0)
    with pytest.raises(DictoptInputError, match="unknown SAE architecture"):
        make_config("gated", d_in=8, d_sae=4)


@pytest.mark.parametrize("arch", sorted(ARCH_OPTIONS))
def test_encode_rejects_bad_batches(arch):
    sae = random_sae(arch)
    with pytest.raises(DictoptInputError, match="width 5 but d = 8"):
        sae.encode(torch.zeros(4, 5))
    with pytest.raises(DictoptInputError, match="transposed"):
        sae.encode(torch.zeros(8, 3))
    x = batch()
    x[7, 2] = float("nan")
    with pytest.raises(DictoptInputError, match="row 7"):
        sae.encode(x)


def test_matryoshka_default_widths():
    cfg = MatryoshkaSAEConfig(d_in=8, d_sae=64, k=4.0)
    assert cfg.matryoshka_widths == [8, 16, 32, 64]


@pytest.mark.parametrize("arch", ["relu", "jumprelu"])
def test_encode_columns_equals_the_full_encoder(arch):
    """The reports' fast path: latents of ReLU/JumpReLU SAEs are independent, so computing a
    subset must give those columns of the full encoding."""
    from dictopt.solvers.sae import make_config, make_sae

    sae = make_sae(make_config(arch, d_in=6, d_sae=10), seed=0)
    with torch.no_grad():
        sae.b_enc.copy_(torch.linspace(-0.5, 0.5, 10))
    x = torch.randn(50, 6, generator=torch.Generator().manual_seed(1))
    idx = torch.tensor([7, 0, 3])
    full = sae.encode(x)
    assert (full > 0).any()
    # Equal up to float32 rounding (a column subset changes the BLAS summation order).
    torch.testing.assert_close(sae.encode_columns(x, idx), full[:, idx], rtol=1e-5, atol=1e-6)
