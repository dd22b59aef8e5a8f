"""torch's dynamic int8 Linear layers, computed in float32 so that they run on a GPU.

torch's dynamic quantisation (``model.quantize``) runs only on CPUs (fbgemm), and the
packaged cards' heads were fitted on its features: the same encoder in plain float32
scores windows about 0.4 LLR away from the card (docs/pool.md). This module replaces each
dynamic int8 Linear layer by the same arithmetic in float32: the layer's own int8 weights
and scale (taken from the quantised layer, not recomputed), the input quantised to 7-bit
unsigned integers with the scale and zero point fbgemm chooses (``ChooseQuantizationParams``
with ``reduce_range``, as ``quantized::linear_dynamic`` calls it), the integer product, then
both scales and the bias. Integers up to 127 x 128 summed over at most a few thousand
inputs are exact in float32 (and in TF32's 10-bit mantissa), so the result differs from
fbgemm's only where a value sits on a rounding boundary.
"""

from __future__ import annotations

from typing import cast

import torch

from spoofwatch.errors import ModelError

QMAX = 127  # reduce_range: fbgemm quantises dynamic inputs to 0..127, not 0..255


class EmulatedDynamicLinear(torch.nn.Module):
    """One dynamic int8 Linear layer in float32. ``per_window``: each window (first
    dimension of a 3-D input) gets its own input scale, as ``PerWindowLinear`` gives it;
    otherwise one scale for the whole input, as the plain dynamic layer does."""

    weight_int: torch.Tensor
    bias: torch.Tensor | None

    def __init__(self, layer: torch.nn.Module, per_window: bool) -> None:
        super().__init__()
        weight = cast(torch.Tensor, layer.weight())  # type: ignore[operator]
        if weight.qscheme() not in (torch.per_tensor_symmetric, torch.per_tensor_affine):
            raise ModelError(f"int8 emulation: expected per-tensor weight scales, found {weight.qscheme()}")
        self.register_buffer("weight_int", (weight.int_repr().to(torch.float32) - weight.q_zero_point()))
        self.weight_scale = float(weight.q_scale())
        bias = layer.bias()  # type: ignore[operator]
        self.register_buffer("bias", None if bias is None else bias.detach().to(torch.float32).clone())
        self.per_window = per_window

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(1, inputs.dim())) if self.per_window and inputs.dim() >= 3 else None
        if dims is None:
            low, high = inputs.min(), inputs.max()
        else:
            low, high = inputs.amin(dim=dims, keepdim=True), inputs.amax(dim=dims, keepdim=True)
        scale, zero_point = input_qparams(low, high)
        # fbgemm multiplies by the float reciprocal and adds the zero point before rounding.
        quantised = torch.clamp(torch.round(inputs * (1.0 / scale) + zero_point), 0, 255)
        out = torch.matmul(quantised - zero_point, self.weight_int.t()) * (scale * self.weight_scale)
        return out if self.bias is None else out + self.bias


def input_qparams(low: torch.Tensor, high: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """fbgemm's scale and integer zero point for inputs in [low, high] (tensors of any
    shape), quantised to 0..QMAX: the range widened to hold 0, the scale and zero point
    computed in double, the zero point taken from whichever end has the smaller error and
    rounded; the scale is used as float32."""
    low64 = torch.clamp(low.double(), max=0.0)
    high64 = torch.clamp(high.double(), min=0.0)
    scale = (high64 - low64) / QMAX
    as_float = scale.float()
    scale = torch.where((as_float == 0) | torch.isinf(1.0 / as_float), 0.1, scale)
    from_min = -low64 / scale
    from_max = QMAX - high64 / scale
    error_min = -torch.abs(low64 / scale)
    error_max = QMAX - torch.abs(high64 / scale)
    initial = torch.where(error_min < error_max, from_min, from_max)
    zero_point = torch.clamp(torch.round(initial), 0, QMAX)
    return scale.float(), zero_point.float()


def emulate_dynamic_int8(module: torch.nn.Module) -> int:
    """Replace (in place) every dynamic int8 Linear layer of ``module``, per-window wrappers
    included, by its float32 emulation; returns how many were replaced."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    from spoofwatch.model.quantize import PerWindowLinear

    replaced = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, PerWindowLinear) and isinstance(child.layer, DynamicLinear):
                setattr(parent, name, EmulatedDynamicLinear(child.layer, per_window=True))
                replaced += 1
            elif isinstance(child, DynamicLinear) and not isinstance(parent, PerWindowLinear):
                setattr(parent, name, EmulatedDynamicLinear(child, per_window=False))
                replaced += 1
    return replaced
