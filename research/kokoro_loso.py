"""The Kokoro family (``kokoro_spoofs.py``) against every genuine clip of the corpus held out
by leave-one-source-out, instead of against dev's 66: a finer external check than
``spoofwatch eval --manifest K/eval.csv`` (one genuine clip is 0.14 points instead of 1.5).

The Kokoro clips join the test set as a fold of their own that no fold trains on: every
corpus fold's head scores its held-out clips as usual, and the Kokoro fold's head (trained on
every corpus source) scores the Kokoro clips. Printed per recipe and test channel: the EER of
the held-out genuine clips against the Kokoro clips, the pooled leave-one-source-out EER of
the corpus alone for reference, and each later recipe's gap to the first over 1,000 draws of
the genuine clips' folds with replacement. Then Kokoro counted as one more held-out source
beside the corpus's: the pooled EER of every held-out clip, the mean EER of the spoof folds
with at least 10 clips (each against every held-out genuine clip), and each later recipe's
gain over the first over 1,000 draws of all the folds, Kokoro's among them. Recipes: the
shipped one (clean, telephone and augmented training channels, the FARGAN copies through the
clean channel) and the one without the augmented channel, under the Asterisk grouping.

    PYTHONPATH=src python research/kokoro_loso.py --manifest ../shared/corpus/manifest.csv \\
        --kokoro ~/.cache/spoofwatch/extras/kokoro/manifest.csv

About 12 minutes on 2 cores with the embeddings cached (``kokoro_extra.py`` caches the Kokoro
clips' three channels).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
from bagged_heads import averaged_heads
from copies_grouped import ASTERISK_AS_ONE, SHIPPED_CHANNELS, bootstrap_gain
from kokoro_extra import shipped_with_kokoro
from numpy.typing import NDArray
from paired_dev_gap import eer_points
from spectral_blocks import CHANNELS, LAYERS

from spoofwatch.train.extract import EmbeddingSet
from spoofwatch.train.metrics import compute_eer
from spoofwatch.train.validate import FoldFitter, LosoResult, fold_key, leave_one_source_out


def joined(first: EmbeddingSet, second: EmbeddingSet) -> EmbeddingSet:
    """``first``'s items and windows, then ``second``'s."""
    assert first.spectral is not None and second.spectral is not None
    return replace(
        first,
        items=first.items + second.items,
        features=np.concatenate([first.features, second.features]),
        item_index=np.concatenate([first.item_index, second.item_index + len(first.items)]),
        t_start=np.concatenate([first.t_start, second.t_start]),
        failed=first.failed + second.failed,
        spectral=np.concatenate([first.spectral, second.spectral]),
    )


def never_trained_on(key: str) -> FoldFitter:
    """The shipped head, fitted without the windows of fold ``key``."""
    return averaged_heads(lambda keys, y: [keys != key])


def genuine_vs(result: LosoResult, folds: NDArray[np.str_], key: str, rows: NDArray[np.intp]) -> float:
    """EER (%) of the genuine clips at ``rows`` against fold ``key``'s clips."""
    scores = result.clip_scores
    genuine = scores[rows]
    return 100 * compute_eer(genuine[~np.isnan(genuine)], scores[folds == key])[0]


def main() -> None:
    sets, copies, kokoro = shipped_with_kokoro(__doc__)
    key = fold_key(kokoro["clean"].items[0], ASTERISK_AS_ONE)
    both = {ch: joined(sets[ch], kokoro[ch]) for ch in SHIPPED_CHANNELS}
    items = both["clean"].items
    folds = np.array([fold_key(it, ASTERISK_AS_ONE) for it in items])
    bona = np.array([it.label == "bonafide" for it in items])
    genuine = np.flatnonzero(bona)
    genuine_folds = folds[genuine]
    names = sorted(set(genuine_folds.tolist()))
    corpus = np.arange(len(items)) < len(sets["clean"].items)
    recipes: dict[str, Sequence[str]] = {
        "shipped (clean, telephone, augmented)": SHIPPED_CHANNELS,
        "no augmented channel": CHANNELS,
    }
    results: dict[tuple[str, str], LosoResult] = {}
    for title, channels in recipes.items():
        for test in CHANNELS:
            result = leave_one_source_out(
                [both[ch] for ch in channels],
                both[test],
                LAYERS,
                spectral_weight=2.0,
                test_channel=test,
                progress=False,
                extra_sets=[copies],
                fold_groups=ASTERISK_AS_ONE,
                fit=never_trained_on(key),
            )
            results[(title, test)] = result
            corpus_eer = eer_points(result.clip_scores[corpus], bona[corpus])
            print(
                f"{title:40s} {test:9s} held-out genuine ({len(genuine)}) vs Kokoro "
                f"{genuine_vs(result, folds, key, genuine):5.2f} %   corpus LOSO {corpus_eer:5.2f} %",
                flush=True,
            )
    first = next(iter(recipes))
    rng = np.random.default_rng(0)
    draws = [
        np.concatenate([genuine[genuine_folds == n] for n in rng.choice(names, len(names))])
        for _ in range(1000)
    ]
    for title in list(recipes)[1:]:
        for test in CHANNELS:
            gaps = np.array(
                [
                    genuine_vs(results[(title, test)], folds, key, rows)
                    - genuine_vs(results[(first, test)], folds, key, rows)
                    for rows in draws
                ]
            )
            low, high = np.percentile(gaps, [5, 95])
            print(
                f"{title}, {test}: {gaps.mean():+.2f} points against the first (90 % interval {low:+.2f} to "
                f"{high:+.2f}, lower in {100 * (gaps < 0).mean():.0f} % of draws of the genuine folds)"
            )

    spoof_folds = Counter(folds[~bona].tolist())
    sources = sorted(name for name, n in spoof_folds.items() if n >= 10)
    print(f"\nKokoro as one more held-out source (mean over {len(sources)} spoof folds, Kokoro's too):")
    for (title, test), result in results.items():
        per_source = [100 * result.per_source_eer[name] for name in sources]
        line = (
            f"{title:40s} {test:9s} pooled {eer_points(result.clip_scores, bona):5.2f} %   "
            f"mean per source {np.mean(per_source):5.2f} %"
        )
        if title != first:
            gains = bootstrap_gain(results[(first, test)], result, folds)
            line += (
                f"   gain over the first {gains.mean():+.2f} points (90 % interval "
                f"{np.percentile(gains, 5):+.2f} to {np.percentile(gains, 95):+.2f}, "
                f"positive in {100 * (gains > 0).mean():.0f} % of draws of the folds)"
            )
        print(line)


if __name__ == "__main__":
    main()
