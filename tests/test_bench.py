"""``spoofwatch bench`` and int8 quantisation: report fields, search logic, pipeline
accounting, quantised encoders and how they are recorded. No timing assertions."""

from __future__ import annotations

import argparse
import io
import json
import math
import threading
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
import torch

from fakes import TINY_HIDDEN, FakeScorer, save_tiny_detector
from spoofwatch.cli import add_bench_parser, cmd_bench
from spoofwatch.config import EngineConfig, StreamConfig
from spoofwatch.errors import ConfigError, ModelError
from spoofwatch.model.artifact import load_detector, read_card, save_detector
from spoofwatch.model.detector import Detector, DetectorSettings
from spoofwatch.model.encoders.hf import HFEncoder
from spoofwatch.model.encoders.registry import EncoderSpec
from spoofwatch.model.quantize import Int8Encoder, apply_quantization, count_linear_layers
from spoofwatch.ops.bench import (
    CHUNK_MS,
    BenchOptions,
    next_probe,
    run_bench,
    run_encoder_only,
    speech_like,
)
from spoofwatch.stream.core.windowing import WindowConfig
from spoofwatch.train.extract import cache_dir_for

pytestmark = pytest.mark.slow

WINDOW_S = 0.5
HIDDEN = TINY_HIDDEN
LAYERS = (0, 2)
STREAM = StreamConfig(window_s=0.5, hop_s=0.25)
ENGINE = EngineConfig(max_batch=4, max_wait_ms=5)
REQUIRED = ("rtf", "max_realtime_streams", "p50_latency_ms", "p99_latency_ms", "peak_rss_mb")


@dataclass(frozen=True)
class Tiny:
    encoder: HFEncoder
    detector_dir: Path
    windows: np.ndarray


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Tiny:
    root = tmp_path_factory.mktemp("bench")
    save_tiny_detector(root, WINDOW_S, LAYERS)
    encoder = HFEncoder(str(root / "encoder"), window_s=WINDOW_S)
    windows = np.stack([speech_like(WINDOW_S, 16000, seed=s) for s in range(4)])
    return Tiny(encoder, root / "detector", windows)


def check_report_fields(report: dict[str, object]) -> None:
    for key in REQUIRED:
        assert key in report, key
        value = report[key]
        assert isinstance(value, int | float) and math.isfinite(value) and value >= 0, (key, value)
    assert report["p50_latency_ms"] <= report["p99_latency_ms"]  # type: ignore[operator]
    assert report["peak_rss_mb"] > 1  # type: ignore[operator]


# --- the pipeline run and the search -----------------------------------------------------


def test_fixed_run_scores_every_window_of_every_stream_and_reports_sane_fields() -> None:
    scorer = FakeScorer(window_s=0.5)
    options = BenchOptions(streams=3, seconds=0.8, search=False, rtf_windows=2)
    report = run_bench(scorer, STREAM, ENGINE, options).to_dict()
    check_report_fields(report)
    json.dumps(report)  # serialisable as is
    (run,) = report["runs"]
    # 0.8 s of audio at window 0.5 s / hop 0.25 s: windows ending at 0.5 and 0.75 s per stream.
    assert run["windows_scored"] + run["windows_dropped"] == 3 * 2
    assert report["streams"] == 3
    assert report["max_realtime_streams"] == (3 if run["sustained"] else 0)
    assert report["setup"]["window_s"] == 0.5 and report["setup"]["hop_s"] == 0.25
    assert sum(scorer.calls) == run["windows_scored"] + options.rtf_windows + 1
    assert run["cpu_ms_per_window"] > 0 and run["mean_batch"] >= 1


