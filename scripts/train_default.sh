#!/usr/bin/env bash
# Reproduce the detector shipped in src/spoofwatch/model/default from ../shared/corpus:
# Whisper base, 4 s windows (2 s apart in training, 1 s when streaming), both classes
# through the clean and the G.711 telephone channel, layers chosen on dev, logistic
# head, affine LLR calibration on dev. Embeddings are cached, so a re-run takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
CORPUS="${CORPUS:-../shared/corpus}"
.venv/bin/spoofwatch -v train \
  --manifest "$CORPUS/manifest.csv" \
  --out src/spoofwatch/model/default \
  --encoder whisper-base --window-s 4 --hop-s 1 --train-hop-s 2 \
  --channels clean,telephone --name spoofwatch-default-whisper-base "$@"
