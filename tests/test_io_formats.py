"""Foreign formats without their libraries: fixtures reproduce each library's on-disk layout
(key names, orientations, config keys) exactly as its save code writes it, and a reference
forward pass written from the library's maths checks dictopt's reconstructions and codes.

dictionary_learning, EleutherAI sparsify and OpenAI sparse_autoencoder are not installable
here; SAELens layouts are also covered here by hand-written fixtures (pre-6.0 configs, scaling
factors) and against the real library in test_io_saelens.py.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from dictopt.io import detect_format, export, load, load_dictionary, save_dictionary
from dictopt.io.conventions import implied_lambda
from dictopt.problem import Dictionary, objective
from dictopt.validation import DictoptInputError

D_IN, K, N = 6, 10, 64
TOL = 1e-5


@pytest.fixture
def x() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randn(N, D_IN, generator=g) * 1.5 + 0.3


def rnd(*shape: int, seed: int, scale: float = 0.5) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g) * scale


def close(a: torch.Tensor, b: torch.Tensor, tol: float = TOL) -> bool:
    return float((a.double() - b.double()).abs().max()) <= tol


# -- reference forward passes (from each library's maths) ----------------------------------


def relu(t: torch.Tensor) -> torch.Tensor:
    return torch.clamp(t, min=0)


def dl_forward(cls: str, s: dict[str, torch.Tensor], x: torch.Tensor):
    """dictionary_learning encode/decode; returns (its codes, reconstruction)."""
    if cls == "AutoEncoder":
        f = relu((x - s["bias"]) @ s["encoder.weight"].T + s["encoder.bias"])
        return f, f @ s["decoder.weight"].T + s["bias"]
    if cls == "AutoEncoderNew":
        f = relu(x @ s["encoder.weight"].T + s["encoder.bias"])
        return f, f @ s["decoder.weight"].T + s["decoder.bias"]
    if cls == "GatedAutoEncoder":
        xe = (x - s["decoder_bias"]) @ s["encoder.weight"].T
        f = (xe + s["gate_bias"] > 0).float() * relu(s["r_mag"].exp() * xe + s["mag_bias"])
        norms = s["decoder.weight"].norm(dim=0)
        f = f * norms  # GatedAutoEncoder.encode returns codes times decoder norms
        return f, (f / norms) @ s["decoder.weight"].T + s["decoder_bias"]
    if cls == "AutoEncoderTopK":
        post = relu((x - s["b_dec"]) @ s["encoder.weight"].T + s["encoder.bias"])
        v, i = post.topk(int(s["k"]), dim=-1)
        f = torch.zeros_like(post).scatter(-1, i, v)
        return f, f @ s["decoder.weight"].T + s["b_dec"]
    if cls == "BatchTopKSAE":
        post = relu((x - s["b_dec"]) @ s["encoder.weight"].T + s["encoder.bias"])
        f = post * (post > s["threshold"])
        return f, f @ s["decoder.weight"].T + s["b_dec"]
    if cls == "MatryoshkaBatchTopKSAE":
        post = relu((x - s["b_dec"]) @ s["W_enc"] + s["b_enc"])
        f = post * (post > s["threshold"])
        return f, f @ s["W_dec"] + s["b_dec"]
    if cls == "JumpReluAutoEncoder":
        pre = x @ s["W_enc"] + s["b_enc"]
        norms = s["W_dec"].norm(dim=1)
        f = relu(pre * (pre > s["threshold"])) * norms
        return f, (f / norms) @ s["W_dec"] + s["b_dec"]
    raise AssertionError(cls)


def dl_state(cls: str, seed: int = 0, d: int = D_IN, k: int = K) -> dict[str, torch.Tensor]:
    """A state dict with dictionary_learning's names and nn.Linear orientations."""
    enc_w, dec_w = rnd(k, d, seed=seed), rnd(d, k, seed=seed + 1) + 0.1
    b_k, b_d = rnd(k, seed=seed + 2, scale=0.2), rnd(d, seed=seed + 3, scale=0.3)
    if cls == "AutoEncoder":
        return {"bias": b_d, "encoder.weight": enc_w, "encoder.bias": b_k,
                "decoder.weight": dec_w}
    if cls == "AutoEncoderNew":
        return {"encoder.weight": enc_w, "encoder.bias": b_k, "decoder.weight": dec_w,
                "decoder.bias": b_d}
    if cls == "GatedAutoEncoder":
        return {"decoder_bias": b_d, "encoder.weight": enc_w, "r_mag": rnd(k, seed=9, scale=.3),
                "gate_bias": b_k, "mag_bias": rnd(k, seed=8, scale=.2), "decoder.weight": dec_w}
    if cls in ("AutoEncoderTopK", "BatchTopKSAE"):
        return {"k": torch.tensor(3, dtype=torch.int32),
                "threshold": torch.tensor(0.15 if cls == "BatchTopKSAE" else -1.0),
                "decoder.weight": dec_w, "encoder.weight": enc_w, "encoder.bias": b_k,
                "b_dec": b_d}
    if cls == "MatryoshkaBatchTopKSAE":
        return {"k": torch.tensor(3, dtype=torch.int32), "threshold": torch.tensor(0.1),
                "group_sizes": torch.tensor([k // 2, k - k // 2]), "W_enc": enc_w.T,
                "b_enc": b_k, "W_dec": dec_w.T, "b_dec": b_d}
    if cls == "JumpReluAutoEncoder":
        thr = rnd(k, seed=7, scale=0.2)  # some negative: they act as 0
        return {"W_enc": enc_w.T, "b_enc": b_k, "W_dec": dec_w.T, "b_dec": b_d,
                "threshold": thr}
    raise AssertionError(cls)


def write_dl(folder, cls, state, **trainer):
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(state, folder / "ae.pt")
    d, k = (state["W_enc"].shape if "W_enc" in state else state["encoder.weight"].shape[::-1])
    cfg = {"trainer": {"dict_class": cls, "activation_dim": d, "dict_size": k,
                       "lm_name": "toy", "layer": 0, **trainer},
           "buffer": {"d_submodule": d}}
    (folder / "config.json").write_text(json.dumps(cfg, indent=4))
    return folder


DL_CLASSES = ["AutoEncoder", "AutoEncoderNew", "GatedAutoEncoder", "AutoEncoderTopK",
              "BatchTopKSAE", "MatryoshkaBatchTopKSAE", "JumpReluAutoEncoder"]


# -- dictionary_learning ---------------------------------------------------------------------


@pytest.mark.parametrize("cls", DL_CLASSES)
def test_dictionary_learning_round_trip(tmp_path, x, cls):
    state = dl_state(cls)
    folder = write_dl(tmp_path / cls, cls, state, l1_penalty=0.3)
    assert detect_format(folder) == "dictionary_learning"
    D = load(folder)
    f_ref, rec_ref = dl_forward(cls, state, x)
    assert close(D.decode(D.encode(x)), rec_ref)
    assert D.meta["library"] == "dictionary_learning" and D.meta["dict_class"] == cls
    if cls in ("GatedAutoEncoder", "JumpReluAutoEncoder"):
        assert close(D.encode(x), f_ref)  # their encode returns canonical (norm-scaled) codes
    else:
        assert close(D.encoder.encode(x), f_ref)
    assert bool((D.atoms.norm(dim=1) - 1).abs().max() < 1e-5)
    expected_lam = 0.15 if cls in ("AutoEncoder", "AutoEncoderNew") else None
    assert D.lam == pytest.approx(expected_lam) if expected_lam else D.lam is None
    # Without config.json the key names alone identify the class (BatchTopKSAE and
    # AutoEncoderTopK share theirs; then the TopK reading is taken).
    (folder / "config.json").unlink()
    if cls != "BatchTopKSAE":
        assert close(load(folder / "ae.pt").decode(load(folder).encode(x)), rec_ref)


def test_dictionary_learning_square_is_unambiguous(tmp_path, x):
    # nn.Linear fixes the orientation, so d_in = d_sae loads without a guess.
    state = dl_state("AutoEncoder", d=D_IN, k=D_IN)
    D = load(write_dl(tmp_path / "sq", "AutoEncoder", state))
    assert close(D.decode(D.encode(x)), dl_forward("AutoEncoder", state, x)[1])


def test_dictionary_learning_norm_factor_lambda(tmp_path):
    state = dl_state("AutoEncoder")
    D = load(write_dl(tmp_path / "nf", "AutoEncoder", state, l1_penalty=0.4, norm_factor=2.5))
    assert D.lam == pytest.approx(0.4 * 2.5 / 2)
    assert D.meta["lam_factor"] == pytest.approx(1.25)


def test_dictionary_learning_errors(tmp_path):
    state = dl_state("AutoEncoder")
    backup = tmp_path / "backup"
    backup.mkdir()
    torch.save({"step": 10, "ae": state, "optimizer": {}, "config": {}, "norm_factor": 3.0},
               backup / "ae.pt")
    with pytest.raises(DictoptInputError, match="interrupted-training backup"):
        load(backup)
    bad = dict(state)
    bad["decoder.weight"] = state["decoder.weight"].T.contiguous()  # rows as atoms: wrong
    with pytest.raises(DictoptInputError, match=r"decoder.*transpose"):
        load(write_dl(tmp_path / "t", "AutoEncoder", bad))
    folder = write_dl(tmp_path / "m", "AutoEncoder", state)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["trainer"]["dict_size"] = K + 1
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(DictoptInputError, match="config.json: trainer.dict_size"):
        load(folder)
    cfg["trainer"]["dict_size"], cfg["trainer"]["dict_class"] = K, "Wobble"
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(DictoptInputError, match="unknown dict_class 'Wobble'"):
        load(folder)
    (folder / "ae.pt").write_bytes(b"not a torch file")
    with pytest.raises(DictoptInputError, match="ae.pt: corrupt"):
        load(folder)


# -- sparsify ----------------------------------------------------------------------------------


def write_sparsify(folder, *, activation="topk", k=3, transpose=False, **extra):
    folder.mkdir(parents=True, exist_ok=True)
    W_dec = rnd(K, D_IN, seed=3) + 0.05
    tensors = {"encoder.weight": rnd(K, D_IN, seed=4), "encoder.bias": rnd(K, seed=5, scale=.1),
               "W_dec": W_dec.T.contiguous() if transpose else W_dec,
               "b_dec": rnd(D_IN, seed=6, scale=.2)}
    save_file(tensors, str(folder / "sae.safetensors"))
    cfg = {"activation": activation, "expansion_factor": 32, "normalize_decoder": True,
           "num_latents": K, "k": k, "multi_topk": False, "skip_connection": False,
           "transcode": False, **extra, "d_in": D_IN}
    (folder / "cfg.json").write_text(json.dumps(cfg))
    return folder, tensors


@pytest.mark.parametrize("activation,k", [("topk", 3), ("groupmax", 5)])
def test_sparsify_round_trip(tmp_path, x, activation, k):
    folder, t = write_sparsify(tmp_path / activation, activation=activation, k=k)
    assert detect_format(folder) == "sparsify"
    D = load(folder)
    pre = relu((x - t["b_dec"]) @ t["encoder.weight"].T + t["encoder.bias"])
    if activation == "topk":
        v, i = pre.topk(k, dim=-1)
        f = torch.zeros_like(pre).scatter(-1, i, v)
    else:
        groups = pre.unflatten(-1, (k, -1))
        v, i = groups.max(dim=-1, keepdim=True)
        f = torch.zeros_like(groups).scatter(-1, i, v).flatten(-2)
    assert close(D.encoder.encode(x), f)
    assert close(D.decode(D.encode(x)), f @ t["W_dec"] + t["b_dec"])
    assert D.lam is None
    # The groupmax encoder saves and reloads through dictopt's native format.
    again = load_dictionary(save_dictionary(D, tmp_path / f"native_{activation}"))
    assert close(again.decode(again.encode(x)), D.decode(D.encode(x)))


def test_sparsify_errors(tmp_path):
    with pytest.raises(DictoptInputError, match=r"'W_dec' has shape \(6, 10\).*transpose"):
        load(write_sparsify(tmp_path / "t", transpose=True)[0])
    with pytest.raises(DictoptInputError, match="transcoder"):
        load(write_sparsify(tmp_path / "tc", transcode=True)[0])
    with pytest.raises(DictoptInputError, match="skip_connection"):
        load(write_sparsify(tmp_path / "sk", skip_connection=True)[0])
    with pytest.raises(DictoptInputError, match="unknown activation"):
        load(write_sparsify(tmp_path / "ua", activation="softmax")[0])


# -- OpenAI sparse_autoencoder ---------------------------------------------------------------


def openai_state(activation: str) -> dict:
    state = {"pre_bias": rnd(D_IN, seed=10, scale=.2), "latent_bias": rnd(K, seed=11, scale=.1),
             "stats_last_nonzero": torch.zeros(K, dtype=torch.long),
             "latents_activation_frequency": torch.ones(K),
             "latents_mean_square": torch.zeros(K),
             "encoder.weight": rnd(K, D_IN, seed=12), "decoder.weight": rnd(D_IN, K, seed=13),
             "activation": activation}
    if activation == "TopK":
        state["activation_state_dict"] = {"k": 4, "postact_fn": "ReLU"}
    return state


def test_openai_relu_and_topk(tmp_path, x):
    for act in ("ReLU", "TopK"):
        s = openai_state(act)
        path = tmp_path / f"{act}.pt"
        torch.save(s, path)
        assert detect_format(path) == "openai"
        xin = x
        if act == "TopK":
            with pytest.raises(DictoptInputError, match="layer-normalises"):
                load(path)
            D = load(path, allow_input_transform=True)
            from dictopt.io.openai import layer_norm

            xin = layer_norm(x)
            assert D.meta["input_transform"] == "layer_norm"
        else:
            D = load(path)
        pre = (xin - s["pre_bias"]) @ s["encoder.weight"].T + s["latent_bias"]
        if act == "TopK":
            v, i = pre.topk(4, dim=-1)
            f = torch.zeros_like(pre).scatter(-1, i, relu(v))
        else:
            f = relu(pre)
        assert close(D.encoder.encode(xin), f)
        assert close(D.decode(D.encode(xin)), f @ s["decoder.weight"].T + s["pre_bias"])


# -- npz and scikit-learn --------------------------------------------------------------------


def test_npz_orientation_and_errors(tmp_path, x):
    W, b = rnd(K, D_IN, seed=20).double(), rnd(D_IN, seed=21).double()
    np.savez(tmp_path / "ok.npz", atoms=W.numpy(), bias=b.numpy(), lam=0.2)
    D = load(tmp_path / "ok.npz")
    assert D.lam == 0.2 and close(D.decoder, W, 1e-12)
    np.savez(tmp_path / "tr.npz", dictionary=W.T.numpy(), bias=b.numpy())
    with pytest.raises(DictoptInputError, match=r"it is \[d, K\]"):
        load(tmp_path / "tr.npz")
    np.savez(tmp_path / "sq.npz", dictionary=rnd(4, 4, seed=1).numpy(), d_in=4)
    with pytest.raises(DictoptInputError, match="square"):
        load(tmp_path / "sq.npz")
    np.savez(tmp_path / "nosize.npz", dictionary=W.numpy())
    with pytest.raises(DictoptInputError, match="cannot verify the orientation"):
        load(tmp_path / "nosize.npz")
    (tmp_path / "bad.npz").write_bytes(b"garbage")
    with pytest.raises(DictoptInputError, match="bad.npz: corrupt"):
        load(tmp_path / "bad.npz")


def test_sklearn_lambda_is_alpha(x):
    """sklearn's codes at α satisfy C1 (code KKT) of THEORY §1 at λ = α: the sum-vs-mean and
    ½ conventions map α to λ with factor 1."""
    from sklearn.decomposition import MiniBatchDictionaryLearning, sparse_encode

    from dictopt.io.arrays import from_sklearn
    from dictopt.solvers.coding import kkt_violations

    X = x.double().numpy()
    est = MiniBatchDictionaryLearning(n_components=K, alpha=0.3, positive_code=True,
                                      fit_algorithm="cd", transform_algorithm="lasso_cd",
                                      random_state=0,
                                      max_iter=20).fit(X)
    D = from_sklearn(est)
    assert D.lam == 0.3 and not D.has_bias
    U = sparse_encode(X, est.components_, algorithm="lasso_cd", alpha=0.3, positive=True,
                      max_iter=5000)
    a = torch.as_tensor(U) * D.code_scale  # canonical codes
    viol = kkt_violations(D.atoms, torch.as_tensor(X), a, D.lam)
    assert float(viol.max()) / D.lam < 1e-3
    # A factor-2 error in λ would break C1 badly.
    assert float(kkt_violations(D.atoms, torch.as_tensor(X), a, 2 * D.lam).max()) / D.lam > 0.1


# -- exporters -------------------------------------------------------------------------------


def dictopt_sae(arch: str, apply_b: bool, **fields):
    from dictopt.solvers.sae import make_config, make_sae

    cfg = make_config(arch, d_in=D_IN, d_sae=K, dtype="float64",
                      apply_b_dec_to_input=apply_b, **fields)
    sae = make_sae(cfg, seed=3)
    with torch.no_grad():
        for name, p in sae.named_parameters():
            p.copy_(rnd(*p.shape, seed=len(name), scale=0.4).double().abs()
                    if name == "threshold" else p + rnd(*p.shape, seed=len(name), scale=.2))
    if arch == "batchtopk":
        sae.topk_threshold.fill_(0.2)
    return sae


@pytest.mark.parametrize("to", ["saelens", "dictionary_learning", "native"])
@pytest.mark.parametrize("arch,fields", [("relu", {"l1_coefficient": 0.6}), ("topk", {"k": 3}),
                                         ("batchtopk", {"k": 3.0}), ("jumprelu", {})])
@pytest.mark.parametrize("apply_b", [True, False])
def test_export_round_trip(tmp_path, x, to, arch, fields, apply_b):
    D = dictopt_sae(arch, apply_b, **fields).to_dictionary()
    x64 = x.double()
    back = load(export(D, tmp_path / "out", to))
    assert close(back.decode(back.encode(x64)), D.decode(D.encode(x64)), 1e-10)
    assert close(back.encode(x64), D.encode(x64), 1e-10)
    if arch == "relu":
        assert back.lam == pytest.approx(0.3)


def test_gated_export_round_trip(tmp_path, x):
    folder = write_dl(tmp_path / "g", "GatedAutoEncoder", dl_state("GatedAutoEncoder"))
    D = load(folder)
    for to in ("saelens", "dictionary_learning", "native"):
        back = load(export(D, tmp_path / to, to))
        assert close(back.decode(back.encode(x)), D.decode(D.encode(x)))


def test_export_refuses_lasso_dictionary(tmp_path):
    D = Dictionary.from_decoder(rnd(K, D_IN, seed=1), lam=0.1)
    for to in ("saelens", "dictionary_learning"):
        with pytest.raises(DictoptInputError, match="optimal lasso codes"):
            export(D, tmp_path / to, to)


# -- SAELens layouts written by hand (pre-6.0, scaling factors, bad input) --------------------


def write_saelens(folder, cfg, tensors):
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()},
              str(folder / "sae_weights.safetensors"))
    (folder / "cfg.json").write_text(json.dumps(cfg))
    return folder


