#!/usr/bin/env bash
# The main job, on built-in defaults: set up an environment, run the live pipeline on the
# built-in synthetic source (moving, occluding textured objects, prompted from their true
# boxes), and watch it with a subscriber that prints latency percentiles and writes an
# overlay video to out/demo/overlay.mp4.
#
# Settings (environment): CHECKPOINT=official.pt CONFIG=sam2.1_hiera_t IMAGE_SIZE=256 FRAMES=60
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup_env.sh .venv
config="${CONFIG:-sam2.1_hiera_t}"
size="${IMAGE_SIZE:-256}"
frames="${FRAMES:-60}"
ckpt="${CHECKPOINT:-}"
mkdir -p out/demo
if [ -z "$ckpt" ]; then
  ckpt=out/demo/random_${config}.pt
  .venv/bin/streamtrack make-checkpoint --config "$config" --out "$ckpt"
  cat <<NOTE

  NOTE: no CHECKPOINT was given, so this demo runs on RANDOM weights (no pretrained weights
  ship with streamtrack). Every step of the live pipeline runs for real, but the masks are
  meaningless. For real masks, download an official SAM 2 / SAM 2.1 checkpoint and run
      CHECKPOINT=sam2.1_hiera_tiny.pt CONFIG=sam2.1_hiera_t bash tools/demo.sh

NOTE
fi
.venv/bin/streamtrack run --source synthetic --gt-prompts --config "$config" --checkpoint "$ckpt" \
  --image-size "$size" --send-frames --max-frames "$frames" &
pipeline=$!
trap 'kill $pipeline 2>/dev/null || true' EXIT
.venv/bin/streamtrack view --out out/demo/overlay.mp4 --timeout 120
wait $pipeline
