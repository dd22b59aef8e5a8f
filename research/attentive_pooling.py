"""Experiment (issue 28): attentive statistics pooling over the encoder's frames, against the
mean+std pooling the detector ships, held out by generator family.

The shipped head reads each 4 s window as the mean and standard deviation over all 200
frames of Whisper base's hidden states 0-4 (int8, truncated encoder, level -26 dBFS). An
attentive head (attentive statistics pooling, Okabe et al. 2018, as AASIST-style and SSL
countermeasures use it) learns which frames to weigh, e.g. pauses or onsets, where
synthesis leaves its traces. To keep frame-level features on disk, frames are averaged in
groups of 8 (160 ms; 25 per window, 2,560 values each: the five states side by side). Three
arms, each a logistic output with the same L2 strength and optimiser, trained in torch:

- ``exact``: mean+std over all 200 frames (what the card pools);
- ``grouped``: mean+std over the 25 group means (the attentive arm's input, uniform weights);
- ``attentive``: weighted mean+std over the 25 group means, the weights a softmax of a
  small tanh layer (2,560 -> 128 -> 1) on each frame.

Leave-one-family-out as ``spoofwatch loso --fold-by family --fold-partitions 8`` deals it
(spoof families and bona fide sources held out), trained on the clean and telephone
channels of the clips of at least ``--min-s`` seconds, each window scored by the fold that
never saw its family or source; a clip's score is its windows' mean; EER as ASVspoof's
``compute_eer``, pooled over folds, per test channel, for clips >= 2 s and >= 4 s.

    python research/half_manifest.py --manifest BUILT/manifest.csv --out /tmp/half/manifest.csv
    python research/half_manifest.py --manifest dev-families.csv --out /tmp/half/dev-families.csv
    PYTHONPATH=src python research/attentive_pooling.py \\
        --manifest /tmp/half/manifest.csv --manifest /tmp/half/dev-families.csv

About 11 minutes of extraction per channel on 2 idle cores for that half (13,876 clips of
at least 2 s), 6 GB of frame features on disk, then about 40 minutes of fitting for the three
arms (the ``exact`` arm alone: under a minute).
"""

from __future__ import annotations

import argparse
import hashlib
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from numpy.typing import NDArray

from spoofwatch.audio.files import load_audio
from spoofwatch.model.encoders.registry import EncoderSpec
from spoofwatch.model.level import levelled_pair
from spoofwatch.stream.core.windowing import WindowConfig, cut_windows
from spoofwatch.train.channel import get_channel
from spoofwatch.train.corpus import LabelledItem, item_duration_s, read_manifest
from spoofwatch.train.metrics import compute_eer
from spoofwatch.train.pipeline import feature_encoder
from spoofwatch.train.validate import FoldScheme, partition_folds

LAYERS = [0, 1, 2, 3, 4]
GROUP = 8  # frames averaged into one (20 ms each: 160 ms)
LEVEL_DBFS = -26.0
CHANNELS = ("clean", "telephone")


