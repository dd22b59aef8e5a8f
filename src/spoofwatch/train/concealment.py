"""What a call path puts where genuine audio is missing: digital silence, packet-loss
concealment and comfort noise in the pauses (discontinuous transmission).

The detector must not mistake any of these for synthesis (issue 33), so the
``augmented-gaps`` training channel draws them on clips of both classes alike. The same
fillers build the holes ``research/gap_false_alarms.py`` measures false alarms with.
"""

from __future__ import annotations

import zlib

import numpy as np
from numpy.typing import NDArray
from scipy.linalg import solve_toeplitz
from scipy.signal import lfilter

Samples = NDArray[np.float32]
FRAME_S = 0.02
SID_ORDER = 10  # spectral parameters a silence descriptor carries (RFC 3389 leaves the order open)


def pauses(audio: Samples, sr: int, below_db: float = 30.0, min_frames: int = 3) -> list[tuple[float, float]]:
    """Where a DTX sender's VAD stops sending: runs of at least ``min_frames`` 20 ms frames
    more than ``below_db`` below the clip's loudest frame, as (start, end) seconds."""
    frame = round(FRAME_S * sr)
    n = len(audio) // frame
    if n == 0:
        return []
    rms = np.sqrt(np.mean(audio[: n * frame].reshape(n, frame).astype(np.float64) ** 2, axis=1)) + 1e-10
    level = 20 * np.log10(rms)
    quiet = level < level.max() - below_db
    spans: list[tuple[float, float]] = []
    start: int | None = None
    for k, q in enumerate([*quiet.tolist(), False]):
        if q and start is None:
            start = k
        elif not q and start is not None:
            if k - start >= min_frames:
                spans.append((start * frame / sr, k * frame / sr))
            start = None
    return spans


def fill_zeros(out: Samples, i: int, j: int, sr: int) -> None:
    out[i:j] = 0.0


def fill_plc(out: Samples, i: int, j: int, sr: int) -> None:
    """Packet-loss concealment: the last 20 ms frame repeated with a fade to silence (the
    shape of G.711 Appendix I)."""
    frame = round(FRAME_S * sr)
    last = out[max(0, i - frame) : i].copy()
    if len(last) == 0:
        out[i:j] = 0.0
        return
    n = j - i
    fade = np.clip(1.0 - np.arange(n) / max(1, n), 0.0, 1.0).astype(np.float32)
    out[i:j] = np.resize(last, n) * fade


def comfort_noise(
    n: int, sr: int, rng: np.random.Generator, level_dbfs: float = -60.0, colour: int = 0, sid_s: float = 0.0
) -> Samples:
    """``n`` samples of comfort noise at ``level_dbfs`` RMS: white (``colour`` 0), pink (1)
    or brown (2); with ``sid_s`` > 0 its level steps by up to ±3 dB every ``sid_s`` seconds,
    as a decoder does on each silence-descriptor update (RFC 3389)."""
    noise = rng.standard_normal(n)
    if colour and n > 1:
        spectrum = np.fft.rfft(noise)
        spectrum /= np.maximum(np.fft.rfftfreq(n, 1.0 / sr), 20.0) ** (0.5 * colour)
        noise = np.fft.irfft(spectrum, n)
    noise /= np.sqrt(np.mean(noise**2)) + 1e-12
    gain = np.full(n, 10 ** (level_dbfs / 20))
    if sid_s > 0:
        step = max(1, round(sid_s * sr))
        for start in range(0, n, step):
            gain[start : start + step] *= 10 ** (rng.uniform(-3.0, 3.0) / 20)
    out: Samples = (noise * gain).astype(np.float32)
    return out


def fill_comfort_noise(out: Samples, i: int, j: int, sr: int) -> None:
    """White comfort noise at -60 dBFS, seeded by where it starts."""
    out[i:j] = comfort_noise(j - i, sr, np.random.default_rng(i))


def sid_envelope(segment: Samples, order: int = SID_ORDER) -> tuple[float, NDArray[np.float64]]:
    """What a DTX encoder's silence descriptor says of ``segment``: its RMS level and an
    all-pole spectral envelope (LPC ``[1, a1 .. a_order]``, autocorrelation method)."""
    x = segment.astype(np.float64)
    rms = float(np.sqrt(np.mean(x**2))) if len(x) else 0.0
    if order == 0 or len(x) <= order or rms < 1e-9:
        return rms, np.array([1.0])
    r = np.array([x[: len(x) - k] @ x[k:] for k in range(order + 1)]) / len(x)  # lags 0..order
    r[0] *= 1.0 + 1e-6  # white-noise correction: a stable filter on a near-pure tone
    try:
        a = solve_toeplitz(r[:order], -r[1 : order + 1])
    except np.linalg.LinAlgError:
        return rms, np.array([1.0])
    coeffs = np.concatenate([[1.0], a])
    if np.any(np.abs(np.roots(coeffs)) >= 1.0):  # an unstable envelope: level only
        return rms, np.array([1.0])
    return rms, coeffs