def saelens_tensors(seed=0):
    return {"W_enc": rnd(D_IN, K, seed=seed), "b_enc": rnd(K, seed=seed + 1, scale=.1),
            "W_dec": rnd(K, D_IN, seed=seed + 2) + 0.05, "b_dec": rnd(D_IN, seed=seed + 3)}


def test_saelens_pre6_topk_and_finetuning_scale(tmp_path, x):
    t = saelens_tensors()
    t["scaling_factor"] = 1 + rnd(K, seed=30, scale=.2).abs()
    cfg = {"d_in": D_IN, "d_sae": K, "activation_fn_str": "topk",
           "activation_fn_kwargs": {"k": 4}, "apply_b_dec_to_input": True,
           "normalize_activations": False, "finetuning_scaling_factor": True,
           "hook_point": "blocks.0.hook_resid_pre", "model_name": "toy", "dtype": "float32",
           "sae_lens_training_version": "3.5.0"}
    D = load(write_saelens(tmp_path / "p", cfg, t))
    pre = (x - t["b_dec"]) @ t["W_enc"] + t["b_enc"]
    v, i = pre.topk(4, dim=-1)
    f = torch.zeros_like(pre).scatter(-1, i, relu(v))
    assert D.meta["architecture"] == "topk" and D.meta["sae_lens_config_version"] == "pre-6.0"
    assert close(D.decode(D.encode(x)), (f * t["scaling_factor"]) @ t["W_dec"] + t["b_dec"])
    t2 = dict(t)
    del t2["scaling_factor"]
    with pytest.raises(DictoptInputError, match="missing tensor 'scaling_factor'"):
        load(write_saelens(tmp_path / "nosf", cfg, t2))


