"""feedback -> retrain -> canary -> promote end to end on a tiny encoder and corpus, and a
candidate made worse on purpose refused by the canary and by promote."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from learning_kit import RATE, clip, give_feedback, train_base
from spoofwatch.cli import main
from spoofwatch.learning.feedback_store import read_feedback
from spoofwatch.learning.holdout import is_held_out
from spoofwatch.learning.promote import CURRENT, history
from spoofwatch.model.artifact import load_detector, read_card
from spoofwatch.model.identity import card_identity
from spoofwatch.stream.core.windowing import WindowConfig, cut_windows


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    return main(list(argv), out), out.getvalue()


def novel_llr(card: Path, seeds: range) -> float:
    """Mean LLR of the card on novel synthetic clips (higher = more bona fide)."""
    detector = load_detector(card)
    window = WindowConfig(RATE, detector.settings.window_s, detector.settings.hop_s)
    windows = [w.samples for s in seeds for w in cut_windows(clip("novel", s), window)]
    return float(np.mean(detector.score_windows(np.stack(windows))))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, Path]]:
    """One base card for the module (training it is most of the time); the embedding cache
    lives beside it, so retraining reads the base's features from the cache."""
    root = tmp_path_factory.mktemp("world")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SPOOFWATCH_CACHE", str(root / "cache"))
        yield train_base(root)


def test_feedback_retrain_canary_promote_and_rollback(world: tuple[Path, Path, Path], tmp_path: Path) -> None:
    base, train_csv, dev_csv = world
    feedback = tmp_path / "feedback"
    # Analysts: the novel synthetic calls were missed; a few genuine calls were fine.
    verdicts = [(f"call-novel-{i}", "novel", 500 + i) for i in range(10)]
    verdicts += [(f"call-real-{i}", "bonafide", 700 + i) for i in range(6)]
    labels = {"novel": "missed_synthetic", "bonafide": "false_alarm"}
    ids = give_feedback(base, feedback, verdicts, labels.__getitem__)
    held = {i for i, (stream, _, _) in zip(ids, verdicts, strict=True) if is_held_out(stream, 0.2)}
    assert 0 < len(held) < len(ids)

    code, text = run(
        "retrain", "--feedback", str(feedback), "--base", str(base), "--out", str(tmp_path / "cand"),
        "--manifest", str(train_csv), "--json",
    )  # fmt: skip
    assert code == 0, text
    report = json.loads(text.strip().splitlines()[-1])
    card = read_card(tmp_path / "cand")
    lineage = card["lineage"]
    assert card["version"] == 2 and report["version"] == 2
    assert lineage["base"]["sha256"] == card_identity(base).sha256
    assert set(lineage["feedback"]["holdout_ids"]) == held
    assert set(lineage["feedback"]["train_ids"]) == set(ids) - held
    assert lineage["feedback"]["weight"] == 5.0 and "spoofwatch retrain" in lineage["command"]
    assert report["sha256"] == card_identity(tmp_path / "cand").sha256
    assert card["training"]["manifests"]["train"] == [str(train_csv.resolve())]
    # The candidate learned what the analysts said: novel synthetic audio scores lower.
    assert novel_llr(tmp_path / "cand", range(900, 904)) < novel_llr(base, range(900, 904)) - 1.0

    detectors = tmp_path / "detectors"
    code, text = run("promote", str(tmp_path / "cand"), "--detectors", str(detectors))
    assert code == 2  # no canary yet
    code, text = run(
        "canary", str(tmp_path / "cand"), "--against", str(base), "--manifest", str(dev_csv),
        "--feedback", str(feedback), "--json",
    )  # fmt: skip
    assert code == 0, text
    record = json.loads(text.strip().splitlines()[-1])
    assert record["passed"] and record["results"]["feedback"]["records"] == len(held)
    assert {c["on"] for c in record["checks"]} == {"manifest", "feedback"}
    assert (tmp_path / "cand" / "canary.json").is_file()

    # First promotion installs the base (forced: it has no canary), then the candidate.
    assert run("promote", str(base), "--detectors", str(detectors), "--force")[0] == 0
    code, text = run("promote", str(tmp_path / "cand"), "--detectors", str(detectors))
    assert code == 0, text
    current = detectors / CURRENT
    assert current.is_symlink() and card_identity(current).sha256 == report["sha256"]
    assert load_detector(current).card["version"] == 2
    assert [h["action"] for h in history(detectors)] == ["promote", "promote"]

    code, text = run("promote", "--rollback", "--detectors", str(detectors))
    assert code == 0, text
    assert card_identity(current).sha256 == card_identity(base).sha256
    assert (detectors / "cards" / report["sha256"][:16]).is_dir()  # kept
    assert run("promote", "--rollback", "--detectors", str(detectors))[0] == 2  # nothing before the base


