"""Evaluation reports: per-item scores CSV, metrics JSON, DET curve and score histograms."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from numpy.typing import NDArray
from scipy.stats import norm

from spoofwatch.train.corpus import LabelledItem
from spoofwatch.train.metrics import Metrics, compute_det_curve


def write_scores_csv(path: Path, items: Sequence[LabelledItem], scores: NDArray[np.float64]) -> None:
    """One row per item: identity columns, score, p_spoof and the manifest's extra columns."""
    extra_keys = sorted({k for it in items for k in it.extra})
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["path", "utt_id", "label", "system", "speaker", "source", "score", "p_spoof", *extra_keys]
        )
        for item, score in zip(items, scores, strict=True):
            p = "" if np.isnan(score) else f"{1.0 / (1.0 + np.exp(score)):.6f}"
            writer.writerow(
                [
                    str(item.path),
                    item.utt_id,
                    item.label,
                    item.system,
                    item.speaker,
                    item.source,
                    "" if np.isnan(score) else f"{score:.6f}",
                    p,
                    *(item.extra.get(k, "") for k in extra_keys),
                ]
            )


def plot_det(path: Path, curves: dict[str, tuple[NDArray[np.float64], NDArray[np.float64]]]) -> None:
    """DET curves (normal-deviate axes) for one or more score sets."""
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    ticks = np.array([0.001, 0.01, 0.05, 0.1, 0.2, 0.4, 0.6])
    for name, (bona, spoof) in curves.items():
        frr, far, _ = compute_det_curve(bona, spoof)
        eps = 1e-4
        ax.plot(norm.ppf(np.clip(far, eps, 1 - eps)), norm.ppf(np.clip(frr, eps, 1 - eps)), label=name)
    ax.set_xticks(norm.ppf(ticks), [f"{t:g}" for t in ticks * 100])
    ax.set_yticks(norm.ppf(ticks), [f"{t:g}" for t in ticks * 100])
    ax.set_xlim(norm.ppf(0.0005), norm.ppf(0.7))
    ax.set_ylim(norm.ppf(0.0005), norm.ppf(0.7))
    ax.set_xlabel("False alarm rate: spoof accepted (%)")
    ax.set_ylabel("Miss rate: bona fide rejected (%)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title("DET curve")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_histograms(
    path: Path, bona: NDArray[np.float64], spoof: NDArray[np.float64], threshold: float
) -> None:
    fig, ax = plt.subplots(figsize=(6.5, 4))
    lo = float(min(bona.min(), spoof.min()))
    hi = float(max(bona.max(), spoof.max()))
    bins = np.linspace(lo, hi, 40).tolist()
    ax.hist(bona, bins=bins, alpha=0.6, label=f"bona fide (n={len(bona)})", color="tab:green")
    ax.hist(spoof, bins=bins, alpha=0.6, label=f"spoof (n={len(spoof)})", color="tab:red")
    ax.axvline(threshold, color="k", linestyle="--", label="decision threshold")
    ax.set_xlabel("score (LLR, higher = bona fide)")
    ax.set_ylabel("clips")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_accumulated_evidence(path: Path, eer_by_k: dict[int, float], hop_s: float) -> None:
    """EER against the number of windows averaged, i.e. seconds of streaming evidence."""
    ks = sorted(eer_by_k)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(ks, [eer_by_k[k] * 100 for k in ks], marker="o")
    ax.set_xlabel(f"windows averaged (one every {hop_s:g} s)")
    ax.set_ylabel("EER (%)")
    ax.grid(True, alpha=0.3)
    ax.set_title("EER as evidence accumulates")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_window_length(path: Path, by_length: dict[str, dict[str, float]], head_window_s: float) -> None:
    """Clip-level and single-window EER against window length."""
    lengths = sorted(by_length, key=float)
    xs = [float(x) for x in lengths]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for key, label in (("clip_eer", "clip (mean of windows)"), ("window_eer", "single window")):
        ax.plot(xs, [by_length[x][key] * 100 for x in lengths], marker="o", label=label)
    ax.set_xlabel(f"window length (s); head fitted on {head_window_s:g} s windows")
    ax.set_ylabel("EER (%)")
    ax.set_xticks(xs)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("EER against window length")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(
    out_dir: Path,
    items: Sequence[LabelledItem],
    scores: NDArray[np.float64],
    metrics: Metrics,
    threshold_llr: float,
    extra: dict[str, Any] | None = None,
) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    write_scores_csv(out_dir / "scores.csv", items, scores)
    keep = ~np.isnan(scores)
    labels = np.array([it.label for it in items])
    bona = scores[keep & (labels == "bonafide")]
    spoof = scores[keep & (labels == "spoof")]
    plot_det(out_dir / "det.png", {"all": (bona, spoof)})
    plot_histograms(out_dir / "histogram.png", bona, spoof, threshold_llr)
    (out_dir / "metrics.json").write_text(json.dumps({**metrics.to_dict(), **(extra or {})}, indent=2) + "\n")
