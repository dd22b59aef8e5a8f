"""``spoofwatch robustness``: EER under laundering, a white-box attack, one defence.

Each clip of a (seeded) subsample of the manifest is scored on its first ``windows``
windows (clip score = their mean LLR, as ``eval`` scores clips), clean and after every
transform, applied to both classes alike. Metrics are computed as ``train/metrics.py``
computes them, at the card's own threshold for the rates.

The attack (``robustness.attack``) runs on the float path of the card on the first window
of the first ``attack_clips`` spoof clips of the subsample, at each budget; the attacked
windows are scored by the card as deployed too. It stops on a window once its LLR is
``STOP_MARGIN`` above the threshold, so "LLR after" is a lower bound of what it reaches.

The defence tried is input randomisation: white noise at ``defence_snr`` dB added to each
window before scoring. It is measured on the clean subsample (its cost) and on the
attacked windows (its benefit against an attacker who does not model it), and kept only
when it lowers the attacked pass rate without raising the clean EER, minDCF or actDCF.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from spoofwatch.audio.files import load_audio
from spoofwatch.errors import AudioError, DataError
from spoofwatch.model.artifact import load_detector
from spoofwatch.model.detector import Detector
from spoofwatch.model.identity import card_identity
from spoofwatch.robustness.attack import DEFAULT_STEPS, pgd
from spoofwatch.robustness.transforms import Transform, choose, noise, snr_db
from spoofwatch.stream.core.windowing import WindowConfig, cut_windows
from spoofwatch.train.corpus import LabelledItem
from spoofwatch.train.metrics import evaluate
from spoofwatch.train.threshold import llr_threshold

# The attack stops once a window's LLR is this far above the threshold (it passes).
STOP_MARGIN = 1.0


@dataclass(frozen=True)
class RobustnessOptions:
    per_class: int = 32  # clips per class drawn with ``seed``; 0 = every clip
    seed: int = 0
    windows: int = 1  # first windows of each clip scored (clip score = their mean LLR)
    transforms: tuple[str, ...] | None = None  # families or names; None = all
    attack_clips: int = 8
    attack_snrs: tuple[float, ...] = (60.0, 50.0, 40.0)
    attack_steps: int = DEFAULT_STEPS
    defence_snr: float = 40.0


def subsample(items: Sequence[LabelledItem], per_class: int, seed: int) -> list[LabelledItem]:
    """Up to ``per_class`` items of each label, drawn with ``seed`` (all for 0)."""
    rng = np.random.default_rng(seed)
    chosen: list[LabelledItem] = []
    for label in ("bonafide", "spoof"):
        pool = sorted((it for it in items if it.label == label), key=lambda it: it.utt_id)
        if per_class and len(pool) > per_class:
            pool = [pool[i] for i in sorted(rng.choice(len(pool), per_class, replace=False))]
        chosen += pool
    if not any(it.label == "bonafide" for it in chosen) or not any(it.label == "spoof" for it in chosen):
        raise DataError("robustness: the manifest needs bona fide and spoof clips")
    return chosen


class _Scorer:
    def __init__(self, detector: Detector, windows: int) -> None:
        self.detector = detector
        self.config = WindowConfig(
            detector.sample_rate, detector.settings.window_s, detector.settings.window_s
        )
        self.windows = windows

    def first_windows(self, audio: NDArray[np.float32]) -> NDArray[np.float32]:
        cut = cut_windows(audio, self.config)[: self.windows]
        if not cut:
            raise AudioError(f"shorter than {self.config.min_s} s")
        return np.stack([w.samples for w in cut])

    def clip_llrs(self, clips: Sequence[NDArray[np.float32]]) -> NDArray[np.float64]:
        stacks = [self.first_windows(c) for c in clips]
        llrs = self.detector.score_windows(np.concatenate(stacks))
        bounds = np.cumsum([0, *(len(s) for s in stacks)])
        return np.array([llrs[a:b].mean() for a, b in itertools.pairwise(bounds)])


def _metrics(llrs: NDArray[np.float64], labels: Sequence[str], threshold: float) -> dict[str, float]:
    m = evaluate(llrs, labels, threshold_llr=threshold).to_dict()
    keys = ("eer", "min_dcf", "act_dcf", "false_alarm_rate", "miss_rate")
    return {k: float(m[k]) for k in keys}


def _measured_snr(
    clean: Sequence[NDArray[np.float32]], changed: Sequence[NDArray[np.float32]]
) -> float | None:
    """Mean SNR of the transformed clips against the clean ones where lengths match (None
    where they do not: a tempo change or a codec's delay moves every sample)."""
    values = [snr_db(c, t) for c, t in zip(clean, changed, strict=True) if len(c) == len(t)]
    return float(np.mean(values)) if len(values) == len(clean) else None


def run_report(
    detector_name: str | None,
    items: Sequence[LabelledItem],
    out_dir: str | Path,
    options: RobustnessOptions = RobustnessOptions(),
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    started = time.monotonic()
    load_before = os.getloadavg()[0]
    chosen = subsample(items, options.per_class, options.seed)
    transforms = choose(options.transforms)
    detector = load_detector(detector_name)
    scorer = _Scorer(detector, options.windows)
    rate = detector.sample_rate
    keep_s = detector.settings.window_s * options.windows + 0.5  # transform only what is scored
    clips = [load_audio(it.path, rate).samples[: int(keep_s * rate)] for it in chosen]
    labels = [it.label for it in chosen]
    threshold = llr_threshold(detector.threshold)
    rng = np.random.default_rng(options.seed)
    rows: list[dict[str, Any]] = []
    clean_llrs = scorer.clip_llrs(clips)
    rows.append(
        {"family": "clean", "strength": "-", **_metrics(clean_llrs, labels, threshold), "snr_db": None}
    )
    progress(f"clean: EER {rows[0]['eer'] * 100:.1f} %")
    for transform in transforms:
        rows.append(_transform_row(transform, clips, labels, scorer, threshold, rng))
        progress(f"{transform.name}: " + (rows[-1].get("skipped") or f"EER {rows[-1]['eer'] * 100:.1f} %"))
    attack = _attack(detector_name, detector, scorer, chosen, clips, threshold, options, progress)
    defence = _defence(scorer, clips, labels, threshold, rows[0], attack, options)
    report = {
        "detector": card_identity(detector_name).to_dict(),
        "manifest_items": len(items),
        "subsample": {
            "per_class": options.per_class,
            "seed": options.seed,
            "bonafide": labels.count("bonafide"),
            "spoof": labels.count("spoof"),
            "windows_per_clip": options.windows,
            "window_s": detector.settings.window_s,
        },
        "options": asdict(options),
        "threshold_llr": threshold,
        "laundering": rows,
        "attack": attack,
        "defence": defence,
        "elapsed_s": time.monotonic() - started,
        "load_average_at_start": load_before,
        "cpus": os.cpu_count(),
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(markdown(report))
    return report


def _transform_row(
    transform: Transform,
    clips: Sequence[NDArray[np.float32]],
    labels: Sequence[str],
    scorer: _Scorer,
    threshold: float,
    rng: np.random.Generator,
) -> dict[str, Any]:
    row: dict[str, Any] = {"family": transform.family, "strength": transform.strength}
    why = transform.unavailable()
    if why is not None:
        return {**row, "skipped": why}
    try:
        changed = [transform.apply(c, scorer.detector.sample_rate, rng) for c in clips]
    except AudioError as exc:
        return {**row, "skipped": str(exc)}
    return {
        **row,
        **_metrics(scorer.clip_llrs(changed), labels, threshold),
        # A level change adds no noise: its "SNR" against the clean clip would restate the gain.
        "snr_db": None if transform.family == "level" else _measured_snr(clips, changed),
    }


def _attack(
    detector_name: str | None,
    deployed: Detector,
    scorer: _Scorer,
    chosen: Sequence[LabelledItem],
    clips: Sequence[NDArray[np.float32]],
    threshold: float,
    options: RobustnessOptions,
    progress: Callable[[str], None],
) -> dict[str, Any]:
    if options.attack_clips <= 0 or not options.attack_snrs:
        return {"skipped": "no attack asked for"}
    float_path = load_detector(detector_name, quantization="none")
    spoofs = [scorer.first_windows(c)[0] for c, it in zip(clips, chosen, strict=True) if it.label == "spoof"]
    spoofs = spoofs[: options.attack_clips]
    budgets = []
    for snr in sorted(options.attack_snrs, reverse=True):
        attacked = [
            pgd(float_path, w, snr, options.attack_steps, stop_above=threshold + STOP_MARGIN) for w in spoofs
        ]
        adversarial = np.stack([a.window for a in attacked])
        deployed_llrs = deployed.score_windows(adversarial)
        after = np.array([a.llr_after for a in attacked])
        budgets.append(
            {
                "snr_db": snr,
                "measured_snr_db": float(np.mean([a.snr_db for a in attacked])),
                "windows": len(attacked),
                "llr_before_mean": float(np.mean([a.llr_before for a in attacked])),
                "llr_after_mean": float(after.mean()),
                "pass_rate_float": float(np.mean(after > threshold)),
                "pass_rate_deployed": float(np.mean(deployed_llrs > threshold)),
                "adversarial": adversarial,  # removed before writing; the defence reads it
            }
        )
        passed = float(np.mean(after > threshold))
        progress(f"attack at {snr:g} dB SNR: {passed * 100:.0f} % of spoofs pass (float path)")
    return {
        "path": f"float path of the card (quantization none; deployed: {deployed.settings.quantization})",
        "steps": options.attack_steps,
        "clean_pass_rate": float(np.mean(scorer.detector.score_windows(np.stack(spoofs)) > threshold)),
        "budgets": budgets,
    }


def _randomised(windows: NDArray[np.float32], snr: float, seed: int) -> NDArray[np.float32]:
    rng = np.random.default_rng(seed)
    return np.stack([noise(snr)(w, 0, rng) for w in windows])


def _defence(
    scorer: _Scorer,
    clips: Sequence[NDArray[np.float32]],
    labels: Sequence[str],
    threshold: float,
    clean_row: dict[str, Any],
    attack: dict[str, Any],
    options: RobustnessOptions,
) -> dict[str, Any]:
    name = f"input randomisation: white noise at {options.defence_snr:g} dB SNR before scoring"
    windows = [scorer.first_windows(c) for c in clips]
    noisy = [_randomised(w, options.defence_snr, options.seed + i) for i, w in enumerate(windows)]
    llrs = scorer.detector.score_windows(np.concatenate(noisy))
    bounds = np.cumsum([0, *(len(w) for w in noisy)])
    clip_llrs = np.array([llrs[a:b].mean() for a, b in itertools.pairwise(bounds)])
    clean = _metrics(clip_llrs, labels, threshold)
    against: list[dict[str, float]] = []
    for budget in attack.get("budgets", []):
        adversarial = budget.pop("adversarial")
        defended = scorer.detector.score_windows(_randomised(adversarial, options.defence_snr, options.seed))
        against.append(
            {
                "snr_db": budget["snr_db"],
                "pass_rate_deployed": budget["pass_rate_deployed"],
                "pass_rate_defended": float(np.mean(defended > threshold)),
            }
        )
    helps = (
        bool(against)
        and all(a["pass_rate_defended"] <= a["pass_rate_deployed"] for a in against)
        and any(a["pass_rate_defended"] < a["pass_rate_deployed"] for a in against)
    )
    # Any of EER, minDCF or actDCF worse on the clean clips counts as a cost.
    costs = any(clean[k] > clean_row[k] + 1e-12 for k in ("eer", "min_dcf", "act_dcf"))
    return {
        "tried": name,
        "clean_with_defence": clean,
        "clean_without": {k: clean_row[k] for k in clean},
        "against_attack": against,
        "helps": helps,
        "costs_clean_accuracy": costs,
        "kept": helps and not costs,
        "attacker": "non-adaptive (the attack does not model the added noise)",
    }


def _pct(value: float | None) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value * 100:.1f}"


def markdown(report: dict[str, Any]) -> str:
    sub = report["subsample"]
    lines = [
        f"Detector `{report['detector']['name']}` ({report['detector']['sha256'][:12]}); "
        f"{sub['bonafide']} bona fide + {sub['spoof']} spoof clips (seed {sub['seed']}, of "
        f"{report['manifest_items']}), first {sub['windows_per_clip']} window(s) of "
        f"{sub['window_s']:g} s each; {report['elapsed_s'] / 60:.1f} min on {report['cpus']} CPUs "
        f"(load average {report['load_average_at_start']:.1f} at start).",
        "",
        "| transform | strength | EER % | minDCF | actDCF | false alarms % | misses % | SNR dB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in report["laundering"]:
        if "skipped" in row:
            lines.append(f"| {row['family']} | {row['strength']} | skipped: {row['skipped']} | | | | | |")
            continue
        snr = "–" if row["snr_db"] is None else f"{row['snr_db']:.1f}"
        lines.append(
            f"| {row['family']} | {row['strength']} | {_pct(row['eer'])} | {row['min_dcf']:.3f} | "
            f"{row['act_dcf']:.3f} | {_pct(row['false_alarm_rate'])} | {_pct(row['miss_rate'])} | {snr} |"
        )
    attack = report["attack"]
    if "budgets" in attack:
        lines += [
            "",
            f"White-box PGD ({attack['steps']} steps, L2 budget as SNR; {attack['path']}); "
            f"spoof windows passing as bona fide without attack: {_pct(attack['clean_pass_rate'])} %.",
            "",
            "| budget SNR dB | measured SNR dB | windows | mean LLR before | after "
            "| pass % (float) | pass % (deployed) |",
            "|---|---|---|---|---|---|---|",
        ]
        for b in attack["budgets"]:
            lines.append(
                f"| {b['snr_db']:g} | {b['measured_snr_db']:.1f} | {b['windows']} "
                f"| {b['llr_before_mean']:+.2f} | {b['llr_after_mean']:+.2f} "
                f"| {_pct(b['pass_rate_float'])} | {_pct(b['pass_rate_deployed'])} |"
            )
    d = report["defence"]
    lines += [
        "",
        f"Defence tried: {d['tried']} ({d['attacker']}). Clean EER {_pct(d['clean_without']['eer'])} % → "
        f"{_pct(d['clean_with_defence']['eer'])} %, minDCF {d['clean_without']['min_dcf']:.3f} → "
        f"{d['clean_with_defence']['min_dcf']:.3f}, actDCF {d['clean_without']['act_dcf']:.3f} → "
        f"{d['clean_with_defence']['act_dcf']:.3f}; attacked pass rate (deployed → defended): "
        + ", ".join(
            f"{a['snr_db']:g} dB {_pct(a['pass_rate_deployed'])} → {_pct(a['pass_rate_defended'])} %"
            for a in d["against_attack"]
        )
        + f". Kept: {'yes' if d['kept'] else 'no'}.",
    ]
    return "\n".join(lines) + "\n"
