"""What the detector's float32 features cost against the float16 ones its head was fitted on.

The embedding cache stores pooled statistics as float16, so every head is fitted on that
grid; until 2026-12-07 the detector scored float32 features. For each clip of the chosen
split (at least ``--min-s`` seconds), the windows the detector cuts (hop 1 s) are embedded
once; each card's head then scores the features as float32 and rounded to float16, and the
clip's score is the mean of its windows' (as ``spoofwatch score`` reports it). Printed per
card and precision: the EER (as the ASVspoof evaluation package computes it) and the genuine
clips flagged and spoofs missed at the card's own threshold.

    PYTHONPATH=src python research/float16_skew.py --manifest $CORPUS/manifest.csv \\
        --manifest $BUILT/manifest.csv --detector linear=default --detector mlp=MLPCARD
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray

from spoofwatch.audio.files import load_audio
from spoofwatch.model.artifact import load_detector
from spoofwatch.model.detector import Detector
from spoofwatch.model.level import levelled_pair
from spoofwatch.model.pooling import mean_std_pool, stored_precision
from spoofwatch.model.spectral import front_end_states, spectral_block
from spoofwatch.train.metrics import compute_eer


def both_features(
    detector: Detector, windows: NDArray[np.float32]
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """The windows' head input as float32 (what the detector served before) and rounded as
    the cache stores it (what ``Detector.features`` gives now), from one encoder pass."""
    with torch.inference_mode():
        chunk, _ = levelled_pair(
            torch.from_numpy(windows), None, detector.sample_rate, detector.settings.level_dbfs
        )
        pooled = mean_std_pool(detector.encoder.hidden_states(chunk), detector.settings.layers).numpy()
        if detector.spectral is None:
            return pooled, stored_precision(pooled)
        states = front_end_states(detector.spectral, chunk, None)
        every = mean_std_pool(states, range(len(states))).numpy()
    as_float32 = np.concatenate([pooled, spectral_block(detector.spectral, every)], axis=1)
    as_float16 = np.concatenate(
        [stored_precision(pooled), spectral_block(detector.spectral, stored_precision(every))], axis=1
    )
    return as_float32, as_float16


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--manifest", action="append", required=True, help="manifest CSV (repeatable)")
    parser.add_argument(
        "--detector", action="append", required=True, help="NAME=DIR (repeatable); same encoder and layers"
    )
    parser.add_argument("--split", default="dev")
    parser.add_argument("--min-s", type=float, default=4.0)
    args = parser.parse_args()
    cards = {}
    for spec in args.detector:
        name, _, where = spec.partition("=")
        cards[name] = load_detector(where)
    first = next(iter(cards.values()))
    clips: list[tuple[Path, str]] = []
    for manifest in args.manifest:
        root = Path(manifest).parent
        with open(manifest, newline="") as handle:
            for row in csv.DictReader(handle):
                if row["split"] == args.split and float(row["duration_s"]) >= args.min_s:
                    clips.append((root / row["path"], row["label"]))
    print(f"{len(clips)} clips", flush=True)
    width, rate = first.window_samples, first.sample_rate
    scores: dict[tuple[str, str], list[float]] = {(n, p): [] for n in cards for p in ("float32", "float16")}
    for path, _ in clips:
        samples = load_audio(path, rate).samples
        windows = np.stack([samples[s : s + width] for s in range(0, len(samples) - width + 1, rate)])
        as_float32, as_float16 = both_features(first, windows)
        for name, card in cards.items():
            scores[(name, "float32")].append(float(card.score_features(as_float32).mean()))
            scores[(name, "float16")].append(float(card.score_features(as_float16).mean()))
    bona = np.array([label == "bonafide" for _, label in clips])
    for (name, precision), values in scores.items():
        s = np.array(values)
        eer, _ = compute_eer(s[bona], s[~bona])
        t = cards[name].threshold  # p_spoof = 1 / (1 + e^score) >= t is an alarm
        llr = math.log((1 - t) / t)
        flagged, missed = (s[bona] <= llr).mean(), (s[~bona] > llr).mean()
        print(
            f"{name:8s} {precision}: EER {100 * eer:.2f} %; at the card's threshold "
            f"genuine flagged {100 * flagged:.1f} %, spoof missed {100 * missed:.1f} %"
        )


if __name__ == "__main__":
    main()
