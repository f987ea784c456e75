#!/usr/bin/env bash
# Create a fresh virtual environment at $1 (default .venv) with streamtrack installed.
# With --test, also the test tools and the official sam2==1.1.0 package (the test oracle).
#
# torch is installed first, pinned to 2.13.0: on these CPU machines pip takes the CPU
# build from local disk; a plain "torch" would pull a multi-GB CUDA build.
# GPU users: install the CUDA build of torch first, then `pip install -e .` (see README).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv
test=0
for arg in "$@"; do
  case "$arg" in
    --test) test=1 ;;
    *) venv="$arg" ;;
  esac
done
python3 -m venv --clear "$venv"
pip="$venv/bin/python -m pip --disable-pip-version-check -q"
$pip install "torch==${STREAMTRACK_TORCH_VERSION:-2.13.0}"
if [ "$test" = 1 ]; then
  # The oracle's own run-time needs (its torchvision use is stubbed, see tests/oracle.py).
  $pip install -e ".[test]" setuptools wheel hydra-core iopath pillow tqdm
  # The oracle's build needs torch at build time, hence no build isolation.
  $pip install --no-build-isolation --no-deps sam2==1.1.0
else
  $pip install -e .
fi
echo "environment ready: $venv"
