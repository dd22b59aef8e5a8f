"""How many built clips are near copies (re-encodings) of a development-corpus clip?

The builder leaves out files the development corpus holds by exact SHA-1
(corpus/build.toml ``[development]``); a page's file the development corpus holds
re-encoded, resampled or cut differently is not caught that way. This counts such clips
with the builder's own near-copy definition (envelope correlation >= 0.85, durations within
50 ms), by development split and card.

    python research/development_near_copies.py --development ../shared/corpus/manifest.csv \
        --built /tmp/corpus-new/manifest.csv [--csv OUT]
"""

from __future__ import annotations

import argparse
import csv
from collections import Counter
from pathlib import Path

import soundfile as sf

from spoofwatch.corpus.nearcopy import envelope, find_near_copies


def envelopes(manifest: Path) -> tuple[list[dict[str, str]], list[object], list[float]]:
    with manifest.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    envs, durations = [], []
    for row in rows:
        pcm, rate = sf.read(manifest.parent / row["path"], dtype="float32")
        if rate != 16000:
            raise SystemExit(f"{row['path']}: expected 16 kHz, found {rate}")
        envs.append(envelope(pcm))
        durations.append(len(pcm) / rate)
    return rows, envs, durations


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--development", type=Path, required=True)
    parser.add_argument("--built", type=Path, required=True)
    parser.add_argument("--csv", type=Path, help="write each match (built path, development path, split, r)")
    args = parser.parse_args()
    dev_rows, dev_envs, dev_durs = envelopes(args.development)
    built_rows, built_envs, built_durs = envelopes(args.built)
    matches = find_near_copies(built_envs, built_durs, dev_envs, dev_durs)  # type: ignore[arg-type]
    by_split: Counter[str] = Counter()
    by_card: Counter[tuple[str, str]] = Counter()
    seen: set[int] = set()
    out = []
    for m in matches:
        built, dev = built_rows[m.query], dev_rows[m.reference]
        out.append((built["path"], dev["path"], dev["split"], built["split"], f"{m.correlation:.3f}"))
        if m.query in seen:
            continue
        seen.add(m.query)
        by_split[dev["split"]] += 1
        by_card[(built.get("card") or built["path"].split("/")[1], dev["split"])] += 1
    print(
        f"{len(built_rows)} built clips, {len(dev_rows)} development clips: "
        f"{len(seen)} built clips are near copies"
    )
    print("by the development clip's split:", dict(by_split))
    for (card, split), n in by_card.most_common():
        print(f"  {card} ({split}): {n}")
    if args.csv:
        with args.csv.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["built", "development", "development_split", "built_split", "r"])
            writer.writerows(out)


if __name__ == "__main__":
    main()
