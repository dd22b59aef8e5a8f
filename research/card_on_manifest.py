"""A packaged (or any) card's clip scores on every clip of a manifest, from the embedding
cache, in ``spoofwatch loso --scores-out``'s format, so ``research/lofo_report.py`` breaks
them down the same way. For a card that never trained on the manifest (the card before
the built corpus, on the built corpus) these are held-out scores to set beside the new
recipe's leave-one-family-out.

    python research/card_on_manifest.py --detector default --manifest BUILT/manifest.csv \\
        --channels clean,telephone --hop-s 2 --out old.csv
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from spoofwatch.model.artifact import load_detector
from spoofwatch.stream.core.windowing import WindowConfig
from spoofwatch.train.corpus import read_manifest
from spoofwatch.train.extract import extract_with_spectral
from spoofwatch.train.fit import clip_llrs
from spoofwatch.train.metrics import compute_eer


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--detector", default=None)
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--channels", default="clean,telephone")
    parser.add_argument("--hop-s", type=float, default=2.0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    detector = load_detector(args.detector)
    items = read_manifest(args.manifest)
    window = WindowConfig(detector.sample_rate, detector.settings.window_s, args.hop_s)
    with args.out.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["utt_id", "label", "system", "cell", "channel", "score"])
        for channel in [c for c in args.channels.split(",") if c]:
            embedded = extract_with_spectral(
                items,
                detector.encoder,
                detector.spectral,
                window,
                channel=channel,
                level_dbfs=detector.settings.level_dbfs,
            )
            scores = clip_llrs(
                embedded, detector.score_features(embedded.select_layers(detector.settings.layers))
            )
            keep = ~np.isnan(scores)
            bona = scores[keep & np.array([it.label == "bonafide" for it in items])]
            spoof = scores[keep & np.array([it.label == "spoof" for it in items])]
            print(
                f"{channel}: EER {compute_eer(bona, spoof)[0] * 100:.2f} % "
                f"({len(bona)} bona fide, {len(spoof)} spoof)"
            )
            for item, score in zip(items, scores, strict=True):
                if not np.isnan(score):
                    cell = item.extra.get("family", "") if item.label == "spoof" else item.source
                    writer.writerow([item.utt_id, item.label, item.system, cell, channel, f"{score:.6f}"])


if __name__ == "__main__":
    main()
