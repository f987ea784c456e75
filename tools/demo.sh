#!/usr/bin/env bash
# The main job, on built-in defaults: set up an environment and segment the bundled
# sample image. Without CHECKPOINT=path/to/official.pt it uses a seeded random-weight
# checkpoint (no pretrained weights ship with streamtrack), so the masks are meaningless
# but every step of the real path runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup_env.sh .venv
config="${CONFIG:-sam2.1_hiera_t}"
ckpt="${CHECKPOINT:-}"
if [ -z "$ckpt" ]; then
  ckpt=out/demo/random_${config}.pt
  .venv/bin/streamtrack make-checkpoint --config "$config" --out "$ckpt"
fi
exec .venv/bin/streamtrack segment --config "$config" --checkpoint "$ckpt" \
  --image tools/sample.jpg --box 70,100,230,260 --point 150,180 --multimask --out out/demo/segment
