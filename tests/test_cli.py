"""``spoofwatch score`` and friends, end to end on the shipped detector (real weights)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from spoofwatch.cli import main

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT / "examples" / "audio" / "real_librispeech_1502-122615-0000.flac"
FAKE = ROOT / "examples" / "audio" / "synthetic_espeak.flac"

pytestmark = pytest.mark.real_weights


def _run(argv: list[str]) -> tuple[int, list[str]]:
    out = io.StringIO()
    code = main(argv, out=out)
    return code, out.getvalue().splitlines()


def test_score_json_gives_contract_fields_and_a_window_timeline() -> None:
    code, lines = _run(["score", "--json", str(REAL), str(FAKE)])
    assert code == 0
    real, fake = (json.loads(line) for line in lines)
    for result in (real, fake):
        assert set(result) >= {"path", "duration_s", "score", "p_spoof", "label", "windows"}
        assert result["p_spoof"] == pytest.approx(1 / (1 + np.exp(result["score"])), abs=1e-5)
        starts = [w["t_start"] for w in result["windows"]]
        assert starts == sorted(starts) and starts[0] == 0.0
        assert all(w["t_end"] - w["t_start"] == pytest.approx(4.0) for w in result["windows"])
    assert real["duration_s"] == pytest.approx(10.0, abs=0.01)
    assert len(real["windows"]) == 7  # 4 s windows every 1 s over 10 s
    assert real["label"] == "bonafide"
    assert fake["label"] == "spoof"
    assert real["score"] > fake["score"]


def test_bad_files_get_an_error_object_and_nonzero_exit_but_others_are_scored(tmp_path: Path) -> None:
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio")
    short = tmp_path / "short.wav"
    sf.write(short, np.zeros(800, dtype=np.float32), 16000)  # 0.05 s < minimum
    missing = tmp_path / "missing.flac"
    code, lines = _run(["score", "--json", str(empty), str(REAL), str(text), str(short), str(missing)])
    assert code == 1
    results = [json.loads(line) for line in lines]
    assert [("error" in r) for r in results] == [True, False, True, True, True]
    for r in results:
        if "error" in r:
            assert "\n" not in r["error"] and r["path"] in r["error"]
    assert results[1]["label"] == "bonafide"


def test_resampled_stereo_input_scores_like_the_original(tmp_path: Path) -> None:
    audio, rate = sf.read(FAKE, dtype="float32")
    from spoofwatch.audio.resample import resample

    stereo = np.stack([resample(audio, rate, 44100)] * 2, axis=1)
    path = tmp_path / "stereo44k.wav"
    sf.write(path, stereo, 44100)
    _, lines = _run(["score", "--json", str(FAKE), str(path)])
    original, converted = (json.loads(line) for line in lines)
    assert converted["label"] == original["label"]
    assert converted["score"] == pytest.approx(original["score"], abs=0.5)


def test_unknown_detector_directory_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _ = _run(["score", "--detector", str(tmp_path / "nope"), str(REAL)])
    assert code == 2
    assert "not a detector directory" in capsys.readouterr().err


def test_the_packaged_resynth_detector_scores_by_name_with_the_real_vocoder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--detector resynth remakes every clip with FARGAN, block by block (built by
    scripts/install.sh)."""
    code, lines = _run(["score", "--json", "--detector", "resynth", str(REAL), str(FAKE)])
    assert code == 0
    real, fake = (json.loads(line) for line in lines)
    assert (real["label"], fake["label"]) == ("bonafide", "spoof")
    assert len(real["windows"]) == 7
    default_real, _ = (json.loads(line) for line in _run(["score", "--json", str(REAL), str(FAKE)])[1])
    assert real["score"] != default_real["score"]  # another head on other features
    # Where the vocoder is missing the card refuses to load, naming the build script.
    monkeypatch.setenv("SPOOFWATCH_FARGAN", str(tmp_path / "no_fargan"))
    code, _ = _run(["score", "--detector", "resynth", str(REAL)])
    assert code == 2
    err = capsys.readouterr().err
    assert "scripts/build_fargan.sh" in err and "Traceback" not in err


def test_python_dash_m_entry_point_prints_human_output() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "spoofwatch", "score", str(FAKE)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr
    assert "SPOOF" in result.stdout.splitlines()[0]
    assert "p_spoof=" in result.stdout


