#!/usr/bin/env bash
# Set up spoofwatch to run on a fresh Debian/Ubuntu machine: the system libraries it runs
# on, a virtual environment in .venv with the package and its run-time extras, the Whisper
# weights conversion (once, into ~/.cache/spoofwatch or $SPOOFWATCH_CACHE) and the FARGAN
# vocoder. What the tests need on top (browser, broker, sound server...) comes with
# scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  libsndfile1        # soundfile's codec library (FLAC, OGG/Opus, MP3)
  libopus0           # libopus for opuslib-next: the voip training channel's packets
  libportaudio2      # sounddevice: microphone input
  libasound2-plugins # ALSA → PulseAudio bridge used by PortAudio
  ffmpeg             # corpus build: decodes m4a/aac/webm (and MP3/Opus libsndfile cannot read)
  espeak-ng          # corpus build: the espeak-ng generator recipe
  build-essential    # C compiler for the FARGAN vocoder (scripts/build_fargan.sh)
)
source scripts/apt_packages.sh
apt_install "${APT_PACKAGES[@]}"

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
# torch 2.13.0 first: it is the CPU build here, and pyproject's torch>=2.13 then keeps it
# (asking pip for torch alone would pull a CUDA build).
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[serve,mic,mqtt,train,onnx,siprec]"
# Convert the pinned Whisper weights once (hash-verified), so the first score is fast.
.venv/bin/python -c "from spoofwatch.model.encoders.whisper_ct2 import ensure_converted; \
from spoofwatch.model.encoders.weights import PINNED; [ensure_converted(w) for w in PINNED.values()]"
# The FARGAN neural vocoder (about a minute to build, once): `spoofwatch copysynth` makes
# extra spoof training data with it and the packaged `resynth` detector remakes every second
# of every stream with it. The default detector does not need it, so a failed build only warns.
bash scripts/build_fargan.sh --if-missing || echo "install.sh: the FARGAN vocoder did not build; \
--detector resynth and spoofwatch copysynth need it (bash scripts/build_fargan.sh)" >&2
echo "spoofwatch installed in .venv ($(.venv/bin/spoofwatch --version))"
