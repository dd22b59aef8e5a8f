"""Experiment (README, Accuracy): how far do a detector's clip LLRs move with the level?

20 dev clips (10 bona fide, 10 spoof) peak-normalised to -6 dBFS, then scored at -30,
-20, -10, 0 and +6 dB; prints the median and largest spread of each clip's LLR over those
gains. Give detector directories, or 'default' for the shipped one:

    PYTHONPATH=src python research/level_sweep.py \\
        --manifest ../shared/corpus/manifest.csv default DIR
"""

import argparse
import random

import numpy as np

from spoofwatch.audio.files import load_audio
from spoofwatch.model.artifact import load_detector
from spoofwatch.stream.core.windowing import cut_windows
from spoofwatch.train.clip_scoring import detector_window_config
from spoofwatch.train.corpus import read_manifest

GAINS = (-30, -20, -10, 0, 6)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--manifest", required=True)
    ap.add_argument("detectors", nargs="+")
    args = ap.parse_args()
    items = read_manifest(args.manifest)
    random.seed(1)
    dev = [i for i in items if i.split == "dev"]
    pick = random.sample([i for i in dev if i.label == "bonafide"], 10) + random.sample(
        [i for i in dev if i.label == "spoof"], 10
    )
    for name in args.detectors:
        det = load_detector(None if name == "default" else name)
        cfg = detector_window_config(det)
        spans = []
        for it in pick:
            a = load_audio(it.path, 16000).samples
            a = a / max(1e-6, np.abs(a).max()) * 0.5  # peak -6 dBFS, so +6 dB just reaches full scale
            r = [
                float(
                    np.mean(
                        det.score_windows(np.stack([x.samples for x in cut_windows(a * 10 ** (g / 20), cfg)]))
                    )
                )
                for g in GAINS
            ]
            spans.append(max(r) - min(r))
        print(name, f"clip LLR range over -30..+6 dB: median {np.median(spans):.2f}, max {np.max(spans):.2f}")


if __name__ == "__main__":
    main()