def test_saelens_activation_scaling(tmp_path, x):
    """expected_average_only_in: folding s reproduces the SAE on s·x, and λ = c / (2 s)."""
    t = saelens_tensors(5)
    s = 2.5
    cfg = {"architecture": "standard", "d_in": D_IN, "d_sae": K, "dtype": "float32",
           "apply_b_dec_to_input": True, "normalize_activations": "expected_average_only_in",
           "metadata": {"sae_lens_version": "6.54.12", "training_architecture_details":
                        {"l1_coefficient": 0.8, "lp_norm": 1.0}}}
    folder = write_saelens(tmp_path / "s", cfg, t)
    with pytest.raises(DictoptInputError, match=r"activation_scaler.json with key 'scaling_f"):
        load(folder)
    (folder / "activation_scaler.json").write_text(json.dumps({"scaling_factor": None}))
    with pytest.raises(DictoptInputError, match="'scaling_factor' is missing or null"):
        load(folder)
    (folder / "activation_scaler.json").write_text(json.dumps({"scaling_factor": s}))
    D = load(folder)
    f = relu((s * x - t["b_dec"]) @ t["W_enc"] + t["b_enc"])
    assert close(D.decode(D.encode(x)), (f @ t["W_dec"] + t["b_dec"]) / s)
    assert D.lam == pytest.approx(0.8 / (2 * s))
    # The SAELens loss on s·x equals s² × 2 × the canonical loss on x at that λ.
    rec_s = f @ t["W_dec"] + t["b_dec"]
    sl_loss = float(((rec_s - s * x) ** 2).sum(-1).mean()
                    + 0.8 * (f * t["W_dec"].norm(dim=1)).sum(-1).mean())
    canon = objective(D.to(torch.float64), x.double(), D.encode(x).double()).loss
    assert sl_loss == pytest.approx(2 * s * s * canon, rel=1e-5)


