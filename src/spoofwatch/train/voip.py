"""The VoIP-app call path as a training channel, applied identically to both classes.

Messaging and meeting apps (WhatsApp, WeChat, Telegram, Meet...) send speech through
WebRTC's audio processing (a high-pass filter, noise suppression, automatic gain control),
then Opus at a low bit rate over a lossy link. Held out, the apps' processing decided the
score whichever class went through it (RTCFake's app-transmitted clips, docs/corpus.md), so
the detector must see that processing on genuine and synthetic speech alike.

The processing is WebRTC's own (``webrtc-noise-gain``, the C++ audio-processing module
behind a small binding), not a re-implementation: the suppressor's and gain control's
artefacts are what the channel is for. The ``train`` extra installs it.
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np
from numpy.typing import NDArray

from spoofwatch.audio.resample import resample
from spoofwatch.errors import ConfigError

Samples = NDArray[np.float32]

APM_RATE = 16000  # the binding processes 10 ms of 16-bit mono at 16 kHz
CHUNK = APM_RATE // 100
NS_DELAY = 96  # samples the suppressor delays its output at 16 kHz (measured), taken back out
OPUS_KBPS = (8.0, 24.0)  # voice-call bit rates of the apps (Opus at 8–24 kbit/s, wideband)
OPUS_FRAME = APM_RATE // 50  # 20 ms packets
P_NOISE = 0.5  # share of clips given background noise before the suppressor
P_AGC = 0.7  # share of clips through the automatic gain control
P_LOSS = 0.3  # share of clips sent over a lossy link (packets concealed by Opus's decoder)


def _processor(auto_gain: int, suppression: int) -> Any:
    try:
        from webrtc_noise_gain import AudioProcessor
    except ImportError:
        raise ConfigError(
            "the voip channel needs WebRTC's audio processing: pip install 'spoofwatch[train]' "
            "(it installs webrtc-noise-gain)"
        ) from None
    return AudioProcessor(auto_gain, suppression)


def _pcm16(x: Samples, sr: int, frame: int, delay: int) -> tuple[NDArray[np.int16], int]:
    """``x`` at 16 kHz as 16-bit PCM, zero-padded to whole ``frame``s with room for ``delay``
    more samples; and the length before padding."""
    y = resample(x, sr, APM_RATE) if sr != APM_RATE else x
    n = len(y)
    pcm = np.zeros(-(-(n + delay) // frame) * frame, dtype=np.int16)
    pcm[:n] = np.round(np.clip(y, -1.0, 1.0) * 32767.0).astype(np.int16)
    return pcm, n


def _from_pcm16(raw: bytes, delay: int, n: int, sr: int, length: int) -> Samples:
    """16 kHz 16-bit PCM ``raw``, ``delay`` samples late, as ``length`` float samples at ``sr``."""
    pcm = np.frombuffer(raw, dtype=np.int16)[delay : delay + n]
    z = (pcm.astype(np.float32) / 32768.0).astype(np.float32)
    if sr != APM_RATE:
        z = resample(z, APM_RATE, sr)
    res = np.zeros(length, dtype=np.float32)
    m = min(length, len(z))
    res[:m] = z[:m]
    return res


def webrtc_apm(x: Samples, sr: int, auto_gain: int, suppression: int) -> Samples:
    """``x`` through WebRTC's high-pass filter, noise suppression (level 1–4; 0 off) and
    gain control (target ``auto_gain`` dB below full scale; 0 off), at 16 kHz, returned at
    ``sr`` with the same length."""
    delay = NS_DELAY if suppression else 0
    padded, n = _pcm16(x, sr, CHUNK, delay)
    apm = _processor(auto_gain, suppression)
    chunks = (padded[i : i + CHUNK].tobytes() for i in range(0, len(padded), CHUNK))
    out = b"".join(apm.Process10ms(chunk).audio for chunk in chunks)
    return _from_pcm16(out, delay, n, sr, len(x))


def _opus_codec() -> Any:
    try:
        import opuslib_next
    except ImportError:
        raise ConfigError(
            "the voip channel needs libopus's Python binding: pip install 'spoofwatch[train]' "
            "(it installs opuslib-next; libopus0 comes with libsndfile1)"
        ) from None
    return opuslib_next


def opus(
    x: Samples, sr: int, kbps: float, complexity: int = 10, lost: NDArray[np.bool_] | None = None
) -> Samples:
    """``x`` as 20 ms Opus packets (libopus, VoIP mode, ``kbps`` kbit/s) decoded again at
    16 kHz, the packets marked in ``lost`` concealed by the decoder's own loss concealment,
    returned at ``sr`` with the same length. libsndfile's Opus has no packets to lose and
    took 33 ms per second of audio here, libopus 12 ms at complexity 10 and 2.5 ms at 0."""
    codec = _opus_codec()
    encoder = codec.Encoder(APM_RATE, 1, "voip")
    encoder.bitrate = int(kbps * 1000)
    encoder.complexity = complexity
    decoder = codec.Decoder(APM_RATE, 1)
    delay = int(encoder.lookahead)
    pcm, n = _pcm16(x, sr, OPUS_FRAME, delay)
    out = []
    for k in range(len(pcm) // OPUS_FRAME):
        packet = encoder.encode(pcm[k * OPUS_FRAME : (k + 1) * OPUS_FRAME].tobytes(), OPUS_FRAME)
        gone = lost is not None and k < len(lost) and bool(lost[k])
        out.append(decoder.decode(b"" if gone else packet, OPUS_FRAME))  # empty: conceal
    return _from_pcm16(b"".join(out), delay, n, sr, len(x))


def voip_seed(x: Samples) -> int:
    """A seed drawn from the clip's samples, apart from the other channels' seeds."""
    return zlib.crc32(np.ascontiguousarray(x).tobytes(), 0x7011)


def voip_app(x: Samples, sr: int, applied: list[str] | None = None) -> Samples:
    """One drawn VoIP-app path, deterministic per clip (so the embedding cache stays valid):
    background noise on half the clips, WebRTC noise suppression (level 1–4) and, on 70 %,
    gain control, then Opus packets at 8–24 kbit/s (encoder complexity 0–10, as devices
    differ), 2–10 % of them lost in bursts and concealed on 30 % of clips. The names of the
    steps taken are appended to ``applied`` when given."""
    from spoofwatch.train.augment import add_noise
    from spoofwatch.train.concealment import lost_frames

    rng = np.random.default_rng(voip_seed(x))
    steps: list[str] = []
    y = x
    if rng.random() < P_NOISE:
        y = add_noise(y, sr, rng)
        steps.append("noise")
    suppression = int(rng.integers(1, 5))
    auto_gain = int(rng.integers(3, 21)) if rng.random() < P_AGC else 0
    y = webrtc_apm(y, sr, auto_gain, suppression)
    steps.append(f"ns{suppression}" + (f"+agc{auto_gain}" if auto_gain else ""))
    kbps = float(rng.uniform(*OPUS_KBPS))
    complexity = int(rng.integers(0, 11))
    packets = -(-len(x) * 50 // sr) + 1
    lost = lost_frames(packets, rng) if rng.random() < P_LOSS else None
    y = opus(y, sr, kbps, complexity, lost)
    steps.append(f"opus{kbps:.0f}k-c{complexity}" + ("+loss" if lost is not None else ""))
    if applied is not None:
        applied.extend(steps)
    out: Samples = np.clip(y, -1.0, 1.0).astype(np.float32)
    return out
