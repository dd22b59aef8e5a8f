"""scripts/development_families.py: the development corpus's spoofs get the built corpus's
generator families, so leave-one-family-out over both holds a family out of both."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "development_families.py"


def test_spoof_families_come_from_the_generator_through_the_map(tmp_path: Path) -> None:
    source = tmp_path / "corpus" / "manifest.csv"
    source.parent.mkdir()
    source.write_text(
        "path,utt_id,label,family,generator,system\n"
        "audio/a.flac,a,spoof,tts,Piper-VITS,Piper-VITS(en_US-joe-medium)\n"
        "audio/b.flac,b,spoof,vocoder,HiFi-GAN,HiFi-GAN-V1\n"
        "audio/c.flac,c,spoof,vc,,NVC-Net\n"
        "audio/d.flac,d,bonafide,natural,,-\n"
    )
    target = tmp_path / "out" / "manifest.csv"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(source), str(target)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    rows = {r["utt_id"]: r for r in csv.DictReader(target.open())}
    assert rows["a"]["family"] == "VITS"  # mapped: Piper is VITS
    assert rows["b"]["family"] == "HiFi-GAN"  # the same name in both vocabularies
    assert rows["c"]["family"] == "NVC-Net"  # no generator: the system
    assert rows["d"]["family"] == "natural"  # bona fide rows keep theirs
    assert rows["a"]["path"] == str(source.parent / "audio" / "a.flac")
    bad = tmp_path / "bad.csv"
    bad.write_text("path,utt_id,label\nx.flac,x,spoof\n")
    refused = subprocess.run(
        [sys.executable, str(SCRIPT), str(bad), str(target)], capture_output=True, text=True
    )
    assert refused.returncode != 0 and "expected family and generator columns" in refused.stderr
