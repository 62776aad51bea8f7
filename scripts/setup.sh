#!/usr/bin/env bash
# Creates .venv and installs rejoinder into it, with the CPU build of PyTorch where
# there is no NVIDIA GPU (a plain `torch` requirement would pull several GB of CUDA
# packages). Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip install --disable-pip-version-check -q)

if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    "${pip[@]}" "torch>=2.4,<3"
  else
    # The CPU build: from a local wheel directory or index where one is configured,
    # otherwise from PyTorch's own CPU index.
    "${pip[@]}" "torch==2.13.0+cpu" 2>/dev/null \
      || "${pip[@]}" "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu
  fi
fi
"${pip[@]}" -e ".[dev]"
