"""Is one detector's dev EER really worse than another's? A paired bootstrap over dev's
clusters: bona fide speakers and spoof systems are resampled with replacement (1,000 draws)
and both detectors' EER computed on each draw, as the ASVspoof package computes it.

Takes the scores.csv files that `spoofwatch eval ... --out DIR` writes for the same list,
e.g. the shipped card against the float32 model of its recipe (README, Speed):

    spoofwatch eval --manifest ../shared/corpus/manifest.csv --split dev --channel clean \\
        --detector default --out A --window-lengths ''
    spoofwatch eval ... --detector FP32_DIR --out B --window-lengths ''
    PYTHONPATH=src python research/paired_dev_gap.py A/scores.csv B/scores.csv
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from spoofwatch.train.metrics import compute_eer


def read_scores(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="") as f:
        return {row["utt_id"]: row for row in csv.DictReader(f)}


def eer_points(scores: np.ndarray, bonafide: np.ndarray) -> float:
    return 100 * float(compute_eer(scores[bonafide], scores[~bonafide])[0])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("first", type=Path, help="scores.csv of the detector asked about")
    parser.add_argument("second", type=Path, help="scores.csv of the one it is compared with")
    parser.add_argument("--draws", type=int, default=1000)
    args = parser.parse_args()
    first, second = read_scores(args.first), read_scores(args.second)
    if set(first) != set(second):
        parser.error("the two score files must list the same utterances (score the same list with both)")
    ids = sorted(first)
    bonafide = np.array([first[u]["label"] == "bonafide" for u in ids])
    a = np.array([float(first[u]["score"]) for u in ids])
    b = np.array([float(second[u]["score"]) for u in ids])
    cluster = np.array(
        [
            first[u]["speaker"] if first[u]["label"] == "bonafide" else f"system:{first[u]['system']}"
            for u in ids
        ]
    )
    speakers, systems = sorted(set(cluster[bonafide])), sorted(set(cluster[~bonafide]))
    rng = np.random.default_rng(0)
    gaps = []
    for _ in range(args.draws):
        counts = np.zeros(len(ids), dtype=int)
        for name in [*rng.choice(speakers, len(speakers)), *rng.choice(systems, len(systems))]:
            counts += cluster == name
        idx = np.repeat(np.arange(len(ids)), counts)
        gaps.append(eer_points(a[idx], bonafide[idx]) - eer_points(b[idx], bonafide[idx]))
    g = np.array(gaps)
    print(
        f"EER {eer_points(a, bonafide):.2f} % against {eer_points(b, bonafide):.2f} %: first minus second "
        f"{eer_points(a, bonafide) - eer_points(b, bonafide):.2f} points"
    )
    print(
        f"over {args.draws} draws of {len(speakers)} bona fide speakers and {len(systems)} spoof systems: "
        f"mean {g.mean():.2f}, 90 % interval {np.percentile(g, 5):.2f} to {np.percentile(g, 95):.2f}; "
        f"first worse in {100 * (g > 0).mean():.0f} %, equal in {100 * (g == 0).mean():.0f} %, "
        f"better in {100 * (g < 0).mean():.0f} % of draws"
    )
    correlation = np.corrcoef(a, b)[0, 1]
    print(f"clip scores: correlation {correlation:.3f}, mean |difference| {np.abs(a - b).mean():.3f}")


if __name__ == "__main__":
    main()
