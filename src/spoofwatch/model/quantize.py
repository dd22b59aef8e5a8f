"""Dynamic int8 quantisation of an encoder's Linear layers (CPU inference speed-up).

Weights of the chosen ``torch.nn.Linear`` layers are stored as int8 and their inputs are
quantised on the fly (``torch.ao.quantization.quantize_dynamic``); convolutions, layer norms
and attention stay float32. Three modes:

* ``int8``: every Linear layer except the second (output) projection of each
  feed-forward block. That projection reads GELU outputs, whose few large values set a
  coarse per-tensor scale for the many small ones; quantising it shifted the default
  detector's LLRs by about +1.2 on average, keeping it float32 leaves about 0.2.
* ``int8-all``: every Linear layer, each input quantised with one scale for the whole
  batch (fastest). A window's features then depend on the other windows batched with it,
  other callers' windows included: scores moved by up to 0.4 LLR with the company on dev
  clips (research/batch_dependence.py).
* ``int8-window``: every Linear layer, each window's input quantised with its own scale
  (the layer runs once per window), so a window's features are the same alone or in any
  batch. Up to about 15 % more encoder time than ``int8-all`` in batches of 8 or more,
  none for a lone window; what new cards use.

A quantised encoder reports its source's identity with ``+<mode>`` appended to the
name: the trained head still loads (the artifact check ignores the name), while
embedding caches keyed on the name keep quantised and float32 features apart.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import replace
from typing import Any, cast

import torch

from spoofwatch.errors import ModelError
from spoofwatch.model.encoders.base import Encoder, EncoderIdentity, EncoderShape
from spoofwatch.model.runtime_modes import (
    INT8_DYNAMIC,
    INT8_PER_WINDOW,
    NO_QUANTIZATION,
    QUANTIZATION_MODES,
)

logger = logging.getLogger(__name__)

# Output projections of feed-forward blocks: Whisper / wav2vec2-style module names.
FFN_OUTPUT_SUFFIXES = (".fc2", ".feed_forward.output_dense")


def check_quantization(mode: str) -> str:
    """Return ``mode`` if it is a known quantisation mode, else raise ModelError."""
    if mode not in QUANTIZATION_MODES:
        raise ModelError(f"quantization must be one of {QUANTIZATION_MODES}, found {mode!r}")
    return mode


def quantization_of(identity: EncoderIdentity) -> str:
    """The mode an encoder identity says it runs in (``none`` for float encoders)."""
    for mode in QUANTIZATION_MODES[1:]:
        if identity.name.endswith("+" + mode):
            return mode
    return NO_QUANTIZATION


def linear_layers_to_quantize(module: torch.nn.Module, mode: str) -> list[str]:
    """Names of the Linear layers ``mode`` quantises."""
    names = [name for name, sub in module.named_modules() if type(sub) is torch.nn.Linear]
    if mode == INT8_DYNAMIC:
        names = [name for name in names if not name.endswith(FFN_OUTPUT_SUFFIXES)]
    return names


def quantize_linear_int8(module: torch.nn.Module, names: list[str]) -> torch.nn.Module:
    """A copy of ``module`` with the named Linear layers dynamic int8 (the input is untouched)."""
    try:
        from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic
    except ImportError as exc:  # torch plans to move this API to torchao
        raise ModelError(
            f"int8 quantisation needs torch.ao.quantization.quantize_dynamic, which this torch "
            f"({torch.__version__}) lacks: {exc}"
        ) from None
    qconfig_spec: dict[str, Any] = dict.fromkeys(names, default_dynamic_qconfig)
    with warnings.catch_warnings():
        # torch marks eager-mode quantisation deprecated but still ships it; the warnings
        # (one per quantised tensor) tell users nothing they can act on.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        quantized: torch.nn.Module = quantize_dynamic(  # type: ignore[no-untyped-call]
            module, qconfig_spec, dtype=torch.qint8
        )
    return quantized


class PerWindowLinear(torch.nn.Module):
    """A dynamic int8 Linear layer run once per window of a batch.

    ``quantize_dynamic``'s layers quantise their whole input with one scale, so one loud
    window coarsens every other window's activations. fbgemm has no per-row activation
    scales, and torch's int8 matmul on CPU (``torch._int_mm``) is slower than float32 here,
    so each window (first dimension of a 3-D input) gets its own call: the GEMM is still
    positions x features, only the scale becomes the window's own.
    """

    def __init__(self, layer: torch.nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if inputs.dim() < 3 or inputs.shape[0] == 1:
            return cast(torch.Tensor, self.layer(inputs))
        return torch.cat([self.layer(inputs[i : i + 1]) for i in range(inputs.shape[0])])


def run_per_window(module: torch.nn.Module) -> torch.nn.Module:
    """Wrap every dynamic int8 Linear layer of ``module`` (in place) in a PerWindowLinear."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, DynamicLinear) and not isinstance(parent, PerWindowLinear):
                setattr(parent, name, PerWindowLinear(child))
    return module


def count_linear_layers(module: torch.nn.Module) -> tuple[int, int]:
    """(float Linear layers, dynamically quantised Linear layers) inside ``module``."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    modules = list(module.modules())
    dynamic = sum(isinstance(m, DynamicLinear) for m in modules)
    return sum(type(m) is torch.nn.Linear for m in modules), dynamic


class Int8Encoder(EncoderShape):
    """Wraps a float encoder (a ``torch.nn.Module``) with dynamic int8 Linear layers."""

    def __init__(self, source: Encoder, mode: str = INT8_DYNAMIC) -> None:
        if check_quantization(mode) == NO_QUANTIZATION:
            raise ModelError(f"Int8Encoder needs an int8 mode, found {mode!r}")
        current = quantization_of(source.identity)
        if current != NO_QUANTIZATION:
            raise ModelError(f"encoder {source.identity.name!r} is already quantised ({current})")
        if not isinstance(source, torch.nn.Module):
            raise ModelError(
                f"int8 quantisation needs a torch.nn.Module encoder, found {type(source).__name__}"
            )
        names = linear_layers_to_quantize(source, mode)
        if not names:
            raise ModelError(f"expected Linear layers to quantise in {source.identity.name!r}, found none")
        self.mode = mode
        self.module = quantize_linear_int8(source, names)
        if mode == INT8_PER_WINDOW:
            run_per_window(self.module)
        self._inner = cast(Encoder, self.module)
        self._identity = replace(source.identity, name=f"{source.identity.name}+{mode}")
        self._window_samples = source.window_samples
        plain, dynamic = count_linear_layers(self.module)
        logger.info(
            "quantised %d Linear layers of %s to dynamic int8 (%d left float32)",
            dynamic,
            source.identity.name,
            plain,
        )

    def hidden_states(self, windows: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self._inner.hidden_states(windows)


def apply_quantization(encoder: Encoder, mode: str) -> Encoder:
    """A copy of a float32 ``encoder`` quantised as ``mode``; the encoder itself for ``none``
    (an encoder given already quantised stays so) or when it already runs in ``mode``.
    Switching a quantised encoder to another int8 mode is refused."""
    check_quantization(mode)
    current = quantization_of(encoder.identity)
    if mode in (NO_QUANTIZATION, current):
        return encoder
    if current != NO_QUANTIZATION:
        raise ModelError(
            f"encoder {encoder.identity.name!r} is already quantised ({current}); "
            f"expected a float32 encoder to quantise as {mode!r}"
        )
    return Int8Encoder(encoder, mode)
