"""``spoofwatch robustness`` end to end on a few clips of a tiny encoder's card, and the
white-box attack on the real encoder."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from fakes import EXAMPLE_SPEECH, clip
from learning_kit import train_base
from spoofwatch.audio.files import load_audio
from spoofwatch.cli import main
from spoofwatch.errors import ModelError
from spoofwatch.model.artifact import load_detector
from spoofwatch.robustness.attack import check_differentiable, differentiable_llr, pgd

SYNTHETIC_EXAMPLE = EXAMPLE_SPEECH.parent / "synthetic_espeak.flac"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    root = tmp_path_factory.mktemp("tiny")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SPOOFWATCH_CACHE", str(root / "cache"))
        base, _, dev_csv = train_base(root)
        yield base, dev_csv


def test_the_command_writes_a_report_with_every_asked_transform(
    tiny: tuple[Path, Path], tmp_path: Path
) -> None:
    base, dev_csv = tiny
    out = io.StringIO()
    argv = (
        f"robustness --manifest {dev_csv} --detector {base} --out {tmp_path / 'r'} --per-class 3 "
        "--transforms noise:10dB,level,amr-wb --attack-clips 2 --attack-snrs 40,20 --attack-steps 2 --json"
    )
    code = main(argv.split(), out)
    assert code == 0
    report = json.loads(out.getvalue().strip().splitlines()[-1])
    assert json.loads((tmp_path / "r" / "report.json").read_text()) == report
    rows = {(r["family"], r["strength"]): r for r in report["laundering"]}
    assert set(rows) == {
        ("clean", "-"),
        ("noise", "10dB"),
        ("level", "-20dB"),
        ("level", "+10dB"),
        ("amr-wb", "23.85k"),
    }
    assert report["subsample"] == {
        "per_class": 3, "seed": 0, "bonafide": 3, "spoof": 3, "windows_per_clip": 1, "window_s": 2.0,
    }  # fmt: skip
    assert rows[("noise", "10dB")]["snr_db"] == pytest.approx(10.0, abs=0.05)
    assert 0.0 <= rows[("clean", "-")]["eer"] <= 1.0
    if "skipped" in rows[("amr-wb", "23.85k")]:
        assert "libvo_amrwbenc" in rows[("amr-wb", "23.85k")]["skipped"]
    budgets = report["attack"]["budgets"]
    assert [b["snr_db"] for b in budgets] == [40.0, 20.0]
    assert all(b["measured_snr_db"] >= b["snr_db"] - 0.01 for b in budgets)
    assert report["defence"]["kept"] == (
        report["defence"]["helps"] and not report["defence"]["costs_clean_accuracy"]
    )
    table = (tmp_path / "r" / "report.md").read_text()
    assert "| noise | 10dB |" in table and "White-box PGD" in table and "Defence tried" in table


def test_the_attack_refuses_the_int8_path(tiny: tuple[Path, Path]) -> None:
    base, _ = tiny
    with pytest.raises(ModelError, match="float path"):
        check_differentiable(load_detector(base, quantization="int8"))


@pytest.mark.real_weights
def test_pgd_raises_the_llr_of_a_synthetic_clip_on_the_real_encoder() -> None:
    """The packaged card's float path: the gradient path scores as the detector does, and a
    perturbation 40 dB below the clip moves its LLR towards bona fide."""
    detector = load_detector("default", quantization="none")
    audio = load_audio(SYNTHETIC_EXAMPLE, detector.sample_rate).samples[: detector.window_samples]
    window = np.zeros(detector.window_samples, np.float32)
    window[: audio.size] = audio
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # faster on two shared cores
    try:
        expected = detector.score_windows(window[None])[0]
        with torch.no_grad():
            assert float(differentiable_llr(detector, torch.from_numpy(window)[None])[0]) == pytest.approx(
                expected, abs=1e-3
            )
        attacked = pgd(detector, window, snr_db=40.0, steps=2)
    finally:
        torch.set_num_threads(threads)
    assert attacked.snr_db >= 40.0 - 0.01
    assert attacked.llr_before == pytest.approx(expected, abs=1e-3)
    assert attacked.llr_after > attacked.llr_before + 1.0
    assert detector.score_windows(attacked.window[None])[0] == pytest.approx(attacked.llr_after, abs=1e-2)


def test_the_gradient_path_scores_an_mlp_card_as_the_detector_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPOOFWATCH_CACHE", str(tmp_path / "cache"))
    base, _, _ = train_base(tmp_path, head="mlp", mlp_hidden=8, mlp_epochs=2)
    detector = load_detector(base)
    windows = np.stack(
        [clip("bonafide", 5)[: detector.window_samples], clip("spoof", 6)[: detector.window_samples]]
    )
    with torch.no_grad():
        through_gradients = differentiable_llr(detector, torch.from_numpy(windows)).numpy()
    assert np.allclose(through_gradients, detector.score_windows(windows), atol=1e-3)
