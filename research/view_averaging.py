"""Experiment (README, Accuracy): test-time averaging over channel views.

Each held-out clip is scored as it is and through the telephone (and the augmented)
channel by the same fold's head (the shipped recipe: three training channels, the FARGAN
copies through the clean one, Asterisk sources as one fold), and its clip scores are
averaged. If the views' errors were independent the average would beat each; the
streaming detector would pay one more encoder pass per view.

    PYTHONPATH=src python research/view_averaging.py --manifest ../shared/corpus/manifest.csv

About 10 minutes with the embedding cache filled.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from copies_grouped import (
    ASTERISK_AS_ONE,
    SHIPPED_CHANNELS,
    bootstrap_gain,
    loso_grid,
    recipe_parser,
    shipped_sets,
)

from spoofwatch.train.metrics import compute_eer
from spoofwatch.train.validate import fold_key


def main() -> None:
    parser = recipe_parser(__doc__)
    args = parser.parse_args()
    sets, copy_set = shipped_sets(args.manifest, args.copies)
    title = "shipped"
    runs = {title: ([sets[c] for c in SHIPPED_CHANNELS], [copy_set])}
    results = loso_grid(runs, {c: sets[c] for c in SHIPPED_CHANNELS}, ASTERISK_AS_ONE)
    clean = results[(title, "clean")]
    scores = {c: results[(title, c)].clip_scores for c in SHIPPED_CHANNELS}
    bonafide = np.array([it.label == "bonafide" for it in clean.items])
    folds = np.array([fold_key(it, ASTERISK_AS_ONE) for it in clean.items])
    views = {
        "clean + telephone": (scores["clean"] + scores["telephone"]) / 2,
        "clean + augmented": (scores["clean"] + scores["augmented"]) / 2,
        "clean + telephone + augmented": (scores["clean"] + scores["telephone"] + scores["augmented"]) / 3,
    }
    for name, averaged in views.items():
        ok = ~np.isnan(averaged)
        eer = 100 * compute_eer(averaged[ok & bonafide], averaged[ok & ~bonafide])[0]
        print(f"clean clips scored as the mean of {name}: EER {eer:5.2f} %")
    # Only the pooled EER is compared: LosoResult's per-source tables are of the clean view.
    gain = bootstrap_gain(clean, replace(clean, clip_scores=views["clean + telephone"]), folds)
    print(
        f"clean + telephone against clean alone: gain {gain.mean():.2f} points, 90 % interval "
        f"{np.percentile(gain, 5):.2f} to {np.percentile(gain, 95):.2f}, "
        f"positive in {100 * (gain > 0).mean():.0f} % of draws"
    )


if __name__ == "__main__":
    main()
