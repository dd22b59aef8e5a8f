"""The seam between the detector and any speech encoder."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Protocol

import torch

from spoofwatch.errors import ModelError


@dataclass(frozen=True)
class EncoderIdentity:
    """What a trained head depends on: which weights, which rate, which shape of output."""

    kind: str
    name: str
    weights_sha256: str
    sample_rate: int
    num_hidden_states: int
    hidden_size: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EncoderIdentity:
        return cls(
            kind=str(data["kind"]),
            name=str(data["name"]),
            weights_sha256=str(data["weights_sha256"]),
            sample_rate=int(data["sample_rate"]),
            num_hidden_states=int(data["num_hidden_states"]),
            hidden_size=int(data["hidden_size"]),
        )


class Encoder(Protocol):
    """A frozen speech encoder that maps fixed-length windows to per-layer frame features."""

    @property
    def identity(self) -> EncoderIdentity: ...

    @property
    def window_samples(self) -> int: ...

    def hidden_states(self, windows: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Map a (batch, window_samples) float32 batch to one (batch, frames, dim)
        tensor per hidden state (index 0 = input embedding, then one per layer).

        As in transformers, the last hidden state of a pre-LN encoder (Whisper) is taken
        after the final layer norm, the others are raw residual-stream outputs."""
        ...


class EncoderShape:
    """``identity`` and ``window_samples`` of an encoder, from the ``_identity`` and
    ``_window_samples`` its ``__init__`` sets; every encoder class (torch, int8, ONNX
    Runtime) shares these."""

    _identity: EncoderIdentity
    _window_samples: int

    @property
    def identity(self) -> EncoderIdentity:
        return self._identity

    @property
    def window_samples(self) -> int:
        return self._window_samples


class TorchEncoder(EncoderShape, torch.nn.Module):
    """Base of the torch encoders: subclasses set ``_identity`` and ``_window_samples`` in
    ``__init__`` and implement ``hidden_states``."""


def check_windows(windows: torch.Tensor, window_samples: int) -> None:
    """Refuse anything but a (batch, window_samples) batch, naming both shapes."""
    if windows.ndim != 2 or windows.shape[1] != window_samples:
        raise ModelError(f"expected windows of shape (batch, {window_samples}), found {tuple(windows.shape)}")
