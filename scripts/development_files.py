"""Write corpus/development-files.csv: the SHA-1 of every original file the development
corpus holds and its split there, which `spoofwatch corpus build` leaves out
(corpus/build.toml, ``[development] files``).

Both corpora are cut from the same demo pages, so a page's file can come back here byte for
byte: in the development corpus's dev split it would be trained on, and in its train split it
would be trained on twice. Only SHA-1s and splits are written, no audio.

    python scripts/development_files.py ../shared/corpus/manifest.csv
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

TARGET = Path(__file__).resolve().parent.parent / "corpus" / "development-files.csv"


def main(source: Path, target: Path = TARGET) -> None:
    with source.open(newline="") as handle:
        reader = csv.DictReader(handle)
        fields = list(reader.fieldnames or [])
        if not {"sha1_orig", "split"} <= set(fields):
            sys.exit(f"{source}: expected sha1_orig and split columns, found {fields}")
        split_of: dict[str, str] = {}
        for row in reader:
            sha1 = row["sha1_orig"].strip().lower()
            if sha1:  # one file cut into pieces in both splits counts as dev
                split_of[sha1] = "dev" if "dev" in (row["split"], split_of.get(sha1)) else row["split"]
    with target.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["sha1_orig", "split"])
        writer.writerows(sorted(split_of.items()))
    dev = sum(s == "dev" for s in split_of.values())
    print(f"wrote {target}: {len(split_of)} files ({dev} in the dev split) from {source}")


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: development_files.py DEVELOPMENT_MANIFEST [OUT_CSV]")
    main(Path(sys.argv[1]), *(Path(a) for a in sys.argv[2:]))
