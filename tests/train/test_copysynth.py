"""Vocoder copy-synthesis: with a fake vocoder that speaks the FARGAN demo's file formats
(unit tests), and with the real FARGAN built by scripts/build_fargan.sh (end to end)."""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import math
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from fakes import EXAMPLE_SPEECH as SPEECH
from spoofwatch.audio.files import load_audio
from spoofwatch.errors import ConfigError, DataError
from spoofwatch.model.resynthesis.vocoder import FRAME_VALUES, PITCH_INDEX, VocoderError, find_vocoder, vocode
from spoofwatch.train.copysynth import PitchShift, parse_pitch_shift, write_copies
from spoofwatch.train.corpus import LabelledItem, read_manifest

RATE = 16000


def _peak_hz(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spectrum) * RATE / len(samples))


def _rms(x: np.ndarray) -> float:
    return math.sqrt(float(np.mean(np.asarray(x, dtype=np.float64) ** 2)))


def test_vocode_matches_the_level_and_scales_the_pitch(fake_vocoder: Path) -> None:
    noise = 0.05 * np.random.default_rng(0).standard_normal(RATE)
    plain = vocode(noise, fake_vocoder)
    assert _rms(plain) == pytest.approx(_rms(noise), rel=1e-3)
    assert _peak_hz(plain) == pytest.approx(200, abs=2)
    assert _peak_hz(vocode(noise, fake_vocoder, 1.25)) == pytest.approx(250, abs=2)
    assert _peak_hz(vocode(noise, fake_vocoder, 1 / 1.25)) == pytest.approx(160, abs=2)
    # The pitch stays inside what FARGAN's pitch embedding covers (periods 32..255 samples).
    assert _peak_hz(vocode(noise, fake_vocoder, 4.0)) == pytest.approx(500, abs=2)


