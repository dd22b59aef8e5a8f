"""Refit a detector's affine calibration on the dev windows of several channel sets and
print, per dev channel, EER, minDCF, actDCF, their gap and Cllr.

usage: PYTHONPATH=src python research/calibration_channels.py
           [--manifest ../shared/corpus/manifest.csv] [--detector DIR]

The head is the detector's own; a refit composes a second affine map with the card's
(still affine). Embeddings come from the train/eval cache.
"""

from __future__ import annotations

import argparse

import numpy as np

from spoofwatch.model.artifact import load_detector
from spoofwatch.model.calibration import AffineCalibration
from spoofwatch.train.corpus import filter_split, read_manifest
from spoofwatch.train.evaluate import detector_embeddings, window_scores
from spoofwatch.train.fit import clip_llrs
from spoofwatch.train.metrics import act_dcf, cllr, compute_eer, min_dcf

CHANNELS = ("clean", "telephone", "level", "telephone-level")
CALIBRATION_SETS = (
    ("clean", "telephone"),
    ("clean", "telephone", "telephone-level"),
    ("clean", "telephone", "level", "telephone-level"),
    ("telephone", "telephone-level"),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", default="../shared/corpus/manifest.csv")
    parser.add_argument("--detector", help="detector directory (default: the shipped one)")
    args = parser.parse_args()
    items = filter_split(read_manifest(args.manifest), "dev")
    detector = load_detector(args.detector)
    embeddings = {c: detector_embeddings(detector, items, c, False) for c in CHANNELS}
    llrs = {c: window_scores(detector, e) for c, e in embeddings.items()}
    is_bona = np.array([it.label == "bonafide" for it in items])

    def report(title: str, calibration: AffineCalibration) -> None:
        print(title)
        for c in CHANNELS:
            clip = clip_llrs(embeddings[c], calibration.apply(llrs[c]))
            kept = ~np.isnan(clip)
            bona, spoof = clip[kept & is_bona], clip[kept & ~is_bona]
            low, act = min_dcf(bona, spoof)[0], act_dcf(bona, spoof)
            print(
                f"  {c:<16} EER {100 * compute_eer(bona, spoof)[0]:5.1f} %  minDCF {low:.3f}  "
                f"actDCF {act:.3f}  gap {act - low:.3f}  Cllr {cllr(bona, spoof):.3f}"
            )

    report("the card's calibration", AffineCalibration())
    for chosen in CALIBRATION_SETS:
        labels = {c: embeddings[c].labels() for c in chosen}
        refit = AffineCalibration.fit(
            np.concatenate([llrs[c][labels[c] == 1] for c in chosen]),
            np.concatenate([llrs[c][labels[c] == 0] for c in chosen]),
        )
        report(f"refitted on {' + '.join(chosen)} dev windows", refit)


if __name__ == "__main__":
    main()
