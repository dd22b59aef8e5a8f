"""Detector artifacts on disk: ``head.safetensors`` + ``model_card.json``, never pickle.

Loading checks that the encoder is the one the head was trained on (kind, weights hash,
width, sample rate) and that the window length matches, and refuses mismatches.
"""

from __future__ import annotations

import json
import logging
import os
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from spoofwatch.errors import ArtifactMismatchError, ModelError
from spoofwatch.model.backend import backend_of, check_backend, runtime_encoder
from spoofwatch.model.calibration import AffineCalibration
from spoofwatch.model.detector import Detector, DetectorSettings
from spoofwatch.model.device import DeviceEncoder, resolve_device
from spoofwatch.model.encoders.base import Encoder, EncoderIdentity
from spoofwatch.model.encoders.registry import EncoderSpec, build_encoder
from spoofwatch.model.heads import Head, head_from_tensors
from spoofwatch.model.level import ACTIVE_RANGE_DB, MAX_GAIN_DB, check_target
from spoofwatch.model.mlp_head import MLPHead
from spoofwatch.model.quantize import check_quantization, quantization_of
from spoofwatch.model.runtime_modes import CPU, TORCH

CARD_FILE = "model_card.json"
TENSORS_FILE = "head.safetensors"
FORMAT_VERSION = 1

logger = logging.getLogger(__name__)


# Detectors shipped inside the package, by name: ``default`` and ``resynth`` (more accurate
# on held-out sources; remakes every stream with the FARGAN vocoder, each second once, so
# fewer real-time streams per core).
PACKAGED_DETECTORS = ("default", "resynth")


def detector_dir(directory: str | os.PathLike[str] | None = None) -> Path:
    """Where a detector lives: ``directory`` (a folder, or the name of a packaged detector
    where no such folder exists), else ``$SPOOFWATCH_DETECTOR`` (the same), else the
    packaged ``default``."""
    chosen = directory if directory is not None else os.environ.get("SPOOFWATCH_DETECTOR") or "default"
    path = Path(chosen).expanduser()
    if not path.exists() and str(chosen) in PACKAGED_DETECTORS:
        return Path(str(resources.files("spoofwatch.model") / str(chosen)))
    return path


def save_detector(
    directory: str | os.PathLike[str],
    *,
    head: Head,
    calibration: AffineCalibration,
    settings: DetectorSettings,
    encoder_spec: EncoderSpec,
    encoder_identity: EncoderIdentity,
    card_extra: dict[str, Any] | None = None,
    spectral: tuple[EncoderSpec, EncoderIdentity] | None = None,
) -> Path:
    """Write a detector directory; returns its path."""
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    save_file(head.to_tensors(), str(target / TENSORS_FILE))
    card: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "encoder": {"spec": encoder_spec.to_dict(), "identity": encoder_identity.to_dict()},
        "window": {
            "window_s": settings.window_s,
            "hop_s": settings.hop_s,
            "sample_rate": encoder_identity.sample_rate,
        },
        "layers": list(settings.layers),
        "pooling": "mean+std per layer" + ("; then mean+std of the spectral frames" if spectral else ""),
        "head": head_card(head),
        "calibration": calibration.to_dict(),
        "threshold": {"p_spoof": settings.threshold},
        "inference": inference_card(settings),
        **level_card(settings),
        **(card_extra or {}),
    }
    if spectral is not None:
        card["spectral"] = {"spec": spectral[0].to_dict(), "identity": spectral[1].to_dict()}
    (target / CARD_FILE).write_text(json.dumps(card, indent=2, sort_keys=False) + "\n")
    return target


def head_card(head: Head) -> dict[str, Any]:
    """The card's ``head`` section: its kind and shape (the tensors hold the weights)."""
    if isinstance(head, MLPHead):
        return {
            "kind": "mlp",
            "n_features": head.n_features_in_,
            "hidden": head.options.hidden,
            "activation": "gelu-tanh",
            "training": head.options.to_dict(),
        }
    return {"kind": "logistic-regression", "n_features": head.n_features_in_}


def inference_card(settings: DetectorSettings) -> dict[str, Any]:
    """How the detector runs (no effect on what a window scores, up to int8 rounding)."""
    return {
        "backend": settings.backend,
        "quantization": settings.quantization,
        "num_threads": settings.num_threads,
        "max_batch": settings.max_batch,
        "device": settings.device,
    }


