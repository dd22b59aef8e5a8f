"""Experiment (README, Accuracy): other heads and feature subsets on the shipped recipe's
features, leave-one-source-out, clean and telephone.

Every variant trains on the clean and telephone windows of the other 22 sources (Whisper
base states 0-4 int8-all, LFCC + phase coherence, windows levelled to -26 dBFS) and scores
the held-out source's windows on both channels; clip score = mean window score, EER as the
ASVspoof package computes it. Variants:
- the shipped joint logistic head (C 0.001, spectral weight 2): the control;
- late fusion: one logistic head on Whisper, one on the spectral block, logits summed;
- one logistic head per Whisper state and one on the spectral block, logits summed;
- one-class: a Gaussian (Ledoit-Wolf) of the bona fide windows in 64 PCA dimensions,
  score = minus the Mahalanobis distance; and that score fused with the joint head;
- pooled-statistic subsets: Whisper std only, mean only, the spectral block without the
  cepstral means (what a recording's coloration sets most directly);
- Whisper tiny.en states 0-4 beside base (a second encoder);
- a small MLP (256 PCA dimensions, 32 hidden units, L2 alpha 1 or 10, three seeds,
  classes balanced by resampling) against a logistic head on the same PCA dimensions.
About 25 minutes on 2 cores with the embedding cache filled (`spoofwatch loso ...
--spectral lfcc-phase` fills it; tiny.en is extracted on the first run, about 4 minutes).

    PYTHONPATH=src python research/head_variants.py --manifest ../shared/corpus/manifest.csv
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from sklearn.covariance import LedoitWolf
from sklearn.decomposition import PCA
from sklearn.neural_network import MLPClassifier
from spectral_blocks import LAYERS, LEVEL_DBFS, WINDOW, cached_sets

from spoofwatch.model.encoders.registry import EncoderSpec
from spoofwatch.model.head import LinearHead
from spoofwatch.train.corpus import read_manifest
from spoofwatch.train.extract import EmbeddingSet, extract
from spoofwatch.train.fit import clip_llrs
from spoofwatch.train.metrics import compute_eer
from spoofwatch.train.pipeline import feature_encoder
from spoofwatch.train.validate import fold_key

Array = NDArray[np.float64]
# (training features, training labels, held-out features per channel) -> window scores per channel
FitScore = Callable[[Array, NDArray[np.int64], dict[str, Array]], dict[str, Array]]
C = 0.001
SPECTRAL_WEIGHT = 2.0


class Harness:
    def __init__(self, sets: dict[str, EmbeddingSet]) -> None:
        self.sets = sets
        items = sets["clean"].items
        item_source = np.array([fold_key(it) for it in items])
        self.item_label = np.array([1 if it.label == "bonafide" else 0 for it in items])
        self.x = {ch: s.select_layers(LAYERS).astype(np.float64) for ch, s in sets.items()}
        self.window_source = {ch: item_source[s.item_index] for ch, s in sets.items()}
        self.y = {ch: s.labels() for ch, s in sets.items()}
        self.names = sorted(set(item_source.tolist()))
        self.n_main = len(LAYERS) * sets["clean"].features.shape[2]

    def weights(self, n_main: int, n_spectral: int) -> Array:
        return np.concatenate([np.ones(n_main), np.full(n_spectral, SPECTRAL_WEIGHT)])

    def run(self, label: str, fit_score: FitScore, x: dict[str, Array] | None = None) -> None:
        x = x or self.x
        scores = {ch: np.full(len(v), np.nan) for ch, v in x.items()}
        for name in self.names:
            held = {ch: self.window_source[ch] == name for ch in x}
            xtr = np.concatenate([x[ch][~held[ch]] for ch in x])
            ytr = np.concatenate([self.y[ch][~held[ch]] for ch in x])
            out = fit_score(xtr, ytr, {ch: x[ch][held[ch]] for ch in x})
            for ch in x:
                scores[ch][held[ch]] = out[ch]
        eers = []
        for ch in ("clean", "telephone"):
            clip = clip_llrs(self.sets[ch], scores[ch])
            ok = ~np.isnan(clip)
            eers.append(
                100 * compute_eer(clip[ok & (self.item_label == 1)], clip[ok & (self.item_label == 0)])[0]
            )
        print(f"{label:60s} LOSO clean {eers[0]:5.2f} %  telephone {eers[1]:5.2f} %", flush=True)


def logistic(cols: NDArray[np.int64] | None, weights: Array | None, c: float = C) -> FitScore:
    def fit_score(xtr: Array, ytr: NDArray[np.int64], xte: dict[str, Array]) -> dict[str, Array]:
        def pick(v: Array) -> Array:
            return v if cols is None else v[:, cols]

        head = LinearHead(C=c).fit(pick(xtr), ytr, weights)
        return {ch: head.decision_function(pick(v)) for ch, v in xte.items()}

    return fit_score


def summed(*heads: FitScore) -> FitScore:
    def fit_score(xtr: Array, ytr: NDArray[np.int64], xte: dict[str, Array]) -> dict[str, Array]:
        outs = [h(xtr, ytr, xte) for h in heads]
        return {ch: np.sum([o[ch] for o in outs], axis=0) for ch in xte}

    return fit_score


def bona_fide_gaussian(dims: int, joint: FitScore | None) -> FitScore:
    """Minus the Mahalanobis distance to the bona fide windows, z-scored on training; with
    ``joint``, half of it plus the joint head's z-scored logit."""

    def fit_score(xtr: Array, ytr: NDArray[np.int64], xte: dict[str, Array]) -> dict[str, Array]:
        mean, scale = xtr.mean(0), xtr.std(0) + 1e-8
        pca = PCA(dims, random_state=0).fit(((xtr - mean) / scale)[ytr == 1])
        gauss = LedoitWolf().fit(pca.transform(((xtr - mean) / scale)[ytr == 1]))

        def score(v: Array) -> Array:
            return -np.asarray(gauss.mahalanobis(pca.transform((v - mean) / scale)))

        ref = score(xtr)
        out = {ch: (score(v) - ref.mean()) / ref.std() for ch, v in xte.items()}
        if joint is None:
            return out
        both = joint(xtr, ytr, {**xte, "train": xtr})
        t = both.pop("train")
        return {ch: 0.5 * out[ch] + (both[ch] - t.mean()) / t.std() for ch in xte}

    return fit_score


