"""The 33 speakers of LibriSpeech's ``test-other`` subset (LibriTTS keeps LibriSpeech's subsets).

Source: to be confirmed against LibriSpeech's SPEAKERS.TXT (see docs/corpus.md).
"""

from __future__ import annotations

TEST_OTHER_SPEAKERS: frozenset[int] = frozenset()
