#!/usr/bin/env bash
# Build the FARGAN neural vocoder's demo program (Opus 1.5.2, BSD licence, weights in the
# release tarball) for `spoofwatch copysynth` and the `resynth` detector. The source comes
# from Debian's archive through apt (`apt-get source`, signed index; Opus 1.5 is in trixie,
# so a private deb-src list for it is written here and the system's sources are left
# alone), and the upstream tarball is checked against its sha256; a local copy can be given
# as $OPUS_TARBALL. Installs to $SPOOFWATCH_FARGAN, else fargan/fargan_demo in
# $SPOOFWATCH_CACHE or ~/.cache/spoofwatch. Needs apt-get, a C compiler and make (Debian:
# build-essential). About a minute on 2 cores. With --if-missing it does nothing when the
# program is already there.
set -euo pipefail
TARBALL_NAME="opus_1.5.2.orig.tar.gz"
SHA256="65c1d2f78b9f2fb20082c38cbe47c951ad5839345876e46941612ee87f9a7ce1"
DEST="${SPOOFWATCH_FARGAN:-${SPOOFWATCH_CACHE:-$HOME/.cache/spoofwatch}/fargan/fargan_demo}"
if [ "${1:-}" = "--if-missing" ] && [ -x "$DEST" ]; then
  exit 0
fi
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

fetch_source() {  # downloads Debian's opus source package into $WORK/src
  local apt_dir="$WORK/apt"
  mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache" "$WORK/src"
  cat >"$apt_dir/opus-source.sources" <<SOURCES
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
  local opts=(
    -o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$apt_dir"
    -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache" -o Debug::NoLocking=1
  )
  # As root, apt's download user _apt cannot write to this private folder: download as root.
  [ "$(id -u)" -eq 0 ] && opts+=(-o APT::Sandbox::User=root)
  apt-get "${opts[@]}" -qq update
  (cd "$WORK/src" && apt-get "${opts[@]}" -qq source --download-only opus)
}

if [ -n "${OPUS_TARBALL:-}" ]; then
  TARBALL="$OPUS_TARBALL"
else
  fetch_source
  TARBALL="$WORK/src/$TARBALL_NAME"
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
