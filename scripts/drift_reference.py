"""Write a detector card's ``drift_reference`` (spoofwatch.ops.drift) from a corpus's dev clips.

Every dev clip of the manifest, under each of the card's calibration channels, is streamed
through the real pipeline with the detector itself (spoofwatch.ops.drift_reference); the
section is written into ``model_card.json``, the other keys untouched. ``spoofwatch train``
writes it itself; this is for cards trained before it. Usage::

    python scripts/drift_reference.py src/spoofwatch/model/default --corpus ../shared/corpus
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path
from typing import Any

from spoofwatch.model.artifact import CARD_FILE, load_detector
from spoofwatch.ops.drift import CARD_KEY
from spoofwatch.ops.drift_reference import drift_reference


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("detector", type=Path, help="detector directory (its model_card.json is updated)")
    parser.add_argument("--corpus", type=Path, required=True, help="corpus root with manifest.csv")
    parser.add_argument("--split", default="dev")
    parser.add_argument("--limit", type=int, help="first N clips only (a quick check)")
    parser.add_argument("--dry-run", action="store_true", help="print the section, write nothing")
    args = parser.parse_args()
    started = time.monotonic()
    detector = load_detector(args.detector)
    card_path = args.detector / CARD_FILE
    card: dict[str, Any] = json.loads(card_path.read_text())
    options = card.get("training", {}).get("options", {})
    channels = list(options.get("calibration_channels") or options.get("channels") or ["clean"])
    with (args.corpus / "manifest.csv").open(newline="") as f:
        rows = sorted((r for r in csv.DictReader(f) if r["split"] == args.split), key=lambda r: r["utt_id"])
    rows = rows[: args.limit] if args.limit is not None else rows
    clips = [(r["utt_id"], r["label"], args.corpus / r["path"]) for r in rows]
    source = {"made_by": "scripts/drift_reference.py", "corpus": args.corpus.name, "split": args.split}
    section = drift_reference(detector, clips, channels, source)
    print(json.dumps(section["windows"]), f"{time.monotonic() - started:.0f} s")
    if args.dry_run:
        print(json.dumps(section, indent=2))
        return
    card[CARD_KEY] = section
    card_path.write_text(json.dumps(card, indent=2, sort_keys=False) + "\n")
    print(f"wrote {CARD_KEY} into {card_path}")


if __name__ == "__main__":
    main()
