"""The ONNX Runtime backend on the real Whisper tiny.en weights (a 2 s window), and the
shipped detector run through it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from spoofwatch.audio.files import load_audio
from spoofwatch.errors import ModelError
from spoofwatch.model.backend import backend_of, runtime_encoder
from spoofwatch.model.encoders.lfcc import LfccEncoder
from spoofwatch.model.encoders.onnx_runtime import OrtWhisperEncoder
from spoofwatch.model.encoders.whisper_ct2 import WhisperCt2Encoder
from spoofwatch.model.quantize import quantization_of

pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.real_weights

ROOT = Path(__file__).resolve().parents[2]
REAL = ROOT / "examples" / "audio" / "real_librispeech_1502-122615-0000.flac"
FAKE = ROOT / "examples" / "audio" / "synthetic_espeak.flac"


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("ort-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SPOOFWATCH_CACHE", str(root))
        yield root


@pytest.fixture(scope="module")
def tiny(cache: Path) -> WhisperCt2Encoder:
    return WhisperCt2Encoder("whisper-tiny.en", window_s=2.0)


def speech_windows(n: int) -> torch.Tensor:
    audio = load_audio(REAL, 16000).samples
    windows = np.stack([audio[i * 8000 : i * 8000 + 32000] for i in range(n)])
    return torch.from_numpy(windows.astype(np.float32))


def test_float32_graph_gives_torchs_hidden_states(tiny: WhisperCt2Encoder, cache: Path) -> None:
    ort_encoder = runtime_encoder(tiny, "none", "onnxruntime")
    assert isinstance(ort_encoder, OrtWhisperEncoder)
    assert backend_of(ort_encoder.identity) == "onnxruntime"
    assert quantization_of(ort_encoder.identity) == "none"
    assert ort_encoder.identity.num_hidden_states == tiny.identity.num_hidden_states
    windows = speech_windows(3)  # a batch size other than the export's 1
    with torch.inference_mode():
        expected = tiny.hidden_states(windows)
    got = ort_encoder.hidden_states(windows)
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert g.shape == e.shape
        assert (g - e).abs().max().item() <= 1e-3 * e.abs().max().item() + 1e-4
    # Exported once: a second encoder reuses the cached graph.
    graphs = sorted((cache / "onnx").glob("*.onnx"))
    mtimes = [p.stat().st_mtime_ns for p in graphs]
    runtime_encoder(tiny, "none", "onnxruntime")
    assert [p.stat().st_mtime_ns for p in sorted((cache / "onnx").glob("*.onnx"))] == mtimes


def test_int8_graph_is_close_but_not_identical(tiny: WhisperCt2Encoder) -> None:
    float_states = runtime_encoder(tiny, "none", "onnxruntime").hidden_states(speech_windows(2))
    int8 = runtime_encoder(tiny, "int8-all", "onnxruntime")
    assert quantization_of(int8.identity) == "int8-all" and int8.identity.name.endswith("+ort+int8-all")
    int8_states = int8.hidden_states(speech_windows(2))
    last_f, last_q = float_states[-1].flatten(), int8_states[-1].flatten()
    assert not torch.equal(last_f, last_q)
    assert torch.corrcoef(torch.stack([last_f, last_q]))[0, 1].item() > 0.98


def test_int8_window_graph_scores_each_window_alone(tiny: WhisperCt2Encoder) -> None:
    windows = speech_windows(3)
    windows[2] *= 30.0  # a loud companion sets a coarse scale for a per-call quantisation
    graphs = set()
    for mode, independent in (("int8-window", True), ("int8-all", False)):
        encoder = runtime_encoder(tiny, mode, "onnxruntime")
        assert isinstance(encoder, OrtWhisperEncoder)
        graphs.add(encoder.path)
        together = encoder.hidden_states(windows)[-1]
        alone = encoder.hidden_states(windows[:1])[-1]
        gap = (together[0] - alone[0]).abs().max().item()
        assert (gap < 1e-4) is independent, (mode, gap)
    assert len(graphs) == 1  # the same int8 graph, called per window or per batch


def test_other_encoders_are_refused_with_the_reason(tiny: WhisperCt2Encoder) -> None:
    with pytest.raises(ModelError, match="runs Whisper"):
        runtime_encoder(LfccEncoder(window_s=2.0), "none", "onnxruntime")
    with pytest.raises(ModelError, match="backend must be one of"):
        runtime_encoder(tiny, "none", "tensorrt")


def test_shipped_detector_runs_on_onnxruntime(cache: Path) -> None:
    from spoofwatch.model.artifact import load_detector

    detector = load_detector(backend="onnxruntime")
    assert detector.settings.backend == "onnxruntime"
    assert detector.card["inference"]["backend"] == "onnxruntime"
    assert detector.encoder.identity.name == "whisper-base+ort+int8-window"
    n = detector.encoder.window_samples
    real = load_audio(REAL, 16000).samples[:n]
    fake = load_audio(FAKE, 16000).samples[:n]
    llr = detector.score_windows(np.stack([real, fake]).astype(np.float32))
    assert llr[0] > 0 > llr[1]
    # The head was fitted on torch's int8 features; ONNX Runtime's int8 moves the scores
    # but does not reverse them.
    torch_llr = load_detector().score_windows(np.stack([real, fake]).astype(np.float32))
    assert np.abs(llr - torch_llr).max() < 2.0


def test_int8_export_leaves_the_root_logger_level_alone(tiny: WhisperCt2Encoder, cache: Path) -> None:
    import logging

    for graph in (cache / "onnx").glob("*int8*.onnx"):
        graph.unlink()  # force the quantisation step
    root = logging.getLogger()
    before = root.level
    root.setLevel(logging.INFO)
    try:
        runtime_encoder(tiny, "int8", "onnxruntime")
        assert root.level == logging.INFO
    finally:
        root.setLevel(before)
