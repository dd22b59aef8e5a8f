"""Experiment (issue 28): does a pretrained spoofing countermeasure see what the card misses?

AASIST (Jung et al., ICASSP 2022; github:clovaai/aasist @ a04c9863, MIT, whose repository
holds its weights, trained on ASVspoof 2019 LA) is the reference design's end-to-end
raw-waveform detector. Trained on 2019's generators only, it is not expected to be good
alone on today's fakes; the question is whether its view adds to the frozen Whisper head
(fused as a feature block or a score), and whether it is affordable in a stream.

A random sample of the clips of at least 4 s that ``attentive_pooling.py``'s ``exact`` arm
scored leave-one-family-out (its ``--scores-out`` file, deal 0) is scored by AASIST and
AASIST-L on each clip's first 64,600 samples (AASIST's input; shorter clips repeated, as its
evaluation does), raw (AASIST was trained on unlevelled audio), clean and through the
telephone channel (G.711 at 8 kHz, back to 16 kHz). Printed: each model's own EER, the
exact arm's EER on the same clips, a fusion of the two z-normalised scores with the
weight that is best on the sample (an optimistic bound for any fusion), and the time per
window.

    git clone --bare https://github.com/clovaai/aasist A.git   # or the project's origin mirror
    mkdir A && git --git-dir=A.git archive a04c9863f63d44471dde8a6abcb3b082b07cd1d1 | tar x -C A
    PYTHONPATH=src python research/aasist_probe.py --aasist A --scores EXACT_SCORES.csv \\
        --manifest $BUILT/manifest.csv --manifest DEV_FAMILIES.csv --per-class 300
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray

from spoofwatch.audio.files import load_audio
from spoofwatch.train.channel import get_channel
from spoofwatch.train.corpus import item_duration_s, read_manifest
from spoofwatch.train.metrics import compute_eer

SAMPLES = 64600


def load_models(root: Path) -> dict[str, torch.nn.Module]:
    sys.path.insert(0, str(root))
    from models.AASIST import Model  # type: ignore[import-not-found]  # the snapshot's own code

    models = {}
    for name in ("AASIST", "AASIST-L"):
        conf = json.loads((root / "config" / f"{name}.conf").read_text())["model_config"]
        model = Model(conf)
        model.load_state_dict(torch.load(root / "models" / "weights" / f"{name}.pth", map_location="cpu"))
        models[name] = model.eval()
    return models


def first_input(audio: NDArray[np.float32]) -> NDArray[np.float32]:
    reps = SAMPLES // max(len(audio), 1) + 1
    return np.tile(audio, reps)[:SAMPLES].astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--aasist", type=Path, required=True, help="a work tree of github:clovaai/aasist")
    ap.add_argument("--scores", type=Path, required=True, help="attentive_pooling.py --scores-out file")
    ap.add_argument("--manifest", action="append", required=True)
    ap.add_argument("--per-class", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(2)
    items = {it.utt_id: it for m in args.manifest for it in read_manifest(m)}
    exact: dict[tuple[str, str], float] = {}
    with args.scores.open() as f:
        for row in csv.DictReader(f):
            if row["arm"] == "exact":
                exact[(row["utt_id"], row["channel"])] = float(row["score"])
    rng = np.random.default_rng(args.seed)
    pool = sorted({u for u, _ in exact if u in items and item_duration_s(items[u]) >= 4.0})
    picked = []
    for label in ("bonafide", "spoof"):
        ids = [u for u in pool if items[u].label == label]
        picked += [ids[i] for i in rng.choice(len(ids), min(args.per_class, len(ids)), replace=False)]
    labels = np.array([items[u].label == "bonafide" for u in picked])
    models = load_models(args.aasist)
    for channel in ("clean", "telephone"):
        transform = get_channel(channel)
        batch = np.stack(
            [first_input(transform(load_audio(items[u].path, 16000).samples, 16000)) for u in picked]
        )
        ours = np.array([exact[(u, channel)] for u in picked])
        eer, _ = compute_eer(ours[labels], ours[~labels])
        print(f"{channel}: {len(picked)} clips; exact arm (LOFO) EER {eer:.2%}", flush=True)
        for name, model in models.items():
            start = time.process_time()
            with torch.inference_mode():
                out = torch.cat(
                    [model(torch.from_numpy(b))[1] for b in np.array_split(batch, len(batch) // 16)]
                )
            per_window = (time.process_time() - start) / len(batch) * 1000
            theirs = (out[:, 1] - out[:, 0]).double().numpy()  # bona fide high
            own, _ = compute_eer(theirs[labels], theirs[~labels])
            z = [(s - s.mean()) / s.std() for s in (ours, theirs)]
            fused = min(
                (compute_eer(f[labels], f[~labels])[0], w)
                for w in np.linspace(0, 1, 21)
                for f in [(1 - w) * z[0] + w * z[1]]
            )
            print(
                f"  {name}: EER {own:.2%}; best fusion {fused[0]:.2%} at weight {fused[1]:.2f}; "
                f"{per_window:.0f} ms CPU per window",
                flush=True,
            )


if __name__ == "__main__":
    main()
