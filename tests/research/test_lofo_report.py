"""research/lofo_report.py on a handful of scores: pooled EER, per-kind EER, and the share
of each bona fide tag flagged at the pooled EER threshold, clips shorter than --min-s left out."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from research_kit import research_script


def write(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_flagged_shares_per_tag(tmp_path: Path) -> None:
    module = research_script("lofo_report")
    clips = [  # utt_id, label, score (higher = more genuine), tags, corpus, seconds, orig_sr
        ("b1", "bonafide", 3.0, "telephone", "calls", 5, "8000"),
        ("b2", "bonafide", 2.0, "telephone", "calls", 5, "8000"),
        ("b3", "bonafide", -2.0, "read", "LibriTTS test-clean", 5, "24000"),
        ("b4", "bonafide", 1.0, "read", "VCTK", 5, "48000"),
        ("b5", "bonafide", -9.0, "read", "VCTK", 1, "48000"),  # shorter than --min-s: left out
        ("s1", "spoof", -3.0, "", "", 5, "24000"),
        ("s2", "spoof", -1.0, "", "", 5, "16000"),
        ("s3", "spoof", 1.5, "", "", 5, "16000"),
    ]
    manifest = write(
        tmp_path / "manifest.csv",
        [
            {
                "utt_id": u,
                "label": lab,
                "tags": t,
                "corpus": c,
                "duration_s": str(d),
                "kind": "tts-llm" * (lab == "spoof"),
                "orig_sr": sr,
            }
            for u, lab, _, t, c, d, sr in clips
        ],
    )
    scores = write(
        tmp_path / "scores.csv",
        [{"utt_id": u, "label": lab, "channel": "clean", "score": str(s)} for u, lab, s, *_ in clips],
    )
    section = module.report(scores, [manifest], min_s=2.0)["clean"]
    assert section["pooled"]["bonafide"] == 4 and section["pooled"]["spoof"] == 3
    threshold = section["pooled"]["threshold"]
    assert section["bonafide:telephone"]["flagged"] == 0.0
    read = section["bonafide:read English (demo pages)"]
    assert read["bonafide"] == 2
    assert read["flagged"] == pytest.approx(sum(s < threshold for s in (-2.0, 1.0)) / 2)
    assert read["flagged"] > 0  # the LibriTTS clip sits among the spoofs
    assert section["kind:tts-llm"]["spoof"] == 3
    narrow, wide = section["bonafide rate:<= 8 kHz"], section["bonafide rate:> 16 kHz"]
    assert (narrow["bonafide"], narrow["flagged"]) == (2, 0.0)  # by the original's rate
    assert wide["bonafide"] == 2 and wide["flagged"] == read["flagged"]
    assert section["rate:16 kHz"]["spoof"] == 2 and section["rate:> 16 kHz"]["spoof"] == 1