def level_card(settings: DetectorSettings) -> dict[str, Any]:
    """The card's ``level`` section (absent when windows are scored at their own level)."""
    if settings.level_dbfs is None:
        return {}
    return {
        "level": {
            "normalise": "active speech level per window",
            "target_dbfs": settings.level_dbfs,
            "active_range_db": ACTIVE_RANGE_DB,
            "max_gain_db": MAX_GAIN_DB,
        }
    }


def _level_dbfs(card: dict[str, Any]) -> float | None:
    section = card.get("level")
    if section is None:
        return None
    if not isinstance(section, dict):
        raise TypeError(f"'level' must be an object, found {type(section).__name__}")
    return check_target(float(section["target_dbfs"]))


def _inference_options(card: dict[str, Any]) -> tuple[str, int, int, str]:
    """(quantization, num_threads, max_batch, backend) from the card; cards without them
    get defaults."""
    section = card.get("inference") or {}
    if not isinstance(section, dict):
        raise TypeError(f"'inference' must be an object, found {type(section).__name__}")
    return (
        str(section.get("quantization", DetectorSettings.quantization)),
        int(section.get("num_threads", DetectorSettings.num_threads)),
        int(section.get("max_batch", DetectorSettings.max_batch)),
        str(section.get("backend", DetectorSettings.backend)),
    )


def read_card(directory: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(directory) / CARD_FILE
    if not path.is_file():
        raise ModelError(
            f"{directory}: not a detector directory (expected {CARD_FILE} in it) nor the name of a "
            f"packaged detector ({', '.join(PACKAGED_DETECTORS)})"
        )
    try:
        card = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path}: invalid JSON ({exc})") from None
    if not isinstance(card, dict) or card.get("format_version") != FORMAT_VERSION:
        raise ModelError(
            f"{path}: expected format_version {FORMAT_VERSION}, found "
            f"{card.get('format_version') if isinstance(card, dict) else type(card).__name__}"
        )
    return card


def check_identity(expected: EncoderIdentity, actual: EncoderIdentity, layers: tuple[int, ...]) -> None:
    """Refuse an encoder other than the one the head was trained on.

    Depth counts too: the card records the depth the detector runs at (a Whisper head on
    lower states may run a truncated encoder; see ``TrainOptions.truncate_encoder``), and a
    Hugging Face encoder's last state after truncation is not the full encoder's.
    """
    for field in ("kind", "weights_sha256", "hidden_size", "sample_rate", "num_hidden_states"):
        want, got = getattr(expected, field), getattr(actual, field)
        if want != got:
            raise ArtifactMismatchError(
                f"encoder mismatch: the detector was trained with {field}={want!r}, "
                f"the encoder given has {field}={got!r}"
            )
    if max(layers) >= actual.num_hidden_states:
        raise ArtifactMismatchError(
            f"the head reads hidden state {max(layers)}, the encoder has only {actual.num_hidden_states}"
        )


