#!/usr/bin/env bash
# Reproduce the detector shipped in src/spoofwatch/model/default from ../shared/corpus:
# Whisper base hidden states 0-4 (the encoder runs only its first 4 layers) fused with
# LFCC statistics in one logistic head, 4 s windows (2 s apart in training, 1 s when
# streaming), both classes through the clean and the G.711 telephone channel, affine LLR
# calibration on dev, float32 inference. Layers and the LFCC fusion were chosen by
# leave-one-source-out validation (README, Accuracy). Embeddings are cached, so a re-run
# takes about a minute.
set -euo pipefail
cd "$(dirname "$0")/.."
CORPUS="${CORPUS:-../shared/corpus}"
.venv/bin/spoofwatch -v train \
  --manifest "$CORPUS/manifest.csv" \
  --out src/spoofwatch/model/default \
  --encoder whisper-base --window-s 4 --hop-s 1 --train-hop-s 2 \
  --channels clean,telephone --layers 0,1,2,3,4 --truncate-encoder \
  --spectral lfcc --spectral-weight 2 \
  --name spoofwatch-default-whisper-base-lfcc "$@"
