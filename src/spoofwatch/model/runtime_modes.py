"""Names of the ways an encoder can run: its quantisation modes and backends.

Kept free of torch so that the configuration and the command line validate them without
loading the model stack; ``model.quantize`` and ``model.backend`` implement them.
"""

from __future__ import annotations

NO_QUANTIZATION = "none"
INT8_DYNAMIC = "int8"
INT8_ALL_LINEAR = "int8-all"
INT8_PER_WINDOW = "int8-window"
QUANTIZATION_MODES = (NO_QUANTIZATION, INT8_DYNAMIC, INT8_ALL_LINEAR, INT8_PER_WINDOW)

TORCH = "torch"
ONNXRUNTIME = "onnxruntime"
BACKENDS = (TORCH, ONNXRUNTIME)
