"""``spoofwatch serve`` with ``FakeScorer`` for a detector: the real command line, signal
handling, drain, sinks and exit status, without a neural network. Run as a script by the
multi-node tests: ``python tests/deploy/fake_node.py serve --port P ...``."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for fakes

from fakes import FakeScorer
from spoofwatch import cli


class CardedFakeScorer(FakeScorer):
    """FakeScorer with the card and encoder identity ``spoofwatch serve`` logs."""

    def __init__(self, sample_rate: int, window_s: float) -> None:
        super().__init__(sample_rate=sample_rate, window_s=window_s)
        self.card = {"name": "fake-flatness"}
        self.encoder = SimpleNamespace(identity=SimpleNamespace(name="fake"))


def fake_scorer(settings: Any) -> CardedFakeScorer:
    return CardedFakeScorer(sample_rate=8000, window_s=settings.stream.window_s)


if __name__ == "__main__":
    cli._load_scorer = fake_scorer  # the one seam: everything else is the shipped command
    sys.exit(cli.main(sys.argv[1:]))
