"""Experiment (README, Accuracy): a random smooth equaliser as a third training channel.

Each source's recordings share a coloration (microphone, room, the demo page's encoder);
a head can learn it instead of the generator. A random frequency response drawn per clip
and applied identically to both classes makes coloration uninformative in training. The
response is linear in dB between control points spread evenly over 0-8 kHz: 9 points within
+-8 dB ("eq8") or 17 points within +-12 dB ("eq12"); it is applied to the whole clip in the
frequency domain, seeded by the clip's samples.

Leave-one-source-out with the shipped recipe (Whisper base states 0-4 int8-all, LFCC +
phase coherence, levelled windows, C 0.001, spectral weight 2), trained on clean +
telephone (the shipped card), then with the equalised copies added or swapped in; scored
on the clean and telephone channels and on eq8. Then, for eq12, the per-source EER and
the pooled gain over 1,000 draws of the 23 sources with replacement. About 20 minutes on
2 cores with the embedding cache filled (the equalised channels are extracted on the
first run, about 4 minutes each).

    PYTHONPATH=src python research/random_eq.py --manifest ../shared/corpus/manifest.csv
"""

from __future__ import annotations

import argparse
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from spectral_blocks import LAYERS, cached_sets, recipe_extractor

from spoofwatch.model.head import LinearHead
from spoofwatch.train import channel
from spoofwatch.train.corpus import read_manifest
from spoofwatch.train.extract import EmbeddingSet
from spoofwatch.train.fit import clip_llrs
from spoofwatch.train.metrics import compute_eer
from spoofwatch.train.validate import fold_key

Samples = NDArray[np.float32]


def random_eq(points: int, max_db: float, salt: int) -> channel.Channel:
    def apply(samples: Samples, sample_rate: int) -> Samples:
        rng = np.random.default_rng(zlib.crc32(np.ascontiguousarray(samples).tobytes()) ^ salt)
        spectrum = np.fft.rfft(samples.astype(np.float64))
        grid = np.linspace(0.0, 1.0, len(spectrum))
        gain_db = np.interp(grid, np.linspace(0.0, 1.0, points), rng.uniform(-max_db, max_db, points))
        out = np.fft.irfft(spectrum * 10 ** (gain_db / 20), len(samples))
        return np.clip(out, -1.0, 1.0).astype(np.float32)

    return apply


EQ8 = random_eq(9, 8.0, 0x5EED)
EQ12 = random_eq(17, 12.0, 0x5EED12)
# Experiment-only names; registered so the embedding cache keys on them like any channel.
CHANNELS = {
    "exp-eq": EQ8,
    "exp-tel-eq": lambda x, sr: channel.telephone_mulaw(EQ8(x, sr), sr),
    "exp-eq12": EQ12,
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--manifest", type=Path, required=True)
    args = parser.parse_args()
    sets: dict[str, EmbeddingSet] = dict(cached_sets(args.manifest, "lfcc-phase"))
    channel.CHANNELS.update(CHANNELS)
    items = read_manifest(args.manifest)
    extract = recipe_extractor()
    for name in CHANNELS:
        sets[name] = extract(items, name)
        assert np.array_equal(sets[name].item_index, sets["clean"].item_index)

    item_source = np.array([fold_key(it) for it in sets["clean"].items])
    label = np.array([1 if it.label == "bonafide" else 0 for it in sets["clean"].items])
    x = {ch: s.select_layers(LAYERS) for ch, s in sets.items()}
    window_source = item_source[sets["clean"].item_index]
    y = sets["clean"].labels()
    n_main = len(LAYERS) * sets["clean"].features.shape[2]
    weights = np.concatenate([np.ones(n_main), np.full(x["clean"].shape[1] - n_main, 2.0)])
    names = sorted(set(item_source.tolist()))
    tests = ("clean", "telephone", "exp-eq")

    def clips(train: Sequence[str]) -> dict[str, NDArray[np.float64]]:
        scores = {ch: np.full(len(y), np.nan) for ch in tests}
        for name in names:
            held = window_source == name
            head = LinearHead(C=0.001).fit(
                np.concatenate([x[ch][~held] for ch in train]),
                np.concatenate([y[~held]] * len(train)),
                weights,
            )
            for ch in tests:
                scores[ch][held] = head.decision_function(x[ch][held])
        return {ch: clip_llrs(sets[ch], s) for ch, s in scores.items()}

    def eer(clip: NDArray[np.float64], spoof: NDArray[np.bool_] | None = None) -> float:
        ok = ~np.isnan(clip)
        spoofs = ok & (label == 0) if spoof is None else ok & spoof
        return 100 * compute_eer(clip[ok & (label == 1)], clip[spoofs])[0]

    runs = {
        "clean + telephone (the shipped card)": ("clean", "telephone"),
        "clean + telephone + eq8": ("clean", "telephone", "exp-eq"),
        "clean + telephone + eq8 then telephone": ("clean", "telephone", "exp-tel-eq"),
        "eq8 + telephone (eq8 instead of clean)": ("exp-eq", "telephone"),
        "clean + telephone + eq12": ("clean", "telephone", "exp-eq12"),
    }
    results = {}
    for title, train in runs.items():
        results[title] = clips(train)
        row = "  ".join(f"{ch} {eer(results[title][ch]):5.2f} %" for ch in tests)
        print(f"{title:42s} LOSO {row}", flush=True)

    shipped, eq12 = results["clean + telephone (the shipped card)"], results["clean + telephone + eq12"]
    rng = np.random.default_rng(0)
    for ch in ("clean", "telephone"):
        gains = []
        for _ in range(1000):
            counts = np.zeros(len(label), dtype=int)
            for name in rng.choice(names, len(names)):
                counts += item_source == name
            idx = np.repeat(np.arange(len(label)), counts)
            a, b, lab = shipped[ch][idx], eq12[ch][idx], label[idx]
            gains.append(
                100 * (compute_eer(a[lab == 1], a[lab == 0])[0] - compute_eer(b[lab == 1], b[lab == 0])[0])
            )
        g = np.array(gains)
        print(
            f"{ch}: eq12 gain {g.mean():.2f} points, 90 % interval {np.percentile(g, 5):.2f} to "
            f"{np.percentile(g, 95):.2f}, positive in {100 * (g > 0).mean():.0f} % of draws"
        )
        per_source = []
        for name in names:
            spoof = (label == 0) & (item_source == name)
            if spoof.sum() >= 10:
                per_source.append((eer(shipped[ch], spoof), eer(eq12[ch], spoof)))
                print(f"  {name:40s} {per_source[-1][0]:5.1f} % -> {per_source[-1][1]:5.1f} %")
        before, after = np.array(per_source).T
        print(
            f"{ch}: per-source EER over {len(per_source)} sources, mean {before.mean():.1f} % -> "
            f"{after.mean():.1f} %, median {np.median(before):.1f} % -> {np.median(after):.1f} %",
            flush=True,
        )


if __name__ == "__main__":
    main()
