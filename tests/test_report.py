"""The report: HTML/Markdown/JSON contents, empty checks, bad input, CLI, headless browser."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from dictopt.check.report import CheckReport
from dictopt.cli import main
from dictopt.plots.html import load_check, top_pairs, write_report
from dictopt.validation import DictoptInputError
from tests._plots_world import planted


@pytest.fixture(scope="module")
def world():
    return planted()


@pytest.fixture(scope="module")
def empty_report(world):
    _, _, _, report = world
    summary = dict(report.summary)
    summary["unstable_optimum"] = False
    summary["counts"] = {k: 0 for k in summary["counts"]}
    return CheckReport(summary, report.atoms, [], [])


def test_html_has_summary_violations_and_hull_plots(world, tmp_path):
    D, x, codes, report = world
    out = write_report(report, tmp_path / "r.html", data=x, dictionary=D, codes=codes, top=2)
    text = out.read_text()
    assert "id='summary'" in text and "id='violations'" in text
    assert "NOT a local minimum" in text
    assert "id='hull_1_0'" in text  # the planted hierarchy is the top pair
    imgs = re.findall(r"src='data:image/png;base64,", text)
    # one hull plot per top pair, the co-occurrence scatter, the violation map, the bars
    assert len(imgs) == len(top_pairs(report, 2)) + 3
    assert "http://" not in text and "https://" not in text  # self-contained


def test_without_codes_the_hull_plots_are_a_note(world, tmp_path):
    _, _, _, report = world
    text = write_report(report, tmp_path / "r.html").read_text()
    assert "need the codes" in text and "id='hull_1_0'" not in text


def test_empty_check_gives_clear_report(empty_report, tmp_path):
    text = write_report(empty_report, tmp_path / "e.html").read_text()
    assert "All first-order conditions hold" in text
    assert "No violations: nothing to rank." in text
    assert "No C5 violations" in text
    md = write_report(empty_report, tmp_path / "e.md").read_text()
    assert "All first-order conditions hold" in md


def test_json_and_md_formats(world, tmp_path):
    _, _, _, report = world
    path = report.save_json(tmp_path / "check.json")
    js = json.loads(write_report(path, tmp_path / "out.json").read_text())
    assert js["schema"] == "dictopt.check/1"
    assert js["report"]["verdict"].startswith("NOT a local minimum")
    assert len(js["violations"]) == len(report.violations)
    md = write_report(tmp_path, tmp_path / "x", format="md").read_text()  # folder in, folder out
    assert "| rank | condition |" in md and "| C5 | (1, 0) | hierarchy |" in md
    assert (tmp_path / "x" / "report.md").exists()


def test_load_check_roundtrip(world, tmp_path):
    _, _, _, report = world
    back = load_check(report.save_json(tmp_path / "c.json"))
    assert back.summary["counts"] == report.summary["counts"]
    assert [(v.i, v.j, v.label) for v in back.violations] == [
        (v.i, v.j, v.label) for v in report.violations]


def test_bad_input(world, tmp_path):
    _, _, _, report = world
    with pytest.raises(DictoptInputError, match="no such file"):
        load_check(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DictoptInputError, match="not valid JSON"):
        load_check(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text('{"rows": []}')
    with pytest.raises(DictoptInputError, match="not a dictopt check report"):
        load_check(tmp_path / "other.json")
    with pytest.raises(DictoptInputError, match="format"):
        write_report(report, tmp_path / "r.pdf")
    with pytest.raises(DictoptInputError, match="no such"):
        write_report(report, tmp_path / "r.html", data=tmp_path / "nope.npy",
                     dictionary=tmp_path / "nodir")
    with pytest.raises(DictoptInputError, match="wide"):
        write_report(report, tmp_path / "r.html", wide=tmp_path / "nowide.json")


def test_cli_report(world, tmp_path, capsys):
    from dictopt.io.native import save_dictionary

    D, x, codes, report = world
    save_dictionary(D, tmp_path / "dic")
    np.save(tmp_path / "x.npy", x[:300])
    report.save_json(tmp_path / "check.json")
    rc = main(["report", str(tmp_path / "check.json"), "--dictionary", str(tmp_path / "dic"),
               "--activations", str(tmp_path / "x.npy"), "--out", str(tmp_path / "r.html"),
               "--top", "1", "--quiet"])
    assert rc == 0 and "id='hull_" in (tmp_path / "r.html").read_text()
    rc = main(["report", str(tmp_path / "missing.json"), "--out", str(tmp_path / "r.html")])
    assert rc == 2
    assert "no such file" in capsys.readouterr().err
    rc = main(["report", str(tmp_path / "check.json"), "--dictionary", str(tmp_path / "dic"),
               "--out", str(tmp_path / "r.html")])
    assert rc == 2


# ---- headless browser ---------------------------------------------------------------------


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium (CI installs it: `apt-get install -y chromium`)."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("chromium not found in CI; install it with `apt-get install -y chromium`")
    pytest.skip("chromium not installed (apt-get install -y chromium); required in CI")


def dump_dom(browser: str, page: Path, profile: Path) -> str:
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", f"--user-data-dir={profile}", "--virtual-time-budget=5000",
           "--dump-dom", page.resolve().as_uri()]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout


@pytest.mark.parametrize("kind", ["full", "empty"])
def test_browser_decodes_every_image(chromium, world, empty_report, tmp_path, kind):
    D, x, codes, report = world
    if kind == "full":
        page = write_report(report, tmp_path / "r.html", data=x, dictionary=D, codes=codes,
                            top=2)
    else:
        page = write_report(empty_report, tmp_path / "r.html")
    dom = dump_dom(chromium, page, tmp_path / "profile")
    body = re.search(r"<body([^>]*)>", dom)
    assert body, dom[:500]
    total = re.search(r'data-images-total="(\d+)"', body.group(1))
    ok = re.search(r'data-images-ok="(\d+)"', body.group(1))
    assert total and ok, body.group(0)
    n_src = page.read_text().count("<img ")
    assert int(total.group(1)) == n_src > 0
    assert int(ok.group(1)) == int(total.group(1))
    assert 'id="summary"' in dom
