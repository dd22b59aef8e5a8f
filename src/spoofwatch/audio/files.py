"""Load an audio file as mono float32 at a target rate, with one clear error per failure.

Reading goes through soundfile (libsndfile: WAV, FLAC, OGG/Vorbis/Opus, MP3, AIFF, ...).
Every failure becomes a single-line ``AudioError`` that begins with the path; no
soundfile or libsndfile exception escapes.

Truncation: libsndfile reads a WAV whose data chunk is cut short without complaint (it
shrinks the frame count to what is present), so the RIFF header is checked here and a
data chunk longer than the file is reported. A FLAC cut short fails while decoding, and
any file that yields fewer frames than its header states is reported too.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from typing import Final

import numpy as np
import soundfile as sf
from numpy.typing import NDArray

from spoofwatch.audio.pcm import check_sample_rate, to_mono
from spoofwatch.audio.resample import resample
from spoofwatch.errors import AudioError, ConfigError

logger = logging.getLogger(__name__)

_READ_BLOCK_FRAMES: Final = 1 << 16
# libsndfile's MP3 length comes from the Xing/LAME header or a scan and may differ from the
# decoded count by encoder padding; allow two MPEG frames before calling a file truncated.
_MP3_LENGTH_SLACK_FRAMES: Final = 2 * 1152
_MAX_RIFF_CHUNKS: Final = 10_000
# Writers that stream to a pipe leave the data length as 0 or 0xFFFFFFFF.
_UNKNOWN_RIFF_SIZES: Final = (0, 0xFFFFFFFF)
_SOUNDFILE_ERRORS: Final = (sf.SoundFileError, RuntimeError, OSError, ValueError, TypeError)


@dataclass(frozen=True)
class AudioClip:
    """Mono float32 audio at ``sample_rate`` and where it came from."""

    samples: NDArray[np.float32]
    sample_rate: int
    original_sample_rate: int
    original_channels: int
    path: str

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sample_rate


def load_audio(
    path: str | os.PathLike[str],
    target_sr: int = 16000,
    *,
    max_duration_s: float | None = 3600.0,
) -> AudioClip:
    """Read ``path``, mix to mono and resample to ``target_sr`` (soxr VHQ).

    ``max_duration_s`` is checked against the header before decoding (and again while
    reading); ``None`` disables the limit.
    """
    path_str = os.fspath(path)
    target_sr = check_sample_rate(target_sr, name="target sample rate")
    if max_duration_s is not None and not (math.isfinite(max_duration_s) and max_duration_s > 0):
        raise ConfigError(
            f"max_duration_s: expected a positive number of seconds or None, found {max_duration_s!r}"
        )
    _check_is_nonempty_file(path_str)
    try:
        sound = sf.SoundFile(path_str)
    except _SOUNDFILE_ERRORS as exc:
        raise AudioError(
            f"{path_str}: expected an audio file libsndfile can read (WAV, FLAC, OGG, MP3, ...), "
            f"found an unreadable or unknown format: {_reason(exc)}"
        ) from exc
    with sound:
        samples, sample_rate, channels = _read_mono(sound, path_str, max_duration_s)
    clip = AudioClip(
        samples=resample(samples, sample_rate, target_sr),
        sample_rate=target_sr,
        original_sample_rate=sample_rate,
        original_channels=channels,
        path=path_str,
    )
    logger.debug(
        "loaded %s: %d ch at %d Hz, %.2f s, resampled to %d Hz",
        path_str,
        channels,
        sample_rate,
        clip.duration_s,
        target_sr,
    )
    return clip


def _check_is_nonempty_file(path: str) -> None:
    if not os.path.exists(path):
        raise AudioError(f"{path}: expected an audio file, found no such file")
    if os.path.isdir(path):
        raise AudioError(f"{path}: expected an audio file, found a directory")
    if not os.path.isfile(path):
        raise AudioError(f"{path}: expected a regular audio file, found a special file")
    if os.path.getsize(path) == 0:
        raise AudioError(f"{path}: expected audio data, found an empty file (0 bytes)")


def _read_mono(
    sound: sf.SoundFile, path: str, max_duration_s: float | None
) -> tuple[NDArray[np.float32], int, int]:
    """Validate the header, then decode block by block into one mono array."""
    sample_rate = int(sound.samplerate)
    channels = int(sound.channels)
    header_frames = int(sound.frames)
    try:
        check_sample_rate(sample_rate, name="file sample rate")
    except AudioError as exc:
        raise AudioError(f"{path}: {exc}") from None
    if header_frames <= 0:
        raise AudioError(f"{path}: expected audio frames, found a header with 0 frames")
    max_frames = None if max_duration_s is None else math.floor(max_duration_s * sample_rate)
    if max_frames is not None and header_frames > max_frames:
        raise AudioError(
            f"{path}: expected at most {max_duration_s:g} s of audio, "
            f"found {header_frames / sample_rate:.2f} s in the header"
        )
    if sound.format in ("WAV", "WAVEX"):
        _check_wav_data_complete(path)

    blocks: list[NDArray[np.float32]] = []
    n_read = 0
    n_nonfinite = 0
    while True:
        try:
            block = sound.read(_READ_BLOCK_FRAMES, dtype="float32", always_2d=True)
        except _SOUNDFILE_ERRORS as exc:
            raise AudioError(
                f"{path}: expected {header_frames} decodable frames, found corrupt or "
                f"truncated data after {n_read} frames: {_reason(exc)}"
            ) from exc
        if len(block) == 0:
            break
        n_read += len(block)
        if max_frames is not None and n_read > max_frames:
            raise AudioError(
                f"{path}: expected at most {max_duration_s:g} s of audio, found more than that while decoding"
            )
        n_nonfinite += int(block.size - np.count_nonzero(np.isfinite(block)))
        blocks.append(to_mono(block))

    slack = _MP3_LENGTH_SLACK_FRAMES if sound.format == "MP3" else 0
    if n_read == 0:
        raise AudioError(f"{path}: expected {header_frames} frames, decoded none")
    if n_read < header_frames - slack:
        raise AudioError(
            f"{path}: expected {header_frames} frames as the header states, "
            f"decoded only {n_read}; the file is truncated"
        )
    if n_nonfinite:
        raise AudioError(f"{path}: expected finite samples, found {n_nonfinite} NaN or infinite values")
    return np.concatenate(blocks), sample_rate, channels


def _check_wav_data_complete(path: str) -> None:
    """Raise when the RIFF ``data`` chunk declares more bytes than the file holds."""
    try:
        file_size = os.path.getsize(path)
        with open(path, "rb") as fh:
            header = fh.read(12)
            if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
                return
            offset = 12
            for _ in range(_MAX_RIFF_CHUNKS):
                if offset + 8 > file_size:
                    return
                fh.seek(offset)
                chunk_header = fh.read(8)
                chunk_id = chunk_header[:4]
                size = int.from_bytes(chunk_header[4:8], "little")
                body = offset + 8
                if chunk_id == b"data":
                    present = file_size - body
                    if size not in _UNKNOWN_RIFF_SIZES and size > present:
                        raise AudioError(
                            f"{path}: expected {size} bytes of WAV data as the header "
                            f"declares, found {present}; the file is truncated"
                        )
                    return
                offset = body + size + (size & 1)
    except OSError as exc:
        raise AudioError(f"{path}: expected a readable file, found: {_reason(exc)}") from exc


def _reason(exc: BaseException) -> str:
    """libsndfile's own reason on one line (without its 'Error opening <path>:' prefix)."""
    text = ""
    if isinstance(exc, sf.LibsndfileError):
        text = exc.error_string
    if not text:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())
