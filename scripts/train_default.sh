#!/usr/bin/env bash
# Reproduce the detector shipped in src/spoofwatch/model/default from ../shared/corpus:
# Whisper base hidden states 0-4 (the encoder runs only its first 4 layers) fused with
# LFCC and per-band phase-coherence statistics (--spectral lfcc-phase) in one logistic
# head, 4 s windows (2 s apart in training, 1 s when streaming), both classes through the
# clean channel, the G.711 telephone channel and a randomly augmented channel (codecs,
# noise, reverberation, gain, packet loss; seeded per clip), so noisy genuine calls do not
# look synthetic (`--channels clean,telephone` gives the previous card); affine LLR
# calibration and the threshold on dev windows of the clean and telephone channels and of
# callers at a random level through G.711
# (--calibration-channels; `--calibration-channels clean,telephone` gives the previous one).
# The encoder runs with dynamic int8 Linear layers whose activations are quantised per
# window (int8-window: a window's score does not depend on the windows batched with it)
# and the head is fitted on those int8 features (docs/benchmarks.md);
# `--quantization int8-all` gives the card before 2026-11-27's third session (one
# activation scale per batch; up to about 15 % less encoder time in batches of 8 or
# more, README "Per-window int8 scales"), `--quantization none` the float32
# detector. Layers, the spectral fusion and the L2 strength (C 0.001) were chosen by
# leave-one-source-out validation (README, Accuracy). Every window is brought to an active
# speech level of -26 dBFS before the encoders (--level-dbfs), so scores do not depend on
# the caller's level; `--level-dbfs none` trains the unlevelled detector. Embeddings are
# cached, so a re-run takes about a minute.
#
# Extra training spoofs: a FARGAN neural-vocoder copy of every bona fide clip, pitch moved
# by a factor of 1.1-1.35 (`spoofwatch copysynth`, deterministic), through the clean
# channel only (--extra-channels clean). A copy differs from its original only in how it
# was made, so it teaches vocoder artefacts rather than recording styles; leave-one-source-
# out gains 2.4 points clean and 1.1 telephone with them (README, Accuracy). The vocoder is
# built once (scripts/build_fargan.sh, about a minute) and the copies are made once into
# $COPIES (about 30 s). Without a C compiler this script stops: the shipped card cannot be
# reproduced without the copies. COPIES=DIR uses copies already made in DIR.
#
# The packaged `resynth` detector (src/spoofwatch/model/resynth) is the same recipe plus
# the phase-coherence residual of each window against the stream's FARGAN remake, each 1 s
# block vocoded once (the vocoder then runs at scoring time too):
#   bash scripts/train_default.sh --spectral lfcc-phase-resynth-streamed --out src/spoofwatch/model/resynth \
#     --name spoofwatch-resynth-streamed-whisper-base-lfcc-phase-copies-aug \
#     --calibration-channels clean,telephone,level,telephone-level
# (calibrated on the random-level clean channel too: with the default's three channels its
# actDCF sits 0.06 and 0.09 above minDCF on the two random-level dev channels; README, Accuracy)
set -euo pipefail
cd "$(dirname "$0")/.."
CORPUS="${CORPUS:-../shared/corpus}"
COPIES="${COPIES:-${SPOOFWATCH_CACHE:-$HOME/.cache/spoofwatch}/copies/fargan-ps}"
# COPIES=none trains without the copies (with --channels clean,telephone and --name
# spoofwatch-default-whisper-base-lfcc-phase: the card before the copies).
EXTRA=()
if [ "$COPIES" != "none" ]; then
  if [ ! -f "$COPIES/manifest.csv" ]; then
    bash scripts/build_fargan.sh --if-missing
    .venv/bin/spoofwatch copysynth --manifest "$CORPUS/manifest.csv" --out "$COPIES"
  fi
  EXTRA=(--extra-manifest "$COPIES/manifest.csv" --extra-channels clean)
fi
.venv/bin/spoofwatch -v train \
  --manifest "$CORPUS/manifest.csv" \
  --out src/spoofwatch/model/default \
  --encoder whisper-base --window-s 4 --hop-s 1 --train-hop-s 2 \
  --channels clean,telephone,augmented --calibration-channels clean,telephone,telephone-level --layers 0,1,2,3,4 --truncate-encoder \
  --spectral lfcc-phase --spectral-weight 2 --quantization int8-window --C 0.001 --level-dbfs -26 \
  "${EXTRA[@]}" --name spoofwatch-default-whisper-base-lfcc-phase-copies-aug "$@"