def test_saelens_bad_input(tmp_path):
    t = saelens_tensors()
    cfg = {"architecture": "standard", "d_in": D_IN, "d_sae": K,
           "metadata": {"sae_lens_version": "6.54.12"}}
    folder = write_saelens(tmp_path / "ok", cfg, t)
    (folder / "sae_weights.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{bad")
    with pytest.raises(DictoptInputError, match="sae_weights.safetensors: corrupt"):
        load(folder)
    bad = dict(cfg, d_sae=K + 2)
    with pytest.raises(DictoptInputError, match=r"'W_dec' has shape \(10, 6\).*d_sae=12"):
        load(write_saelens(tmp_path / "shape", bad, t))
    with pytest.raises(DictoptInputError, match="unknown or unsupported architecture 'wavy'"):
        load(write_saelens(tmp_path / "arch", dict(cfg, architecture="wavy"), t))
    t2 = dict(t)
    t2["W_dec"] = t["W_dec"].T
    with pytest.raises(DictoptInputError, match="transpose of the expected layout"):
        load(write_saelens(tmp_path / "tr", cfg, t2))
    with pytest.raises(DictoptInputError, match="missing key 'd_in'"):
        load(write_saelens(tmp_path / "nod", {"architecture": "standard", "d_sae": K}, t))
    ln = dict(cfg, normalize_activations="layer_norm")
    with pytest.raises(DictoptInputError, match="rescales every input point"):
        load(write_saelens(tmp_path / "ln", ln, t))