def test_eval_prints_contract_json_and_writes_a_report(tmp_path: Path) -> None:
    manifest = tmp_path / "list.csv"
    manifest.write_text(f"path,label,system\n{REAL},bonafide,-\n{FAKE},spoof,espeak\n")
    out_dir = tmp_path / "report"
    code, lines = _run(["eval", "--manifest", str(manifest), "--out", str(out_dir), "--json"])
    assert code == 0
    summary = json.loads(lines[-1])
    keys = {"n_bonafide", "n_spoof", "eer", "eer_threshold", "min_dcf", "act_dcf", "cllr", "auc"}
    assert keys | {"accuracy", "f1", "per_system"} <= set(summary)
    assert summary["n_bonafide"] == 1 and summary["n_spoof"] == 1
    assert summary["eer"] == 0.0 and summary["per_system"] == {"espeak": 0.0}
    assert summary["false_alarm_rate"] == 0.0 and summary["miss_rate"] == 0.0
    for name in ("scores.csv", "metrics.json", "det.png", "histogram.png", "eer_by_windows.png"):
        assert (out_dir / name).stat().st_size > 0, name
    by_length = json.loads((out_dir / "metrics.json").read_text())["eer_by_window_length"]
    assert sorted(by_length, key=float) == ["1", "2", "3", "4"]
    assert by_length["4"]["clip_eer"] == summary["eer"]
    # The 10 s and the eSpeak clip cut into more windows the shorter the window.
    assert by_length["1"]["windows"] > by_length["2"]["windows"] > by_length["4"]["windows"]
    assert (out_dir / "eer_by_window_length.png").stat().st_size > 0
    rows = (out_dir / "scores.csv").read_text().splitlines()
    assert len(rows) == 3 and rows[0].startswith("path,")


def test_bench_and_soak_are_wired_into_the_cli() -> None:
    from spoofwatch.cli import COMMANDS, build_parser

    args = build_parser().parse_args(["bench", "--streams", "2", "--seconds", "3", "--json"])
    assert args.command == "bench" and args.streams == 2 and args.json
    args = build_parser().parse_args(["soak", "--minutes", "0.5", "--streams", "3"])
    assert args.command == "soak" and args.minutes == 0.5 and args.streams == 3
    assert {"score", "eval", "train", "loso", "serve", "listen", "bench", "soak"} <= set(COMMANDS)


def test_level_option_takes_dbfs_or_none(capsys: pytest.CaptureFixture[str]) -> None:
    from spoofwatch.cli import build_parser

    parser = build_parser()
    base = ["train", "--manifest", "m.csv", "--out", "d"]
    assert parser.parse_args([*base, "--level-dbfs", "-26"]).level_dbfs == -26.0
    assert parser.parse_args([*base, "--level-dbfs", "none"]).level_dbfs is None
    assert parser.parse_args(base).level_dbfs is None
    assert parser.parse_args(["loso", "--manifest", "m.csv", "--level-dbfs", "-30"]).level_dbfs == -30.0
    with pytest.raises(SystemExit):
        parser.parse_args([*base, "--level-dbfs", "loud"])
    assert "expected a level in dBFS (e.g. -26) or none, found 'loud'" in capsys.readouterr().err


