"""Experiment (issues 33 and 28): make every pause look like comfort noise before the
encoder, so that comfort noise in a call's pauses cannot move the score.

What is left of issue 33: genuine calls whose pauses a DTX decoder filled with comfort noise
made from each pause's own descriptor (level and spectral envelope, ``dtx-matched``) alarm a
little more often through G.711 than the same calls without it, and neither training on such
noise nor a stationarity gate fixed it (docs/protocol.md). This front end canonicalises the
pauses instead: in every levelled 4 s window, the runs that ``train.concealment.pauses``
finds (at least 60 ms more than 30 dB below the window's loudest 20 ms frame) are replaced by
noise made from that run's own level and order-10 envelope, exactly as a silence descriptor
would make it. A natural pause and a pause a decoder already filled then reach the encoder
alike; what the head loses is what the pauses held beyond their level and colour (breaths,
room tails), and leave-one-family-out says what that costs.

Arms, both the ``exact`` arm of ``attentive_pooling.py`` (mean+std over all 200 frames of
Whisper base's hidden states 0-4, int8, level -26 dBFS; a logistic output trained in torch,
clean and telephone channels, leave-one-family-out as ``loso --fold-by family
--fold-partitions 8`` deals it): ``plain`` (its cached features) and ``canon`` (the same
with the pauses canonicalised, in training and test). Reported per deal: pooled EER per
channel for clips of at least 2 s and 4 s; and, on every ``--probe-every``-th genuine clip of
at least 8 s, through G.711 at 8 kHz with and without ``dtx-matched`` holes (made as
``research/gap_false_alarms.py`` makes them), scored by the fold that never saw the clip: the
mean score shift and the share flagged at the pooled telephone EER threshold.

    PYTHONPATH=src python research/pause_canon.py \\
        --manifest /tmp/half/manifest.csv --manifest /tmp/half/dev-families.csv --deals 0,1,2

About 12 minutes of extraction per channel on 2 idle cores for that half (13,876 clips of at
least 2 s) plus the probe clips, then about a minute of fitting per arm and deal.
"""

from __future__ import annotations

import argparse
import hashlib
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from attentive_pooling import (  # the exact arm, as measured there
    CHANNELS,
    LAYERS,
    LEVEL_DBFS,
    add_study_options,
    clip_scores,
    fit_and_score,
    study_items,
)
from attentive_pooling import extract as extract_plain
from gap_false_alarms import channel_audio, make_call  # the same G.711 calls and holes as that study
from numpy.typing import NDArray

from spoofwatch.audio.files import load_audio
from spoofwatch.audio.resample import resample
from spoofwatch.model.encoders.registry import EncoderSpec
from spoofwatch.model.level import levelled_pair
from spoofwatch.stream.core.windowing import WindowConfig, cut_windows
from spoofwatch.train.channel import get_channel
from spoofwatch.train.concealment import fill_matched_comfort_noise, pauses
from spoofwatch.train.corpus import LabelledItem
from spoofwatch.train.metrics import compute_eer
from spoofwatch.train.pipeline import feature_encoder
from spoofwatch.train.validate import partition_folds

RATE = 16000
WINDOW = WindowConfig(RATE, 4.0, 2.0)


def canonicalise(window: NDArray[np.float32]) -> NDArray[np.float32]:
    """The window with every pause replaced by noise from its own level and envelope
    (seeded by where the pause starts, so the same window always gives the same samples)."""
    out = window.copy()
    for a, b in pauses(window, RATE):
        i, j = round(a * RATE), round(b * RATE)
        fill_matched_comfort_noise(out, i, j, RATE)
    return out


def pooled_windows(encoder: object, audio: NDArray[np.float32], canon: bool) -> NDArray[np.float32] | None:
    """Exact mean+std of hidden states 0-4 of every window, (windows, 5120), or None."""
    wins = cut_windows(audio, WINDOW)
    if not wins:
        return None
    x, _ = levelled_pair(torch.from_numpy(np.stack([w.samples for w in wins])), None, RATE, LEVEL_DBFS)
    if canon:
        x = torch.from_numpy(np.stack([canonicalise(w) for w in x.numpy()]))
    states = [h.float() for h in encoder.hidden_states(x)][: len(LAYERS)]  # type: ignore[attr-defined]
    stacked = torch.cat(states, dim=-1)
    pooled: NDArray[np.float32] = torch.cat([stacked.mean(1), stacked.std(1)], 1).numpy()
    return pooled


def extract(
    items: list[LabelledItem],
    name: str,
    audio_of: Callable[[LabelledItem], NDArray[np.float32]],
    canon: bool,
    cache: Path,
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Per window of every item: exact pooled features and the item's index; cached."""
    tag = hashlib.sha1("|".join(str(it.path) for it in items).encode()).hexdigest()[:10]
    path = cache / f"canon-{tag}-{name}{'-canon' if canon else ''}.npz"
    if path.is_file():
        with np.load(path) as data:
            return data["exact"], data["item_index"]
    _, _, encoder = feature_encoder(EncoderSpec("whisper-ct2", "whisper-base"), 4.0, LAYERS, "int8-window")
    feats: list[NDArray[np.float32]] = []
    index: list[NDArray[np.int64]] = []
    start = time.monotonic()
    with torch.inference_mode():
        for i, item in enumerate(items):
            pooled = pooled_windows(encoder, audio_of(item), canon)
            if pooled is not None:
                feats.append(pooled)
                index.append(np.full(len(pooled), i, dtype=np.int64))
            if i % 500 == 0:
                print(
                    f"extract {name} canon={canon}: {i}/{len(items)}, {time.monotonic() - start:.0f} s",
                    flush=True,
                )
    exact, item_index = np.concatenate(feats), np.concatenate(index)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, exact=exact, item_index=item_index)
    tmp.replace(path)
    return exact, item_index