def test_detect_format_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DictoptInputError, match="looked for cfg.json"):
        load(tmp_path / "empty")
    torch.save({"foo": torch.zeros(2)}, tmp_path / "x.pt")
    with pytest.raises(DictoptInputError, match="matches no known SAE layout"):
        load(tmp_path / "x.pt")
    with pytest.raises(DictoptInputError, match="unknown 'zip'"):
        load(tmp_path / "x.pt", "zip")


# -- implied λ ---------------------------------------------------------------------------------


class _SoftThreshold:
    """Orthonormal atoms, a_k = ReLU(x·d_k − t_k): then d_k·r = t_k exactly where a_k > 0."""

    architecture = "test-soft-threshold"

    def __init__(self, atoms, t):
        self.atoms, self.t = atoms, t

    def encode(self, x):
        return relu(x @ self.atoms.T - self.t)


def test_implied_lambda_analytic():
    g = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(8, 8, generator=g, dtype=torch.float64))
    atoms = Q[:5]
    t = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5], dtype=torch.float64)
    D = Dictionary(atoms, torch.zeros(8, dtype=torch.float64), encoder=_SoftThreshold(atoms, t))
    X = torch.randn(4000, 8, generator=g, dtype=torch.float64) * 2
    imp = implied_lambda(D, X)
    assert torch.allclose(imp.per_atom_median, t, atol=1e-12)
    active = (X @ atoms.T - t > 0)
    expected = torch.cat([t[k].expand(int(active[:, k].sum())) for k in range(5)]).median()
    assert imp.lam == pytest.approx(float(expected), abs=1e-12)
    w = (relu(X @ atoms.T - t) * t).sum() / relu(X @ atoms.T - t).sum()
    assert imp.weighted_mean == pytest.approx(float(w), rel=1e-10)


