"""What no corpus may contain: the four rules of ``../shared/corpus/reserved/README.md``.

1. a file whose SHA-1 (of its bytes at the origin) is in ``sha1.txt``, or a near copy of a
   reserved clip (envelopes in ``envelopes.npz``);
2. an origin whose key hashes (SHA-256) to a line of ``origins-sha256.txt``, in whole;
3. the non-English voices of Debian's Asterisk sound packages;
4. LibriSpeech / LibriTTS ``test-other`` speakers as bona fide speech.

Clips that ``../manifest.csv`` (beside the reserved folder) already holds are allowed whatever
their origin, as the README says.
"""

from __future__ import annotations

import csv
import fnmatch
import hashlib
import itertools
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from spoofwatch.corpus.cards import Card
from spoofwatch.corpus.nearcopy import Envelope, correlation, find_near_copies
from spoofwatch.corpus.testother import TEST_OTHER_SPEAKERS
from spoofwatch.errors import ConfigError

RULE_FILE = "rule 1 (reserved file: its SHA-1 is in sha1.txt)"
RULE_NEAR = "rule 1 (near copy of a reserved clip: envelope correlation {corr:.2f})"
RULE_ORIGIN = "rule 2 (reserved origin: the SHA-256 of {key!r} is in origins-sha256.txt)"
RULE_ASTERISK = "rule 3 (non-English voice of Debian's Asterisk sound packages: {package})"
RULE_TEST_OTHER = "rule 4 (LibriSpeech/LibriTTS test-other speaker {speaker} as bona fide)"
ASTERISK_PATTERNS = (
    "asterisk-core-sounds-es-*",
    "asterisk-core-sounds-fr-*",
    "asterisk-core-sounds-it-*",
    "asterisk-core-sounds-ru-*",
    "asterisk-prompt-es-co",
    "asterisk-prompt-fr-armelle",
    "asterisk-prompt-it-menardi*",
)
CUT_S = 8.0  # reserved clips longer than this were kept as their first 8 s
_LEADING_ID = re.compile(r"^(\d+)(?:\D|$)")
_LIBRI_SPEAKER = re.compile(r"^(?:libri|librispeech|libritts|libritts-r|librittsr|ls|lt)[:_/-](\d+)")


