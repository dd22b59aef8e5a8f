"""Build an encoder from the spec stored in a detector's model card."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from spoofwatch.errors import ModelError
from spoofwatch.model.encoders.base import Encoder


@dataclass(frozen=True)
class EncoderSpec:
    """How to construct an encoder: ``kind`` is ``whisper-ct2`` (name = pinned weights),
    ``hf`` (name = local directory or hub id), ``lfcc``, ``lfcc-phase``,
    ``lfcc-phase-resynth`` or ``lfcc-phase-resynth-streamed`` (spectral branches)."""

    kind: str = "whisper-ct2"
    name: str = "whisper-base"
    layers: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EncoderSpec:
        layers = data.get("layers")
        return cls(
            kind=str(data["kind"]), name=str(data["name"]), layers=None if layers is None else int(layers)
        )


def build_encoder(spec: EncoderSpec, window_s: float) -> Encoder:
    """Construct (and convert or load, once) the encoder a spec names."""
    if spec.kind == "whisper-ct2":
        from spoofwatch.model.encoders.whisper_ct2 import WhisperCt2Encoder

        return WhisperCt2Encoder(spec.name, window_s=window_s, layers=spec.layers)
    if spec.kind == "hf":
        from spoofwatch.model.encoders.hf import HFEncoder

        return HFEncoder(spec.name, window_s=window_s, layers=spec.layers)
    if spec.kind == "lfcc":
        from spoofwatch.model.encoders.lfcc import LfccEncoder

        return LfccEncoder(window_s=window_s)
    if spec.kind == "lfcc-phase":
        from spoofwatch.model.encoders.phase import LfccPhaseEncoder

        return LfccPhaseEncoder(window_s=window_s)
    if spec.kind == "lfcc-phase-resynth":
        from spoofwatch.model.resynthesis.encoder import LfccPhaseResynthesisEncoder

        return LfccPhaseResynthesisEncoder(window_s=window_s)
    if spec.kind == "lfcc-phase-resynth-streamed":
        from spoofwatch.model.resynthesis.streamed_encoder import StreamedResynthesisEncoder

        return StreamedResynthesisEncoder(window_s=window_s)
    raise ModelError(
        f"unknown encoder kind {spec.kind!r}; expected 'whisper-ct2', 'hf', 'lfcc', 'lfcc-phase', "
        "'lfcc-phase-resynth' or 'lfcc-phase-resynth-streamed'"
    )
