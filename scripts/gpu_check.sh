#!/usr/bin/env bash
# The GPU checks of issue 30, as one script for a session that has a CUDA machine
# (docs/pool.md, "GPU replicas"): the CUDA test, the encoder's windows per second by batch
# size, then real-time streams on one GPU at the default window and hop. Results go to
# ${OUT:-/tmp/gpu-check}. About 8 minutes; needs this checkout installed with a CUDA build
# of torch (pip install -e . after installing torch for the machine's CUDA).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/gpu-check}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.csv"
"$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.is_available())' \
  | tee "$OUT/torch.txt"
"$PY" -m pytest -q -p no:cacheprovider tests/model/test_device.py 2>&1 | tee "$OUT/test_device.log"
# Encoder forward passes by batch size (windows per second): the ceiling of the streams.
"$PY" -m spoofwatch bench --encoder-device cuda --encoder-only --json > "$OUT/encoder_only.json"
# Real-time streams, searched up to 1,024 (bench's cap), with GPU-sized batches; the CPU's
# float32 encoder in the same run is the baseline the report compares with.
"$PY" -m spoofwatch bench --encoder-device cuda --batch 128 --workers 2 --seconds 20 --max-probes 8 \
  --json > "$OUT/bench_cuda.json"
"$PY" -m spoofwatch bench --encoder-device cpu --quantization none --seconds 20 --max-probes 5 \
  --json > "$OUT/bench_cpu.json"
echo "results in $OUT"
