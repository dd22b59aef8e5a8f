"""The 33 readers of LibriSpeech's ``test-other`` subset (LibriTTS keeps LibriSpeech's subsets, so
its test-other has the same readers). Reserved rule 4 refuses them as bona fide speech.

Source: LibriSpeech's SPEAKERS.TXT (the lines whose SUBSET is ``test-other``), as shipped in
github.com/resemble-ai/Resemblyzer at commit 15d828e, audio_data/librispeech_test-other/SPEAKERS.TXT.
"""

from __future__ import annotations

TEST_OTHER_SPEAKERS: frozenset[int] = frozenset(
    {
        367, 533, 1688, 1998, 2033, 2414, 2609, 3005, 3080, 3331, 3528, 3538, 3764, 3997, 4198, 4294, 4350,
        4852, 5442, 5484, 5764, 6070, 6128, 6432, 6938, 7018, 7105, 7902, 7975, 8131, 8188, 8280, 8461,
    }
)  # fmt: skip
