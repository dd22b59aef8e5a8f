"""The converted default encoder is real OpenAI Whisper, not merely loadable.

Three kinds of evidence, on the real pinned weights (whisper-base and whisper-tiny.en):
an independent numpy forward pass from the raw CTranslate2 variables matches every
hidden state of ``WhisperCt2Encoder``; the converted encoder plus the CT2 decoder
transcribe a sentence spoken by espeak-ng; tampered weight files are refused, and the
safetensors cache is converted once and reused.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from numpy.typing import NDArray
from safetensors.torch import load_file
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]
from tokenizers import Tokenizer

from spoofwatch.errors import WeightsIntegrityError
from spoofwatch.model.encoders import weights as weights_module
from spoofwatch.model.encoders import whisper_ct2
from spoofwatch.model.encoders.mel import WhisperLogMel
from spoofwatch.model.encoders.weights import PINNED, part_paths, read_verified
from spoofwatch.model.encoders.whisper_ct2 import (
    WhisperCt2Encoder,
    converted_dir,
    ensure_converted,
)

sys.path.insert(0, str(Path(__file__).parent))
import whisper_reference as ref

pytestmark = pytest.mark.real_weights

MODELS = ("whisper-base", "whisper-tiny.en")
WINDOW_S = 2.0  # 100 encoder positions
SAMPLE_RATE = 16000
SENTENCE = "We will meet at the train station tomorrow morning, and then we will travel to the city together."
MIN_WORD_RECALL = 0.7
MAX_NEW_TOKENS = 40
RELATIVE_TOLERANCE = 1e-3

EncoderFor = Callable[[str], WhisperCt2Encoder]


@pytest.fixture(scope="module", autouse=True)
def weights_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh SPOOFWATCH_CACHE shared by the module (conversion takes seconds)."""
    cache = tmp_path_factory.mktemp("spoofwatch-cache")
    threads = torch.get_num_threads()
    # On two cores shared with other jobs, one thread each for torch and numpy's BLAS is
    # 2-7x faster here: small ops otherwise wait on a descheduled worker thread.
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1), pytest.MonkeyPatch.context() as patch:
            patch.setenv("SPOOFWATCH_CACHE", str(cache))
            yield cache
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def encoder_for(weights_cache: Path) -> EncoderFor:
    built: dict[str, WhisperCt2Encoder] = {}

    def get(name: str) -> WhisperCt2Encoder:
        if name not in built:
            built[name] = WhisperCt2Encoder(name, window_s=WINDOW_S)
        return built[name]

    return get


def probe_windows(n_samples: int) -> NDArray[np.float32]:
    """Two deterministic, different windows: a rising chirp and a warbling tone, plus noise."""
    t = np.arange(n_samples) / SAMPLE_RATE
    duration = n_samples / SAMPLE_RATE
    rng = np.random.default_rng(20240611)
    chirp = 0.5 * np.sin(2 * np.pi * (100 * t + (4000 - 100) / (2 * duration) * t**2))
    warble = 0.3 * np.sin(2 * np.pi * 440 * t + 3 * np.sin(2 * np.pi * 5 * t)) * (1 + 0.5 * t)
    noise = rng.standard_normal((2, n_samples))
    return np.stack([chirp + 0.05 * noise[0], warble + 0.1 * noise[1]]).astype(np.float32)


def token_id(tokenizer: Tokenizer, token: str) -> int:
    found = tokenizer.token_to_id(token)
    assert found is not None, f"expected {token!r} in the shipped tokenizer.json, found none"
    return int(found)


# ---------------------------------------------------------------- 1. independent reference


