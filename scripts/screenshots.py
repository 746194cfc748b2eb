"""Screenshots of HTML reports with headless Chromium, 1300 px wide (README's docs/ images).

    python scripts/screenshots.py OUT_DIR REPORT.html [REPORT.html ...] [--height 2200]

Each report is rendered at 1300 × height CSS pixels (the top of the page: triage, summary, the
first figures) and saved as OUT_DIR/<report name>.png. Needs Debian's ``chromium``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path

WIDTH = 1300


def screenshot(page: Path, out: Path, height: int, browser: str) -> Path:
    """Render ``page`` with headless Chromium into the PNG ``out``."""
    with tempfile.TemporaryDirectory() as profile:
        cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               "--no-first-run", "--disable-background-networking", "--disable-sync",
               "--disable-component-update", f"--user-data-dir={profile}",
               "--virtual-time-budget=5000", f"--window-size={WIDTH},{height}",
               f"--screenshot={out.resolve()}", page.resolve().as_uri()]
        subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("pages", type=Path, nargs="+")
    parser.add_argument("--height", type=int, default=2200)
    args = parser.parse_args()
    browser = next((b for b in ("chromium", "chromium-browser", "google-chrome")
                    if shutil.which(b)), None)
    if browser is None:
        raise SystemExit("chromium not found (apt-get install -y chromium)")
    args.out.mkdir(parents=True, exist_ok=True)
    for page in args.pages:
        png = screenshot(page, args.out / f"{page.stem}.png", args.height, browser)
        print(f"{png}")  # noqa: T201 - a script's output


if __name__ == "__main__":
    main()
