"""``dictopt train --solver sae-*`` end to end: SAELens-layout folder, reloadable, exact."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch

from dictopt.cli import main
from dictopt.io.native import load_dictionary
from dictopt.problem import objective
from dictopt.solvers import registry

WORLD = ["--world", "independent", "--world-set", "n=2000", "--world-set", "d=16",
         "--world-set", "k=24", "--world-set", "p=0.08"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def _setup(monkeypatch):
    present = [m for m in registry.SOLVER_PROVIDERS if importlib.util.find_spec(m) is not None]
    monkeypatch.setattr(registry, "SOLVER_PROVIDERS", present)


def test_train_topk_writes_saelens_folder(tmp_path, capsys):
    out = tmp_path / "topk"
    rc = main(["train", *WORLD, "--solver", "sae-topk", "--K", "32", "--set", "k=2",
               "--set", "total_steps=100", "--set", "batch_size=128", "--out", str(out),
               "--quiet"])
    assert rc == 0
    assert "saved sae-topk dictionary (K=32, d=16)" in capsys.readouterr().out
    cfg = json.loads((out / "cfg.json").read_text())
    assert cfg["architecture"] == "topk" and cfg["d_in"] == 16 and cfg["d_sae"] == 32
    assert cfg["encoder"]["k"] == 2 and cfg["encoder"]["aux_loss_coefficient"] == 1 / 32
    assert cfg["lam"] is None and "no L1" in cfg["meta"]["lam_conversion"]
    assert cfg["meta"]["train_config"]["total_steps"] == 100
    assert len(cfg["meta"]["train_log"]["step"]) == 10
    D = load_dictionary(out)
    x = torch.randn(50, 16, dtype=torch.float32)
    assert torch.allclose(D.decode(D.encode(x)), D.encoder(x).to(D.dtype), atol=1e-5)


def test_train_relu_records_lambda_and_its_convention(tmp_path, capsys):
    out = tmp_path / "relu"
    rc = main(["train", *WORLD, "--solver", "sae-relu", "--K", "32", "--lam", "0.2",
               "--set", "total_steps=50", "--set", "dtype=\"float64\"", "--out", str(out),
               "--quiet"])
    assert rc == 0
    assert "explained variance" in capsys.readouterr().out
    cfg = json.loads((out / "cfg.json").read_text())
    assert cfg["lam"] == pytest.approx(0.2, rel=1e-12)
    assert cfg["encoder"]["l1_coefficient"] == pytest.approx(0.4, rel=1e-12)
    assert "l1_coefficient / 2" in cfg["meta"]["lam_conversion"]
    D = load_dictionary(out)
    x = np.random.default_rng(0).standard_normal((40, 16))
    assert 2 * objective(D, x, D.encode(x)).loss == pytest.approx(D.encoder.loss(x), rel=1e-6)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--solver", "sae-topk", "--K", "4", "--set", "k=9"], "k: 9 exceeds"),
        (["--solver", "sae-relu", "--K", "8", "--lam", "-1"], "--lam"),
        (["--solver", "sae-relu", "--K", "8"], "needs λ"),
        (["--solver", "sae-topk", "--K", "8", "--set", "lr=-1"], "lr"),
        (["--solver", "sae-jumprelu", "--K", "8", "--set", "l0_coefficient=-1"], "l0_coefficient"),
    ],
)
def test_train_bad_input_exits_2(args, message, tmp_path, capsys):
    rc = main(["train", *WORLD, *args, "--out", str(tmp_path / "x"), "--quiet"])
    assert rc == 2
    assert message in capsys.readouterr().err
