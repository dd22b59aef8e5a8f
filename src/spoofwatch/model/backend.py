"""Which runtime executes the encoder: torch (default) or ONNX Runtime, each in float32 or int8."""

from __future__ import annotations

from spoofwatch.errors import ModelError
from spoofwatch.model.encoders.base import Encoder, EncoderIdentity
from spoofwatch.model.quantize import apply_quantization, check_quantization, quantization_of
from spoofwatch.model.runtime_modes import BACKENDS, ONNXRUNTIME, TORCH


def check_backend(backend: str) -> str:
    """Return ``backend`` if known, else raise ModelError."""
    if backend not in BACKENDS:
        raise ModelError(f"backend must be one of {BACKENDS}, found {backend!r}")
    return backend


def backend_of(identity: EncoderIdentity) -> str:
    """The backend an encoder identity says it runs on."""
    from spoofwatch.model.encoders.onnx_runtime import BACKEND_TAG

    return ONNXRUNTIME if BACKEND_TAG in identity.name else TORCH


def runtime_encoder(encoder: Encoder, quantization: str, backend: str = TORCH) -> Encoder:
    """``encoder`` (float32 torch) as it runs with ``backend`` and ``quantization``; an
    encoder that already runs so is returned as it is."""
    check_backend(backend)
    check_quantization(quantization)
    if backend == TORCH:
        if backend_of(encoder.identity) != TORCH:
            raise ModelError(
                f"encoder {encoder.identity.name!r} runs on onnxruntime; expected a torch encoder"
            )
        return apply_quantization(encoder, quantization)
    from spoofwatch.model.encoders.onnx_runtime import OrtWhisperEncoder

    if backend_of(encoder.identity) == ONNXRUNTIME:
        if quantization_of(encoder.identity) != quantization:
            raise ModelError(
                f"encoder {encoder.identity.name!r} is already exported; expected a float32 torch "
                f"encoder to run as {quantization!r}"
            )
        return encoder
    return OrtWhisperEncoder(encoder, quantization)
