#!/usr/bin/env bash
# Build the FARGAN neural vocoder's demo program (Opus 1.5.2, BSD licence, weights in the
# release tarball) for `spoofwatch copysynth`. The tarball comes from Debian's archive (the
# upstream release, checked against its sha256); a local copy can be given as $OPUS_TARBALL.
# Installs to $SPOOFWATCH_FARGAN, else fargan/fargan_demo in $SPOOFWATCH_CACHE or
# ~/.cache/spoofwatch. Needs a C compiler and make (Debian: build-essential). About a
# minute on 2 cores. With --if-missing it does nothing when the program is already there.
set -euo pipefail
URL="http://deb.debian.org/debian/pool/main/o/opus/opus_1.5.2.orig.tar.gz"
SHA256="65c1d2f78b9f2fb20082c38cbe47c951ad5839345876e46941612ee87f9a7ce1"
DEST="${SPOOFWATCH_FARGAN:-${SPOOFWATCH_CACHE:-$HOME/.cache/spoofwatch}/fargan/fargan_demo}"
if [ "${1:-}" = "--if-missing" ] && [ -x "$DEST" ]; then
  exit 0
fi
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
TARBALL="${OPUS_TARBALL:-$WORK/opus-1.5.2.tar.gz}"
if [ -z "${OPUS_TARBALL:-}" ]; then
  curl -sSfL --retry 3 -o "$TARBALL" "$URL"
fi
echo "$SHA256  $TARBALL" | sha256sum -c --quiet - || {
  echo "build_fargan.sh: expected $TARBALL to be opus 1.5.2 (sha256 $SHA256)" >&2
  exit 1
}
tar -xzf "$TARBALL" -C "$WORK"
cd "$WORK/opus-1.5.2"
# --enable-dnn-debug-float: float weights and arithmetic throughout, as in the measurements
# the README reports (the default build quantises some layers to int8).
./configure --quiet --enable-deep-plc --enable-dnn-debug-float --disable-doc >/dev/null
make -s -j"$(nproc)" fargan_demo >/dev/null 2>&1 || make fargan_demo
mkdir -p "$(dirname "$DEST")"
install -m 755 fargan_demo "$DEST"
echo "built $DEST"