def test_train_passes_calibration_channels(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import spoofwatch.train.pipeline as pipeline
    from spoofwatch.cli import build_parser, cmd_train

    seen = []

    def fake_train(
        items: object, dev: object, out: object, options: object, extra_items: object = ()
    ) -> dict[str, str]:
        seen.append(options)
        return {}

    monkeypatch.setattr(pipeline, "train_detector", fake_train)
    monkeypatch.setattr("spoofwatch.cli._read_items", lambda args, prefix="": [] if not prefix else None)
    base = ["train", "--manifest", "m.csv", "--out", str(tmp_path / "d")]
    cmd_train(build_parser().parse_args(base), io.StringIO())
    cmd_train(
        build_parser().parse_args([*base, "--calibration-channels", "clean,telephone,telephone-level"]),
        io.StringIO(),
    )
    assert seen[0].calibration_channels is None and seen[0].channels == ("clean", "telephone")
    assert seen[1].calibration_channels == ("clean", "telephone", "telephone-level")


def test_spectral_option_offers_every_front_end_the_pipeline_builds(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from spoofwatch.cli import _SPECTRAL_FRONT_ENDS, build_parser
    from spoofwatch.model.encoders.registry import build_encoder
    from spoofwatch.train.pipeline import SPECTRAL_FRONT_ENDS, spectral_front_end_spec

    assert _SPECTRAL_FRONT_ENDS == SPECTRAL_FRONT_ENDS
    parser = build_parser()
    for command in (["train", "--out", "d"], ["loso"]):
        base = [*command, "--manifest", "m.csv"]
        for name in SPECTRAL_FRONT_ENDS:
            assert parser.parse_args([*base, "--spectral", name]).spectral == name
            spec = spectral_front_end_spec(name)
            assert spec is not None and build_encoder(spec, 1.0).identity.kind == name
        with pytest.raises(SystemExit):
            parser.parse_args([*base, "--spectral", "cqcc"])
        assert "invalid choice: 'cqcc'" in capsys.readouterr().err
    assert spectral_front_end_spec("none") is None


def test_train_pools_repeated_manifests_and_refuses_a_shared_utt_id(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from spoofwatch.cli import _read_items, build_parser

    def manifest(name: str, ids: list[str]) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        lines = ["path,utt_id,label,split"]
        for utt in ids:
            (folder / f"{utt}.wav").write_bytes(b"")
            lines.append(f"{utt}.wav,{utt},bonafide,train")
        (folder / "manifest.csv").write_text("\n".join(lines) + "\n")
        return folder / "manifest.csv"

    a, b = manifest("a", ["a1", "a2"]), manifest("b", ["b1"])
    args = build_parser().parse_args(["train", "--manifest", str(a), "--manifest", str(b), "--out", "d"])
    items = _read_items(args)
    assert items is not None and [it.utt_id for it in items] == ["a1", "a2", "b1"]
    assert items[2].path == tmp_path / "b" / "b1.wav"  # each row relative to its own manifest
    clash = manifest("c", ["a2"])
    argv = ["train", "--manifest", str(a), "--manifest", str(clash), "--out", str(tmp_path / "d")]
    assert main(argv, io.StringIO()) != 0
    err = capsys.readouterr().err
    assert "--manifest: expected unique utt_id values across the manifests, found ['a2']" in err


def test_source_cap_and_balance_reach_train_and_loso_and_a_zero_cap_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import spoofwatch.train.pipeline as pipeline
    from spoofwatch.cli import build_parser, cmd_train
    from spoofwatch.errors import ConfigError
    from spoofwatch.train.pipeline import TrainOptions, train_detector

    seen = []
    monkeypatch.setattr(
        pipeline,
        "train_detector",
        lambda items, dev, out, options, extra_items=(): seen.append(options) or {},
    )
    monkeypatch.setattr("spoofwatch.cli._read_items", lambda args, prefix="": [] if not prefix else None)
    cmd_train(
        build_parser().parse_args(
            [
                "train",
                "--manifest",
                "m",
                "--out",
                str(tmp_path),
                "--source-cap",
                "300",
                "--balance-by",
                "length,lang",
            ]
        ),
        io.StringIO(),
    )
    assert seen[0].source_cap == 300
    assert seen[0].balance_by == ("length", "lang")
    assert build_parser().parse_args(["loso", "--manifest", "m", "--source-cap", "50"]).source_cap == 50
    monkeypatch.undo()
    with pytest.raises(ConfigError, match="source_cap: expected a positive number of clips, found 0"):
        train_detector([], None, tmp_path / "d", TrainOptions(source_cap=0), progress=False)


def test_the_head_flags_default_to_the_head_options_defaults() -> None:
    """The flags spell their defaults out (so --help needs no numpy); they must be the same."""
    from dataclasses import asdict

    from spoofwatch.cli import build_parser
    from spoofwatch.train.pipeline import HEAD_FIELDS, TrainOptions

    defaults = asdict(TrainOptions())
    for command in (["train", "--manifest", "m", "--out", "d"], ["loso", "--manifest", "m"]):
        args = build_parser().parse_args(command)
        assert {name: getattr(args, name) for name in HEAD_FIELDS} == {
            name: defaults[name] for name in HEAD_FIELDS
        }