def test_streams_take_the_message_lengths_asked_for_and_the_report_says_so(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from spoofwatch.cli import build_parser
    from spoofwatch.stream.engine.pipeline import StreamHandle

    fed: list[int] = []
    feed = StreamHandle.feed

    def counting_feed(self: StreamHandle, samples: np.ndarray) -> None:
        fed.append(len(samples))
        feed(self, samples)

    monkeypatch.setattr(StreamHandle, "feed", counting_feed)
    options = BenchOptions(streams=2, seconds=0.8, search=False, rtf_windows=1, chunk_ms=(20,))
    report = run_bench(FakeScorer(window_s=0.5), STREAM, ENGINE, options).to_dict()
    assert report["setup"]["chunk_ms"] == [20] and report["setup"]["input_rate"] == 16000
    assert set(fed) == {320} and len(fed) >= 2 * 35  # 0.8 s of 20 ms messages per stream
    (run,) = report["runs"]
    assert run["windows_scored"] + run["windows_dropped"] == 2 * 2
    fed.clear()
    default = run_bench(FakeScorer(window_s=0.5), STREAM, ENGINE, replace(options, chunk_ms=CHUNK_MS))
    assert default.setup["chunk_ms"] == list(CHUNK_MS)
    assert set(fed) == {320, 640}  # two streams: the first two lengths
    parser = build_parser()
    assert parser.parse_args(["bench", "--chunk-ms", "20"]).chunk_ms == (20,)
    assert parser.parse_args(["bench", "--chunk-ms", "20,60"]).chunk_ms == (20, 60)
    assert parser.parse_args(["bench"]).chunk_ms is None
    for bad in ("0", "20,x", ""):
        with pytest.raises(SystemExit):
            parser.parse_args(["bench", "--chunk-ms", bad])
    assert "expected comma-separated positive message lengths in ms" in capsys.readouterr().err


def test_an_engine_that_cannot_keep_up_is_not_real_time() -> None:
    scorer = FakeScorer(window_s=0.5, delay_s=0.1)  # 100 ms per call, one window per call
    options = BenchOptions(streams=4, seconds=0.8, search=False, max_lag_ms=50.0, rtf_windows=1)
    report = run_bench(scorer, STREAM, EngineConfig(max_batch=1, max_wait_ms=0), options)
    (run,) = report.runs
    assert not run.sustained
    assert run.p99_latency_ms > 50.0
    assert report.max_realtime_streams == 0
    assert report.rtf > 0.1 / 0.25 * 0.9  # one call per hop of 0.25 s


def test_search_grows_until_a_run_fails_then_reports_the_largest_sustained() -> None:
    options = BenchOptions(streams=2, seconds=0.6, max_probes=3, max_lag_ms=5000.0, rtf_windows=1)
    report = run_bench(FakeScorer(window_s=0.5), STREAM, ENGINE, options)
    assert [r.streams for r in report.runs] == [2, 3, 5]
    assert report.max_realtime_streams == max(r.streams for r in report.runs if r.sustained)
    assert report.streams == 2  # the --streams run is the headline


@pytest.mark.parametrize(
    ("tried", "expected"),
    [
        ({}, 1),
        ({8: True}, 12),
        ({8: True, 12: False}, 10),
        ({8: True, 10: True, 11: False}, None),  # gap of 1
        ({16: False}, 8),  # nothing sustained: bisect downwards
        ({1: False}, None),
        ({64: True, 96: False}, 80),
        ({80: True, 88: False}, None),
        ({1024: True}, None),  # at the cap
        ({700: True}, 1024),
    ],
)
def test_next_probe(tried: dict[int, bool], expected: int | None) -> None:
    assert next_probe(tried, max_streams=1024) == expected


def test_options_are_validated() -> None:
    with pytest.raises(ConfigError, match="streams: expected >= 1, found 0"):
        BenchOptions(streams=0)
    with pytest.raises(ConfigError, match="seconds"):
        BenchOptions(seconds=float("nan"))
    with pytest.raises(ConfigError, match="more than one window"):
        run_bench(FakeScorer(window_s=0.5), STREAM, ENGINE, BenchOptions(streams=1, seconds=0.5))


def test_speech_like_audio_is_finite_bounded_and_seeded() -> None:
    a = speech_like(1.0, 8000, seed=1)
    assert a.dtype == np.float32 and a.shape == (8000,)
    assert np.isfinite(a).all() and 0.01 < np.abs(a).max() < 1.0
    assert np.array_equal(a, speech_like(1.0, 8000, seed=1))
    assert not np.array_equal(a, speech_like(1.0, 8000, seed=2))


# --- the command line, end to end on a tiny detector --------------------------------------


def run_cli(argv: list[str]) -> tuple[int, list[str]]:
    parser = argparse.ArgumentParser()
    add_bench_parser(parser.add_subparsers(dest="command"))
    out = io.StringIO()
    code = cmd_bench(parser.parse_args(["bench", *argv]), out)
    return code, out.getvalue().splitlines()


def test_cli_json_last_line_has_the_contract_fields(tiny: Tiny) -> None:
    code, lines = run_cli(
        [
            "--detector",
            str(tiny.detector_dir),
            "--streams",
            "2",
            "--seconds",
            "0.6",
            "--no-search",
            "--batch",
            "3",
            "--max-wait-ms",
            "7",
            "--quantization",
            "int8-all",
            "--workers",
            "2",
            "--json",
        ]
    )
    assert code == 0
    report = json.loads(lines[-1])
    check_report_fields(report)
    assert report["setup"]["max_batch"] == 3 and report["setup"]["max_wait_ms"] == 7.0
    assert report["setup"]["workers"] == 2
    assert report["setup"]["hop_s"] == 0.25  # the detector's own hop
    assert report["setup"]["quantization"] == "int8-all"
    assert report["runs"][0]["windows_scored"] > 0


def test_cli_refuses_zero_workers(tiny: Tiny) -> None:
    with pytest.raises(ConfigError, match=r"engine\.workers: expected 1\.\.64"):
        run_cli(["--detector", str(tiny.detector_dir), "--workers", "0", "--streams", "1"])


def test_cli_refuses_an_unknown_quantization(tiny: Tiny) -> None:
    with pytest.raises(ModelError, match="quantization must be one of"):
        run_cli(["--detector", str(tiny.detector_dir), "--quantization", "int4", "--streams", "1"])


def test_encoder_only_times_every_batch_size(tiny: Tiny) -> None:
    detector = load_detector(tiny.detector_dir, quantization="int8")
    options = BenchOptions(encoder_min_seconds=0.0, rtf_windows=1)
    report = run_encoder_only(detector, STREAM, ENGINE, options, (1, 2, 4))
    data = report.to_dict()
    assert [t["batch"] for t in data["encoder_only"]] == [1, 2, 4]
    assert data["encoder_only"][0]["speedup_vs_batch_1"] == 1.0
    for timing in data["encoder_only"]:
        assert timing["ms_per_window"] == pytest.approx(timing["ms_per_batch"] / timing["batch"])
        assert timing["windows_per_s"] == pytest.approx(1000.0 / timing["ms_per_window"])
        assert timing["cpu_ms_per_window"] >= 0.0
    assert data["setup"]["quantization"] == "int8"
    assert data["setup"]["encoder"].endswith("+int8")
    assert "max_realtime_streams" not in data and data["rtf"] > 0


# --- int8 quantisation ---------------------------------------------------------------------


def test_int8_all_quantises_every_linear_layer_int8_keeps_ffn_outputs_float(tiny: Tiny) -> None:
    total, _ = count_linear_layers(tiny.encoder)
    assert count_linear_layers(Int8Encoder(tiny.encoder, "int8-all").module) == (0, total)
    # The tiny wav2vec2 has 2 layers, each with one feed_forward.output_dense.
    assert count_linear_layers(Int8Encoder(tiny.encoder, "int8").module) == (2, total - 2)
    assert count_linear_layers(Int8Encoder(tiny.encoder, "int8-window").module) == (0, total)
    assert count_linear_layers(tiny.encoder) == (total, 0)  # the source is left float


def _alone_and_beside_a_loud_window(encoder: Int8Encoder, windows: np.ndarray) -> float:
    """Largest change of any window's hidden states between scoring it alone and in a batch
    with a window 30 times louder (which sets a per-batch activation scale)."""
    loud = (windows[:1] * 30.0).astype(np.float32)
    batch = torch.from_numpy(np.concatenate([windows, loud]))
    with torch.inference_mode():
        together = encoder.hidden_states(batch)
        alone = [encoder.hidden_states(torch.from_numpy(windows[i : i + 1])) for i in range(len(windows))]
    gaps = [
        float((together[s][i] - alone[i][s][0]).abs().max())
        for i in range(len(windows))
        for s in range(len(together))
    ]
    return max(gaps)


def test_int8_window_features_do_not_depend_on_the_batch_int8_all_do(tiny: Tiny) -> None:
    per_window = _alone_and_beside_a_loud_window(Int8Encoder(tiny.encoder, "int8-window"), tiny.windows)
    per_batch = _alone_and_beside_a_loud_window(Int8Encoder(tiny.encoder, "int8-all"), tiny.windows)
    assert per_window < 1e-4
    assert per_batch > 100 * max(per_window, 1e-6)


@pytest.mark.parametrize("mode", ["int8", "int8-all", "int8-window"])
def test_int8_encoder_stays_close_and_renames_its_identity(tiny: Tiny, mode: str) -> None:
    quantised = Int8Encoder(tiny.encoder, mode)
    ident, base = quantised.identity, tiny.encoder.identity
    assert ident.name == f"{base.name}+{mode}"
    assert replace(ident, name=base.name) == base
    x = torch.from_numpy(tiny.windows)
    with torch.inference_mode():
        ref, got = tiny.encoder.hidden_states(x), quantised.hidden_states(x)
    assert len(ref) == len(got)
    last_ref, last_got = ref[-1], got[-1]
    rel = float((last_ref - last_got).abs().mean() / last_ref.abs().mean())
    assert 0.0 < rel < 0.2


def test_apply_quantization_modes(tiny: Tiny) -> None:
    assert apply_quantization(tiny.encoder, "none") is tiny.encoder
    once = apply_quantization(tiny.encoder, "int8")
    assert apply_quantization(once, "int8") is once
    assert apply_quantization(once, "none") is once  # cannot be undone; settings will say int8
    modes = r"\('none', 'int8', 'int8-all', 'int8-window'\)"
    with pytest.raises(ModelError, match=rf"quantization must be one of {modes}, found 'fp16'"):
        apply_quantization(tiny.encoder, "fp16")
    with pytest.raises(ModelError, match=r"already quantised \(int8\); expected a float32"):
        apply_quantization(once, "int8-all")
    with pytest.raises(ModelError, match="already quantised"):
        Int8Encoder(once)


def test_int8_embeddings_get_their_own_cache(tiny: Tiny) -> None:
    window = WindowConfig(16000, WINDOW_S, 0.25)
    dirs = {
        cache_dir_for(tiny.encoder, window, "clean"),
        cache_dir_for(Int8Encoder(tiny.encoder, "int8"), window, "clean"),
        cache_dir_for(Int8Encoder(tiny.encoder, "int8-all"), window, "clean"),
        cache_dir_for(Int8Encoder(tiny.encoder, "int8-window"), window, "clean"),
    }
    assert len(dirs) == 4


def test_load_detector_records_int8_and_threads_in_settings_and_card(tiny: Tiny, tmp_path: Path) -> None:
    plain = load_detector(tiny.detector_dir)
    assert plain.settings.quantization == "none" and plain.card["inference"]["quantization"] == "none"
    quick = load_detector(tiny.detector_dir, quantization="int8", num_threads=1, max_batch=8)
    assert quick.settings.quantization == "int8"
    assert (quick.settings.num_threads, quick.settings.max_batch) == (1, 8)
    expected = {"backend": "torch", "quantization": "int8", "num_threads": 1, "max_batch": 8, "device": "cpu"}
    assert quick.card["inference"] == expected
    delta = np.abs(quick.score_windows(tiny.windows) - plain.score_windows(tiny.windows))
    assert delta.max() > 0  # really a different network

    save_detector(
        tmp_path / "int8",
        head=quick.head,
        calibration=quick.calibration,
        settings=quick.settings,
        encoder_spec=EncoderSpec("hf", tiny.encoder.name_or_path),
        encoder_identity=tiny.encoder.identity,
    )
    assert read_card(tmp_path / "int8")["inference"]["quantization"] == "int8"
    again = load_detector(tmp_path / "int8")
    assert again.settings.quantization == "int8"
    assert np.allclose(again.score_windows(tiny.windows), quick.score_windows(tiny.windows), atol=1e-5)
    assert load_detector(tmp_path / "int8", quantization="none").settings.quantization == "none"


def test_settings_must_match_the_encoder(tiny: Tiny) -> None:
    detector = load_detector(tiny.detector_dir)
    wrong = DetectorSettings(window_s=WINDOW_S, hop_s=0.25, layers=LAYERS, quantization="int8")
    with pytest.raises(ModelError, match="quantization='int8' but the encoder"):
        Detector(tiny.encoder, detector.head, detector.calibration, wrong)
    with pytest.raises(ModelError, match="num_threads must be >= 0"):
        Detector(
            tiny.encoder,
            detector.head,
            detector.calibration,
            DetectorSettings(window_s=WINDOW_S, hop_s=0.25, layers=LAYERS, num_threads=-1),
        )


def test_num_threads_is_applied_in_the_scoring_thread(tiny: Tiny) -> None:
    detector = load_detector(tiny.detector_dir, num_threads=1)
    seen: list[int] = []

    def score() -> None:
        detector.score_windows(tiny.windows[:1])
        seen.append(torch.get_num_threads())

    before = torch.get_num_threads()
    try:
        worker = threading.Thread(target=score)
        worker.start()
        worker.join()
        assert seen == [1]
    finally:
        torch.set_num_threads(before)


def test_cli_chunk_ms_reaches_the_streams(tiny: Tiny) -> None:
    argv = ["--detector", str(tiny.detector_dir), "--streams", "1", "--seconds", "0.6", "--no-search"]
    code, lines = run_cli([*argv, "--chunk-ms", "20", "--json"])
    assert code == 0 and json.loads(lines[-1])["setup"]["chunk_ms"] == [20]
