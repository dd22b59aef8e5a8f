"""Names of the ways an encoder can run: its quantisation modes, backends and devices.

Kept free of torch so that the configuration and the command line validate them without
loading the model stack; ``model.quantize``, ``model.backend`` and ``model.device``
implement them.
"""

from __future__ import annotations

import re

NO_QUANTIZATION = "none"
INT8_DYNAMIC = "int8"
INT8_ALL_LINEAR = "int8-all"
INT8_PER_WINDOW = "int8-window"
QUANTIZATION_MODES = (NO_QUANTIZATION, INT8_DYNAMIC, INT8_ALL_LINEAR, INT8_PER_WINDOW)

TORCH = "torch"
ONNXRUNTIME = "onnxruntime"
BACKENDS = (TORCH, ONNXRUNTIME)

CPU = "cpu"
AUTO_DEVICE = "auto"  # the first CUDA GPU if torch sees one, else the CPU
DEVICE_PATTERN = re.compile(r"cpu|auto|cuda(:\d+)?")
DEVICE_FORMS = "cpu, cuda, cuda:N or auto"


def is_device_name(name: str) -> bool:
    """Whether ``name`` (case and spaces aside) is a device ``model.device`` understands."""
    return DEVICE_PATTERN.fullmatch(name.strip().lower()) is not None