@pytest.mark.parametrize("name", MODELS)
def test_hidden_states_match_numpy_reference(name: str, encoder_for: EncoderFor) -> None:
    encoder = encoder_for(name)
    model = ref.load_ct2(name)
    n_mels = int(model.get("encoder/conv1/weight").shape[1])
    d_model = int(model.get("encoder/conv1/weight").shape[0])
    positions = round(WINDOW_S * 50)
    windows = probe_windows(encoder.window_samples)
    with torch.inference_mode():
        mels = encoder.mel(torch.from_numpy(windows)).numpy()
        states = [s.numpy() for s in encoder.hidden_states(torch.from_numpy(windows))]
    assert len(states) == ref.n_layers(model, "encoder") + 1
    filters = np.asarray(ref.feature_extractor(n_mels).mel_filters, np.float64)

    for batch, wave in enumerate(windows.astype(np.float64)):
        expected_mel = ref.log_mel(wave, filters)
        assert mels[batch].shape == expected_mel.shape == (n_mels, 2 * positions)
        mel_error = ref.relative_error(mels[batch], expected_mel)
        assert mel_error < RELATIVE_TOLERANCE / 10, f"{name} log-mel: relative error {mel_error:.2e}"
        # The reference starts from its own mel, so nothing of the package's path is shared.
        expected = ref.encoder_hidden_states(model, expected_mel)
        for index, (got, want) in enumerate(zip(states, expected, strict=True)):
            assert got[batch].shape == want.shape == (positions, d_model)
            error = ref.relative_error(got[batch], want)
            assert error < RELATIVE_TOLERANCE, (
                f"{name} hidden state {index} of window {batch}: expected relative error "
                f"< {RELATIVE_TOLERANCE}, found {error:.2e}"
            )


def test_truncated_encoder_keeps_the_full_encoders_lower_states(encoder_for: EncoderFor) -> None:
    full = encoder_for("whisper-base")
    short = WhisperCt2Encoder("whisper-base", window_s=WINDOW_S, layers=3)
    assert short.identity.num_hidden_states == 4
    windows = torch.from_numpy(probe_windows(full.window_samples))
    with torch.inference_mode():
        want, got = full.hidden_states(windows), short.hidden_states(windows)
    for index in range(4):  # state 3 too: the final layer norm belongs to the full stack only
        assert torch.equal(got[index], want[index]), f"hidden state {index} differs"


def test_reference_comparison_detects_a_qkv_mapping_bug(encoder_for: EncoderFor) -> None:
    """The tolerance above is far below what a k/v swap produces, so it would be caught."""
    name = "whisper-tiny.en"
    encoder = encoder_for(name)
    model = ref.load_ct2(name)
    windows = probe_windows(encoder.window_samples)
    with torch.inference_mode():
        mel = encoder.mel(torch.from_numpy(windows[:1])).numpy()[0].astype(np.float64)
        last = encoder.hidden_states(torch.from_numpy(windows[:1]))[-1][0].numpy()
    right = ref.relative_error(last, ref.encoder_hidden_states(model, mel, qkv_order="qkv")[-1])
    swapped = ref.relative_error(last, ref.encoder_hidden_states(model, mel, qkv_order="qvk")[-1])
    assert right < RELATIVE_TOLERANCE
    assert swapped > 100 * RELATIVE_TOLERANCE, f"k/v swap changed the output by only {swapped:.2e}"


# ---------------------------------------------------------------- 2. known answer


@pytest.mark.parametrize("name", MODELS)
def test_converted_weights_transcribe_speech(name: str, weights_cache: Path) -> None:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed, so the known-answer sentence cannot be spoken")
    model = ref.load_ct2(name)
    n_mels = int(model.get("encoder/conv1/weight").shape[1])
    audio = ref.espeak_speech(SENTENCE)
    extractor = ref.feature_extractor(n_mels)
    features = torch.from_numpy(
        extractor(audio, sampling_rate=SAMPLE_RATE, return_tensors="np").input_features
    )
    assert features.shape == (1, n_mels, 3000)
    # The package's batched mel agrees with the standard extractor on a 30 s input too.
    padded = np.zeros(extractor.n_samples, dtype=np.float32)
    padded[: audio.size] = audio
    with torch.inference_mode():
        ours = WhisperLogMel(n_mels)(torch.from_numpy(padded)[None])
    assert ref.relative_error(ours.numpy(), features.numpy()) < RELATIVE_TOLERANCE

    # The encoder is exactly what the package cached; only the decoder is test-side.
    encoder_state = load_file(str(ensure_converted(PINNED[name]) / "encoder.safetensors"))
    whisper = ref.build_full_whisper(model, encoder_state)
    tokenizer = Tokenizer.from_file(str(ref.tokenizer_path(name)))
    prompt = [token_id(tokenizer, token) for token in ref.PROMPTS[name]]
    eot = token_id(tokenizer, "<|endoftext|>")

    tokens = ref.greedy_decode(whisper, features, prompt, eot, MAX_NEW_TOKENS)
    text = tokenizer.decode(tokens, skip_special_tokens=True)
    recall = ref.word_recall(SENTENCE, text)
    assert recall >= MIN_WORD_RECALL, (
        f"{name}: expected at least {MIN_WORD_RECALL:.0%} of the words of {SENTENCE!r}, "
        f"found {recall:.0%} in the transcript {text!r}"
    )

    if name != "whisper-tiny.en":
        return
    # Control (one model is enough, it costs another 30 s encoder pass): the words come
    # from the audio, not from the prompt or the decoder's language prior.
    silence = torch.from_numpy(
        extractor(np.zeros(SAMPLE_RATE), sampling_rate=SAMPLE_RATE, return_tensors="np").input_features
    )
    silent_text = tokenizer.decode(
        ref.greedy_decode(whisper, silence, prompt, eot, MAX_NEW_TOKENS), skip_special_tokens=True
    )
    assert ref.word_recall(SENTENCE, silent_text) < 0.3, silent_text


