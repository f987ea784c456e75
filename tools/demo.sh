#!/usr/bin/env bash
# The main job, on built-in defaults: set up an environment, run the live pipeline on the
# built-in synthetic source (moving, occluding textured objects, prompted with their true
# masks) with the nano model that ships with streamtrack, and watch it with a subscriber that
# prints latency percentiles and writes an overlay video to out/demo/overlay.mp4.
#
# The nano model was trained only on synthetic video (tools/train_nano.py). For real scenes,
# download an official checkpoint and run e.g.
#     CHECKPOINT=sam2.1_hiera_tiny.pt CONFIG=sam2.1_hiera_t bash tools/demo.sh
#
# Settings (environment): CHECKPOINT=official.pt CONFIG=nano IMAGE_SIZE=(config's) FRAMES=300
# THREADS=(1 for the bundled nano model, else torch's default). The viewer runs on the same
# cores; with nano, one tracker thread keeps up with more frames than two (docs/speed.md, "The
# viewer"), while an official model's larger operations gain from every core.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup_env.sh .venv
config="${CONFIG:-nano}"
frames="${FRAMES:-300}"
model_args=(--config "$config")
[ -n "${CHECKPOINT:-}" ] && model_args+=(--checkpoint "$CHECKPOINT")
[ -n "${IMAGE_SIZE:-}" ] && model_args+=(--image-size "$IMAGE_SIZE")
threads="${THREADS:-}"
[ -z "$threads" ] && [ -z "${CHECKPOINT:-}" ] && threads=1
[ -n "$threads" ] && model_args+=(--threads "$threads")
mkdir -p out/demo
.venv/bin/streamtrack run --source synthetic --gt-prompts mask "${model_args[@]}" --send-frames --max-frames "$frames" &
pipeline=$!
trap 'kill $pipeline 2>/dev/null || true' EXIT
.venv/bin/streamtrack view --out out/demo/overlay.mp4 --timeout 120
wait $pipeline
