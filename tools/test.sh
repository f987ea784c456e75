#!/usr/bin/env bash
# The test command: fresh environment, everything installed, whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup_env.sh --test .venv-test
exec .venv-test/bin/python -m pytest "$@"