def load_detector(
    directory: str | os.PathLike[str] | None = None,
    *,
    encoder: Encoder | None = None,
    window_s: float | None = None,
    hop_s: float | None = None,
    quantization: str | None = None,
    num_threads: int | None = None,
    max_batch: int | None = None,
    backend: str | None = None,
    device: str | None = None,
) -> Detector:
    """Load a detector; builds its encoder from the card unless one is given.

    ``window_s`` must equal the trained window if given; ``hop_s`` may differ (it only
    changes how often windows are cut, not what one window scores). ``quantization``,
    ``num_threads`` and ``max_batch`` override the card's ``inference`` section; with an
    int8 mode the encoder's Linear layers are quantised after the identity check (see
    ``spoofwatch.model.quantize``). ``backend`` (``torch`` | ``onnxruntime``) overrides the
    card's too; a head runs best on the backend it was fitted with. ``device`` (``cpu``,
    ``cuda``, ``cuda:N``, ``auto``; default cpu) is where the encoder runs: on a GPU with
    torch, its int8 layers emulated in float32 (``model.int8_emulation``); onnxruntime
    asked for there is refused.
    """
    target = resolve_device(device)
    path = detector_dir(directory)
    card = read_card(path)
    try:
        trained_window = float(card["window"]["window_s"])
        trained_hop = float(card["window"]["hop_s"])
        layers = tuple(int(x) for x in card["layers"])
        spec = EncoderSpec.from_dict(card["encoder"]["spec"])
        identity = EncoderIdentity.from_dict(card["encoder"]["identity"])
        calibration = AffineCalibration.from_dict(card["calibration"])
        threshold = float(card["threshold"]["p_spoof"])
        card_quantization, card_threads, card_batch, card_backend = _inference_options(card)
        level_dbfs = _level_dbfs(card)
    except (KeyError, TypeError, ValueError, AttributeError, ModelError) as exc:
        raise ModelError(f"{path / CARD_FILE}: malformed model card ({exc!r})") from None
    if not layers:
        raise ModelError(f"{path / CARD_FILE}: expected at least one layer in 'layers', found none")
    if window_s is not None and abs(window_s - trained_window) > 1e-9:
        raise ArtifactMismatchError(
            f"window mismatch: the detector was trained on {trained_window} s windows, "
            f"{window_s} s was requested"
        )
    tensors_path = path / TENSORS_FILE
    if not tensors_path.is_file():
        raise ModelError(f"{path}: missing {TENSORS_FILE}")
    try:
        tensors = {k: np.asarray(v) for k, v in load_file(str(tensors_path)).items()}
    except (SafetensorError, OSError) as exc:
        raise ModelError(f"{tensors_path}: expected a safetensors file, cannot read it ({exc})") from None
    head = head_from_tensors(tensors)
    section = card.get("head")
    stated = section.get("kind") if isinstance(section, dict) else None
    held = head_card(head)["kind"]
    if stated is not None and stated != held:
        raise ModelError(
            f"{path}: the card's head is {stated!r} but {TENSORS_FILE} holds a head of kind {held!r}"
        )
    spectral = _spectral_front_end(card, path, trained_window)
    if encoder is None:
        encoder = build_encoder(spec, trained_window)
    check_identity(identity, encoder.identity, layers)
    expected_samples = round(trained_window * identity.sample_rate)
    if encoder.window_samples != expected_samples:
        raise ArtifactMismatchError(
            f"window mismatch: the detector expects {expected_samples} samples per window, "
            f"the encoder given takes {encoder.window_samples}"
        )
    wanted = card_quantization if quantization is None else quantization
    runtime = card_backend if backend is None else backend
    if target != CPU:
        runtime = _gpu_runtime(target, runtime, backend)
    encoder = runtime_encoder(encoder, check_quantization(wanted), check_backend(runtime))
    if target != CPU:
        encoder = DeviceEncoder(encoder, target)
    settings = DetectorSettings(
        window_s=trained_window,
        hop_s=trained_hop if hop_s is None else hop_s,
        layers=layers,
        threshold=threshold,
        max_batch=card_batch if max_batch is None else max_batch,
        quantization=quantization_of(encoder.identity),
        num_threads=card_threads if num_threads is None else num_threads,
        backend=backend_of(encoder.identity),
        level_dbfs=level_dbfs,
        device=target,
    )
    card = {**card, "inference": inference_card(settings)}
    return Detector(encoder, head, calibration, settings, card, spectral=spectral)


def _gpu_runtime(device: str, runtime: str, backend: str | None) -> str:
    """The backend for an encoder on a GPU: torch. What the card says gives way; an
    explicit onnxruntime is refused (this package runs it on CPUs only)."""
    if backend is not None and backend != TORCH:
        raise ModelError(f"device {device!r}: expected backend {TORCH!r} on a GPU, found {backend!r}")
    if runtime != TORCH:
        logger.info("on %s the encoder runs with torch, not the card's %s", device, runtime)
    return TORCH


def _spectral_front_end(card: dict[str, Any], path: Path, window_s: float) -> Encoder | None:
    """The card's spectral front end (LFCC), built and checked against its recipe hash."""
    section = card.get("spectral")
    if section is None:
        return None
    try:
        spec = EncoderSpec.from_dict(section["spec"])
        identity = EncoderIdentity.from_dict(section["identity"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ModelError(f"{path / CARD_FILE}: malformed 'spectral' section ({exc!r})") from None
    front_end = build_encoder(spec, window_s)
    if front_end.identity != identity:
        raise ArtifactMismatchError(
            f"spectral front end mismatch: the detector was trained with {identity}, "
            f"this version computes {front_end.identity}"
        )
    return front_end
