"""``spoofwatch canary``: a candidate card against the current one, before it may be promoted.

Both cards score a pinned evaluation manifest (clip score = mean window LLR, metrics as
``spoofwatch eval`` computes them: EER, minDCF, actDCF, false-alarm rate at each card's own
threshold) and the feedback the candidate's retraining held out (each feedback record is
one trial, scored as the mean LLR of its windows). The candidate fails when any gated
metric is worse than the current card's by more than the tolerance. The verdict is written
beside the candidate (``canary.json``, which ``promote`` reads; it is not part of the
card's identity).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray
from safetensors.numpy import load_file

from spoofwatch.errors import DataError, ModelError
from spoofwatch.learning.feedback_store import FeedbackRecord, read_feedback
from spoofwatch.model.artifact import TENSORS_FILE, detector_dir, read_card
from spoofwatch.model.calibration import AffineCalibration
from spoofwatch.model.heads import Head, head_from_tensors
from spoofwatch.model.identity import CardIdentity, card_identity, feature_space
from spoofwatch.train.corpus import LabelledItem
from spoofwatch.train.evaluate import evaluate_detector
from spoofwatch.train.metrics import evaluate
from spoofwatch.train.threshold import llr_threshold

RECORD_FILE: Final = "canary.json"
# Error rates (fractions: EER, false-alarm and miss rates) may be this much worse ...
DEFAULT_RATE_TOLERANCE: Final = 0.01
# ... and normalised detection costs (minDCF, actDCF) this much.
DEFAULT_DCF_TOLERANCE: Final = 0.05
_KIND: Final = {
    "eer": "rate",
    "min_dcf": "dcf",
    "act_dcf": "dcf",
    "false_alarm_rate": "rate",
    "miss_rate": "rate",
}
MANIFEST_GATED: Final = ("eer", "min_dcf", "act_dcf", "false_alarm_rate")
FEEDBACK_GATED: Final = ("eer", "min_dcf", "act_dcf", "false_alarm_rate", "miss_rate")


@dataclass(frozen=True)
class Tolerance:
    rate: float = DEFAULT_RATE_TOLERANCE
    dcf: float = DEFAULT_DCF_TOLERANCE

    def of(self, metric: str) -> float:
        return self.rate if _KIND[metric] == "rate" else self.dcf


@dataclass(frozen=True)
class Check:
    on: str  # "manifest" or "feedback"
    metric: str
    candidate: float
    current: float
    allowed: float

    @property
    def passed(self) -> bool:
        return self.candidate <= self.current + self.allowed + 1e-12

    def to_dict(self) -> dict[str, Any]:
        return {
            "on": self.on,
            "metric": self.metric,
            "candidate": self.candidate,
            "current": self.current,
            "allowed": self.allowed,
            "passed": self.passed,
        }


@dataclass(frozen=True)
class _Head:
    """A card's head, calibration and threshold: enough to score stored features."""

    head: Head
    calibration: AffineCalibration
    threshold_llr: float
    space: str

    @classmethod
    def of(cls, directory: Path) -> _Head:
        card = read_card(directory)
        try:
            tensors = {k: np.asarray(v) for k, v in load_file(str(directory / TENSORS_FILE)).items()}
            calibration = AffineCalibration.from_dict(card["calibration"])
            threshold = llr_threshold(float(card["threshold"]["p_spoof"]))
        except (OSError, KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{directory}: cannot read the head and calibration ({exc!r})") from None
        return cls(head_from_tensors(tensors), calibration, threshold, feature_space(card))

    def record_llr(self, record: FeedbackRecord) -> float:
        return float(np.mean(self.calibration.apply(self.head.decision_function(record.features))))


def file_sha256(path: str | os.PathLike[str]) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def feedback_metrics(
    llrs: NDArray[np.float64], bonafide: NDArray[np.bool_], threshold_llr: float
) -> dict[str, float]:
    """Metrics of feedback trials: every metric when both classes are present, else the
    error rate at the threshold of the class there is (false alarms of bona fide, misses
    of spoof)."""
    out: dict[str, float] = {"n_bonafide": float(bonafide.sum()), "n_spoof": float((~bonafide).sum())}
    if bonafide.any() and (~bonafide).any():
        labels = ["bonafide" if b else "spoof" for b in bonafide]
        metrics = evaluate(llrs, labels, threshold_llr=threshold_llr).to_dict()
        out.update({k: float(metrics[k]) for k in FEEDBACK_GATED})
        return out
    if bonafide.any():
        out["false_alarm_rate"] = float(np.mean(llrs[bonafide] <= threshold_llr))
    if (~bonafide).any():
        out["miss_rate"] = float(np.mean(llrs[~bonafide] > threshold_llr))
    return out


def held_out_feedback(
    candidate_card: dict[str, Any], feedback_dir: str | Path
) -> tuple[list[FeedbackRecord], str]:
    """The feedback the candidate's retraining held out (all of it for a card without a
    lineage), and a note saying which was taken."""
    lineage = (candidate_card.get("lineage") or {}).get("feedback")
    if lineage is None:
        return read_feedback(feedback_dir), "all feedback (the candidate records no retraining lineage)"
    ids = [int(i) for i in lineage.get("holdout_ids") or []]
    return read_feedback(feedback_dir, ids), f"the {len(ids)} records the candidate's retraining held out"


def run_canary(
    candidate: str | Path,
    against: str | Path | None,
    items: Sequence[LabelledItem],
    *,
    manifest: str | Path,
    feedback_dir: str | Path | None = None,
    tolerance: Tolerance = Tolerance(),
    channel: str = "clean",
    progress: bool = True,
    write_record: bool = True,
) -> dict[str, Any]:
    """Compare, decide and (with ``write_record``) write ``canary.json`` beside the candidate."""
    if not items:
        raise DataError(f"{manifest}: the evaluation manifest holds no items")
    for name, value in (("rate", tolerance.rate), ("dcf", tolerance.dcf)):
        if not (value >= 0 and math.isfinite(value)):
            raise DataError(f"{name} tolerance: expected a number >= 0, found {value}")
    cand_dir = detector_dir(str(candidate))
    curr_dir = detector_dir(None if against is None else str(against))
    cand_id, curr_id = card_identity(cand_dir), card_identity(curr_dir)
    results: dict[str, Any] = {"manifest": {}}
    checks: list[Check] = []
    for role, directory in (("candidate", cand_dir), ("current", curr_dir)):
        results["manifest"][role] = evaluate_detector(
            directory, items, channel=channel, progress=progress
        ).summary()
    for metric in MANIFEST_GATED:
        checks.append(
            Check(
                "manifest",
                metric,
                float(results["manifest"]["candidate"][metric]),
                float(results["manifest"]["current"][metric]),
                tolerance.of(metric),
            )
        )
    if feedback_dir is not None:
        section, more = _feedback_section(cand_dir, curr_dir, feedback_dir, tolerance)
        results["feedback"] = section
        checks += more
    passed = all(c.passed for c in checks)
    record = {
        "candidate": cand_id.to_dict(),
        "against": curr_id.to_dict(),
        "manifest": {
            "path": str(Path(manifest).resolve()),
            "sha256": file_sha256(manifest),
            "items": len(items),
        },
        "channel": channel,
        "tolerance": {"rate": tolerance.rate, "dcf": tolerance.dcf},
        "results": results,
        "checks": [c.to_dict() for c in checks],
        "passed": passed,
        "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    if write_record:
        (cand_dir / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return record


def _feedback_section(
    cand_dir: Path, curr_dir: Path, feedback_dir: str | Path, tolerance: Tolerance
) -> tuple[dict[str, Any], list[Check]]:
    records, note = held_out_feedback(read_card(cand_dir), feedback_dir)
    section: dict[str, Any] = {"records": len(records), "taken": note}
    if not records:
        section["skipped"] = "no held-out feedback to compare on"
        return section, []
    bonafide = np.array([r.is_bonafide for r in records], dtype=bool)
    heads = {"candidate": _Head.of(cand_dir), "current": _Head.of(curr_dir)}
    for role, head in heads.items():
        foreign = [
            r.id
            for r in records
            if r.feature_space not in (None, head.space) or r.dim != head.head.n_features_in_
        ]
        if foreign:
            section[role] = {"skipped": f"feedback {foreign[:5]} was computed in another feature space"}
            continue
        llrs = np.array([head.record_llr(r) for r in records])
        section[role] = feedback_metrics(llrs, bonafide, head.threshold_llr)
    cand, curr = section.get("candidate", {}), section.get("current", {})
    checks = [
        Check("feedback", m, cand[m], curr[m], tolerance.of(m))
        for m in FEEDBACK_GATED
        if m in cand and m in curr
    ]
    return section, checks


def read_record(candidate: str | Path) -> dict[str, Any] | None:
    """The candidate's canary record, or None where it has none."""
    path = Path(candidate) / RECORD_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: expected a JSON canary record ({exc})") from None
    return record if isinstance(record, dict) else None


def format_table(record: dict[str, Any]) -> str:
    """The checks as a text table, then the verdict."""
    cand: CardIdentity = CardIdentity(**record["candidate"])
    curr: CardIdentity = CardIdentity(**record["against"])
    lines = [
        f"candidate {cand.name} v{cand.version} {cand.short}"
        f"  against  {curr.name} v{curr.version} {curr.short}",
        f"{'on':<9} {'metric':<17} {'candidate':>10} {'current':>10} {'allowed':>8}  verdict",
    ]
    for check in record["checks"]:
        lines.append(
            f"{check['on']:<9} {check['metric']:<17} {check['candidate']:>10.4f} {check['current']:>10.4f} "
            f"{'+' + format(check['allowed'], '.3f'):>8}  {'ok' if check['passed'] else 'WORSE'}"
        )
    feedback = record["results"].get("feedback")
    if feedback is not None:
        lines.append(
            f"feedback: {feedback['taken']}" + (f"; {feedback['skipped']}" if "skipped" in feedback else "")
        )
    lines.append(
        "PASS: the candidate may be promoted" if record["passed"] else "FAIL: the candidate is worse"
    )
    return "\n".join(lines)