def find_reserved_dir(explicit: str | None, repo_root: Path) -> Path | None:
    """``--reserved``, else $SPOOFWATCH_RESERVED, else ../shared/corpus/reserved beside the repository."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("SPOOFWATCH_RESERVED")
    if env:
        return Path(env)
    guess = repo_root.parent / "shared" / "corpus" / "reserved"
    return guess if guess.is_dir() else None


def _lines(path: Path) -> set[str]:
    if not path.is_file():
        raise ConfigError(f"{path}: expected this reserved list, found no such file")
    text = path.read_text(encoding="utf-8")
    return {line.strip().lower() for line in text.splitlines() if line.strip() and not line.startswith("#")}


@dataclass
class Reserved:
    """The reserved lists; an empty instance (``--no-reserved``) refuses nothing."""

    directory: Path | None = None
    sha1s: set[str] = field(default_factory=set)
    origin_hashes: set[str] = field(default_factory=set)
    allowed: set[str] = field(default_factory=set)
    durations: list[float] = field(default_factory=list)
    envelopes: list[Envelope] = field(default_factory=list)

    @classmethod
    def load(cls, directory: Path) -> Reserved:
        if not directory.is_dir():
            raise ConfigError(
                f"{directory}: expected the reserved folder (sha1.txt, origins-sha256.txt, ...)"
            )
        allowed: set[str] = set()
        manifest = directory.parent / "manifest.csv"
        if manifest.is_file():
            with manifest.open(newline="", encoding="utf-8") as handle:
                allowed = {row.get("sha1_orig", "").strip().lower() for row in csv.DictReader(handle)} - {""}
        durations: list[float] = []
        envelopes: list[Envelope] = []
        npz = directory / "envelopes.npz"
        if npz.is_file():
            with np.load(npz) as data:
                durations = [float(d) for d in data["durations"]]
                bounds = np.concatenate([[0], np.cumsum(data["lengths"])])
                flat = data["envelopes"].astype(np.float64)
                envelopes = [flat[a:b] for a, b in itertools.pairwise(bounds)]
        return cls(
            directory=directory,
            sha1s=_lines(directory / "sha1.txt"),
            origin_hashes=_lines(directory / "origins-sha256.txt"),
            allowed=allowed,
            durations=durations,
            envelopes=envelopes,
        )

    @property
    def active(self) -> bool:
        return self.directory is not None

    def origin_refusal(self, card: Card) -> str | None:
        """Why the whole origin is refused (rules 2 and 3), or None."""
        key = card.origin.key.split("@")[0].strip().lower()
        if self.active and hashlib.sha256(key.encode()).hexdigest() in self.origin_hashes:
            return RULE_ORIGIN.format(key=key)
        return asterisk_refusal(card.origin.package, key)

    def origin_key_refusal(self, origin: str) -> str | None:
        key = origin.split("@")[0].strip().lower()
        if key and self.active and hashlib.sha256(key.encode()).hexdigest() in self.origin_hashes:
            return RULE_ORIGIN.format(key=key)
        return asterisk_refusal("", key)

    def file_refusal(self, sha1: str) -> str | None:
        if sha1.lower() in self.allowed:
            return None
        return RULE_FILE if sha1.lower() in self.sha1s else None

    def near_copies(
        self, envelopes: Sequence[Envelope], durations: Sequence[float], first_8s: Sequence[Envelope]
    ) -> dict[int, str]:
        """Refusal messages by index for clips that are near copies of a reserved clip: duration
        within 50 ms, or both at least 8 s compared on their first 8 s (``first_8s``)."""
        if not self.envelopes:
            return {}
        found: dict[int, float] = {}
        for m in find_near_copies(envelopes, durations, self.envelopes, self.durations):
            found[m.query] = max(found.get(m.query, -1.0), m.correlation)
        long_q = [i for i, d in enumerate(durations) if d >= CUT_S - 0.01]
        long_r = [j for j, d in enumerate(self.durations) if d >= CUT_S - 0.01]
        if long_q and long_r:
            matches = find_near_copies(
                [first_8s[i] for i in long_q],
                [CUT_S] * len(long_q),
                [self.envelopes[j] for j in long_r],
                [CUT_S] * len(long_r),
            )
            for m in matches:
                i = long_q[m.query]
                found[i] = max(found.get(i, -1.0), m.correlation)
        return {i: RULE_NEAR.format(corr=c) for i, c in sorted(found.items())}

    def best_match(self, env: Envelope, duration: float, first_8s: Envelope) -> float:
        """Highest correlation with a matching reserved clip, one clip at a time (the slow
        definition, for tests and spot checks)."""
        best = -1.0
        for d, ref in zip(self.durations, self.envelopes, strict=True):
            if abs(d - duration) <= 0.05:
                best = max(best, correlation(env, ref))
            elif d >= CUT_S - 0.01 and duration >= CUT_S - 0.01:
                best = max(best, correlation(first_8s, ref))
        return best


def asterisk_refusal(package: str, key: str) -> str | None:
    names = {package.strip().lower(), key.removeprefix("debian:")} - {""}
    for name in sorted(names):
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in ASTERISK_PATTERNS):
            return RULE_ASTERISK.format(package=name)
    return None


def speaker_refusal(label: str, speaker: str, corpus: str = "") -> str | None:
    """Rule 4: a bona fide clip of a LibriSpeech/LibriTTS test-other speaker (``corpus``: the
    real source the card names, empty where unknown, as in a lock file)."""
    if label != "bonafide":
        return None
    if "test-other" in corpus.lower().replace("_", "-").replace(" ", "-"):
        return RULE_TEST_OTHER.format(speaker=speaker or "?")
    key = speaker.strip().lower()
    found = _LIBRI_SPEAKER.match(key)
    if found and int(found.group(1)) in TEST_OTHER_SPEAKERS:
        return RULE_TEST_OTHER.format(speaker=speaker)
    # A LibriSpeech/LibriTTS clip under a page's own speaker key ("page:1688_142285"): reader ids
    # are unique across LibriSpeech's subsets, so the leading number identifies the reader.
    leading = _LEADING_ID.match(key.rsplit(":", 1)[-1])
    if "libri" in corpus.lower() and leading and int(leading.group(1)) in TEST_OTHER_SPEAKERS:
        return RULE_TEST_OTHER.format(speaker=speaker)
    return None
