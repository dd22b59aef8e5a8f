"""Where the speech encoder runs: this machine's CPU (the default) or a CUDA GPU.

A GPU runs the torch encoder; torch's dynamic int8 layers, which the default card uses on
CPUs, have no CUDA kernels, so they run there as their float32 emulation
(``model.int8_emulation``). Windows are moved to the GPU in each batch, the hidden states
are pooled there, and only the pooled features come back, so the head and the spectral
front end run on the CPU as before.
"""

from __future__ import annotations

import torch

from spoofwatch.errors import ModelError
from spoofwatch.model.encoders.base import Encoder, EncoderShape
from spoofwatch.model.int8_emulation import emulate_dynamic_int8
from spoofwatch.model.quantize import quantization_of
from spoofwatch.model.runtime_modes import AUTO_DEVICE, CPU, DEVICE_FORMS, NO_QUANTIZATION, is_device_name


def check_device_name(name: str) -> str:
    """``name`` normalised if it is a device this module understands, else ModelError;
    whether that device exists is :func:`resolve_device`'s question."""
    if not is_device_name(name):
        raise ModelError(f"device: expected {DEVICE_FORMS}, found {name!r}")
    return name.strip().lower()


def resolve_device(name: str | None) -> str:
    """The torch device to run on: ``cpu``; ``cuda`` / ``cuda:N`` when torch sees that GPU
    (else ModelError, saying why); ``auto``: the first GPU if there is one, else the CPU."""
    text = check_device_name(name or CPU)
    if text == CPU:
        return CPU
    available = torch.cuda.is_available()
    if text == AUTO_DEVICE:
        return "cuda" if available else CPU
    if not available:
        build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
        raise ModelError(
            f"device {name!r}: expected a CUDA GPU, but torch {torch.__version__} ({build}) sees none "
            "(torch.cuda.is_available() is False); run with --encoder-device cpu, or install a CUDA "
            "build of torch"
        )
    index = int(text.partition(":")[2] or 0)
    count = torch.cuda.device_count()
    if index >= count:
        raise ModelError(
            f"device {name!r}: expected one of cuda:0..cuda:{count - 1}, torch sees {count} GPU(s)"
        )
    return text


class DeviceEncoder(EncoderShape):
    """A torch encoder moved to ``device``: each batch of windows is copied there, and the
    hidden states it returns stay there (the detector pools them before bringing them back).
    Dynamic int8 layers (CPU-only in torch) are first replaced, in place, by their float32
    emulation. The identity is the encoder's own, so the detector card's checks still hold."""

    def __init__(self, encoder: Encoder, device: str) -> None:
        module = encoder if isinstance(encoder, torch.nn.Module) else getattr(encoder, "module", None)
        if not isinstance(module, torch.nn.Module):
            raise ModelError(
                f"device {device!r}: the encoder {encoder.identity.name!r} is not a torch module; "
                "expected the torch backend to run on a GPU"
            )
        if quantization_of(encoder.identity) != NO_QUANTIZATION and not emulate_dynamic_int8(module):
            raise ModelError(
                f"device {device!r}: expected dynamic int8 layers to emulate in {encoder.identity.name!r}"
            )
        self.device = torch.device(device)
        module.to(self.device).eval()  # in place: nn.Module.to moves its own parameters
        self.module = module
        self.inner: Encoder = encoder
        self._identity = encoder.identity
        self._window_samples = encoder.window_samples

    def hidden_states(self, windows: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.inner.hidden_states(windows.to(self.device, non_blocking=True))


def device_of(encoder: Encoder) -> str:
    """The device an encoder runs on, as ``resolve_device`` names it."""
    if isinstance(encoder, DeviceEncoder):
        return str(encoder.device)
    return CPU
