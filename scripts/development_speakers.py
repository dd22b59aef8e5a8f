"""Write corpus/development-speakers.csv: the development corpus's bona fide speakers and
their split, which `spoofwatch corpus build` follows (corpus/build.toml, ``[splits] follow``)
so that nobody speaks in one corpus's dev split and the other's train split.

The development corpus (../shared/corpus) splits by speaker; the built corpus takes the
same readers from other pages (VCTK, LibriSpeech, LibriTTS), under the same keys
(``vctk:p232``; ``libri:1089`` there is ``librispeech:1089`` / ``libritts:1089`` here,
joined by ``speaker_aliases``). Only speaker keys and splits are written, no audio.

    python scripts/development_speakers.py ../shared/corpus/manifest.csv
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

TARGET = Path(__file__).resolve().parent.parent / "corpus" / "development-speakers.csv"


def main(source: Path, target: Path = TARGET) -> None:
    with source.open(newline="") as handle:
        reader = csv.DictReader(handle)
        fields = list(reader.fieldnames or [])
        if not {"label", "speaker", "split"} <= set(fields):
            sys.exit(f"{source}: expected label, speaker and split columns, found {fields}")
        pairs = {(r["speaker"], r["split"]) for r in reader if r["label"] == "bonafide" and r["speaker"]}
    with target.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["speaker", "split"])
        writer.writerows(sorted(pairs))
    print(f"wrote {target}: {len(pairs)} speaker/split rows from {source}")


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: development_speakers.py DEVELOPMENT_MANIFEST [OUT_CSV]")
    main(Path(sys.argv[1]), *(Path(a) for a in sys.argv[2:]))
