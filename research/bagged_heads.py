"""Source-bagged heads: in each leave-one-source-out fold, several logistic heads, each fitted
on the windows of a random share of the fold's training sources (both classes of a source
go together; the copies and the augmented windows follow their source), their logits
averaged. An average of linear heads is one linear head, so the streaming shape (encoder
plus one linear head per window) is kept. Each head cannot lean on the sources it did not
see, so the average leans less on any one source's recording style; that is the hope.

The shipped recipe (clean, telephone and augmented training channels, the FARGAN copies
through the clean channel) under the Asterisk grouping, against the single head, with the
fold bootstrap:

    PYTHONPATH=src python research/bagged_heads.py --manifest ../shared/corpus/manifest.csv

About 6 minutes per head on 2 cores with the cache filled (35 minutes with the
defaults).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import numpy as np
from copies_grouped import ASTERISK_AS_ONE, SHIPPED_CHANNELS, compare_to_first, recipe_parser, shipped_sets
from numpy.typing import NDArray
from spectral_blocks import LAYERS

from spoofwatch.model.head import LinearHead
from spoofwatch.train.validate import FoldFitter, LosoResult, leave_one_source_out

RowChooser = Callable[[NDArray[np.str_], NDArray[np.int64]], list[NDArray[np.bool_]]]


def averaged_heads(choose: RowChooser, C: float = 0.001) -> FoldFitter:
    """A ``FoldFitter``: one shipped head (``C``, the column weights given) per row mask that
    ``choose(window fold keys, labels)`` returns, their logits averaged."""

    def fit(
        x: NDArray[np.float32],
        y: NDArray[np.int64],
        weights: NDArray[np.float64] | None,
        keys: NDArray[np.str_],
    ) -> Callable[[NDArray[np.float32]], NDArray[np.float64]]:
        fitted = [LinearHead(C=C).fit(x[rows], y[rows], weights) for rows in choose(keys, y)]
        return lambda features: np.mean([h.decision_function(features) for h in fitted], axis=0)

    return fit


def source_bagged(heads: int, share: float, C: float = 0.001) -> FoldFitter:
    """``averaged_heads`` of ``heads`` heads, each fitted on a random ``share`` of the fold's
    training sources (drawn per fold, seeded by the fold's sources; a draw that lacks a class
    is drawn again)."""

    def choose(keys: NDArray[np.str_], y: NDArray[np.int64]) -> list[NDArray[np.bool_]]:
        names = np.array(sorted(set(keys.tolist())))
        seed = hashlib.sha256("|".join(names.tolist()).encode()).digest()[:8]
        rng = np.random.default_rng(int.from_bytes(seed, "big"))
        masks: list[NDArray[np.bool_]] = []
        while len(masks) < heads:
            rows = np.isin(keys, rng.choice(names, max(2, round(share * len(names))), replace=False))
            if len(set(y[rows].tolist())) == 2:
                masks.append(rows)
        return masks

    return averaged_heads(choose, C)


def main() -> None:
    parser = recipe_parser(__doc__)
    parser.add_argument("--heads", type=int, default=5)
    parser.add_argument(
        "--share", type=float, default=0.75, help="share of a fold's training sources per head"
    )
    args = parser.parse_args()
    sets, copies = shipped_sets(args.manifest, args.copies)
    train = [sets[ch] for ch in SHIPPED_CHANNELS]
    runs: dict[str, FoldFitter | None] = {
        "single head (shipped)": None,
        f"{args.heads} heads on {100 * args.share:.0f} % of the sources": source_bagged(
            args.heads, args.share
        ),
    }
    results: dict[tuple[str, str], LosoResult] = {}
    for title, fit in runs.items():
        cells = []
        for test in SHIPPED_CHANNELS:
            result = leave_one_source_out(
                train,
                sets[test],
                LAYERS,
                C=0.001,
                spectral_weight=2.0,
                test_channel=test,
                progress=False,
                extra_sets=[copies],
                fold_groups=ASTERISK_AS_ONE,
                fit=fit,
            )
            results[(title, test)] = result
            cells.append(f"{test} EER {100 * result.metrics.eer:5.2f} % minDCF {result.metrics.min_dcf:.3f}")
        print(f"{title:36s} " + "  ".join(cells), flush=True)
    compare_to_first(results, list(runs), SHIPPED_CHANNELS, ASTERISK_AS_ONE)


if __name__ == "__main__":
    main()
