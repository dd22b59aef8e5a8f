"""Write the development corpus's tables that `spoofwatch corpus build` follows
(corpus/build.toml): only speaker keys, SHA-1s and splits, no audio.

- corpus/development-speakers.csv (``[splits] follow``): its bona fide speakers and their split,
  so that nobody speaks in one corpus's dev split and the other's train split. The built
  corpus takes the same readers from other pages (VCTK, LibriSpeech, LibriTTS), under the same
  keys (``vctk:p232``; ``libri:1089`` there is ``librispeech:1089`` / ``libritts:1089`` here,
  joined by ``speaker_aliases``).
- corpus/development-files.csv (``[development] files``): the SHA-1 of every original file it
  holds and its split there (dev where a file's pieces are in both). Both corpora are cut from
  the same demo pages, so a file can come back byte for byte: in its dev split it would be
  trained on, in its train split trained on twice.

    python scripts/development_tables.py ../shared/corpus/manifest.csv [OUT_DIR]
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

TARGET = Path(__file__).resolve().parent.parent / "corpus"


def _write(target: Path, header: list[str], rows: list[tuple[str, str]]) -> None:
    with target.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(sorted(rows))


def main(source: Path, out_dir: Path = TARGET) -> None:
    with source.open(newline="") as handle:
        reader = csv.DictReader(handle)
        fields = list(reader.fieldnames or [])
        if not {"label", "speaker", "split", "sha1_orig"} <= set(fields):
            sys.exit(f"{source}: expected label, speaker, split and sha1_orig columns, found {fields}")
        speakers: set[tuple[str, str]] = set()
        split_of: dict[str, str] = {}
        for row in reader:
            if row["label"] == "bonafide" and row["speaker"]:
                speakers.add((row["speaker"], row["split"]))
            sha1 = row["sha1_orig"].strip().lower()
            if sha1:
                split_of[sha1] = "dev" if "dev" in (row["split"], split_of.get(sha1)) else row["split"]
    _write(out_dir / "development-speakers.csv", ["speaker", "split"], list(speakers))
    _write(out_dir / "development-files.csv", ["sha1_orig", "split"], list(split_of.items()))
    dev = sum(s == "dev" for s in split_of.values())
    print(
        f"wrote {out_dir}: development-speakers.csv ({len(speakers)} speaker/split rows), "
        f"development-files.csv ({len(split_of)} files, {dev} in the dev split) from {source}"
    )


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: development_tables.py DEVELOPMENT_MANIFEST [OUT_DIR]")
    main(Path(sys.argv[1]), *(Path(a) for a in sys.argv[2:]))
