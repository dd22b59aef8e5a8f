"""Any Hugging Face audio encoder (wav2vec2, HuBERT, WavLM, XLS-R, Whisper) from a local
directory or a hub id, for users who have such checkpoints.

Waveform models get the per-window zero-mean/unit-variance normalisation their feature
extractors apply (when the checkpoint's ``do_normalize`` asks for it, the default);
Whisper checkpoints get the shared log-mel front end and a position table cut to the
window, like the default encoder.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModel, PretrainedConfig, WhisperModel
from transformers.feature_extraction_utils import FeatureExtractionMixin

from spoofwatch.errors import ModelError
from spoofwatch.model.encoders.base import EncoderIdentity, TorchEncoder, check_windows
from spoofwatch.model.encoders.mel import HOP_LENGTH, WHISPER_SAMPLE_RATE, WhisperLogMel

logger = logging.getLogger(__name__)

WAVEFORM_MODEL_TYPES = (
    "wav2vec2",
    "hubert",
    "wavlm",
    "wav2vec2-conformer",
    "data2vec-audio",
    "unispeech-sat",
)


def state_dict_sha256(module: torch.nn.Module) -> str:
    """A hash of every parameter and buffer, by name, so one identity fits local and hub loads."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to(torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def _checked_layers(layers: int | None, available: int) -> int:
    """Keep ``layers`` transformer layers; more than the checkpoint has would be random."""
    if layers is None:
        return available
    if not 1 <= layers <= available:
        raise ModelError(f"layers must be within 1..{available} for this checkpoint, found {layers}")
    return layers


def _wants_normalisation(name_or_path: str) -> bool:
    """The checkpoint's own ``do_normalize`` (feature extractors default to True)."""
    try:
        settings, _ = FeatureExtractionMixin.get_feature_extractor_dict(name_or_path)
    except (OSError, ValueError):
        return True
    return bool(settings.get("do_normalize", True))


def _load(model_class: Any, name_or_path: str, config: PretrainedConfig) -> torch.nn.Module:
    # float32 explicitly: transformers otherwise keeps a float16 checkpoint's dtype.
    try:
        model: torch.nn.Module = model_class.from_pretrained(name_or_path, config=config, dtype=torch.float32)
    except OSError as exc:
        raise ModelError(f"cannot load Hugging Face weights from {name_or_path!r}: {exc}") from exc
    return model


class HFEncoder(TorchEncoder):
    """A frozen Hugging Face encoder; ``layers`` keeps only the first K transformer layers."""

    def __init__(
        self, name_or_path: str, window_s: float = 4.0, layers: int | None = None, sample_rate: int = 16000
    ) -> None:
        super().__init__()
        self.name_or_path = name_or_path
        try:
            config = AutoConfig.from_pretrained(name_or_path)
        except (OSError, ValueError) as exc:
            raise ModelError(
                f"cannot load a Hugging Face config from {name_or_path!r} (expected a local "
                f"directory with config.json or a reachable hub id): {exc}"
            ) from exc
        self.model_type: str = config.model_type
        self._window_samples = round(window_s * sample_rate)
        self.mel: WhisperLogMel | None = None
        self.normalise_waveform = False
        self.backbone: torch.nn.Module
        if self.model_type == "whisper":
            if sample_rate != WHISPER_SAMPLE_RATE:
                raise ModelError(
                    f"Whisper expects {WHISPER_SAMPLE_RATE} Hz audio, found sample_rate={sample_rate}"
                )
            positions = self._window_samples // (2 * HOP_LENGTH)
            if positions * 2 * HOP_LENGTH != self._window_samples:
                raise ModelError(f"window_s must be a multiple of 0.02 s for Whisper, found {window_s}")
            if not 1 <= positions <= config.max_source_positions:
                raise ModelError(
                    f"window_s must be within 0.02..{config.max_source_positions / 50} s for this "
                    f"Whisper checkpoint, found {window_s}"
                )
            n_layers = config.encoder_layers = _checked_layers(layers, int(config.encoder_layers))
            whisper: Any = _load(WhisperModel, name_or_path, config)
            encoder = whisper.get_encoder()
            # Hash before cutting the position table, so the identity does not depend on
            # the window (the artifact checks the window separately).
            weights_sha256 = state_dict_sha256(encoder)
            table = encoder.embed_positions.weight.data[:positions].clone()
            encoder.config.max_source_positions = positions
            encoder.embed_positions = torch.nn.Embedding(positions, table.shape[1])
            encoder.embed_positions.weight.data.copy_(table)
            encoder.embed_positions.requires_grad_(False)
            self.backbone = encoder
            self.mel = WhisperLogMel(config.num_mel_bins)
            hidden_size = int(config.d_model)
        elif self.model_type in WAVEFORM_MODEL_TYPES:
            n_layers = config.num_hidden_layers = _checked_layers(layers, int(config.num_hidden_layers))
            self.backbone = _load(AutoModel, name_or_path, config)
            self.normalise_waveform = _wants_normalisation(name_or_path)
            weights_sha256 = state_dict_sha256(self.backbone)
            hidden_size = int(config.hidden_size)
        else:
            raise ModelError(
                f"unsupported Hugging Face model type {self.model_type!r}; expected whisper "
                f"or one of {WAVEFORM_MODEL_TYPES}"
            )
        self.backbone.eval()
        self.backbone.requires_grad_(False)
        self._identity = EncoderIdentity(
            kind="hf",
            name=str(Path(name_or_path).name if Path(name_or_path).exists() else name_or_path),
            weights_sha256=weights_sha256,
            sample_rate=sample_rate,
            num_hidden_states=n_layers + 1,
            hidden_size=hidden_size,
        )

    def hidden_states(self, windows: torch.Tensor) -> tuple[torch.Tensor, ...]:
        check_windows(windows, self._window_samples)
        if self.mel is not None:
            out = self.backbone(self.mel(windows), output_hidden_states=True)
        elif self.normalise_waveform:
            mean = windows.mean(dim=1, keepdim=True)
            std = windows.var(dim=1, keepdim=True, unbiased=False).add(1e-7).sqrt()
            out = self.backbone((windows - mean) / std, output_hidden_states=True)
        else:
            out = self.backbone(windows, output_hidden_states=True)
        return tuple(out.hidden_states)