# ---------------------------------------------------------------- 3. integrity and cache


def _fake_site(root: Path, name: str, sources: list[Path], tampered_part: int | None) -> None:
    """Lay out the weights packages under ``root``: links to the real ``sources``, except
    one part that is a copy with a single bit flipped in the middle."""
    weights = PINNED[name]
    for index, ((package, relative), source) in enumerate(zip(weights.parts, sources, strict=True)):
        target = root / package / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.unlink(missing_ok=True)
        if index == tampered_part:
            data = bytearray(source.read_bytes())
            data[len(data) // 2] ^= 0x01
            target.write_bytes(bytes(data))
        else:
            target.symlink_to(source)


@pytest.mark.parametrize(("name", "part"), [("whisper-tiny.en", 0), ("whisper-base", 1)])
def test_tampered_weights_part_is_rejected(
    name: str, part: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights = PINNED[name]
    site = tmp_path / "site"
    real_parts = part_paths(weights)
    _fake_site(site, name, real_parts, tampered_part=None)
    monkeypatch.setattr(weights_module, "_package_dir", lambda package, requirement: site / package)
    assert all(path.is_relative_to(site) for path in part_paths(weights))
    # Control: the untouched fake layout verifies, so only the flipped bit can fail below.
    assert len(read_verified(weights)) == sum(p.stat().st_size for p in part_paths(weights))

    _fake_site(site, name, real_parts, tampered_part=part)
    with pytest.raises(WeightsIntegrityError) as raised:
        read_verified(weights)
    message = str(raised.value)
    assert weights.sha256 in message and "found" in message

    fresh_cache = tmp_path / "cache"
    monkeypatch.setenv("SPOOFWATCH_CACHE", str(fresh_cache))
    with pytest.raises(WeightsIntegrityError):
        WhisperCt2Encoder(name, window_s=WINDOW_S)
    assert not fresh_cache.exists() or not any(fresh_cache.iterdir())


def test_converted_cache_is_reused(
    weights_cache: Path, encoder_for: EncoderFor, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = "whisper-tiny.en"
    first = encoder_for(name)
    directory = converted_dir(PINNED[name])
    assert directory.parent == weights_cache
    safetensors = directory / "encoder.safetensors"
    stamp = safetensors.stat().st_mtime_ns

    def must_not_run(*_: object) -> None:
        raise AssertionError(f"{name} was converted again although the cache holds it")

    monkeypatch.setattr(whisper_ct2, "read_verified", must_not_run)
    monkeypatch.setattr(whisper_ct2, "parse_ct2_model", must_not_run)
    second = WhisperCt2Encoder(name, window_s=WINDOW_S)

    assert safetensors.stat().st_mtime_ns == stamp
    assert not [p.name for p in weights_cache.iterdir() if p.name.startswith(".")]
    assert second.identity == first.identity
    windows = torch.from_numpy(probe_windows(first.window_samples))
    with torch.inference_mode():
        assert torch.equal(first.hidden_states(windows)[-1], second.hidden_states(windows)[-1])
