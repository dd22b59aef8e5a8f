"""HFEncoder on tiny, randomly initialised checkpoints saved to disk (no hub access)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from transformers import (
    BertConfig,
    HubertConfig,
    HubertModel,
    PreTrainedModel,
    Wav2Vec2Config,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2Model,
    WavLMConfig,
    WavLMModel,
    WhisperConfig,
    WhisperModel,
)

from spoofwatch.errors import ModelError
from spoofwatch.model.encoders.hf import HFEncoder
from spoofwatch.model.encoders.mel import WhisperLogMel
from spoofwatch.model.encoders.registry import EncoderSpec, build_encoder

WAVE_WINDOW_S = 0.5
WAVE_SAMPLES = 8000
WHISPER_WINDOW_S = 2.0
WHISPER_SAMPLES = 32000
HIDDEN = 32
N_LAYERS = 2
CONV = {"conv_dim": (16, 16), "conv_stride": (5, 4), "conv_kernel": (10, 8)}
SMALL = {
    "hidden_size": HIDDEN,
    "num_hidden_layers": N_LAYERS,
    "num_attention_heads": 2,
    "intermediate_size": 40,
    "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 2,
    **CONV,
}
WAVEFORM_KINDS = ("wav2vec2", "hubert", "wavlm")


def conv_frames(samples: int) -> int:
    for kernel, stride in zip(CONV["conv_kernel"], CONV["conv_stride"], strict=True):
        samples = (samples - kernel) // stride + 1
    return samples


def tiny_model(kind: str, seed: int = 0) -> PreTrainedModel:
    torch.manual_seed(seed)
    if kind == "wav2vec2":
        return Wav2Vec2Model(Wav2Vec2Config(**SMALL))
    if kind == "hubert":
        return HubertModel(HubertConfig(**SMALL))
    if kind == "wavlm":
        return WavLMModel(WavLMConfig(**SMALL, num_buckets=32, max_bucket_distance=100))
    return WhisperModel(
        WhisperConfig(
            d_model=HIDDEN,
            encoder_layers=N_LAYERS,
            decoder_layers=1,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=40,
            decoder_ffn_dim=40,
            max_source_positions=1500,
            num_mel_bins=80,
            vocab_size=64,
            max_target_positions=16,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
            decoder_start_token_id=1,
        )
    )


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf")
    paths = {}
    for kind in (*WAVEFORM_KINDS, "whisper"):
        paths[kind] = root / kind
        tiny_model(kind).save_pretrained(paths[kind])
    return paths


@pytest.fixture(scope="module")
def encoders(checkpoints: dict[str, Path]) -> dict[str, HFEncoder]:
    loaded = {kind: HFEncoder(str(checkpoints[kind]), window_s=WAVE_WINDOW_S) for kind in WAVEFORM_KINDS}
    loaded["whisper"] = HFEncoder(str(checkpoints["whisper"]), window_s=WHISPER_WINDOW_S)
    return loaded


def windows(samples: int, batch: int = 2, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, samples, generator=generator) * 0.1


@pytest.mark.parametrize("kind", WAVEFORM_KINDS)
def test_waveform_encoder_shapes_and_identity(encoders: dict[str, HFEncoder], kind: str) -> None:
    encoder = encoders[kind]
    states = encoder.hidden_states(windows(WAVE_SAMPLES))
    assert len(states) == N_LAYERS + 1
    for state in states:
        assert state.shape == (2, conv_frames(WAVE_SAMPLES), HIDDEN)
        assert state.dtype == torch.float32
        assert torch.isfinite(state).all()
    identity = encoder.identity
    assert (identity.kind, identity.name) == ("hf", kind)
    assert (identity.num_hidden_states, identity.hidden_size, identity.sample_rate) == (3, HIDDEN, 16000)
    assert len(identity.weights_sha256) == 64
    assert encoder.window_samples == WAVE_SAMPLES


@pytest.mark.parametrize("kind", [*WAVEFORM_KINDS, "whisper"])
def test_outputs_are_deterministic_and_batch_independent(encoders: dict[str, HFEncoder], kind: str) -> None:
    encoder = encoders[kind]
    batch = windows(encoder.window_samples, batch=3, seed=1)
    first = encoder.hidden_states(batch)
    second = encoder.hidden_states(batch)
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)
    alone = encoder.hidden_states(batch[1:2])
    for a, b in zip(first, alone, strict=True):
        torch.testing.assert_close(a[1:2], b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kind", WAVEFORM_KINDS)
def test_layer_truncation_keeps_the_lower_states(
    checkpoints: dict[str, Path], encoders: dict[str, HFEncoder], kind: str
) -> None:
    short = HFEncoder(str(checkpoints[kind]), window_s=WAVE_WINDOW_S, layers=1)
    assert short.identity.num_hidden_states == 2
    batch = windows(WAVE_SAMPLES, seed=2)
    full_states = encoders[kind].hidden_states(batch)
    short_states = short.hidden_states(batch)
    assert len(short_states) == 2
    for a, b in zip(short_states, full_states[:2], strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("layers", [0, N_LAYERS + 1])
def test_layers_beyond_the_checkpoint_are_refused(checkpoints: dict[str, Path], layers: int) -> None:
    with pytest.raises(ModelError, match=rf"within 1\.\.{N_LAYERS} .*found {layers}"):
        HFEncoder(str(checkpoints["wav2vec2"]), window_s=WAVE_WINDOW_S, layers=layers)
    with pytest.raises(ModelError, match=rf"within 1\.\.{N_LAYERS} .*found {layers}"):
        HFEncoder(str(checkpoints["whisper"]), window_s=WHISPER_WINDOW_S, layers=layers)


def test_registry_builds_the_same_encoder(
    checkpoints: dict[str, Path], encoders: dict[str, HFEncoder]
) -> None:
    built = build_encoder(EncoderSpec("hf", str(checkpoints["hubert"])), WAVE_WINDOW_S)
    assert built.identity == encoders["hubert"].identity
    assert built.window_samples == WAVE_SAMPLES
    batch = windows(WAVE_SAMPLES, seed=3)
    for a, b in zip(built.hidden_states(batch), encoders["hubert"].hidden_states(batch), strict=True):
        assert torch.equal(a, b)
    short = build_encoder(EncoderSpec("hf", str(checkpoints["hubert"]), layers=1), WAVE_WINDOW_S)
    assert short.identity.num_hidden_states == 2


def test_whisper_positions_follow_the_window(encoders: dict[str, HFEncoder]) -> None:
    encoder = encoders["whisper"]
    assert encoder.window_samples == WHISPER_SAMPLES
    states = encoder.hidden_states(windows(WHISPER_SAMPLES))
    assert len(states) == N_LAYERS + 1
    assert all(state.shape == (2, 100, HIDDEN) for state in states)
    identity = encoder.identity
    assert (identity.num_hidden_states, identity.hidden_size) == (N_LAYERS + 1, HIDDEN)


def test_whisper_uses_the_first_positions_of_the_checkpoint(
    checkpoints: dict[str, Path], encoders: dict[str, HFEncoder]
) -> None:
    """Input embedding = gelu(conv2(gelu(conv1(mel)))) + the checkpoint's first 100 positions."""
    original = WhisperModel.from_pretrained(str(checkpoints["whisper"])).get_encoder().eval()
    audio = windows(WHISPER_SAMPLES, seed=4)
    with torch.no_grad():
        mel = WhisperLogMel(80)(audio)
        conv = torch.nn.functional.gelu(original.conv2(torch.nn.functional.gelu(original.conv1(mel))))
        expected = conv.permute(0, 2, 1) + original.embed_positions.weight[:100]
        states = encoders["whisper"].hidden_states(audio)
    torch.testing.assert_close(states[0], expected, atol=1e-5, rtol=1e-5)


