"""How much a window's score depends on the windows batched beside it.

usage: PYTHONPATH=src python research/batch_dependence.py
           [--manifest ../shared/corpus/manifest.csv] [--detector DIR] [--quantization MODE]
           [--clips 40] [--batch 16] [--seed 0]

Scores the streaming windows (the card's window and hop) of dev clips three ways: each
window alone (a batch of one, as a lone caller's worker does), each clip's windows as one
batch (as ``spoofwatch score`` does), and all windows shuffled into batches of ``--batch``
from different clips (as the engine batches several callers). Prints |LLR difference|
against the lone scores (mean, 95th percentile, largest) and how many window decisions
(the card's threshold) flip. With ``int8-all`` the encoder quantises each Linear layer's
input with one scale per batch, so the batch moves the scores; ``int8-window`` and
float32 do not (only float rounding differs).
"""

from __future__ import annotations

import argparse

import numpy as np
from numpy.typing import NDArray

from spoofwatch.audio.files import load_audio
from spoofwatch.model.artifact import load_detector
from spoofwatch.model.detector import Detector
from spoofwatch.stream.core.smoothing import p_spoof_from_llr
from spoofwatch.stream.core.windowing import cut_windows
from spoofwatch.train.clip_scoring import detector_window_config
from spoofwatch.train.corpus import filter_split, read_manifest
from spoofwatch.train.extract import remade_windows


def report(name: str, detector: Detector, scores: NDArray[np.float64], alone: NDArray[np.float64]) -> None:
    delta = np.abs(scores - alone)

    def decision(llrs: NDArray[np.float64]) -> list[str]:
        return [detector.label(p_spoof_from_llr(float(x))) for x in llrs]

    flips = sum(a != b for a, b in zip(decision(scores), decision(alone), strict=True))
    print(
        f"  {name:<34} |dLLR| mean {delta.mean():.4f}  p95 {np.percentile(delta, 95):.4f}  "
        f"max {delta.max():.2e}  decisions flipped {flips} of {len(alone)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", default="../shared/corpus/manifest.csv")
    parser.add_argument("--detector", help="detector directory or packaged name (default: the shipped one)")
    parser.add_argument("--quantization", help="run the card's encoder in another mode (its head unchanged)")
    parser.add_argument("--clips", type=int, default=40, help="dev clips to score (default 40)")
    parser.add_argument("--batch", type=int, default=16, help="mixed batch size (default 16)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    detector = load_detector(args.detector, quantization=args.quantization)
    rng = np.random.default_rng(args.seed)
    items = filter_split(read_manifest(args.manifest), "dev")
    picked = rng.choice(len(items), size=min(args.clips, len(items)), replace=False)
    chosen = [items[i] for i in sorted(picked)]
    config = detector_window_config(detector)
    windows: list[NDArray[np.float32]] = []
    remakes: list[NDArray[np.float32]] = []
    clip_of: list[int] = []
    for index, item in enumerate(chosen):
        samples = load_audio(item.path, detector.sample_rate).samples
        cut = [w.samples for w in cut_windows(samples, config)]
        windows.extend(cut)
        if detector.remake is not None:
            remakes.extend(remade_windows(detector.remake, samples, config))
        clip_of.extend([index] * len(cut))
    all_windows = np.stack(windows)
    all_remakes = np.stack(remakes) if remakes else None
    clips = np.array(clip_of)

    def subset(rows: NDArray[np.int64]) -> NDArray[np.float64]:
        return detector.score_windows(all_windows[rows], None if all_remakes is None else all_remakes[rows])

    n = len(all_windows)
    alone = np.array([subset(np.array([i]))[0] for i in range(n)])
    by_clip = np.empty(n)
    for index in range(len(chosen)):
        rows = np.flatnonzero(clips == index)
        by_clip[rows] = subset(rows)
    order = rng.permutation(n)
    mixed = np.empty(n)
    for start in range(0, n, args.batch):
        rows = order[start : start + args.batch]
        mixed[rows] = subset(rows)
    print(
        f"{detector.card.get('name', args.detector)}: encoder {detector.encoder.identity.name}, "
        f"{len(chosen)} dev clips, {n} windows"
    )
    report("a clip's windows in one batch", detector, by_clip, alone)
    report(f"shuffled batches of {args.batch}", detector, mixed, alone)


if __name__ == "__main__":
    main()