def on_pca(dims: int, weights: Array, mlp_alpha: float | None, seeds: int = 3) -> FitScore:
    """Standardised, block-weighted features -> PCA -> a logistic head, or an MLP (summed
    logits of ``seeds`` nets, classes balanced by resampling the smaller one)."""

    def fit_score(xtr: Array, ytr: NDArray[np.int64], xte: dict[str, Array]) -> dict[str, Array]:
        mean, scale = xtr.mean(0), xtr.std(0) + 1e-8
        pca = PCA(dims, random_state=0).fit((xtr - mean) / scale * weights)
        spread = pca.transform((xtr - mean) / scale * weights).std(0)

        def project(v: Array) -> Array:
            return np.asarray(pca.transform((v - mean) / scale * weights) / spread)

        ztr = project(xtr)
        if mlp_alpha is None:
            head = LinearHead(C=C).fit(ztr, ytr)
            return {ch: head.decision_function(project(v)) for ch, v in xte.items()}
        out = {ch: np.zeros(len(v)) for ch, v in xte.items()}
        pos, neg = np.flatnonzero(ytr == 1), np.flatnonzero(ytr == 0)
        for seed in range(seeds):
            rng = np.random.default_rng(seed)
            small, large = (pos, neg) if len(pos) < len(neg) else (neg, pos)
            idx = np.concatenate([rng.choice(small, len(large)), large])
            net = MLPClassifier((32,), alpha=mlp_alpha, max_iter=300, random_state=seed).fit(
                ztr[idx], ytr[idx]
            )
            for ch, v in xte.items():
                p = np.clip(net.predict_proba(project(v))[:, 1], 1e-6, 1 - 1e-6)
                out[ch] += np.log(p / (1 - p))
        return out

    return fit_score


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--manifest", type=Path, required=True)
    args = parser.parse_args()
    sets = cached_sets(args.manifest, "lfcc-phase")
    h = Harness(sets)
    n_main, n_all = h.n_main, h.x["clean"].shape[1]
    main_cols, spec_cols = np.arange(n_main), np.arange(n_main, n_all)
    joint = logistic(None, h.weights(n_main, n_all - n_main))
    h.run("joint logistic head (shipped recipe)", joint)
    h.run(
        "late fusion: Whisper head + spectral head (C 0.01)",
        summed(logistic(main_cols, None), logistic(spec_cols, None, 0.01)),
    )
    width = sets["clean"].features.shape[2]
    per_state = [logistic(np.arange(i * width, (i + 1) * width), None, 0.003) for i in range(len(LAYERS))]
    h.run(
        "one head per Whisper state + spectral head, summed (C 0.003)",
        summed(*per_state, logistic(spec_cols, None, 0.003)),
    )
    h.run("one-class: bona fide Gaussian, 64 PCA dims", bona_fide_gaussian(64, None))
    h.run("bona fide Gaussian (half weight) + joint head", bona_fide_gaussian(64, joint))
    half = width // 2
    w_mean = np.concatenate([np.arange(i * width, i * width + half) for i in range(len(LAYERS))])
    w_std = w_mean + half
    spec_no_cepstral_mean = spec_cols[20:]  # the block is [mean, std] of 20 LFCC, 40 deltas, 20 coherence

    def subset(w_cols: NDArray[np.int64], s_cols: NDArray[np.int64]) -> FitScore:
        cols = np.concatenate([w_cols, s_cols])
        return logistic(cols, h.weights(len(w_cols), len(s_cols)))

    h.run("Whisper std only + spectral", subset(w_std, spec_cols))
    h.run("Whisper mean only + spectral", subset(w_mean, spec_cols))
    h.run("joint, spectral block without the cepstral means", subset(main_cols, spec_no_cepstral_mean))
    h.run("Whisper std only, spectral without the cepstral means", subset(w_std, spec_no_cepstral_mean))
    weights = h.weights(n_main, n_all - n_main)
    h.run("logistic head on 256 PCA dimensions", on_pca(256, weights, None))
    h.run("MLP (32 hidden) on 256 PCA dimensions, alpha 1", on_pca(256, weights, 1.0))
    h.run("MLP (32 hidden) on 256 PCA dimensions, alpha 10", on_pca(256, weights, 10.0))
    items = read_manifest(args.manifest)
    _, _, tiny = feature_encoder(EncoderSpec("whisper-ct2", "whisper-tiny.en"), 4.0, None, "int8-all")
    with_tiny = {}
    for ch, s in sets.items():
        t = extract(items, tiny, WINDOW, channel=ch, level_dbfs=LEVEL_DBFS, progress=False)
        assert np.array_equal(t.item_index, s.item_index)
        flat = t.features.reshape(len(t.features), -1).astype(np.float64)
        with_tiny[ch] = np.concatenate([h.x[ch][:, :n_main], flat, h.x[ch][:, n_main:]], axis=1)
    n_tiny = with_tiny["clean"].shape[1] - n_all
    h.run(
        "Whisper base 0-4 + tiny.en 0-4 + spectral",
        logistic(None, h.weights(n_main + n_tiny, n_all - n_main)),
        with_tiny,
    )


if __name__ == "__main__":
    main()
