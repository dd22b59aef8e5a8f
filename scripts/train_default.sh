#!/usr/bin/env bash
# Reproduce a packaged detector:
#   bash scripts/train_default.sh            # src/spoofwatch/model/default: ../shared/corpus (or
#                                            # $CORPUS) and the corpus built from corpus/cards
#                                            # (`spoofwatch corpus build`, $BUILT, default
#                                            # <cache>/corpus), their train splits; dev: both dev splits
#   bash scripts/train_default.sh resynth    # src/spoofwatch/model/resynth: ../shared/corpus only
# The recipe's values (encoder layers, spectral front end, channels, calibration channels,
# quantization, level, L2 strength...) live in src/spoofwatch/model/NAME/recipe.toml, their
# one source of truth (`spoofwatch train --recipe NAME`); why each is what it is:
# docs/decisions.md. Further arguments go to `spoofwatch train` and override the recipe.
#
# Extra training spoofs: a FARGAN neural-vocoder copy of every bona fide clip, pitch moved
# (`spoofwatch copysynth`, deterministic), through the recipe's extra_channels. The vocoder
# is built once (scripts/build_fargan.sh, about a minute) and the copies are made once into
# $COPIES (about 30 s); without a C compiler this script stops, since the shipped card
# cannot be reproduced without them. COPIES=DIR uses copies already made in DIR;
# COPIES=none trains without them. Embeddings are cached, so a re-run takes about a minute.
set -euo pipefail
cd "$(dirname "$0")/.."
RECIPE=default
if [ "${1:-}" = "default" ] || [ "${1:-}" = "resynth" ]; then
  RECIPE="$1"
  shift
fi
CORPUS="${CORPUS:-../shared/corpus}"
BUILT="${BUILT:-${SPOOFWATCH_CACHE:-$HOME/.cache/spoofwatch}/corpus}"
MANIFESTS=(--manifest "$CORPUS/manifest.csv")
if [ "$RECIPE" = "default" ]; then
  if [ ! -f "$BUILT/manifest.csv" ]; then
    echo "train_default.sh: expected the built corpus at $BUILT/manifest.csv: build it with" \
      "'spoofwatch corpus build --origins origins.txt' (docs/corpus.md) or set BUILT=DIR" >&2
    exit 2
  fi
  MANIFESTS+=(--manifest "$BUILT/manifest.csv")
fi
COPIES="${COPIES:-${SPOOFWATCH_CACHE:-$HOME/.cache/spoofwatch}/copies/fargan-ps}"
# COPIES=none trains without the copies (with --channels clean,telephone and --name
# spoofwatch-default-whisper-base-lfcc-phase: the card before the copies).
EXTRA=()
if [ "$COPIES" != "none" ]; then
  if [ ! -f "$COPIES/manifest.csv" ]; then
    bash scripts/build_fargan.sh --if-missing
    .venv/bin/spoofwatch copysynth --manifest "$CORPUS/manifest.csv" --out "$COPIES"
  fi
  EXTRA=(--extra-manifest "$COPIES/manifest.csv")  # through the recipe's extra_channels
fi
.venv/bin/spoofwatch -v train --recipe "$RECIPE" \
  "${MANIFESTS[@]}" \
  --out "src/spoofwatch/model/$RECIPE" \
  "${EXTRA[@]}" "$@"
