"""``spoofwatch eval``: score a labelled list with a detector, the way streaming windows it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from spoofwatch.errors import DataError
from spoofwatch.model.artifact import load_detector
from spoofwatch.model.detector import Detector
from spoofwatch.stream.windowing import WindowConfig
from spoofwatch.train.corpus import LabelledItem
from spoofwatch.train.extract import EmbeddingSet, extract
from spoofwatch.train.fit import accumulated_evidence_eer, clip_llrs
from spoofwatch.train.metrics import Metrics, evaluate
from spoofwatch.train.report import plot_accumulated_evidence, write_report


def llr_threshold(p_spoof_threshold: float) -> float:
    """The LLR at which p_spoof = 1 / (1 + e^llr) equals the threshold."""
    return math.log((1.0 - p_spoof_threshold) / p_spoof_threshold)


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
        ]
        if m.per_system:
            lines.append("per-system EER:")
            lines += [f"  {name:<40} {eer * 100:6.2f} %" for name, eer in sorted(m.per_system.items())]
        return "\n".join(lines)


def window_config(detector: Detector) -> WindowConfig:
    return WindowConfig(detector.sample_rate, detector.settings.window_s, detector.settings.hop_s)


def window_scores(detector: Detector, embeddings: EmbeddingSet) -> NDArray[np.float64]:
    return detector.score_features(embeddings.select_layers(detector.settings.layers))


def evaluate_detector(
    detector_dir: str | Path | None,
    items: Sequence[LabelledItem],
    *,
    channel: str = "clean",
    out_dir: str | Path | None = None,
    progress: bool = True,
) -> EvalResult:
    if not items:
        raise DataError("nothing to evaluate: the labelled list is empty")
    detector = load_detector(detector_dir)
    embeddings = extract(items, detector.encoder, window_config(detector), channel=channel, progress=progress)
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
        write_report(
            Path(out_dir),
            list(items),
            scores,
            metrics,
            threshold,
            {"channel": channel, "eer_by_windows_accumulated": evidence},
        )
        plot_accumulated_evidence(Path(out_dir) / "eer_by_windows.png", evidence, detector.settings.hop_s)
    return result