def test_implied_lambda_of_lasso_codes_is_lambda():
    from dictopt.solvers.coding import solve_codes

    g = torch.Generator().manual_seed(2)
    W = torch.randn(7, 5, generator=g, dtype=torch.float64)
    W = W / W.norm(dim=1, keepdim=True)
    X = torch.randn(300, 5, generator=g, dtype=torch.float64)

    class Lasso:
        architecture = "test-lasso"

        def encode(self, x):
            return solve_codes(W, x, 0.25, tol=1e-12).codes

    imp = implied_lambda(Dictionary(W, torch.zeros(5, dtype=torch.float64), encoder=Lasso()), X)
    assert imp.lam == pytest.approx(0.25, abs=1e-8)
    assert imp.quantiles[0.05] == pytest.approx(0.25, abs=1e-8)
    assert imp.inactive_above < 0.01 and not math.isnan(imp.atom_spread)


def test_implied_lambda_needs_encoder():
    with pytest.raises(DictoptInputError, match="no encoder"):
        implied_lambda(Dictionary.from_decoder(rnd(3, 4, seed=0)), rnd(5, 4, seed=1))


# -- command line ------------------------------------------------------------------------------


def test_cli_convert_and_check_implied(tmp_path, x, capsys):
    """TopK with k = 1, tied unit atoms and encoder bias −0.3: d·r = 0.3 on every active code,
    so the implied λ is exactly 0.3; the check runs on the dictionary_learning folder."""
    from dictopt.cli import main

    state = dl_state("AutoEncoderTopK")
    dec = state["decoder.weight"] / state["decoder.weight"].norm(dim=0, keepdim=True)
    state.update({"decoder.weight": dec, "encoder.weight": dec.T.contiguous(),
                  "encoder.bias": torch.full((K,), -0.3), "k": torch.tensor(1)})
    folder = write_dl(tmp_path / "dl", "AutoEncoderTopK", state)
    out = tmp_path / "sl"
    assert main(["convert", str(folder), "--to", "saelens", "--out", str(out)]) == 0
    assert detect_format(out) == "saelens"
    back = load(out)
    assert close(back.decode(back.encode(x)), dl_forward("AutoEncoderTopK", state, x)[1])
    np.save(tmp_path / "x.npy", x.numpy().astype(np.float32))
    rc = main(["check", str(folder), "--activations", str(tmp_path / "x.npy"), "--lam",
               "implied", "--json", str(tmp_path / "r.json"), "--quiet", "--certify", "0"])
    assert rc == 0
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["summary"]["lam"] == pytest.approx(0.3, abs=1e-5)
    assert rep["summary"]["implied_lambda"]["lam"] == pytest.approx(0.3, abs=1e-5)
    assert "implied λ" in capsys.readouterr().out
    assert main(["check", str(tmp_path / "nothing"), "--activations",
                 str(tmp_path / "x.npy")]) == 2
