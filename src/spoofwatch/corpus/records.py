"""The records the build passes between its steps: a clip (piece of a file) and a skip."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from spoofwatch.corpus.cards import Labels
from spoofwatch.corpus.decode import SAMPLE_RATE
from spoofwatch.corpus.nearcopy import Envelope


@dataclass
class Piece:
    card: str
    path: str
    labels: Labels
    origin: str  # key@commit (or @version, @engine version)
    licence: str
    sha1_orig: str
    orig_sr: int
    start: int  # samples at 16 kHz
    length: int
    pcm_sha1: str
    envelope: Envelope = field(repr=False, default_factory=lambda: np.zeros(0))
    first_8s: Envelope = field(repr=False, default_factory=lambda: np.zeros(0))
    utt_id: str = ""
    split: str = ""

    @property
    def duration_s(self) -> float:
        return self.length / SAMPLE_RATE

    @property
    def seg_start_s(self) -> float:
        return self.start / SAMPLE_RATE

    @property
    def order(self) -> tuple[str, str, int]:
        return (self.card, self.path, self.start)

    @property
    def group(self) -> str:
        """The fold key: generator family for spoofs, speaker for bona fide."""
        return self.labels.family if self.labels.label == "spoof" else self.labels.speaker


@dataclass(frozen=True)
class Skip:
    card: str
    path: str
    reason: str
    detail: str = ""
    seconds: float = 0.0
