"""Experiment (issue 28): project out the directions in which genuine recordings differ by
source (nuisance attribute projection), so the head cannot learn a source's recording chain.

Leave-one-family-out shows genuine speech from sources the head never saw (read English from
demo pages above all) flagged as fake: the head leans on what distinguishes the genuine
sources it trained on. Nuisance attribute projection (Solomonoff et al., 2005, from speaker
verification) removes that: per fold, the mean feature of every genuine training source
(standardised, at least ``MIN_WINDOWS`` windows) is taken, the top ``k`` principal directions
of those means are found, and every window's features lose their component along them
before the head is fitted and scores. Spoof sources are left out of the scatter: what
separates one generator from another is partly the artefact the head should read.

The ``exact`` arm of ``attentive_pooling.py`` (its cached features: mean+std of Whisper base
states 0-4, int8, level -26 dBFS; a logistic output; clean + telephone channels), leave-one-
family-out as ``loso --fold-by family --fold-partitions 8 --fold-deal N`` deals it, on the same
half corpus; ``--ks 0`` is that arm unchanged.

    PYTHONPATH=src python research/nap_projection.py \\
        --manifest /tmp/half/manifest.csv --manifest /tmp/half/dev-families.csv --ks 0,16,64 --deals 0,1,2
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from attentive_pooling import (  # the exact arm
    CHANNELS,
    add_study_options,
    clip_scores,
    fit_and_score,
    study_items,
)
from attentive_pooling import extract as extract_plain
from numpy.typing import NDArray

from spoofwatch.train.metrics import compute_eer
from spoofwatch.train.validate import partition_folds

MIN_WINDOWS = 20


def nuisance_directions(
    arrays: list[NDArray[np.float32]],
    rows: list[NDArray[np.int64]],
    sources: list[NDArray[np.int64]],
    k: int,
) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.float32]]:
    """(mean, sd, V): the training rows' standardisation and the top ``k`` directions
    (columns of V, orthonormal) of the genuine sources' mean features."""
    x = np.concatenate([a[r] for a, r in zip(arrays, rows, strict=True)])
    src = np.concatenate([s[r] for s, r in zip(sources, rows, strict=True)])
    mu, sd = x.mean(0), x.std(0) + 1e-4
    z = (x - mu) / sd
    names, counts = np.unique(src[src >= 0], return_counts=True)
    means = np.stack([z[src == n].mean(0) for n, c in zip(names, counts, strict=True) if c >= MIN_WINDOWS])
    means -= means.mean(0)
    _, _, vt = np.linalg.svd(means, full_matrices=False)
    return mu, sd, vt[:k].T.astype(np.float32)


def project(
    a: NDArray[np.float32], mu: NDArray[np.float32], sd: NDArray[np.float32], v: NDArray[np.float32]
) -> NDArray[np.float32]:
    out = np.empty_like(a)
    for s in range(0, len(a), 8192):
        z = (a[s : s + 8192] - mu) / sd
        out[s : s + 8192] = z - (z @ v) @ v.T
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_study_options(ap)
    ap.add_argument("--ks", default="0,16,64", help="directions removed, one arm each")
    ap.add_argument("--deals", default="0", help="comma-separated fold deals (as loso --fold-deal)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    items, labels, durations, keys = study_items(args)
    n = len(items)
    names = sorted({it.source for it in items if it.label == "bonafide"})
    source_id = np.array([names.index(it.source) if it.label == "bonafide" else -1 for it in items])
    plain = {c: extract_plain(items, c, args.cache) for c in CHANNELS}
    arrays = [np.asarray(plain[c][1], dtype=np.float32) for c in CHANNELS]
    indexes = [plain[c][2] for c in CHANNELS]
    sources = [source_id[i] for i in indexes]
    print(f"{n} clips, {len(names)} genuine sources, windows {[len(a) for a in arrays]}", flush=True)
    for deal in (int(d) for d in args.deals.split(",")):
        fold_of = partition_folds(keys, args.partitions, deal)
        item_fold = np.array([fold_of[k] for k in keys])
        for k in (int(v) for v in args.ks.split(",")):
            start = time.monotonic()
            scores = [np.full(len(i), np.nan) for i in indexes]
            for fold in sorted(set(item_fold.tolist())):
                held = [item_fold[i] == fold for i in indexes]
                train_rows = [np.flatnonzero(~h) for h in held]
                test_rows = [np.flatnonzero(h) for h in held]
                if k:
                    mu, sd, v = nuisance_directions(arrays, train_rows, sources, k)
                    fold_arrays = [project(a, mu, sd, v) for a in arrays]
                else:
                    fold_arrays = arrays
                train_y = np.concatenate([labels[i][r] for i, r in zip(indexes, train_rows, strict=True)])
                fitted = fit_and_score(
                    fold_arrays, train_rows, train_y, test_rows, "pooled", args.epochs, args.l2
                )
                for c, (h, s) in enumerate(zip(held, fitted, strict=True)):
                    scores[c][h] = s
            for c, channel in enumerate(CHANNELS):
                clip = clip_scores(scores[c], indexes[c], n)
                row = []
                for min_s in (2.0, 4.0):
                    sel = ~np.isnan(clip) & (durations >= min_s)
                    eer, _ = compute_eer(clip[sel & (labels == 1)], clip[sel & (labels == 0)])
                    row.append(f">= {min_s:g} s {eer:.2%}")
                print(
                    f"RESULT k={k:>3} deal {deal} {channel:>9}: "
                    + "  ".join(row)
                    + f"  ({time.monotonic() - start:.0f} s)",
                    flush=True,
                )


if __name__ == "__main__":
    main()
