"""ONNX Runtime backend for the Whisper encoders.

The transformer part of a float32 Whisper encoder is exported once (TorchScript exporter,
opset 17) into ``<cache>/onnx`` under a key made of the encoder identity, the window and
the quantisation; int8 modes are quantised there with ``onnxruntime.quantization.
quantize_dynamic`` (int8 weights, activations quantised per call; ``int8-window`` calls the
session once per window, ``int8-all`` once per batch). The log-mel front end stays in
torch: it is about 2 % of the work and its STFT would tie the export to one opset's STFT
op. ``onnxruntime`` and ``onnx`` are the optional ``[onnx]`` extra.

Int8 here is ONNX Runtime's own dynamic quantisation, not torch's: its features differ
slightly from a torch int8 encoder's, so a head should be fitted with the backend it will
run with (``spoofwatch train --backend onnxruntime``).
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spoofwatch.errors import ModelError
from spoofwatch.model.encoders.base import Encoder, EncoderIdentity, EncoderShape, check_windows
from spoofwatch.model.encoders.weights import cache_root
from spoofwatch.model.quantize import check_quantization, quantization_of
from spoofwatch.model.runtime_modes import INT8_ALL_LINEAR, INT8_DYNAMIC, INT8_PER_WINDOW, NO_QUANTIZATION

logger = logging.getLogger(__name__)

BACKEND_TAG = "+ort"
OPSET = 17
# Bump when the export changes, so cached graphs written by older code are not reused.
EXPORT_VERSION = 1


def _require_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise ModelError(
            "the onnxruntime backend needs the packages onnxruntime and onnx; install them with "
            "`pip install 'spoofwatch[onnx]'` (or choose backend 'torch')"
        ) from None
    return onnxruntime


class _AllHiddenStates(torch.nn.Module):
    """The exported graph: log-mel features in, every hidden state stacked out."""

    def __init__(self, transformer: torch.nn.Module) -> None:
        super().__init__()
        self.transformer = transformer

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        out = self.transformer(features, output_hidden_states=True)
        return torch.stack(tuple(out.hidden_states), dim=1)


def graph_path(identity: EncoderIdentity, window_samples: int, quantization: str) -> Path:
    key = (
        f"{identity.kind}-{identity.name}-{identity.weights_sha256[:16]}-L{identity.num_hidden_states}"
        f"-n{window_samples}-{quantization}-v{EXPORT_VERSION}"
    )
    return cache_root() / "onnx" / f"{key.replace('/', '_')}.onnx"


def _export_float(transformer: torch.nn.Module, features: torch.Tensor, path: Path) -> None:
    tmp = path.with_suffix(f".{os.getpid()}.tmp.onnx")
    with warnings.catch_warnings():
        # The TorchScript exporter warns about tracing Python control flow in transformers'
        # Whisper code; the shapes it fixes are the window's, which the cache key carries.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _AllHiddenStates(transformer).eval(),
            (features,),
            str(tmp),
            dynamo=False,
            opset_version=OPSET,
            input_names=["features"],
            output_names=["states"],
            dynamic_axes={"features": {0: "batch"}, "states": {0: "batch"}},
        )
    os.replace(tmp, path)


def _quantize(float_path: Path, path: Path, mode: str) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    exclude: list[str] = []
    if mode == INT8_DYNAMIC:  # as in torch: the FFN output projections stay float32
        graph = onnx.load(str(float_path), load_external_data=False).graph
        matmuls = [node for node in graph.node if node.op_type in ("MatMul", "Gemm")]
        exclude = [node.name for node in matmuls if "/fc2/" in node.name]
    tmp = path.with_suffix(f".{os.getpid()}.tmp.onnx")
    # quantize_dynamic logs a pre-processing hint through the root logger that is not
    # actionable here; quiet it for this call only and give the level back.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantize_dynamic(str(float_path), str(tmp), weight_type=QuantType.QInt8, nodes_to_exclude=exclude)
    finally:
        root.setLevel(level)
    os.replace(tmp, path)


class OrtWhisperEncoder(EncoderShape):
    """A Whisper encoder whose transformer runs in ONNX Runtime (float32 or dynamic int8)."""

    def __init__(self, source: Encoder, quantization: str = NO_QUANTIZATION, num_threads: int = 1) -> None:
        ort = _require_onnxruntime()
        check_quantization(quantization)
        ident = source.identity
        transformer = getattr(source, "encoder", None)
        mel = getattr(source, "mel", None)
        if ident.kind != "whisper-ct2" or transformer is None or mel is None:
            raise ModelError(
                f"the onnxruntime backend runs Whisper (whisper-ct2) encoders, found {ident.kind!r} "
                f"({ident.name!r}); use backend 'torch' for it"
            )
        if quantization_of(ident) != NO_QUANTIZATION or BACKEND_TAG in ident.name:
            raise ModelError(f"expected a float32 torch encoder to export, found {ident.name!r}")
        self._mel: torch.nn.Module = mel
        self._window_samples = source.window_samples
        self.quantization = quantization
        # int8-window runs int8-all's graph, one window per call.
        graph_mode = INT8_ALL_LINEAR if quantization == INT8_PER_WINDOW else quantization
        path = graph_path(ident, self._window_samples, graph_mode)
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            float_path = graph_path(ident, self._window_samples, NO_QUANTIZATION)
            if not float_path.is_file():
                with torch.inference_mode():
                    features = self._mel(torch.zeros(1, self._window_samples))
                logger.info("exporting %s to ONNX (once): %s", ident.name, float_path)
                _export_float(transformer, features, float_path)
            if quantization != NO_QUANTIZATION:
                _quantize(float_path, path, graph_mode)
        options = ort.SessionOptions()
        # Threads per call; the engine's workers give parallelism across windows.
        options.intra_op_num_threads = max(1, num_threads)
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        suffix = BACKEND_TAG + ("" if quantization == NO_QUANTIZATION else f"+{quantization}")
        self._identity = replace(ident, name=ident.name + suffix)
        self.path = path

    def hidden_states(self, windows: torch.Tensor) -> tuple[torch.Tensor, ...]:
        check_windows(windows, self._window_samples)
        with torch.inference_mode():
            features = self._mel(windows)
        batch = np.ascontiguousarray(features.numpy())
        # DynamicQuantizeLinear takes one scale per call: int8-window calls once per window.
        per_window = self.quantization == INT8_PER_WINDOW
        parts = [batch[i : i + 1] for i in range(len(batch))] if per_window else [batch]
        states = np.concatenate([self._session.run(None, {"features": part})[0] for part in parts])
        stacked = torch.from_numpy(np.asarray(states, dtype=np.float32))
        return tuple(stacked.unbind(dim=1))
