"""dictopt's native folder format (SAELens layout): round trips and clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from dictopt import Dictionary, DictoptInputError
from dictopt.io.native import CONFIG_FILE, WEIGHTS_FILE, load_dictionary, save_dictionary
from dictopt.problem import register_encoder


@register_encoder
class _AffineReluEncoder:
    """ReLU(x W_enc + b_enc): enough to test that encoders survive save/load."""

    architecture = "test-affine-relu"

    def __init__(self, W_enc, b_enc):
        self.W_enc, self.b_enc = W_enc, b_enc

    def encode(self, x):
        return torch.relu(x @ self.W_enc + self.b_enc)

    def config(self):
        return {"note": "test"}

    def tensors(self):
        return {"W_enc": self.W_enc, "b_enc": self.b_enc}

    @classmethod
    def from_saved(cls, config, tensors):
        assert config == {"note": "test"}
        return cls(tensors["W_enc"], tensors["b_enc"])


def _sae_dictionary(seed=0, k=5, d=3):
    g = torch.Generator().manual_seed(seed)
    W_dec = torch.randn(k, d, generator=g, dtype=torch.float64) * 2.5
    enc = _AffineReluEncoder(
        torch.randn(d, k, generator=g, dtype=torch.float64), torch.zeros(k, dtype=torch.float64)
    )
    return Dictionary.from_decoder(
        W_dec, torch.ones(d, dtype=torch.float64), lam=0.2, encoder=enc, meta={"solver": "test"}
    )


def test_round_trip_with_encoder_keeps_codes_and_raw_decoder(tmp_path):
    D = _sae_dictionary()
    save_dictionary(D, tmp_path)
    weights = load_file(str(tmp_path / WEIGHTS_FILE))
    assert weights["W_dec"].shape == (D.K, D.d)  # SAELens orientation, raw scale
    assert torch.allclose(weights["W_dec"], D.decoder)
    cfg = json.loads((tmp_path / CONFIG_FILE).read_text())
    assert (cfg["architecture"], cfg["d_in"], cfg["d_sae"], cfg["lam"]) == (
        "test-affine-relu",
        3,
        5,
        0.2,
    )
    E = load_dictionary(tmp_path)
    x = torch.randn(20, 3, dtype=torch.float64)
    assert torch.allclose(E.encode(x), D.encode(x))
    assert torch.allclose(E.atoms, D.atoms) and torch.allclose(E.bias, D.bias)
    assert E.meta == {"solver": "test"} and E.lam == 0.2


def test_round_trip_lasso_dictionary(tmp_path):
    rng = np.random.default_rng(0)
    atoms = rng.normal(size=(4, 6))
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    D = Dictionary(atoms, rng.normal(size=6), lam=0.7, has_bias=True)
    E = load_dictionary(save_dictionary(D, tmp_path / "d"))
    assert E.encoder is None and E.lam == 0.7
    assert torch.allclose(E.atoms, D.atoms) and torch.allclose(
        E.code_scale, torch.ones(4, dtype=torch.float64)
    )


def test_missing_and_corrupt_files_are_named(tmp_path):
    with pytest.raises(DictoptInputError, match="cfg.json: no such file"):
        load_dictionary(tmp_path)
    save_dictionary(_sae_dictionary(), tmp_path)
    (tmp_path / WEIGHTS_FILE).write_bytes(b"\x00garbage" * 10)
    with pytest.raises(DictoptInputError, match="sae_weights.safetensors: corrupt"):
        load_dictionary(tmp_path)
    (tmp_path / CONFIG_FILE).write_text("{not json")
    with pytest.raises(DictoptInputError, match="cfg.json: not valid JSON"):
        load_dictionary(tmp_path)


def test_config_disagreeing_with_weights_and_unknown_architecture(tmp_path):
    save_dictionary(_sae_dictionary(), tmp_path)
    cfg = json.loads((tmp_path / CONFIG_FILE).read_text())
    cfg["d_sae"] = 7
    (tmp_path / CONFIG_FILE).write_text(json.dumps(cfg))
    with pytest.raises(DictoptInputError, match="d_sae = 7 disagrees with W_dec"):
        load_dictionary(tmp_path)
    cfg["d_sae"], cfg["architecture"] = 5, "no-such-sae"
    (tmp_path / CONFIG_FILE).write_text(json.dumps(cfg))
    with pytest.raises(DictoptInputError, match="unknown encoder architecture 'no-such-sae'"):
        load_dictionary(tmp_path)
