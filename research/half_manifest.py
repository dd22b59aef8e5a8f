"""A fixed half of a corpus, for a study too costly on all of it: the rows whose utt_id's
CRC-32 is even (about half of every source and family, the same rows on every machine),
with each path made absolute so the copy can live anywhere.

    python research/half_manifest.py --manifest BUILT/manifest.csv --out /tmp/half/manifest.csv

Used for "More encoder layers" (docs/accuracy-lofo.md): both arms of a comparison read
the same half.
"""

from __future__ import annotations

import argparse
import csv
import zlib
from pathlib import Path


def half(rows: list[dict[str, str]], base: Path) -> list[dict[str, str]]:
    """The rows whose utt_id's CRC-32 is even, paths resolved against ``base``."""
    kept = [dict(r) for r in rows if zlib.crc32(r["utt_id"].encode()) % 2 == 0]
    for row in kept:
        path = Path(row["path"])
        row["path"] = str(path if path.is_absolute() else base / path)
    return kept


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--manifest", type=Path, required=True, help="a manifest CSV with utt_id and path columns"
    )
    parser.add_argument("--out", type=Path, required=True, help="where to write the half")
    args = parser.parse_args()
    with args.manifest.open(newline="") as handle:
        reader = csv.DictReader(handle)
        fields = list(reader.fieldnames or [])
        rows = half(list(reader), args.manifest.resolve().parent)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    print(f"{len(rows)} rows -> {args.out}")


if __name__ == "__main__":
    main()