def test_vocode_applies_a_feature_edit_before_moving_the_pitch(fake_vocoder: Path) -> None:
    noise = 0.05 * np.random.default_rng(0).standard_normal(RATE)
    seen: list[tuple[int, ...]] = []

    def to_100_hz(frames: np.ndarray) -> np.ndarray:
        seen.append(frames.shape)
        out = frames.copy()
        out[:, PITCH_INDEX] = math.log2(256 / 160) - 1.5  # a period of 160 samples
        return out

    assert _peak_hz(vocode(noise, fake_vocoder, edit=to_100_hz)) == pytest.approx(100, abs=2)
    assert _peak_hz(vocode(noise, fake_vocoder, 1.5, edit=to_100_hz)) == pytest.approx(150, abs=2)
    assert seen == [(RATE // 160, FRAME_VALUES)] * 2


def test_vocode_refuses_bad_audio_and_names_a_failing_vocoder(fake_vocoder: Path) -> None:
    with pytest.raises(DataError, match="expected finite samples"):
        vocode(np.full(RATE, np.nan), fake_vocoder)
    with pytest.raises(DataError, match=r"at least 0\.1 s"):
        vocode(np.zeros(100), fake_vocoder)
    with pytest.raises(ConfigError, match="expected a positive pitch factor, found 0"):
        vocode(np.ones(RATE) * 0.1, fake_vocoder, 0.0)
    not_a_program = fake_vocoder.with_name("not_a_program")
    not_a_program.write_bytes(b"\x00\x01binary junk")
    not_a_program.chmod(0o755)
    with pytest.raises(VocoderError, match="not_a_program -features: expected a program that runs, found"):
        vocode(np.ones(RATE) * 0.1, not_a_program)
    with pytest.raises(
        VocoderError, match=r"fake_fargan -features: expected exit status 0, found 3 \(silent input\)"
    ):
        vocode(np.zeros(RATE), fake_vocoder)


def test_a_hung_vocoder_is_stopped_with_a_clear_error(tmp_path: Path) -> None:
    from spoofwatch.model.resynthesis.vocoder import _run

    sleeper = tmp_path / "sleeper"
    sleeper.write_text(f"#!{sys.executable}\nimport time\ntime.sleep(30)\n")
    sleeper.chmod(0o755)
    with pytest.raises(VocoderError, match=r"sleeper -features: expected to finish within 1 s, found it"):
        _run([str(sleeper), "-features"], timeout_s=1.0)


def test_pitch_shift_draws_are_per_clip_deterministic_and_both_ways() -> None:
    shift = PitchShift(1.1, 1.35)
    factors = [shift.factor_for(f"utt{i}") for i in range(200)]
    assert factors == [shift.factor_for(f"utt{i}") for i in range(200)]
    assert all(1.1 <= f <= 1.35 or 1 / 1.35 <= f <= 1 / 1.1 for f in factors)
    assert 60 < sum(f > 1 for f in factors) < 140
    other = [PitchShift(1.1, 1.35, seed=1).factor_for(f"utt{i}") for i in range(200)]
    assert sum(a != b for a, b in zip(factors, other, strict=True)) > 190
    assert parse_pitch_shift("none") is None
    assert parse_pitch_shift("1.2,1.5") == PitchShift(1.2, 1.5)
    assert parse_pitch_shift("1.2,1.5", seed=3) == PitchShift(1.2, 1.5, 3)
    for bad in ("1.2", "a,b", "0.5,1.2", "1.5,1.2", "1,nan"):
        with pytest.raises(ConfigError, match=r"pitch.shift"):
            parse_pitch_shift(bad)


def test_find_vocoder_says_how_to_build_it(
    tmp_path: Path, fake_vocoder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPOOFWATCH_FARGAN", str(tmp_path / "missing"))
    with pytest.raises(
        ConfigError, match=r"expected an executable FARGAN demo program at .*missing; build it with"
    ):
        find_vocoder()
    assert find_vocoder(fake_vocoder) == fake_vocoder
    monkeypatch.setenv("SPOOFWATCH_FARGAN", str(fake_vocoder))
    assert find_vocoder() == fake_vocoder


def _corpus(root: Path) -> list[LabelledItem]:
    rng = np.random.default_rng(1)
    items = []
    for i, (label, split) in enumerate(
        [("bonafide", "train"), ("bonafide", "dev"), ("spoof", "train"), ("bonafide", "train")]
    ):
        path = root / f"clip{i}.flac"
        audio = np.zeros(RATE) if i == 3 else 0.1 * rng.standard_normal(RATE)  # clip3 fails
        sf.write(path, audio, RATE)
        items.append(
            LabelledItem(
                path,
                label,
                f"clip{i}",
                speaker=f"spk{i}",
                split=split,
                source=f"page{i}@abc",
                extra={"license": f"CC-{i}"},
            )
        )
    return items


def test_write_copies_lists_bona_fide_copies_as_spoofs_of_the_same_source(
    tmp_path: Path, fake_vocoder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    items = _corpus(tmp_path)
    with caplog.at_level(logging.WARNING):
        report = write_copies(items, tmp_path / "copies", fake_vocoder, progress=False)
    assert report.written == 2
    assert [Path(p).name for p, _ in report.failed] == ["clip3.flac"]
    assert "clip3.flac: no copy" in caplog.text and "silent input" in caplog.text
    copies = read_manifest(report.manifest)  # paths resolve, files exist
    assert [c.utt_id for c in copies] == ["clip0-fargan-ps", "clip1-fargan-ps"]
    for copy, original in zip(copies, items[:2], strict=True):
        assert copy.label == "spoof" and copy.system == "FARGAN-copy-pitch-shifted"
        assert (copy.speaker, copy.split, copy.source) == (original.speaker, original.split, original.source)
        assert copy.extra["copy_of"] == original.utt_id
        assert copy.extra["license"] == original.extra["license"]
        digest = hashlib.sha256(fake_vocoder.read_bytes()).hexdigest()[:16]
        assert copy.extra["vocoder"] == f"FARGAN ({fake_vocoder.name}, sha256 {digest})"
        factor = float(copy.extra["pitch_factor"])
        assert factor == pytest.approx(PitchShift().factor_for(original.utt_id), abs=1e-4)
        audio = load_audio(copy.path, RATE).samples
        assert _peak_hz(audio) == pytest.approx(200 * factor, abs=3)
        assert _rms(audio) == pytest.approx(_rms(load_audio(original.path, RATE).samples), rel=0.01)


def test_write_copies_without_pitch_shift_and_with_nothing_to_copy(
    tmp_path: Path, fake_vocoder: Path
) -> None:
    items = _corpus(tmp_path)
    report = write_copies(items[:2], tmp_path / "copies", fake_vocoder, pitch_shift=None, progress=False)
    with report.manifest.open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["utt_id"] for r in rows] == ["clip0-fargan", "clip1-fargan"]
    assert {r["system"] for r in rows} == {"FARGAN-copy"} and {r["pitch_factor"] for r in rows} == {"1.0000"}
    with pytest.raises(DataError, match="expected bona fide items to copy, found none"):
        write_copies(items[2:3], tmp_path / "none", fake_vocoder, progress=False)
    with pytest.raises(VocoderError, match=r"every clip failed; first: .*clip3\.flac"):
        write_copies(items[3:], tmp_path / "failed", fake_vocoder, progress=False)


def test_write_copies_applies_a_named_variant_edit_per_item(tmp_path: Path, fake_vocoder: Path) -> None:
    items = _corpus(tmp_path)[:2]
    asked: list[tuple[str, float]] = []

    def to_100_hz(item: LabelledItem, factor: float) -> Callable[[np.ndarray], np.ndarray]:
        asked.append((item.utt_id, factor))

        def edit(frames: np.ndarray) -> np.ndarray:
            out = frames.copy()
            out[:, PITCH_INDEX] = math.log2(256 / 160) - 1.5  # 100 Hz before the pitch move
            return out

        return edit

    variant = ("low", to_100_hz)
    report = write_copies(items, tmp_path / "copies", fake_vocoder, variant=variant, progress=False)
    copies = read_manifest(report.manifest)
    assert [c.utt_id for c in copies] == ["clip0-fargan-ps-low", "clip1-fargan-ps-low"]
    assert {c.system for c in copies} == {"FARGAN-copy-pitch-shifted-low"}
    assert sorted(asked) == [(it.utt_id, PitchShift().factor_for(it.utt_id)) for it in items]
    for copy in copies:
        factor = float(copy.extra["pitch_factor"])
        assert _peak_hz(load_audio(copy.path, RATE).samples) == pytest.approx(100 * factor, abs=3)


def test_copysynth_command_writes_the_manifest(tmp_path: Path, fake_vocoder: Path) -> None:
    from spoofwatch.cli import main

    items = _corpus(tmp_path)
    manifest = tmp_path / "corpus.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "utt_id", "split", "source"])
        for it in items:
            writer.writerow([it.path.name, it.label, it.utt_id, it.split, it.source])
    out = io.StringIO()
    argv = [
        "copysynth",
        "--manifest",
        str(manifest),
        "--out",
        str(tmp_path / "c"),
        "--vocoder",
        str(fake_vocoder),
    ]
    assert main([*argv, "--pitch-shift", "none", "--workers", "1"], out) == 0
    assert (
        main([*argv[:-2], "--out", str(tmp_path / "s"), "--vocoder", str(fake_vocoder), "--seed", "2"], out)
        == 0
    )
    assert {c.utt_id for c in read_manifest(tmp_path / "s" / "manifest.csv")} == {
        "clip0-fargan-ps2",
        "clip1-fargan-ps2",
    }
    assert f"2 copies in {tmp_path / 'c' / 'manifest.csv'}" in out.getvalue()
    assert "1 clips not copied" in out.getvalue()
    assert len(read_manifest(tmp_path / "c" / "manifest.csv")) == 2
    err = io.StringIO()
    assert main([*argv, "--pitch-shift", "2"], err) != 0


def _real_vocoder() -> Path:
    try:
        return find_vocoder()
    except ConfigError as exc:
        pytest.fail(f"{exc} (scripts/install.sh builds it)")


def _features(vocoder: Path, samples: np.ndarray, tmp_path: Path) -> np.ndarray:
    import subprocess

    pcm, feats = tmp_path / "x.pcm", tmp_path / "x.f32"
    np.round(np.clip(samples, -1, 1) * 32767).astype("<i2").tofile(pcm)
    subprocess.run([str(vocoder), "-features", str(pcm), str(feats)], check=True)
    return np.fromfile(feats, dtype="<f4").reshape(-1, FRAME_VALUES)


def _log_spectrogram(x: np.ndarray) -> np.ndarray:
    frames = np.lib.stride_tricks.sliding_window_view(x, 512)[::160] * np.hanning(512)
    return np.log10(np.abs(np.fft.rfft(frames, axis=1)) ** 2 + 1e-10)


def test_real_fargan_copies_follow_the_speech_and_move_its_pitch(tmp_path: Path) -> None:
    vocoder = _real_vocoder()
    speech = load_audio(SPEECH, RATE).samples
    copy = vocode(speech, vocoder)
    assert abs(len(copy) - len(speech)) < 0.02 * len(speech)
    assert _rms(copy) == pytest.approx(_rms(speech), rel=1e-3)
    assert not np.allclose(
        copy[: len(speech)], speech[: len(copy)], atol=1e-3
    )  # resynthesised, not passed through
    # The copy's spectrogram follows the original's (a few frames of vocoder delay allowed):
    # 0.67 measured, against 0.28 for the clip shifted by 1 s and 0.41 for it reversed.
    a, b = _log_spectrogram(speech), _log_spectrogram(copy)
    n = min(len(a), len(b)) - 8
    best = max(np.corrcoef(a[:n].ravel(), b[lag : lag + n].ravel())[0, 1] for lag in range(8))
    assert best > 0.55
    # Re-analysed, a copy made 1.25x higher has its pitch 1.25x higher in voiced frames.
    original = _features(vocoder, speech, tmp_path)
    raised = _features(vocoder, vocode(speech, vocoder, 1.25), tmp_path)
    voiced = lambda f: f[f[:, PITCH_INDEX + 1] > 0.3, PITCH_INDEX]  # noqa: E731
    shift = np.median(voiced(raised)) - np.median(voiced(original))
    assert 2**shift == pytest.approx(1.25, abs=0.06)
