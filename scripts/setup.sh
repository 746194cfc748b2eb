#!/usr/bin/env bash
# Set up dictopt in ./.venv: torch==2.13.0 first (the CPU wheel; a loose torch requirement
# would pull several GB of CUDA packages), then dictopt itself with the extras named in $1
# (comma-separated, e.g. "dev" or "dev,saelens"). Safe to run again: it only adds what is missing.
# With the "dev" extra it also makes sure a headless Chromium is present (Debian's package,
# installed with apt-get when running as root): the report's browser test needs it.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==2.13.0"
if [ -n "$extras" ]; then
    .venv/bin/python -m pip install -q -e ".[$extras]"
else
    .venv/bin/python -m pip install -q -e .
fi

case ",$extras," in
*,dev,*)
    if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null \
        && ! command -v google-chrome >/dev/null; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            apt-get update -qq && apt-get install -y -qq chromium >/dev/null
        else
            echo "note: no chromium found; the browser test will skip (it fails under CI=true)." >&2
        fi
    fi
    ;;
esac
