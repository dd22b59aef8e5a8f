#!/usr/bin/env bash
# Set up spoofwatch on a fresh Debian/Ubuntu machine: system packages, a virtual
# environment in .venv, the package with its dev extras, and the Whisper weights
# conversion (once, into ~/.cache/spoofwatch or $SPOOFWATCH_CACHE).
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  libsndfile1        # soundfile's codec library (FLAC, OGG/Opus, MP3)
  libportaudio2      # sounddevice: microphone input
  pulseaudio         # virtual microphone in the tests; desktop audio on servers
  libasound2-plugins # ALSA → PulseAudio bridge used by PortAudio
  mosquitto          # MQTT broker for the integration tests and local use
  mosquitto-clients  # mosquitto_sub / mosquitto_pub
  espeak-ng          # offline TTS used to make synthetic test speech (and corpus generator cards)
  ffmpeg             # corpus build: decodes m4a/aac/webm (and MP3/Opus libsndfile cannot read)
  sox                # audio conversion in tests and examples
  chromium           # headless browser for the dashboard test
  chromium-driver    # its WebDriver (Selenium uses this one, never downloads)
  build-essential    # C compiler for the FARGAN vocoder (scripts/build_fargan.sh)
  curl               # fetches the Opus source that vocoder comes in
)

if command -v apt-get >/dev/null 2>&1; then
  missing=()
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
else
  echo "install.sh: apt-get not found; install these system packages yourself: ${APT_PACKAGES[*]}" >&2
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# torch is pinned to the CPU build 2.13.0 in pyproject.toml; any other version pulls CUDA.
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[dev,onnx]"
# Convert the pinned Whisper weights once (hash-verified), so the first score is fast.
.venv/bin/python -c "from spoofwatch.model.encoders.whisper_ct2 import ensure_converted; \
from spoofwatch.model.encoders.weights import PINNED; [ensure_converted(w) for w in PINNED.values()]"
# The FARGAN neural vocoder (about a minute to build, once): `spoofwatch copysynth` makes
# extra spoof training data with it and the packaged `resynth` detector remakes every second
# of every stream with it. The default detector does not need it, so a failed build only warns.
bash scripts/build_fargan.sh --if-missing || echo "install.sh: the FARGAN vocoder did not build; \
--detector resynth, spoofwatch copysynth and their tests need it (bash scripts/build_fargan.sh)" >&2
echo "spoofwatch installed in .venv ($(.venv/bin/spoofwatch --version))"
