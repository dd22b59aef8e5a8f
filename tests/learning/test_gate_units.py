"""The canary's metrics on one-class feedback and promote's gate, on copies of the packaged
card (no encoder runs)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from spoofwatch.errors import DataError
from spoofwatch.learning.canary import RECORD_FILE, Check, feedback_metrics
from spoofwatch.learning.holdout import is_held_out, split_feedback
from spoofwatch.learning.promote import CURRENT, promote, rollback
from spoofwatch.model.artifact import detector_dir
from spoofwatch.model.identity import card_identity


def test_feedback_metrics_of_one_class_give_that_class_error_rate() -> None:
    llrs = np.array([-3.0, -1.0, 2.0, 4.0])
    only_bona = feedback_metrics(llrs, np.ones(4, bool), threshold_llr=0.0)
    assert only_bona == {"n_bonafide": 4.0, "n_spoof": 0.0, "false_alarm_rate": 0.5}
    only_spoof = feedback_metrics(llrs, np.zeros(4, bool), threshold_llr=0.0)
    assert only_spoof == {"n_bonafide": 0.0, "n_spoof": 4.0, "miss_rate": 0.5}
    both = feedback_metrics(llrs, np.array([False, False, True, True]), threshold_llr=0.0)
    assert both["eer"] == 0.0 and both["false_alarm_rate"] == 0.0


def test_a_check_allows_exactly_the_tolerance() -> None:
    assert Check("manifest", "eer", 0.11, 0.10, 0.01).passed
    assert not Check("manifest", "eer", 0.1101, 0.10, 0.01).passed


def test_holdout_is_by_whole_stream_and_stable() -> None:
    streams = [f"call-{i}" for i in range(400)]
    held = [s for s in streams if is_held_out(s, 0.2)]
    assert 0.14 < len(held) / len(streams) < 0.26
    assert held == [s for s in streams if is_held_out(s, 0.2)]
    assert not any(is_held_out(s, 0.0) for s in streams)
    assert split_feedback([], 0.2) == ([], [])


def _card(tmp_path: Path, name: str, tweak: int) -> Path:
    target = tmp_path / name
    shutil.copytree(detector_dir("default"), target)
    card = json.loads((target / "model_card.json").read_text())
    card["calibration"]["offset"] += tweak  # another card, same loader
    (target / "model_card.json").write_text(json.dumps(card))
    return target


def _passing_record(card: Path, against: str | None) -> None:
    record = {
        "candidate": card_identity(card).to_dict(),
        "against": {"sha256": against},
        "checks": [],
        "passed": True,
    }
    (card / RECORD_FILE).write_text(json.dumps(record))


def test_promote_gates_on_a_record_for_these_contents_against_the_current_card(tmp_path: Path) -> None:
    detectors = tmp_path / "detectors"
    first, second = _card(tmp_path, "a", 1), _card(tmp_path, "b", 2)
    _passing_record(first, None)
    promote(first, detectors)
    current = card_identity(detectors / CURRENT).sha256
    _passing_record(second, "0" * 64)
    with pytest.raises(DataError, match="run the canary against the current card"):
        promote(second, detectors)
    _passing_record(second, current)
    card = json.loads((second / "model_card.json").read_text())
    card["calibration"]["scale"] *= 2  # changed after its canary
    (second / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(DataError, match="the card changed since"):
        promote(second, detectors)
    _passing_record(second, current)
    done = promote(second, detectors)
    assert done.previous == current and card_identity(detectors / CURRENT).sha256 == done.sha256
    with pytest.raises(DataError, match="already current"):
        promote(second, detectors, force=True)
    assert rollback(detectors).sha256 == current
    assert (detectors / CURRENT).resolve().parent.name == "cards"