def test_whisper_truncation_keeps_the_input_embedding(
    checkpoints: dict[str, Path], encoders: dict[str, HFEncoder]
) -> None:
    short = HFEncoder(str(checkpoints["whisper"]), window_s=WHISPER_WINDOW_S, layers=1)
    batch = windows(WHISPER_SAMPLES, seed=5)
    short_states = short.hidden_states(batch)
    assert len(short_states) == 2
    assert short_states[1].shape == (2, 100, HIDDEN)
    torch.testing.assert_close(short_states[0], encoders["whisper"].hidden_states(batch)[0])


@pytest.mark.parametrize(
    ("window_s", "message"),
    [(0.01, "multiple of 0.02"), (1.01, "multiple of 0.02"), (31.0, r"within 0\.02\.\.30\.0 s")],
)
def test_whisper_refuses_windows_it_cannot_hold(
    checkpoints: dict[str, Path], window_s: float, message: str
) -> None:
    with pytest.raises(ModelError, match=message):
        HFEncoder(str(checkpoints["whisper"]), window_s=window_s)


def test_whisper_refuses_other_sample_rates(checkpoints: dict[str, Path]) -> None:
    with pytest.raises(ModelError, match="16000 Hz audio, found sample_rate=8000"):
        HFEncoder(str(checkpoints["whisper"]), window_s=WHISPER_WINDOW_S, sample_rate=8000)


