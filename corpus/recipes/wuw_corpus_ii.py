"""Make the local origin directory of the card ``wuw-corpus-ii`` from the repository
github.com/wake-up-word/wuw-corpus-ii at the card's commit.

The repository stores headerless 8 kHz G.711 mu-law files (``calls/<session>/*.ulaw``),
which the builder does not decode, and names callers only by what they say in utterance
000. For every file that ``data.json`` lists, except utterance 000 (the caller saying
their own name: left out), this writes the same bytes behind a 44-byte mu-law WAV header
(format 7, one channel, 8 kHz, 8 bits; no sample changed) at

    calls/<phonetype>/<dialect>/<speaker>/<file name>.wav

where ``<speaker>`` groups a caller's sessions: ``n`` and the first 10 hex digits of the
SHA-1 of the name spoken in the session's utterance 000 (the transcription, lower case,
with every bracketed annotation such as ``[static]``, ``{breath}`` or ``((...)`` cut out,
then stripped), or ``s<session>`` when that leaves no letter. Files that ``data.json``
does not list (``*_original``, retakes) are left out. Same repository in, same bytes out:
the lock file's SHA-1s are of these WAV files.

    python corpus/recipes/wuw_corpus_ii.py ORIGIN OUT [--commit SHA]

ORIGIN is a git directory (bare or not; ``--commit`` defaults to the card's) or an
unpacked tree of that commit.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import re
import struct
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

COMMIT = "edd16fe0e8c861daef05e6778016764e20b3d628"  # the card's origin.commit
ANNOTATION = re.compile(r"[\[{(][^\]})]*[\]})]")


def mulaw_wav(payload: bytes, sample_rate: int = 8000) -> bytes:
    """``payload`` (mu-law bytes) behind a RIFF/WAVE header with a 16-byte fmt chunk."""
    # By hand: ``wave`` writes PCM only, and soundfile would decode and re-encode the samples
    # and add a fact chunk, changing the bytes whose SHA-1s the lock file holds.
    fmt = struct.pack("<HHIIHH", 7, 1, sample_rate, sample_rate, 1, 8)
    pad = b"\0" if len(payload) % 2 else b""
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"data" + struct.pack("<I", len(payload)) + payload + pad
    return b"RIFF" + struct.pack("<I", len(body)) + body


def speaker_key(session: str, name_said: str) -> str:
    """The speaker folder of a session whose utterance 000 transcription is ``name_said``."""
    name = ANNOTATION.sub("", name_said).lower().strip()
    if not re.search("[a-z]", name):
        return f"s{session}"
    return "n" + hashlib.sha1(name.encode()).hexdigest()[:10]


def reader(origin: Path, commit: str) -> Callable[[str], bytes]:
    """Read files of the origin by path: from an unpacked tree, or from a git directory at
    ``commit`` (one ``git archive`` into memory)."""
    if (origin / "data.json").is_file():
        return lambda path: (origin / path).read_bytes()
    try:
        archive = subprocess.run(
            ["git", f"--git-dir={origin}", "archive", "--format=tar", commit],
            check=True,
            capture_output=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = (
            exc.stderr.decode(errors="replace").strip()
            if isinstance(exc, subprocess.CalledProcessError)
            else exc
        )
        sys.exit(
            f"ORIGIN: expected an unpacked tree with data.json or a git directory holding {commit}: {detail}"
        )
    files: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        for member in tar.getmembers():
            handle = tar.extractfile(member) if member.isfile() else None
            if handle is not None:
                files[member.name] = handle.read()

    def read(path: str) -> bytes:
        if path not in files:
            raise FileNotFoundError(path)
        return files[path]

    return read


def make(read: Callable[[str], bytes], out: Path) -> int:
    """Write the wrapped files under ``out``; return how many."""
    try:
        entries = json.loads(read("data.json"))["entries"]
    except (FileNotFoundError, KeyError, ValueError) as exc:
        sys.exit(f"ORIGIN: expected data.json with an 'entries' list, found {exc!r}")
    try:
        names = {e["sessionNumber"]: e["transcription"] for e in entries if e["utteranceNumber"] == "000"}
    except (KeyError, TypeError) as exc:
        sys.exit(
            f"data.json: expected entries with sessionNumber, utteranceNumber and transcription: {exc!r}"
        )
    written = 0
    missing: list[str] = []
    for number, entry in enumerate(entries):
        try:
            if entry["utteranceNumber"] == "000":
                continue
            speaker = speaker_key(entry["sessionNumber"], names.get(entry["sessionNumber"], ""))
            target = out / "calls" / entry["phonetype"] / entry["dialect"] / speaker
            name = Path(entry["fileName"]).stem + ".wav"
            source = entry["filePath"]
        except (KeyError, TypeError) as exc:
            sys.exit(
                f"data.json entry {number}: expected fileName, filePath, phonetype, dialect,"
                f" sessionNumber and utteranceNumber: missing {exc}"
            )
        try:
            payload = read(source)
        except (FileNotFoundError, IsADirectoryError):
            missing.append(source)
            continue
        target.mkdir(parents=True, exist_ok=True)
        (target / name).write_bytes(mulaw_wav(payload))
        written += 1
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        sys.exit(
            f"ORIGIN: {len(missing)} file(s) that data.json lists are not in the origin"
            f" (is it the card's commit?): {shown}; the folder written under {out} is incomplete"
        )
    return written


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("origin", type=Path, help="git directory or unpacked tree of the repository")
    parser.add_argument("out", type=Path, help="the origin directory to write (the card's PATH)")
    parser.add_argument("--commit", default=COMMIT)
    args = parser.parse_args()
    count = make(reader(args.origin, args.commit), args.out)
    print(f"wrote {count} files under {args.out / 'calls'}")


if __name__ == "__main__":
    main()
