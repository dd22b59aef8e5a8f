#!/usr/bin/env bash
# Run the test suite: sets up what the tests need beyond scripts/install.sh (the system
# programs they drive, the dev extras, the FARGAN vocoder), then runs pytest with this
# script's arguments and exits with its status. Examples:
#   bash scripts/test.sh                      # everything
#   bash scripts/test.sh -m "not slow"        # skip the long runs
#   bash scripts/test.sh tests/stream -x -q   # one folder
# SPOOFWATCH_TEST_TIMEOUT_SCALE=3 gives every readiness wait three times as long (slow machines).
set -euo pipefail
cd "$(dirname "$0")/.."

TEST_APT_PACKAGES=(
  pulseaudio         # a virtual microphone for the microphone tests
  mosquitto          # the MQTT broker of the MQTT tests
  mosquitto-clients  # mosquitto_sub / mosquitto_pub
  haproxy            # the load balancer of the multi-node tests (deploy/haproxy)
  espeak-ng          # offline TTS that speaks the synthetic test sentences
  sox                # audio conversion in tests and examples
  sip-tester         # SIPp: the SIPREC recording client of the SIPREC tests and example
  chromium           # headless browser for the dashboard test
  chromium-driver    # its WebDriver (Selenium uses this one, never downloads)
  build-essential    # C compiler for the FARGAN vocoder
)
source scripts/apt_packages.sh
apt_install "${TEST_APT_PACKAGES[@]}"

if [ ! -x .venv/bin/python ]; then
  echo "test.sh: expected .venv from scripts/install.sh; run: bash scripts/install.sh" >&2
  exit 1
fi
.venv/bin/python -m pip install -q -e ".[dev]"
# The resynthesis and copysynth tests run the real vocoder.
bash scripts/build_fargan.sh --if-missing
exec .venv/bin/python -m pytest "$@"
