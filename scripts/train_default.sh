#!/usr/bin/env bash
# Reproduce a packaged detector:
#   BUILT=DIR bash scripts/train_default.sh  # src/spoofwatch/model/default
#   bash scripts/train_default.sh resynth    # src/spoofwatch/model/resynth
# default trains on ../shared/corpus (or $CORPUS) and the built corpus in $BUILT
# (`spoofwatch corpus build --out $BUILT`, docs/corpus.md: the clips of corpus/lock.csv);
# resynth on $CORPUS alone.
# The recipe's values (encoder layers, spectral front end, channels, calibration channels,
# quantization, level, L2 strength...) live in src/spoofwatch/model/NAME/recipe.toml, their
# one source of truth (`spoofwatch train --recipe NAME`); why each is what it is:
# docs/decisions.md. Further arguments go to `spoofwatch train` and override the recipe.
#
# Extra training spoofs: a FARGAN neural-vocoder copy of every bona fide clip of $CORPUS, pitch moved
# (`spoofwatch copysynth`, deterministic), through the recipe's extra_channels. The vocoder
# is built once (scripts/build_fargan.sh, about a minute) and the copies are made once into
# $COPIES (about 30 s); without a C compiler this script stops, since the shipped card
# cannot be reproduced without them. COPIES=DIR uses copies already made in DIR;
# COPIES=none trains without them. Embeddings are cached: a re-run takes about 6 minutes
# for default (36,000 clips; the first run extracts for about 75 minutes on 2 cores with
# AVX-512, about five hours on 2 cores with AVX2 only: docs/benchmarks.md), a minute for resynth.
set -euo pipefail
cd "$(dirname "$0")/.."
RECIPE=default
if [ "${1:-}" = "default" ] || [ "${1:-}" = "resynth" ]; then
  RECIPE="$1"
  shift
fi
CORPUS="${CORPUS:-../shared/corpus}"
COPIES="${COPIES:-${SPOOFWATCH_CACHE:-$HOME/.cache/spoofwatch}/copies/fargan-ps}"
EXTRA=()
if [ "$COPIES" != "none" ]; then
  if [ ! -f "$COPIES/manifest.csv" ]; then
    bash scripts/build_fargan.sh --if-missing
    .venv/bin/spoofwatch copysynth --manifest "$CORPUS/manifest.csv" --out "$COPIES"
  fi
  EXTRA=(--extra-manifest "$COPIES/manifest.csv")  # through the recipe's extra_channels
fi
MANIFESTS=(--manifest "$CORPUS/manifest.csv")
if [ "$RECIPE" = "default" ]; then
  if [ -z "${BUILT:-}" ] || [ ! -f "$BUILT/manifest.csv" ]; then
    echo "train_default.sh: expected BUILT=DIR, the built corpus (DIR/manifest.csv);" \
      "make it with: spoofwatch corpus build --out DIR (docs/corpus.md)" >&2
    exit 2
  fi
  MANIFESTS+=(--manifest "$BUILT/manifest.csv")
fi
.venv/bin/spoofwatch -v train --recipe "$RECIPE" \
  "${MANIFESTS[@]}" \
  --out "src/spoofwatch/model/$RECIPE" \
  "${EXTRA[@]}" "$@"
