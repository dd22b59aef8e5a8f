"""Original file bytes → 16 kHz mono 16-bit PCM, cached by the SHA-1 of the bytes.

libsndfile (through ``stream.audiofile.load_audio``: mono mix, soxr VHQ) reads WAV, FLAC, OGG,
Opus and MP3; whatever it cannot read (m4a, aac, webm, odd MP3s) goes through ``ffmpeg`` to a
float WAV at the original rate first, so the resampling is the same soxr VHQ either way.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from numpy.typing import NDArray

from spoofwatch.audio.files import AudioClip, load_audio
from spoofwatch.errors import AudioError

SAMPLE_RATE = 16000
# Bump when decoding changes, so cached PCM from an older decoder is not reused.
DECODER_VERSION = "v1"
MAX_FILE_S = 2 * 3600.0
FFMPEG_EXTENSIONS = ("mp3", "m4a", "aac", "webm", "opus", "ogg", "wav", "flac")


@dataclass(frozen=True)
class Decoded:
    pcm: NDArray[np.int16]
    orig_sr: int
    channels: int

    @property
    def duration_s(self) -> float:
        return len(self.pcm) / SAMPLE_RATE


def to_int16(x: NDArray[np.float32]) -> NDArray[np.int16]:
    scaled = np.round(np.asarray(x, dtype=np.float64) * 32768.0)
    return np.clip(scaled, -32768, 32767).astype(np.int16)


def decode_file(path: Path) -> Decoded:
    """Decode one file; AudioError with the reason when neither libsndfile nor ffmpeg can."""
    try:
        clip = load_audio(path, SAMPLE_RATE, max_duration_s=MAX_FILE_S)
    except AudioError as first:
        ext = path.suffix.lower().lstrip(".")
        if ext not in FFMPEG_EXTENSIONS or "no such file" in str(first) or "empty file" in str(first):
            raise
        clip_or_none = _via_ffmpeg(path, first)
        clip = clip_or_none
    return Decoded(to_int16(clip.samples), clip.original_sample_rate, clip.original_channels)


def _via_ffmpeg(path: Path, first: AudioError) -> AudioClip:
    if shutil.which("ffmpeg") is None:
        raise AudioError(f"{first}; ffmpeg (apt-get install ffmpeg) is not installed to try it instead")
    with tempfile.TemporaryDirectory(prefix="spoofwatch-ffmpeg-") as tmp:
        out = Path(tmp) / "decoded.wav"
        result = subprocess.run(
            [
                "ffmpeg",
                "-nostdin",
                "-v",
                "error",
                "-i",
                str(path),
                "-vn",
                "-c:a",
                "pcm_f32le",
                "-f",
                "wav",
                str(out),
            ],
            capture_output=True,
            check=False,
        )
        if result.returncode != 0 or not out.is_file():
            reason = " ".join(result.stderr.decode(errors="replace").split())[:300]
            raise AudioError(f"{path.name}: neither libsndfile nor ffmpeg could decode it: {reason}")
        return load_audio(out, SAMPLE_RATE, max_duration_s=MAX_FILE_S)


class DecodeCache:
    """Decoded PCM as FLAC under ``root/<sha1[:2]>/<sha1>-<params>.flac`` plus a JSON sidecar with
    the original rate and channels, or the decoding error (so a rebuild does not retry it)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _paths(self, sha1: str) -> tuple[Path, Path]:
        stem = self.root / sha1[:2] / f"{sha1}-{SAMPLE_RATE}-{DECODER_VERSION}"
        return stem.with_suffix(".flac"), stem.with_suffix(".json")

    def get(self, sha1: str, data: bytes | None, name: str) -> Decoded:
        """The cached decoding of the file with this SHA-1, decoding ``data`` on a miss."""
        flac, meta = self._paths(sha1)
        if meta.is_file():
            info = json.loads(meta.read_text())
            if "error" in info:
                raise AudioError(info["error"])
            if flac.is_file():
                pcm, _ = sf.read(flac, dtype="int16")
                return Decoded(np.asarray(pcm, dtype=np.int16), int(info["orig_sr"]), int(info["channels"]))
        if data is None:
            raise AudioError(f"{name}: not in the decode cache and no bytes given")
        flac.parent.mkdir(parents=True, exist_ok=True)
        suffix = Path(name).suffix.lower() or ".bin"
        with tempfile.TemporaryDirectory(prefix="spoofwatch-decode-") as tmp:
            source = Path(tmp) / f"original{suffix}"
            source.write_bytes(data)
            try:
                decoded = decode_file(source)
            except AudioError as exc:
                message = str(exc).replace(str(source), name)
                _write_atomic(meta, json.dumps({"error": message}))
                raise AudioError(message) from None
        tmp_flac = flac.with_suffix(f".{os.getpid()}.tmp.flac")  # collectors share one cache
        sf.write(tmp_flac, decoded.pcm, SAMPLE_RATE, subtype="PCM_16", format="FLAC")
        tmp_flac.replace(flac)
        _write_atomic(meta, json.dumps({"orig_sr": decoded.orig_sr, "channels": decoded.channels}))
        return decoded


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
