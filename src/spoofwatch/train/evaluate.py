"""``spoofwatch eval``: score a labelled list with a detector, the way streaming windows it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from spoofwatch.errors import DataError
from spoofwatch.model.artifact import load_detector
from spoofwatch.model.backend import runtime_encoder
from spoofwatch.model.detector import Detector
from spoofwatch.model.encoders.registry import EncoderSpec, build_encoder
from spoofwatch.stream.core.windowing import WindowConfig
from spoofwatch.train.corpus import LabelledItem
from spoofwatch.train.extract import EmbeddingSet, extract_with_spectral
from spoofwatch.train.fit import accumulated_evidence_eer, clip_llrs
from spoofwatch.train.metrics import Metrics, compute_eer, evaluate
from spoofwatch.train.report import plot_accumulated_evidence, plot_window_length, write_report
from spoofwatch.train.threshold import llr_threshold

# Window lengths of the report's "EER against window length" table (seconds).
REPORT_WINDOW_LENGTHS: tuple[float, ...] = (1.0, 2.0, 3.0, 4.0)


@dataclass(frozen=True)
class EvalResult:
    items: tuple[LabelledItem, ...]
    clip_scores: NDArray[np.float64]
    metrics: Metrics
    n_failed: int
    channel: str

    def summary(self) -> dict[str, Any]:
        return {**self.metrics.to_dict(), "n_failed": self.n_failed, "channel": self.channel}

    def human(self) -> str:
        m = self.metrics
        lines = [
            f"items: {m.n_bonafide} bona fide, {m.n_spoof} spoof ({self.n_failed} failed), "
            f"channel {self.channel}",
            f"EER {m.eer * 100:.2f} %  (threshold {m.eer_threshold:+.3f})",
            f"minDCF {m.min_dcf:.4f}  actDCF {m.act_dcf:.4f}  Cllr {m.cllr:.4f} bits  AUC {m.auc:.4f}",
            f"accuracy {m.accuracy * 100:.2f} %  F1(spoof) {m.f1:.4f}",
            f"at the detector's threshold: false alarms {m.false_alarm_rate * 100:.2f} % of bona fide, "
            f"misses {m.miss_rate * 100:.2f} % of spoof",
        ]
        if m.per_system:
            lines.append("per-system EER:")
            lines += [f"  {name:<40} {eer * 100:6.2f} %" for name, eer in sorted(m.per_system.items())]
        return "\n".join(lines)


def window_config(detector: Detector) -> WindowConfig:
    return WindowConfig(detector.sample_rate, detector.settings.window_s, detector.settings.hop_s)


def detector_embeddings(
    detector: Detector, items: Sequence[LabelledItem], channel: str, progress: bool
) -> EmbeddingSet:
    """Every window of ``items`` as the detector cuts and embeds it (cached)."""
    return extract_with_spectral(
        items,
        detector.encoder,
        detector.spectral,
        window_config(detector),
        channel=channel,
        progress=progress,
        level_dbfs=detector.settings.level_dbfs,
    )


def window_scores(detector: Detector, embeddings: EmbeddingSet) -> NDArray[np.float64]:
    return detector.score_features(embeddings.select_layers(detector.settings.layers))


def _eer_or_nan(scores: NDArray[np.float64], is_bona: NDArray[np.bool_]) -> float:
    if not is_bona.any() or is_bona.all():
        return math.nan
    return compute_eer(scores[is_bona], scores[~is_bona])[0]


def with_window(detector: Detector, window_s: float) -> Detector:
    """The same encoder, head and calibration on windows of another length (the head was
    fitted on ``detector.settings.window_s``; pooled statistics make any length scoreable)."""
    if abs(window_s - detector.settings.window_s) < 1e-9:
        return detector
    spec = EncoderSpec.from_dict(detector.card["encoder"]["spec"])
    encoder = runtime_encoder(
        build_encoder(spec, window_s), detector.settings.quantization, detector.settings.backend
    )
    spectral = None
    if detector.spectral is not None:
        spectral = build_encoder(EncoderSpec.from_dict(detector.card["spectral"]["spec"]), window_s)
    settings = replace(detector.settings, window_s=window_s, hop_s=min(detector.settings.hop_s, window_s))
    return Detector(encoder, detector.head, detector.calibration, settings, detector.card, spectral=spectral)


def window_length_eer(
    detector: Detector,
    items: Sequence[LabelledItem],
    lengths: Sequence[float],
    *,
    channel: str = "clean",
    progress: bool = True,
    own: tuple[EmbeddingSet, NDArray[np.float64]] | None = None,
) -> dict[str, dict[str, float]]:
    """Clip-level and single-window EER of the detector's head on windows of each length.

    Shorter windows decide sooner but see less speech; clips shorter than a window are
    tiled to fill it, as streaming does. ``own``: embeddings and window scores already
    computed at the detector's own length, used instead of computing them again.
    """
    out: dict[str, dict[str, float]] = {}
    for length in lengths:
        variant = with_window(detector, float(length))
        if variant is detector and own is not None:
            embeddings, per_window = own
        else:
            embeddings = detector_embeddings(variant, items, channel, progress)
            per_window = window_scores(variant, embeddings)
        clip = clip_llrs(embeddings, per_window)
        is_bona_item = np.array([it.label == "bonafide" for it in embeddings.items], dtype=bool)
        keep = ~np.isnan(clip)
        out[f"{float(length):g}"] = {
            "clip_eer": _eer_or_nan(clip[keep], is_bona_item[keep]),
            "window_eer": _eer_or_nan(per_window, is_bona_item[embeddings.item_index]),
            "windows": float(len(per_window)),
        }
    return out


def evaluate_detector(
    detector_dir: str | Path | None,
    items: Sequence[LabelledItem],
    *,
    channel: str = "clean",
    out_dir: str | Path | None = None,
    progress: bool = True,
    window_lengths: Sequence[float] = REPORT_WINDOW_LENGTHS,
) -> EvalResult:
    if not items:
        raise DataError("nothing to evaluate: the labelled list is empty")
    detector = load_detector(detector_dir)
    embeddings = detector_embeddings(detector, items, channel, progress)
    per_window = window_scores(detector, embeddings)
    scores = clip_llrs(embeddings, per_window)
    keep = ~np.isnan(scores)
    kept = [it for it, k in zip(items, keep, strict=True) if k]
    threshold = llr_threshold(detector.threshold)
    metrics = evaluate(
        scores[keep], [it.label for it in kept], [it.system for it in kept], threshold_llr=threshold
    )
    result = EvalResult(tuple(items), scores, metrics, int((~keep).sum()), channel)
    if out_dir is not None:
        evidence = accumulated_evidence_eer(embeddings, per_window)
        lengths = window_length_eer(
            detector, items, window_lengths, channel=channel, progress=progress, own=(embeddings, per_window)
        )
        write_report(
            Path(out_dir),
            list(items),
            scores,
            metrics,
            threshold,
            {
                "channel": channel,
                "eer_by_windows_accumulated": evidence,
                "eer_by_window_length": lengths,
                "head_window_s": detector.settings.window_s,
            },
        )
        plot_accumulated_evidence(Path(out_dir) / "eer_by_windows.png", evidence, detector.settings.hop_s)
        if lengths:
            plot_window_length(
                Path(out_dir) / "eer_by_window_length.png", lengths, detector.settings.window_s
            )
    return result
