"""Write a copy of the development corpus's manifest whose ``family`` column uses the built
corpus's generator families, so leave-one-family-out over both holds a family out of both.

The development corpus (../shared/corpus) names coarse families (tts, vc, vocoder) and the
generator in ``generator``; the built corpus (`spoofwatch corpus build`) names generator
families (HiFi-GAN, VITS, Tacotron...). Each spoof row's family becomes its generator,
mapped through corpus/development-families.csv where the two vocabularies differ (a
generator built on another family's model goes with that family: Piper is VITS, StyleTTS2
is StyleTTS). Paths are written absolute, so the copy can live anywhere.

    python scripts/development_families.py ../shared/corpus/manifest.csv /tmp/dev-families.csv
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

MAP = Path(__file__).resolve().parent.parent / "corpus" / "development-families.csv"


def main(source: Path, target: Path) -> None:
    with MAP.open() as handle:
        mapping = {row["generator"]: row["family"] for row in csv.DictReader(handle)}
    with source.open() as handle:
        reader = csv.DictReader(handle)
        fields = list(reader.fieldnames or [])
        rows = list(reader)
    if "family" not in fields or "generator" not in fields:
        sys.exit(f"{source}: expected family and generator columns, found {fields}")
    for row in rows:
        row["path"] = str((source.parent / row["path"]).resolve())
        if row["label"] == "spoof":
            generator = row["generator"] or row["system"]
            row["family"] = mapping.get(generator, generator)
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    spoof_families = sorted({r["family"] for r in rows if r["label"] == "spoof"})
    print(f"{target}: {len(rows)} rows, {len(spoof_families)} spoof families")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: development_families.py SOURCE_MANIFEST TARGET_MANIFEST")
    main(Path(sys.argv[1]), Path(sys.argv[2]))