def extract(
    items: list[LabelledItem], channel: str, cache: Path
) -> tuple[np.memmap, NDArray[np.float32], NDArray[np.int64]]:
    """Per window: the grouped frames (windows, 25, 2560) float16 on disk, the exact
    mean+std (windows, 5120) and the window's item index; cached per item list and channel."""
    tag = hashlib.sha1("|".join(str(it.path) for it in items).encode()).hexdigest()[:10]
    base = cache / f"attentive-{tag}-{channel}"
    if (base.with_suffix(".done")).is_file():
        meta = np.load(base.with_suffix(".npz"))
        return np.load(base.with_suffix(".npy"), mmap_mode="r"), meta["exact"], meta["item_index"]
    _, _, encoder = feature_encoder(EncoderSpec("whisper-ct2", "whisper-base"), 4.0, LAYERS, "int8-window")
    window = WindowConfig(16000, 4.0, 2.0)
    transform = get_channel(channel)
    frames: list[NDArray[np.float16]] = []
    exact: list[NDArray[np.float32]] = []
    index: list[NDArray[np.int64]] = []
    start = time.monotonic()
    with torch.inference_mode():
        for i, item in enumerate(items):
            audio = transform(load_audio(item.path, 16000).samples, 16000)
            wins = cut_windows(audio, window)
            if not wins:
                continue
            x, _ = levelled_pair(
                torch.from_numpy(np.stack([w.samples for w in wins])), None, 16000, LEVEL_DBFS
            )
            states = [h.float() for h in encoder.hidden_states(x)][: len(LAYERS)]
            stacked = torch.cat(states, dim=-1)  # (windows, 200, 2560)
            n, t, d = stacked.shape
            grouped = stacked[:, : t - t % GROUP].reshape(n, t // GROUP, GROUP, d).mean(2)
            frames.append(grouped.numpy().astype(np.float16))
            exact.append(torch.cat([stacked.mean(1), stacked.std(1)], 1).numpy())
            index.append(np.full(n, i, dtype=np.int64))
            if i % 500 == 0:
                print(
                    f"extract {channel}: {i}/{len(items)} clips, {time.monotonic() - start:.0f} s", flush=True
                )
    total = sum(len(f) for f in frames)
    out = np.lib.format.open_memmap(
        base.with_suffix(".npy"), mode="w+", dtype=np.float16, shape=(total, *frames[0].shape[1:])
    )
    row = 0
    for f in frames:
        out[row : row + len(f)] = f
        row += len(f)
    out.flush()
    np.savez(base.with_suffix(".npz"), exact=np.concatenate(exact), item_index=np.concatenate(index))
    base.with_suffix(".done").touch()
    return extract(items, channel, cache)


class Head(torch.nn.Module):
    """A logistic output on statistics: given (``pooled``), or pooled from frames with
    uniform (``mean``) or learnt (``attentive``) weights."""

    def __init__(self, dim: int, mode: str) -> None:
        super().__init__()
        self.mode = mode
        self.attention = (
            torch.nn.Sequential(torch.nn.Linear(dim, 128), torch.nn.Tanh(), torch.nn.Linear(128, 1))
            if mode == "attentive"
            else None
        )
        self.out = torch.nn.Linear(dim if mode == "pooled" else 2 * dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode != "pooled":
            if self.attention is None:
                w = torch.full(x.shape[:2], 1.0 / x.shape[1])
            else:
                w = torch.softmax(self.attention(x).squeeze(-1), dim=1)
            mean = (w[..., None] * x).sum(1)
            var = (w[..., None] * x.square()).sum(1) - mean.square()
            x = torch.cat([mean, var.clamp(min=1e-6).sqrt()], 1)
        logits: torch.Tensor = self.out(x).squeeze(-1)
        return logits


def gather(arrays: list[NDArray[np.floating]], picks: list[NDArray[np.int64]]) -> torch.Tensor:
    return torch.from_numpy(
        np.concatenate([np.asarray(a[p], dtype=np.float32) for a, p in zip(arrays, picks, strict=True)])
    )


def fit_and_score(
    arrays: list[NDArray[np.floating]],
    train_rows: list[NDArray[np.int64]],
    train_y: NDArray[np.int64],
    test_rows: list[NDArray[np.int64]],
    mode: str,
    epochs: int,
    l2: float,
    seed: int = 0,
) -> list[NDArray[np.float64]]:
    """Fit on ``arrays[c][train_rows[c]]`` (channels side by side, labels ``train_y`` in that
    order), standardised per value with the training rows; score ``arrays[c][test_rows[c]]``."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    sample = gather(arrays, [np.sort(rng.choice(r, min(len(r), 4000), replace=False)) for r in train_rows])
    sample = sample.reshape(-1, sample.shape[-1])
    mu, sd = sample.mean(0), sample.std(0) + 1e-4
    head = Head(arrays[0].shape[-1], mode)
    optimiser = torch.optim.Adam(head.parameters(), lr=1e-3)
    y = torch.from_numpy(train_y.astype(np.float32))
    pos = float(y.mean())
    weight = torch.where(y > 0, 0.5 / pos, 0.5 / (1 - pos))  # classes balanced overall
    offsets = np.cumsum([0, *(len(r) for r in train_rows)])
    for _ in range(epochs):
        for batch in np.array_split(rng.permutation(offsets[-1]), max(1, offsets[-1] // 512)):
            batch.sort()
            picks = [
                train_rows[c][batch[(batch >= offsets[c]) & (batch < offsets[c + 1])] - offsets[c]]
                for c in range(len(arrays))
            ]
            xb = (gather(arrays, picks) - mu) / sd
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                head(xb), y[batch], weight=weight[batch]
            )
            loss = loss + l2 * head.out.weight.square().sum()
            optimiser.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            optimiser.step()
    scores = []
    with torch.inference_mode():
        for c, rows in enumerate(test_rows):
            parts = [
                head((gather([arrays[c]], [rows[s : s + 2048]]) - mu) / sd).double().numpy()
                for s in range(0, len(rows), 2048)
            ]
            scores.append(np.concatenate(parts) if parts else np.zeros(0))
    return scores


class Study(NamedTuple):
    """The clips of a study on these features, their labels (1 = bona fide), durations and
    fold keys (a spoof's family, a bona fide clip's source)."""

    items: list[LabelledItem]
    labels: NDArray[np.int64]
    durations: NDArray[np.float64]
    keys: list[str]


def add_study_options(ap: argparse.ArgumentParser) -> None:
    """The options every study on the exact arm's cached features shares (this script,
    ``pause_canon.py``, ``nap_projection.py``): the clips, the family partitions, the head,
    the cache."""
    ap.add_argument("--manifest", action="append", required=True)
    ap.add_argument("--min-s", type=float, default=2.0)
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--l2", type=float, default=1e-3, help="L2 on the output weights (per-sample mean loss)")
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "spoofwatch-exp")


def study_items(args: argparse.Namespace, limit: int = 0) -> Study:
    """The manifests' clips of at least ``--min-s`` (every ``limit``-th with a limit), with the
    cache folder made."""
    args.cache.mkdir(parents=True, exist_ok=True)
    items = [it for m in args.manifest for it in read_manifest(m) if item_duration_s(it) >= args.min_s]
    if limit:
        items = items[::limit]
    scheme = FoldScheme("family", "source", (), args.partitions)
    return Study(
        items,
        np.array([it.label == "bonafide" for it in items], dtype=np.int64),
        np.array([item_duration_s(it) for it in items]),
        [scheme.key(it) for it in items],
    )


def clip_scores(scores: NDArray[np.float64], index: NDArray[np.int64], n: int) -> NDArray[np.float64]:
    """Each clip's mean window score (``index``: the window's clip), NaN for a clip without
    windows."""
    windows = np.bincount(index, minlength=n)
    clip: NDArray[np.float64] = np.bincount(index, scores, n) / np.maximum(windows, 1)
    clip[windows == 0] = np.nan
    return clip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_study_options(ap)
    ap.add_argument("--arms", default="exact,grouped,attentive")
    ap.add_argument("--limit", type=int, default=0, help="smoke test: only every n-th clip")
    ap.add_argument(
        "--scores-out", type=Path, help="per clip: utt_id, label, arm, channel, score (genuine high)"
    )
    ap.add_argument(
        "--deal",
        type=int,
        default=0,
        help="as loso --fold-deal: 0 deals the largest cells first; n > 0 in an order drawn from seed n",
    )
    args = ap.parse_args()
    torch.set_num_threads(2)
    items, labels, durations, keys = study_items(args, args.limit)
    fold_of = partition_folds(keys, args.partitions, args.deal)
    item_fold = np.array([fold_of[k] for k in keys])
    data = {c: extract(items, c, args.cache) for c in CHANNELS}
    written: list[str] = []
    for arm in args.arms.split(","):
        start = time.monotonic()
        mode = {"exact": "pooled", "grouped": "mean", "attentive": "attentive"}[arm]
        arrays = [np.asarray(data[c][1] if arm == "exact" else data[c][0]) for c in CHANNELS]  # into memory
        scores = {c: np.full(len(data[c][2]), np.nan) for c in CHANNELS}
        for fold in sorted(set(item_fold.tolist())):
            held = [item_fold[data[c][2]] == fold for c in CHANNELS]
            train_rows = [np.flatnonzero(~h) for h in held]
            train_y = np.concatenate(
                [labels[data[c][2]][r] for c, r in zip(CHANNELS, train_rows, strict=True)]
            )
            fitted = fit_and_score(
                arrays, train_rows, train_y, [np.flatnonzero(h) for h in held], mode, args.epochs, args.l2
            )
            for c, h, s in zip(CHANNELS, held, fitted, strict=True):
                scores[c][h] = s
            print(f"{arm} {fold}: {time.monotonic() - start:.0f} s", flush=True)
        del arrays
        for c in CHANNELS:
            clip = clip_scores(scores[c], data[c][2], len(items))
            scored = ~np.isnan(clip)
            written += [
                f"{items[i].utt_id},{items[i].label},{arm},{c},{clip[i]:.6f}" for i in np.flatnonzero(scored)
            ]
            row = []
            for min_s in (2.0, 4.0):
                sel = scored & (durations >= min_s)
                eer, _ = compute_eer(clip[sel & (labels == 1)], clip[sel & (labels == 0)])
                row.append(f">= {min_s:g} s {eer:.2%} ({int(sel.sum())} clips)")
            print(f"RESULT {arm:>9} test {c:>9}: " + "  ".join(row), flush=True)
    if args.scores_out:
        args.scores_out.write_text("utt_id,label,arm,channel,score\n" + "".join(f"{w}\n" for w in written))


if __name__ == "__main__":
    main()