def test_a_candidate_made_worse_is_refused(world: tuple[Path, Path, Path], tmp_path: Path) -> None:
    base, train_csv, dev_csv = world
    feedback = tmp_path / "feedback"
    # Poisoned feedback: synthetic calls marked false alarms, with a big weight (50: at 200
    # the refitted head of some CPUs ranks dev backwards, which retrain itself refuses).
    verdicts = [(f"call-spoof-{i}", "spoof", 300 + i) for i in range(12)]
    give_feedback(base, feedback, verdicts, lambda _: "false_alarm")
    code, text = run(
        "retrain", "--feedback", str(feedback), "--base", str(base), "--out", str(tmp_path / "bad"),
        "--manifest", str(train_csv), "--feedback-weight", "50", "--holdout", "0",
    )  # fmt: skip
    assert code == 0, text
    code, text = run("canary", str(tmp_path / "bad"), "--against", str(base), "--manifest", str(dev_csv))
    assert code == 1, text
    assert "FAIL" in text and "WORSE" in text
    record = json.loads((tmp_path / "bad" / "canary.json").read_text())
    eer = next(c for c in record["checks"] if c["on"] == "manifest" and c["metric"] == "eer")
    assert not eer["passed"] and eer["candidate"] > eer["current"] + 0.01
    detectors = tmp_path / "detectors"
    code, _ = run("promote", str(tmp_path / "bad"), "--detectors", str(detectors))
    assert code == 2 and not (detectors / CURRENT).exists()


def test_feedback_that_inverts_the_head_is_refused_by_retrain(
    world: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """Every label flipped: the refitted head ranks backwards, which a calibration with a
    negative scale would hide from the canary; retrain refuses to write it."""
    base, train_csv, _ = world
    feedback = tmp_path / "feedback"
    verdicts = [(f"call-{kind}-{i}", kind, 300 + i) for i in range(8) for kind in ("bonafide", "spoof")]
    flipped = {"bonafide": "confirmed_synthetic", "spoof": "false_alarm"}
    give_feedback(base, feedback, verdicts, flipped.__getitem__)
    code, _ = run(
        "retrain", "--feedback", str(feedback), "--base", str(base), "--out", str(tmp_path / "bad"),
        "--manifest", str(train_csv), "--feedback-weight", "200", "--holdout", "0",
    )  # fmt: skip
    assert code == 2 and not (tmp_path / "bad").exists()


def test_retrain_refuses_feedback_from_another_feature_space(
    world: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    base, train_csv, _ = world
    feedback = tmp_path / "feedback"
    give_feedback(base, feedback, [("call-1", "novel", 1)], lambda _: "missed_synthetic")
    import sqlite3

    with sqlite3.connect(feedback / "feedback.sqlite3") as db:
        db.execute("UPDATE feedback SET feature_space = 'other'")
    assert read_feedback(feedback)[0].feature_space == "other"
    code, _ = run(
        "retrain", "--feedback", str(feedback), "--base", str(base), "--out", str(tmp_path / "c"),
        "--manifest", str(train_csv), "--holdout", "0",
    )  # fmt: skip
    assert code == 2 and not (tmp_path / "c").exists()


def test_retrain_without_manifests_says_what_to_give(world: tuple[Path, Path, Path], tmp_path: Path) -> None:
    base, _, _ = world
    feedback = tmp_path / "feedback"
    give_feedback(base, feedback, [("call-1", "novel", 1)], lambda _: "missed_synthetic")
    code, _ = run("retrain", "--feedback", str(feedback), "--base", str(base), "--out", str(tmp_path / "c"))
    assert code == 2


def test_an_mlp_base_is_retrained_as_an_mlp_and_canaried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from spoofwatch.model.mlp_head import MLPHead

    monkeypatch.setenv("SPOOFWATCH_CACHE", str(tmp_path / "cache"))
    mlp = {"head": "mlp", "mlp_hidden": 16, "mlp_epochs": 20, "mlp_dropout": 0.0, "mlp_input_dropout": 0.0}
    base, train_csv, dev_csv = train_base(tmp_path / "world", **mlp, mlp_learning_rate=1e-2)
    assert isinstance(load_detector(base).head, MLPHead)
    feedback = tmp_path / "feedback"
    verdicts = [(f"call-novel-{i}", "novel", 500 + i) for i in range(10)]
    verdicts += [(f"call-real-{i}", "bonafide", 700 + i) for i in range(6)]
    labels = {"novel": "missed_synthetic", "bonafide": "false_alarm"}
    give_feedback(base, feedback, verdicts, labels.__getitem__)
    code, text = run(
        "retrain", "--feedback", str(feedback), "--base", str(base), "--out", str(tmp_path / "cand"),
        "--manifest", str(train_csv), "--json",
    )  # fmt: skip
    assert code == 0, text
    candidate = load_detector(tmp_path / "cand")
    assert isinstance(candidate.head, MLPHead) and candidate.card["head"]["hidden"] == 16
    assert novel_llr(tmp_path / "cand", range(900, 904)) < novel_llr(base, range(900, 904)) - 1.0
    code, text = run(
        "canary", str(tmp_path / "cand"), "--against", str(base), "--manifest", str(dev_csv),
        "--feedback", str(feedback), "--json",
    )  # fmt: skip
    assert code == 0, text
    assert json.loads(text.strip().splitlines()[-1])["results"]["feedback"]["records"] > 0
