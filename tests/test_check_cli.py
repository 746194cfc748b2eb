"""``dictopt check`` / ``dictopt repair`` on the command line: exit codes, JSON, messages."""

from __future__ import annotations

import json
from typing import Any, ClassVar

import numpy as np
import pytest
import torch

from dictopt.cli import main
from dictopt.data.worlds import make_world
from dictopt.io.native import save_dictionary
from dictopt.problem import Dictionary, register_encoder


@register_encoder
class _TestRelu:
    """A ReLU encoder ``relu((x − b_dec) W_enc + b_enc)`` for CLI tests."""

    architecture: ClassVar[str] = "test-check-relu"

    def __init__(self, W_enc: torch.Tensor, b_enc: torch.Tensor, b_dec: torch.Tensor) -> None:
        self.W_enc, self.b_enc, self.b_dec = W_enc, b_enc, b_dec

    def encode(self, x_ND: torch.Tensor) -> torch.Tensor:
        return torch.relu((x_ND - self.b_dec) @ self.W_enc + self.b_enc)

    def config(self) -> dict[str, Any]:
        return {}

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"W_enc": self.W_enc, "b_enc": self.b_enc}

    @classmethod
    def from_saved(cls, config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> _TestRelu:
        return cls(tensors["W_enc"], tensors["b_enc"], tensors["b_dec"])


@pytest.fixture
def saved(tmp_path):
    w = make_world("hierarchy", seed=0, n=400, d=12, n_roots=2, branching=2, bias_norm=1.0)
    atoms = torch.from_numpy(w.atoms)
    bias = torch.from_numpy(w.bias)
    enc = _TestRelu(atoms.t().contiguous(), torch.full((w.K_true,), -0.05, dtype=atoms.dtype),
                    bias)
    dic = Dictionary(atoms=atoms, bias=bias, lam=0.1, encoder=enc)
    folder = save_dictionary(dic, tmp_path / "sae")
    npy = tmp_path / "acts.npy"
    np.save(npy, w.x)
    return folder, npy, w


def test_cli_check_runs_and_writes_json(saved, tmp_path, capsys):
    folder, npy, w = saved
    out = tmp_path / "report.json"
    rc = main(["check", str(folder), "--activations", str(npy), "--json", str(out), "--quiet"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "dictopt check" in text and "violations:" in text
    data = json.loads(out.read_text())
    assert data["summary"]["N"] == 400 and data["summary"]["K"] == w.K_true
    assert data["summary"]["codes"] == "own"
    measured = [v for v in data["violations"] if v["measured_decrease"] is not None]
    assert measured and all(v["measured_decrease"] > 0 for v in measured)


def test_cli_check_bad_input_exit_codes(saved, tmp_path, capsys):
    folder, npy, w = saved
    narrow = tmp_path / "narrow.npy"
    np.save(narrow, w.x[:, :-1])
    assert main(["check", str(folder), "--activations", str(narrow)]) == 2
    assert "width" in capsys.readouterr().err
    nan = tmp_path / "nan.npy"
    x = w.x.copy()
    x[7, 0] = np.nan
    np.save(nan, x)
    assert main(["check", str(folder), "--activations", str(nan)]) == 2
    assert "row 7" in capsys.readouterr().err
    assert main(["check", str(folder), "--activations", str(npy), "--lam", "-1"]) == 2
    assert "--lam" in capsys.readouterr().err
    assert main(["check", str(tmp_path / "nope"), "--activations", str(npy)]) == 2
