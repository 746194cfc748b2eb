"""``dictopt wide``: argument parsing, bad input, and an end-to-end run (needs the classical
solver of branch ``coding``)."""

from __future__ import annotations

import json

import pytest

from dictopt.cli import main
from dictopt.cli.wide import parse_seeds, parse_widths
from dictopt.validation import DictoptInputError


def test_parse_widths_and_seeds() -> None:
    assert parse_widths("2,4, 8") == [2, 4, 8]
    assert parse_seeds("3", 5) == [5, 6, 7]
    assert parse_seeds("0,9", 5) == [0, 9]
    assert parse_seeds("4,", 0) == [4]
    with pytest.raises(DictoptInputError, match="--K"):
        parse_widths("2,four")
    with pytest.raises(DictoptInputError, match="--seeds"):
        parse_seeds("0", 0)
    with pytest.raises(DictoptInputError, match="--seeds"):
        parse_seeds("a", 0)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--K", "4,2", "--lam", "0.1"], "increasing"),
        (["--K", "2,4", "--lam", "0"], "--lam"),
        (["--K", "2,400", "--lam", "0.1"], "exceeds N"),
    ],
)
def test_bad_input_exits_2(tmp_path, capsys, extra, message) -> None:
    argv = ["wide", "--world", "rays", "--world-set", "n=50", "--out", str(tmp_path)] + extra
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_end_to_end(tmp_path) -> None:
    argv = [
        "wide", "--world", "rays", "--world-set", "n=20", "--world-set", "d=3",
        "--world-set", "n_rays=2", "--K", "1,20", "--seeds", "1", "--lam", "0.2",
        "--set", "max_iter=300", "--out", str(tmp_path), "--quiet",
    ]
    assert main(argv) == 0
    data = json.loads((tmp_path / "wide.json").read_text())
    assert data["l_inf"] > 0 and len(data["bias"]) == 3
    assert [row["K"] for row in data["rows"]] == [1, 20]
    assert all(row["best"] >= data["l_inf"] - 1e-10 for row in data["rows"])
    assert data["rows"][-1]["attained"]