@pytest.mark.parametrize("kind", ["wav2vec2", "whisper"])
def test_wrong_window_shape_is_refused(encoders: dict[str, HFEncoder], kind: str) -> None:
    encoder = encoders[kind]
    n = encoder.window_samples
    with pytest.raises(ModelError, match=rf"shape \(batch, {n}\), found \(2, {n - 160}\)"):
        encoder.hidden_states(torch.zeros(2, n - 160))
    with pytest.raises(ModelError, match=rf"found \({n},\)"):
        encoder.hidden_states(torch.zeros(n))


def test_unsupported_model_type_is_refused(tmp_path: Path) -> None:
    config = BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8)
    config.save_pretrained(tmp_path)
    with pytest.raises(ModelError, match="unsupported Hugging Face model type 'bert'; expected whisper"):
        HFEncoder(str(tmp_path))


def test_missing_directory_is_refused(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelError, match=f"cannot load a Hugging Face config from '{missing}'"):
        HFEncoder(str(missing))


def test_directory_without_weights_is_refused(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    shutil.copy(checkpoints["wav2vec2"] / "config.json", tmp_path / "config.json")
    with pytest.raises(ModelError, match=f"cannot load Hugging Face weights from '{tmp_path}'"):
        HFEncoder(str(tmp_path), window_s=WAVE_WINDOW_S)


def test_identity_hash_tracks_weights_not_location(
    checkpoints: dict[str, Path], encoders: dict[str, HFEncoder], tmp_path: Path
) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(checkpoints["wav2vec2"], copy)
    assert HFEncoder(str(copy), window_s=WAVE_WINDOW_S).identity.weights_sha256 == (
        encoders["wav2vec2"].identity.weights_sha256
    )
    model = tiny_model("wav2vec2")
    with torch.no_grad():
        model.encoder.layers[1].feed_forward.output_dense.bias[0] += 1e-3
    model.save_pretrained(tmp_path / "changed")
    changed = HFEncoder(str(tmp_path / "changed"), window_s=WAVE_WINDOW_S)
    assert changed.identity.weights_sha256 != encoders["wav2vec2"].identity.weights_sha256


def test_whisper_identity_does_not_depend_on_the_window(
    checkpoints: dict[str, Path], encoders: dict[str, HFEncoder]
) -> None:
    other = HFEncoder(str(checkpoints["whisper"]), window_s=1.0)
    assert other.window_samples == 16000
    assert other.identity == encoders["whisper"].identity


def test_float16_checkpoint_runs_in_float32(tmp_path: Path) -> None:
    model = tiny_model("wav2vec2").half()
    model.save_pretrained(tmp_path)
    encoder = HFEncoder(str(tmp_path), window_s=WAVE_WINDOW_S)
    assert all(p.dtype == torch.float32 for p in encoder.backbone.parameters())
    states = encoder.hidden_states(windows(WAVE_SAMPLES))
    assert states[-1].dtype == torch.float32
    assert torch.isfinite(states[-1]).all()


def backbone_input(encoder: HFEncoder, audio: torch.Tensor) -> torch.Tensor:
    """The tensor the encoder hands its backbone for ``audio``."""
    seen: list[torch.Tensor] = []
    hook = encoder.backbone.register_forward_pre_hook(lambda _module, args: seen.append(args[0].clone()))
    try:
        encoder.hidden_states(audio)
    finally:
        hook.remove()
    return seen[0]


def test_waveform_normalisation_follows_do_normalize(
    checkpoints: dict[str, Path], encoders: dict[str, HFEncoder], tmp_path: Path
) -> None:
    shutil.copytree(checkpoints["wav2vec2"], tmp_path / "raw")
    Wav2Vec2FeatureExtractor(do_normalize=False).save_pretrained(tmp_path / "raw")
    raw = HFEncoder(str(tmp_path / "raw"), window_s=WAVE_WINDOW_S)
    audio = windows(WAVE_SAMPLES, seed=6) * torch.tensor([[3.0], [0.5]]) + 0.2
    assert torch.equal(backbone_input(raw, audio), audio)
    # No preprocessor_config.json: the feature extractors' default, zero mean and unit variance.
    fed = backbone_input(encoders["wav2vec2"], audio)
    torch.testing.assert_close(fed.mean(dim=1), torch.zeros(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(fed.std(dim=1, unbiased=False), torch.ones(2), atol=1e-4, rtol=0)
    torch.testing.assert_close(fed[0] * audio[0].std(unbiased=False) + audio[0].mean(), audio[0])
