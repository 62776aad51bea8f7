#!/usr/bin/env bash
# `make gpu-check`: the tests marked gpu and benchmarks/gpu_throughput.py on one CUDA
# device in about five minutes, everything printed also in DIR/gpu-check.json. Where
# torch sees no CUDA device it prints one line and exits 0.
#
#   bash scripts/gpu-check.sh [--out DIR] [--device cuda|cpu] [-k EXPR] [--budget SECONDS]
#                             [--no-tests] [--no-bench] [--bench-arg ARG]...
#
# --device cpu runs everything on the CPU at toy sizes (REJOINDER_GPU_CHECK_DEVICE=cpu
# too). The Python: $PYTHON, else .venv/bin/python where it has torch (after `make
# setup`), else python3 (a bare GPU image). Where that Python cannot find rejoinder, the
# wheels in .whl/ (scripts/gpu-wheels.sh makes them) are installed into a temporary
# folder and the checkout's src/ goes on PYTHONPATH. scripts/gpu_check.py does the rest.
# Exit status: 0 when every test passed or the check skipped, 1 otherwise.
set -uo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac
GPU_CHECK_STARTED=$(date +%s.%N)
export GPU_CHECK_STARTED

finds() {  # finds PYTHON MODULE: whether that Python can import MODULE
  "$1" -c "import importlib.util as u, sys; sys.exit(u.find_spec('$2') is None)" 2>/dev/null
}

if [ -n "${PYTHON:-}" ]; then
  py=$PYTHON
elif [ -x .venv/bin/python ] && finds .venv/bin/python torch; then
  py=.venv/bin/python
else
  py=python3
fi

# What set-up did, for gpu_check.py to print and keep with the rest.
GPU_CHECK_SETUP=""
if ! finds "$py" rejoinder; then
  wheels=$(ls .whl/*.whl 2>/dev/null)
  if [ -n "$wheels" ]; then
    site=${TMPDIR:-/tmp}/rejoinder-gpu-check-site
    # Installed once per set of wheels: a second run on the same machine starts at once.
    if [ "$wheels" != "$(cat "$site/.wheels" 2>/dev/null)" ]; then
      rm -rf "$site"
      start=$(date +%s)
      # shellcheck disable=SC2086
      if out=$("$py" -m pip install -q --disable-pip-version-check --no-index --no-deps \
          --no-compile --no-cache-dir --target "$site" $wheels 2>&1); then
        echo "$wheels" >"$site/.wheels"
        GPU_CHECK_SETUP="installed $(echo "$wheels" | wc -l) wheels from .whl/ into $site"
        GPU_CHECK_SETUP+=" in $(($(date +%s) - start)) s"
      else
        GPU_CHECK_SETUP="the wheels in .whl/ did not install (the parts that need them skip): "
        GPU_CHECK_SETUP+=$(echo "$out" | tail -3)
      fi
    else
      GPU_CHECK_SETUP="the wheels in .whl/ are installed in $site already"
    fi
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
  fi
  export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
fi
export GPU_CHECK_SETUP
exec "$py" scripts/gpu_check.py "$@"
