"""The default encoder: real Whisper weights from a CTranslate2 file, run by transformers.

The CTranslate2 tensors are mapped into ``transformers.WhisperEncoder`` names (the fused
q/k/v projection is split, gamma/beta become weight/bias), converted once into a cache
directory as safetensors and loaded from there afterwards. Only the first
``window_s * 50`` positions of the position table are kept, so a 4 s window costs 200
positions instead of Whisper's 1500 (outputs differ from 30 s context; training and
serving use the same window, so that is fine).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from safetensors.torch import load_file, save_file
from transformers import WhisperConfig
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from spoofwatch.errors import ModelError
from spoofwatch.model.encoders.base import EncoderIdentity, TorchEncoder, check_windows
from spoofwatch.model.encoders.ct2_format import Ct2Model, parse_ct2_model
from spoofwatch.model.encoders.mel import HOP_LENGTH, WHISPER_SAMPLE_RATE, WhisperLogMel
from spoofwatch.model.encoders.weights import PINNED, PinnedWeights, cache_root, read_verified

logger = logging.getLogger(__name__)

FRAMES_PER_SECOND = WHISPER_SAMPLE_RATE // HOP_LENGTH // 2  # 50 encoder positions per second
# Bump when the mapping changes, so caches written by older code are not reused.
CONVERSION_VERSION = 1
_LAYER = re.compile(r"^encoder/layer_(\d+)/")


def _tensor(array: NDArray[np.generic]) -> torch.Tensor:
    if not np.issubdtype(array.dtype, np.floating):
        # Quantised CTranslate2 files store int8 weights plus scales; reading them as
        # floats would silently give wrong weights.
        raise ModelError(f"expected float16/float32 weights, found {array.dtype} (quantised model?)")
    return torch.from_numpy(np.ascontiguousarray(array))


def ct2_encoder_to_hf(model: Ct2Model) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """Map CTranslate2 Whisper encoder variables to ``WhisperEncoder`` state-dict names.

    Returns the state dict and the architecture numbers read off the tensors.
    """
    get = model.get
    state: dict[str, torch.Tensor] = {}
    for conv in ("conv1", "conv2"):
        state[f"{conv}.weight"] = _tensor(get(f"encoder/{conv}/weight"))
        state[f"{conv}.bias"] = _tensor(get(f"encoder/{conv}/bias"))
    state["embed_positions.weight"] = _tensor(get("encoder/position_encodings/encodings"))
    state["layer_norm.weight"] = _tensor(get("encoder/layer_norm/gamma"))
    state["layer_norm.bias"] = _tensor(get("encoder/layer_norm/beta"))
    layer_ids = sorted({int(m.group(1)) for name in model.variables if (m := _LAYER.match(name))})
    if layer_ids != list(range(len(layer_ids))) or not layer_ids:
        raise ModelError(f"expected encoder layers 0..N-1 in the CTranslate2 file, found {layer_ids}")
    d_model = int(get("encoder/conv1/weight").shape[0])
    for i in layer_ids:
        src = f"encoder/layer_{i}"
        dst = f"layers.{i}"
        qkv_w = get(f"{src}/self_attention/linear_0/weight")
        qkv_b = get(f"{src}/self_attention/linear_0/bias")
        if qkv_w.shape[0] != 3 * d_model:
            raise ModelError(f"layer {i}: fused qkv expected {3 * d_model} rows, found {qkv_w.shape[0]}")
        q_w, k_w, v_w = np.split(qkv_w, 3, axis=0)
        q_b, _k_b, v_b = np.split(qkv_b, 3, axis=0)  # Whisper's k_proj has no bias (zeros here)
        state[f"{dst}.self_attn.q_proj.weight"] = _tensor(q_w)
        state[f"{dst}.self_attn.q_proj.bias"] = _tensor(q_b)
        state[f"{dst}.self_attn.k_proj.weight"] = _tensor(k_w)
        state[f"{dst}.self_attn.v_proj.weight"] = _tensor(v_w)
        state[f"{dst}.self_attn.v_proj.bias"] = _tensor(v_b)
        state[f"{dst}.self_attn.out_proj.weight"] = _tensor(get(f"{src}/self_attention/linear_1/weight"))
        state[f"{dst}.self_attn.out_proj.bias"] = _tensor(get(f"{src}/self_attention/linear_1/bias"))
        state[f"{dst}.self_attn_layer_norm.weight"] = _tensor(get(f"{src}/self_attention/layer_norm/gamma"))
        state[f"{dst}.self_attn_layer_norm.bias"] = _tensor(get(f"{src}/self_attention/layer_norm/beta"))
        state[f"{dst}.fc1.weight"] = _tensor(get(f"{src}/ffn/linear_0/weight"))
        state[f"{dst}.fc1.bias"] = _tensor(get(f"{src}/ffn/linear_0/bias"))
        state[f"{dst}.fc2.weight"] = _tensor(get(f"{src}/ffn/linear_1/weight"))
        state[f"{dst}.fc2.bias"] = _tensor(get(f"{src}/ffn/linear_1/bias"))
        state[f"{dst}.final_layer_norm.weight"] = _tensor(get(f"{src}/ffn/layer_norm/gamma"))
        state[f"{dst}.final_layer_norm.bias"] = _tensor(get(f"{src}/ffn/layer_norm/beta"))
    arch = {
        "d_model": d_model,
        "encoder_layers": len(layer_ids),
        "encoder_attention_heads": int(np.asarray(get("encoder/num_heads"))),
        "encoder_ffn_dim": int(get("encoder/layer_0/ffn/linear_0/weight").shape[0]),
        "num_mel_bins": int(get("encoder/conv1/weight").shape[1]),
        "max_source_positions": int(get("encoder/position_encodings/encodings").shape[0]),
    }
    return state, arch


def converted_dir(weights: PinnedWeights) -> Path:
    return cache_root() / f"{weights.name}-{weights.sha256[:12]}-v{CONVERSION_VERSION}"


def ensure_converted(weights: PinnedWeights) -> Path:
    """Convert the pinned CTranslate2 file into the cache once; return the directory."""
    target = converted_dir(weights)
    if (target / "encoder.safetensors").is_file() and (target / "arch.json").is_file():
        return target
    logger.info("converting %s CTranslate2 weights into %s (once)", weights.name, target)
    model = parse_ct2_model(read_verified(weights))
    state, arch = ct2_encoder_to_hf(model)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Write into a sibling temp dir and rename, so a crash never leaves half a cache.
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    save_file(state, str(tmp / "encoder.safetensors"), metadata={"source_sha256": weights.sha256})
    (tmp / "arch.json").write_text(json.dumps({**arch, "source_sha256": weights.sha256}, indent=2))
    try:
        os.replace(tmp, target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)  # another process converted it first
        if not (target / "encoder.safetensors").is_file():
            raise
    return target


def build_whisper_encoder(
    state: dict[str, torch.Tensor], arch: dict[str, Any], positions: int, layers: int | None
) -> WhisperEncoder:
    """A float32 ``WhisperEncoder`` with the position table cut to ``positions``."""
    n_layers = arch["encoder_layers"] if layers is None else layers
    if not 1 <= n_layers <= arch["encoder_layers"]:
        raise ModelError(f"layers must be within 1..{arch['encoder_layers']}, found {n_layers}")
    if not 1 <= positions <= arch["max_source_positions"]:
        raise ModelError(
            f"window needs {positions} positions; Whisper has at most {arch['max_source_positions']} (30 s)"
        )
    config = WhisperConfig(
        d_model=arch["d_model"],
        encoder_layers=n_layers,
        encoder_attention_heads=arch["encoder_attention_heads"],
        encoder_ffn_dim=arch["encoder_ffn_dim"],
        num_mel_bins=arch["num_mel_bins"],
        max_source_positions=positions,
        activation_function="gelu",
    )
    config._attn_implementation = "sdpa"
    encoder = WhisperEncoder(config)
    keep = {
        name: tensor
        for name, tensor in state.items()
        if not name.startswith("layers.") or int(name.split(".")[1]) < n_layers
    }
    keep["embed_positions.weight"] = state["embed_positions.weight"][:positions]
    missing, unexpected = encoder.load_state_dict({k: v.float() for k, v in keep.items()}, strict=False)
    # k_proj has no bias in Whisper; anything else missing means a mapping bug.
    real_missing = [m for m in missing if not m.endswith("k_proj.bias")]
    if real_missing or unexpected:
        raise ModelError(f"weight mapping mismatch: missing {real_missing}, unexpected {unexpected}")
    if n_layers < arch["encoder_layers"]:
        # The final layer norm follows the last layer of the full stack. Dropping it makes a
        # truncated encoder's hidden states exactly the full encoder's first n_layers + 1, so a
        # head fitted on the full encoder's lower states runs unchanged on the cheaper one.
        encoder.layer_norm = torch.nn.Identity()  # type: ignore[assignment]
    encoder.train(False)
    encoder.requires_grad_(False)
    return encoder


class WhisperCt2Encoder(TorchEncoder):
    """Whisper encoder (base or tiny.en) built from pinned CTranslate2 weights."""

    def __init__(self, model: str = "whisper-base", window_s: float = 4.0, layers: int | None = None) -> None:
        super().__init__()
        if model not in PINNED:
            raise ModelError(f"unknown Whisper weights {model!r}; expected one of {sorted(PINNED)}")
        weights = PINNED[model]
        positions = round(window_s * FRAMES_PER_SECOND)
        if abs(positions - window_s * FRAMES_PER_SECOND) > 1e-9:
            raise ModelError(f"window_s must be a multiple of 0.02 s for Whisper, found {window_s}")
        directory = ensure_converted(weights)
        arch = json.loads((directory / "arch.json").read_text())
        state = load_file(str(directory / "encoder.safetensors"))
        self.mel = WhisperLogMel(arch["num_mel_bins"])
        self.encoder = build_whisper_encoder(state, arch, positions, layers)
        n_layers = self.encoder.config.encoder_layers
        self._window_samples = positions * 2 * HOP_LENGTH
        self._identity = EncoderIdentity(
            kind="whisper-ct2",
            name=model,
            weights_sha256=weights.sha256,
            sample_rate=WHISPER_SAMPLE_RATE,
            num_hidden_states=n_layers + 1,
            hidden_size=arch["d_model"],
        )

    def hidden_states(self, windows: torch.Tensor) -> tuple[torch.Tensor, ...]:
        check_windows(windows, self._window_samples)
        features = self.mel(windows)
        out = self.encoder(features, output_hidden_states=True)
        return tuple(out.hidden_states)
