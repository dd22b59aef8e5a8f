"""research/cnn_lofo.py on a tiny synthetic corpus: the folds hold out what they score,
windows are levelled as the detector levels them, every clip gets a score per channel, and
the fusion rule is neutral on a system fused with itself."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch

from research_kit import research_script
from spoofwatch.model.level import active_level_gain, normalise_level


@pytest.fixture(scope="module")
def cnn() -> ModuleType:
    return research_script("cnn_lofo")


def _voice(rng: np.random.Generator, seconds: float, f0: float, noise: float) -> np.ndarray:
    t = np.arange(int(seconds * 16000)) / 16000
    env = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(2, 5) * t) ** 2
    tone = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6))
    x = (tone + noise * rng.standard_normal(len(t))) * env * rng.uniform(0.02, 0.3)
    return (x / max(1.0, float(np.abs(x).max()) * 1.01)).astype(np.float32)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """32 clips of 1.5-7 s: bona fide from two sources (noisy), spoofs from two families
    of two kinds (clean tones)."""
    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(1)
    rows = []
    for n in range(32):
        spoof = n % 2 == 1
        family = ("famA" if n % 4 == 1 else "famB") if spoof else "natural"
        source = f"src{n % 3}@v1" if not spoof else f"gen{n % 4}"
        kind = ("tts" if family == "famA" else "vc") if spoof else ""
        seconds = rng.uniform(1.5, 7.0)
        audio = _voice(rng, seconds, rng.uniform(100, 200), 0.02 if spoof else 0.6)
        path = root / f"c{n:02d}.flac"
        sf.write(path, audio, 16000)
        label = "spoof" if spoof else "bonafide"
        rows.append([path.name, f"u{n:02d}", label, "train" if n < 24 else "dev", family, source, kind])
    out = root / "manifest.csv"
    with out.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "utt_id", "label", "split", "family", "source", "kind"])
        writer.writerows(rows)
    return out


@pytest.fixture(scope="module")
def store(cnn: ModuleType, manifest: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    built = cnn.FeatureStore(tmp_path_factory.mktemp("cache"), cnn.load_clips([manifest], 2))
    built.build(log=False)
    return built


def test_window_gain_is_the_detectors(cnn: ModuleType) -> None:
    rng = np.random.default_rng(0)
    windows = rng.standard_normal((5, 64000)).astype(np.float32) * np.array(
        [[1e-4], [1e-2], [0.1], [0.5], [1e-6]]
    )
    windows[2, :20000] = 0.0  # a pause must not raise the gain
    frame_powers = np.stack([cnn.level_powers(w) for w in windows])
    expected = 2 * np.log(active_level_gain(torch.from_numpy(windows), 16000, -26.0).numpy())
    assert np.allclose(cnn.log_gain(frame_powers), expected, atol=1e-4)


def test_stored_windows_equal_features_of_levelled_windows(cnn: ModuleType, store: Any) -> None:
    clips = store.clips
    longest = int(np.argmax(store.samples))
    samples = sf.read(clips[longest].path, dtype="float32")[0]
    starts = np.array(store.window_starts(longest, hop=320 * 7), dtype=np.int64)
    assert len(starts) >= 2
    got = store.windows(np.full(len(starts), longest), starts, "clean").numpy()
    for k, s in enumerate(starts):
        levelled = normalise_level(torch.from_numpy(samples[None, s : s + 64000]), 16000, -26.0)[0].numpy()
        direct = np.logaddexp(cnn.band_log_power(levelled).astype(np.float32), cnn.LOG_FLOOR).T
        assert got[k].shape == direct.shape == (cnn.N_BANDS, cnn.WINDOW_FRAMES)
        assert np.abs(got[k] - direct).max() < 0.05  # float16 storage


def test_folds_score_only_clips_they_held_out(cnn: ModuleType, store: Any, monkeypatch: Any) -> None:
    clips = store.clips
    trained: dict[int, set[str]] = {}
    scored: dict[str, list[int]] = {}
    real_train, real_score = cnn.train_network, cnn.score_clips

    def spy_train(store: Any, train: np.ndarray, *args: Any, **kwargs: Any) -> Any:
        model = real_train(store, train, *args, **kwargs)
        trained[id(model)] = {clips[int(i)].utt_id for i in train}
        return model

    def spy_score(model: Any, store: Any, held: np.ndarray, channel: str) -> Any:
        for i in held:
            scored.setdefault(clips[int(i)].utt_id, []).append(id(model))
        return real_score(model, store, held, channel)

    monkeypatch.setattr(cnn, "train_network", spy_train)
    monkeypatch.setattr(cnn, "score_clips", spy_score)
    rows = cnn.run_folds(store, cnn.TrainConfig(epochs=1, batch=8, width=8, blocks=1), log=False)
    assert len(trained) == 2
    fold_of = {c.utt_id: c.fold for c in clips}
    members = {fold: {c.utt_id for c in clips if c.fold == fold} for fold in set(fold_of.values())}
    for utt, models in scored.items():
        assert len(models) == 2  # clean and telephone
        for model in models:
            assert utt not in trained[model]
            assert not members[fold_of[utt]] & trained[model]
    assert sorted((r["utt_id"], r["channel"]) for r in rows) == sorted(
        (c.utt_id, ch) for c in clips for ch in ("clean", "telephone")
    )
    assert all(np.isfinite(float(r["score"])) for r in rows)


def test_main_writes_scores_and_fusion_with_itself_keeps_the_eer(
    cnn: ModuleType, manifest: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "runs" / "cnn_scores.csv"
    common = ["--manifest", str(manifest), "--folds", "2", "--cache", str(tmp_path / "c"), "--out", str(out)]
    assert cnn.main([*common, "--epochs", "1", "--width", "8", "--blocks", "1"]) == 0
    with out.open() as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert reader.fieldnames == list(cnn.CSV_COLUMNS)
    assert len(rows) == 64
    assert {r["fold"] for r in rows} == {"part-01", "part-02"}
    assert {r["kind"] for r in rows if r["label"] == "spoof"} == {"tts", "vc"}
    summary = json.loads((out.parent / "cnn_lofo.json").read_text())
    assert summary["folds_scored"] == ["part-01", "part-02"]
    assert set(summary["eer"]) == {"clean", "telephone"}
    long_clips = sum(sf.info(str(p)).duration >= 4.0 for p in manifest.parent.glob("*.flac"))
    assert 0 < long_clips < 32
    long_view = summary["eer_4s_or_longer"]["clean"]
    assert long_view["bonafide"] + long_view["spoof"] == long_clips

    # the scored folds are reused as they are; another config must not reuse them
    again = tmp_path / "again.csv"
    tiny = ["--epochs", "1", "--width", "8", "--blocks", "1"]
    assert cnn.main([*common[:-1], str(again), *tiny, "--no-train"]) == 0
    assert again.read_text() == out.read_text()
    with pytest.raises(SystemExit, match="use a new --cache"):
        cnn.main([*common, "--epochs", "2", "--width", "8", "--blocks", "1"])
    scored = tmp_path / "c" / "scores-part-01.json"
    saved = json.loads(scored.read_text())
    scored.write_text(json.dumps({**saved, "held": "another partition"}))
    with pytest.raises(SystemExit, match="another partition's clips"):
        cnn.main([*common, *tiny, "--no-train"])
    scored.write_text(json.dumps(saved))

    fused = cnn.fuse(rows, rows)
    assert set(fused) == {"clean", "telephone"}
    for report in fused.values():
        assert report["fused"]["pooled"] == pytest.approx(report["cnn"]["pooled"])
        assert report["fused"]["per_kind"] == pytest.approx(report["cnn"]["per_kind"])
    # only the clips both systems scored are fused; a label-perfect other system has EER 0
    perfect = [
        {**r, "score": "1" if r["label"] == "bonafide" else "0"} for r in rows if r["channel"] == "clean"
    ]
    partial = cnn.fuse(rows, perfect)
    assert set(partial) == {"clean"}
    assert partial["clean"]["clips"] == 32
    assert partial["clean"]["other"]["pooled"] == 0.0

    capsys.readouterr()
    assert cnn.main(["--scores", str(out), "--fuse", str(out), "--manifest", str(manifest)]) == 0
    assert "fused" in capsys.readouterr().out
    fusion = json.loads((out.parent / "cnn_fusion.json").read_text())
    assert fusion["fusion_4s_or_longer"]["clean"]["clips"] == long_clips


def test_fuse_refuses_a_file_without_scores(cnn: ModuleType, tmp_path: Path) -> None:
    bad = tmp_path / "other.csv"
    bad.write_text("utt_id,channel\nu1,clean\n")
    with pytest.raises(SystemExit, match="expected columns"):
        cnn.read_rows(bad, ("utt_id", "channel", "score"))


def test_bench_times_one_window(cnn: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    assert cnn.main(["--bench", "3", "--width", "8", "--blocks", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["reps"] == 3
    assert 0 < report["median_ms"] <= report["p90_ms"]
