"""research/half_manifest.py keeps the same half of the rows on every run (utt_id CRC-32
even) and makes relative paths absolute against the manifest's folder."""

from __future__ import annotations

import zlib
from pathlib import Path

from research_kit import research_script


def test_the_half_is_fixed_and_its_paths_absolute(tmp_path: Path) -> None:
    module = research_script("half_manifest")
    rows = [{"utt_id": f"clip-{i}", "path": f"audio/clip-{i}.flac"} for i in range(200)]
    rows.append({"utt_id": "abs", "path": "/elsewhere/abs.flac"})
    kept = module.half(rows, tmp_path)
    even = [r["utt_id"] for r in rows if zlib.crc32(r["utt_id"].encode()) % 2 == 0]
    assert [r["utt_id"] for r in kept] == even and 70 < len(kept) < 130
    for row in kept:
        assert Path(row["path"]).is_absolute()
        if row["utt_id"] != "abs":
            assert row["path"] == str(tmp_path / "audio" / f"{row['utt_id']}.flac")
    assert rows[0]["path"] == "audio/clip-0.flac"  # the input rows are left alone
