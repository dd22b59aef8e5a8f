"""Small origins for the corpus builder's tests: speech-like audio, a bare git repository, cards."""

from __future__ import annotations

import hashlib
import io
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf

LFS_POINTER = (
    b"version https://git-lfs.github.com/spec/v1\n"
    b"oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 12345\n"
)


def babble(seed: int, seconds: float, sr: int = 16000) -> np.ndarray:
    """Syllable-like bursts of a harmonic tone plus noise, with pauses; the envelope depends only
    on the seed (not on the rate), so two rates of one seed are near copies and two seeds are not."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    env = np.zeros_like(t)
    pos = 0.0
    while pos < seconds:
        length = rng.uniform(0.08, 0.35)
        if rng.random() < 0.75:
            mask = (t >= pos) & (t < pos + length)
            env[mask] = rng.uniform(0.05, 0.6) * np.hanning(int(mask.sum()) + 2)[1:-1]
        pos += length
    f0 = rng.uniform(90, 220)
    carrier = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6))
    noise = np.random.default_rng(seed + 1).standard_normal(len(t)) * 0.1
    return ((carrier + noise) * env * 0.5).astype(np.float32)


def wav_bytes(x: np.ndarray, sr: int, fmt: str = "WAV") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, x, sr, format=fmt, subtype="PCM_16")
    return buffer.getvalue()


def sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        [
            "git",
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.org",
            "-c",
            "init.defaultBranch=main",
            *args,
        ],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def bare_repository(root: Path, files: dict[str, bytes]) -> tuple[Path, str]:
    """A bare repository whose one commit holds ``files``; returns (path, commit)."""
    work = root / "work"
    for name, data in files.items():
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_bytes(data)
    git(work, "init", "-q")
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "samples")
    commit = git(work, "rev-parse", "HEAD")
    bare = root / "repo.git"
    git(root, "clone", "-q", "--bare", str(work), str(bare))
    return bare, commit
