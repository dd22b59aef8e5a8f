"""Write a detector's drift reference (spoofwatch.ops.drift) from a corpus's clips.

Every clip of the manifest's split, under each of the card's calibration channels, is
streamed through the real pipeline with the detector itself (spoofwatch.ops.drift_reference).
Without ``--out`` the section is written into the card's ``model_card.json``, the other keys
untouched (``spoofwatch train`` writes it itself; this is for cards trained before it).
With ``--out FILE`` it is written to FILE, named with the detector it was made with: a
node's own reference (``engine.drift_reference`` / ``serve --drift-reference FILE``), made
from a manifest of that node's genuine calls (columns path, utt_id, label, split; the
channels are the card's unless ``--channels`` says otherwise, e.g. ``clean`` for calls that
are already telephone audio). Usage::

    python scripts/drift_reference.py src/spoofwatch/model/default --corpus ../shared/corpus
    python scripts/drift_reference.py default --corpus MY_CALLS --split all --channels clean \
        --out node-reference.json
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path
from typing import Any

from spoofwatch.model.artifact import CARD_FILE, detector_dir, load_detector
from spoofwatch.ops.drift import CARD_KEY, detector_identity
from spoofwatch.ops.drift_reference import drift_reference


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("detector", help="detector directory or packaged name (default, resynth)")
    parser.add_argument("--corpus", type=Path, required=True, help="corpus root with manifest.csv")
    parser.add_argument("--split", default="dev", help="the manifest's split to use (all: every row)")
    parser.add_argument(
        "--channels", help="comma-separated channels (default: the card's calibration channels)"
    )
    parser.add_argument("--out", type=Path, help="write the section to this file, not into the card")
    parser.add_argument("--limit", type=int, help="first N clips only (a quick check)")
    parser.add_argument("--dry-run", action="store_true", help="print the section, write nothing")
    args = parser.parse_args()
    started = time.monotonic()
    folder = detector_dir(args.detector)
    detector = load_detector(folder)
    card_path = folder / CARD_FILE
    card: dict[str, Any] = json.loads(card_path.read_text())
    options = card.get("training", {}).get("options", {})
    channels = list(options.get("calibration_channels") or options.get("channels") or ["clean"])
    if args.channels:
        channels = [c for c in args.channels.split(",") if c]
    with (args.corpus / "manifest.csv").open(newline="") as f:
        rows = sorted(
            (r for r in csv.DictReader(f) if args.split == "all" or r["split"] == args.split),
            key=lambda r: r["utt_id"],
        )
    rows = rows[: args.limit] if args.limit is not None else rows
    clips = [(r["utt_id"], r["label"], args.corpus / r["path"]) for r in rows]
    source = {
        "made_by": "scripts/drift_reference.py",
        "corpus": args.corpus.name,
        "split": args.split,
        "detector": detector_identity(card),
    }
    section = drift_reference(detector, clips, channels, source)
    print(json.dumps(section["windows"]), f"{time.monotonic() - started:.0f} s")
    if args.dry_run:
        print(json.dumps(section, indent=2))
        return
    if args.out is not None:
        args.out.write_text(json.dumps(section, indent=2) + "\n")
        print(f"wrote the node reference {args.out} (made with {detector_identity(card)})")
        return
    card[CARD_KEY] = section
    card_path.write_text(json.dumps(card, indent=2, sort_keys=False) + "\n")
    print(f"wrote {CARD_KEY} into {card_path}")


if __name__ == "__main__":
    main()