def fill_matched_comfort_noise(
    out: Samples, i: int, j: int, sr: int, order: int = SID_ORDER, rng: np.random.Generator | None = None
) -> None:
    """Comfort noise as an RFC 3389 decoder makes it from the pause it replaces: white noise
    through the pause's own spectral envelope (``order`` 0: a descriptor with the level
    only, white noise) at the pause's own level, one descriptor per pause, drawn from
    ``rng`` (default: seeded by where it starts). The pause's breaths, reverberation tails
    and any non-stationary sound are lost; its background level (and colour) are kept."""
    rms, coeffs = sid_envelope(out[i:j], order)
    noise = lfilter([1.0], coeffs, (rng or np.random.default_rng(i)).standard_normal(j - i))
    noise *= rms / (np.sqrt(np.mean(noise**2)) + 1e-12)
    out[i:j] = noise.astype(np.float32)


def dtx(x: Samples, sr: int, rng: np.random.Generator) -> Samples:
    """Every pause replaced by comfort noise at a drawn level (-75..-45 dBFS) and colour,
    with silence-descriptor level steps."""
    y = x.copy()
    level = rng.uniform(-75.0, -45.0)
    colour = int(rng.integers(3))
    sid = float(rng.choice([0.0, 0.1, 0.16]))
    for a, b in pauses(x, sr, below_db=float(rng.uniform(25.0, 40.0))):
        i, j = round(a * sr), round(b * sr)
        y[i:j] = comfort_noise(j - i, sr, rng, level, colour, sid)
    return y


def dtx_sid(x: Samples, sr: int, rng: np.random.Generator) -> Samples:
    """Every pause replaced by comfort noise made from its own silence descriptor (its level
    and, two times in three, its order-10 envelope; else the level only), one descriptor
    per pause or one every 0.1–0.2 s of it, as an RFC 3389 decoder makes it. ``dtx`` draws
    a level and colour unrelated to the pause, which a decoder never does."""
    y = x.copy()
    order = SID_ORDER if rng.random() < 2 / 3 else 0
    update = round(float(rng.choice([0.0, rng.uniform(0.1, 0.2)])) * sr)
    for a, b in pauses(x, sr, below_db=float(rng.uniform(25.0, 40.0))):
        i, j = round(a * sr), round(b * sr)
        step = update or j - i
        for k in range(i, j, step):
            fill_matched_comfort_noise(y, k, min(j, k + step), sr, order, rng)
    return y


def lost_frames(n: int, rng: np.random.Generator) -> NDArray[np.bool_]:
    """Which of ``n`` 20 ms frames (or packets) a lossy link drops: bursts of 1–5, 2–10 % of
    frames in all, every burst followed by at least one kept frame."""
    lost = np.zeros(n, dtype=bool)
    rate = rng.uniform(0.02, 0.10)
    k = 0
    while k < n:
        if rng.random() < rate / 3:
            burst = int(rng.integers(1, 6))
            lost[k : k + burst] = True
            k += burst
        k += 1
    return lost


def plc_bursts(x: Samples, sr: int, rng: np.random.Generator) -> Samples:
    """Bursts of lost 20 ms frames (``lost_frames``), each concealed (``fill_plc``)."""
    y = x.copy()
    frame = round(FRAME_S * sr)
    lost = lost_frames(len(x) // frame, rng)
    edges = np.flatnonzero(np.diff(np.concatenate(([0], lost.astype(np.int8), [0]))))
    for i, j in zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True):
        fill_plc(y, i * frame, j * frame, sr)
    return y


def zero_inserts(x: Samples, sr: int, rng: np.random.Generator) -> Samples:
    """One to three runs of 0.1–1 s digital silence replacing the audio (a muted leg)."""
    y = x.copy()
    for _ in range(int(rng.integers(1, 4))):
        length = round(rng.uniform(0.1, 1.0) * sr)
        if length >= len(y):
            continue
        i = int(rng.integers(0, len(y) - length))
        fill_zeros(y, i, i + length, sr)
    return y


FILLERS = {"dtx": dtx, "dtx-sid": dtx_sid, "plc": plc_bursts, "zeros": zero_inserts}
DRAWN_FILLERS = ("dtx", "dtx", "plc", "zeros")  # DTX half the time, PLC or silence a quarter each
SID_FILLERS = ("dtx-sid", "dtx-sid", "plc", "zeros")


def with_gaps(
    x: Samples, sr: int, rng: np.random.Generator, p: float = 0.5, fillers: tuple[str, ...] = DRAWN_FILLERS
) -> tuple[Samples, str | None]:
    """With probability ``p``, one filler drawn evenly from ``fillers`` (names in
    ``FILLERS``) applied to ``x``; and its name."""
    if rng.random() >= p:
        return x, None
    name = str(rng.choice(list(fillers)))
    return FILLERS[name](x, sr, rng), name


def gaps_seed(x: Samples) -> int:
    """A seed drawn from the clip's samples, apart from the augmentation chain's own."""
    return zlib.crc32(np.ascontiguousarray(x).tobytes(), 0x9A95)