def training_audio(channel: str) -> Callable[[LabelledItem], NDArray[np.float32]]:
    transform = get_channel(channel)
    return lambda item: transform(load_audio(item.path, RATE).samples, RATE)


def probe_audio(hole: str) -> Callable[[LabelledItem], NDArray[np.float32]]:
    """G.711 at 8 kHz, the hole made after the codec, brought back to 16 kHz as the
    detector's resampler does."""

    def audio(item: LabelledItem) -> NDArray[np.float32]:
        narrow, sr = channel_audio(item.path, "g711")
        call = make_call(narrow, sr, hole)
        (piece,) = call.pieces
        assert piece.audio is not None
        return resample(piece.audio, sr, RATE)

    return audio


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_study_options(ap)
    ap.add_argument("--deals", default="0", help="comma-separated fold deals (as loso --fold-deal)")
    ap.add_argument("--arms", default="plain,canon")
    ap.add_argument("--probe-every", type=int, default=8, help="every n-th genuine clip of >= 8 s is probed")
    args = ap.parse_args()
    torch.set_num_threads(2)
    items, labels, durations, keys = study_items(args)
    n = len(items)
    probe = [i for i in np.flatnonzero((labels == 1) & (durations >= 8.0))][:: args.probe_every]
    probe_items = [items[i] for i in probe]
    print(f"{n} clips; probe: {len(probe)} genuine clips of >= 8 s", flush=True)
    for arm in args.arms.split(","):
        canon = arm == "canon"
        if canon:
            train = [extract(items, c, training_audio(c), True, args.cache) for c in CHANNELS]
        else:
            plain = {c: extract_plain(items, c, args.cache) for c in CHANNELS}
            train = [(np.asarray(plain[c][1]), plain[c][2]) for c in CHANNELS]
        probes = [
            extract(probe_items, f"probe-{hole}", probe_audio(hole), canon, args.cache)
            for hole in ("none", "dtx-matched")
        ]
        # probe rows point at the corpus item list
        probes = [(f, np.asarray(probe)[i]) for f, i in probes]
        arrays = [f for f, _ in train] + [f for f, _ in probes]
        indexes = [i for _, i in train] + [i for _, i in probes]
        for deal in (int(d) for d in args.deals.split(",")):
            fold_of = partition_folds(keys, args.partitions, deal)
            item_fold = np.array([fold_of[k] for k in keys])
            scores = [np.full(len(i), np.nan) for i in indexes]
            start = time.monotonic()
            for fold in sorted(set(item_fold.tolist())):
                held = [item_fold[i] == fold for i in indexes]
                train_rows = [np.flatnonzero(~h) for h in held[: len(CHANNELS)]]
                train_rows += [np.zeros(0, dtype=np.int64) for _ in probes]  # probes only score
                train_y = np.concatenate(
                    [labels[indexes[c]][r] for c, r in enumerate(train_rows[: len(CHANNELS)])]
                )
                fitted = fit_and_score(
                    arrays,
                    train_rows,
                    train_y,
                    [np.flatnonzero(h) for h in held],
                    "pooled",
                    args.epochs,
                    args.l2,
                )
                for c, (h, s) in enumerate(zip(held, fitted, strict=True)):
                    scores[c][h] = s
            clips = [clip_scores(s, i, n) for s, i in zip(scores, indexes, strict=True)]
            for c, channel in enumerate(CHANNELS):
                row = []
                for min_s in (2.0, 4.0):
                    sel = ~np.isnan(clips[c]) & (durations >= min_s)
                    eer, _ = compute_eer(clips[c][sel & (labels == 1)], clips[c][sel & (labels == 0)])
                    row.append(f">= {min_s:g} s {eer:.2%} ({int(sel.sum())})")
                print(f"RESULT {arm:>5} deal {deal} {channel:>9}: " + "  ".join(row), flush=True)
            tel = clips[CHANNELS.index("telephone")]
            sel = ~np.isnan(tel)
            _, threshold = compute_eer(tel[sel & (labels == 1)], tel[sel & (labels == 0)])
            none, holed = clips[len(CHANNELS)][probe], clips[len(CHANNELS) + 1][probe]
            ok = ~np.isnan(none) & ~np.isnan(holed)
            shift = holed[ok] - none[ok]  # genuine high: negative is toward spoof
            print(
                f"PROBE  {arm:>5} deal {deal}: {int(ok.sum())} genuine G.711 clips; flagged "
                f"none {np.mean(none[ok] < threshold):.1%}, "
                f"dtx-matched {np.mean(holed[ok] < threshold):.1%}; "
                f"score shift mean {shift.mean():+.3f} (sd {shift.std():.3f}, toward spoof in "
                f"{np.mean(shift < 0):.0%}); fit {time.monotonic() - start:.0f} s",
                flush=True,
            )


if __name__ == "__main__":
    main()
