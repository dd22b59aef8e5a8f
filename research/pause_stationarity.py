"""Experiment (issue 33): can a stationarity test tell a decoder's comfort noise from a
natural pause, so that pause-matched (coloured) comfort noise could be spliced out of the
windows while natural pauses stay in?

A DTX decoder makes comfort noise from a silence descriptor: one level and one spectral
envelope until the next descriptor, so the noise is stationary; a natural pause breathes
(breaths, room tails, lip noise). The test: over 5 consecutive 20 ms frames inside a pause,
the standard deviation of the frames' energy (dB) against what a stationary Gaussian noise
with the frames' mean spectrum would show, 4.34 / sqrt(dof) dB with dof = (sum P)^2 / sum P^2
over the periodogram bins. Comfort noise gives a ratio ``z`` near or below 1; a natural
pause above 1 when it is not stationary. Printed per channel (clean 16 kHz, G.711 at 8 kHz)
for the natural pauses (``pauses``: runs of at least 60 ms 30 dB below the clip's loudest
frame), and for the same pauses filled with comfort noise from their own descriptor
(``matched``: level and order-10 envelope; ``level``: level only, white): the percentiles of
``z`` and the share of 5-frame blocks with ``z`` below 1.5 and 2.

    PYTHONPATH=src python research/pause_stationarity.py --manifest /work/shared/corpus/manifest.csv

About 3 minutes on 2 cores for every third genuine clip of at least 8 s (72 clips).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
from gap_false_alarms import channel_audio  # the same clean and G.711 calls as that study
from numpy.typing import NDArray

from spoofwatch.train.concealment import fill_matched_comfort_noise, pauses

BLOCK = 5  # frames of 20 ms judged together
FRAME_S = 0.02


def stationarity(x: NDArray[np.float32], sr: int, spans: list[tuple[float, float]]) -> NDArray[np.float64]:
    """``z`` of every block of ``BLOCK`` frames wholly inside ``spans`` (NaN for digital zeros)."""
    frame = round(FRAME_S * sr)
    n = len(x) // frame
    power = np.abs(np.fft.rfft(x[: n * frame].reshape(n, frame).astype(np.float64), axis=1)) ** 2
    energy_db = 10 * np.log10(power.sum(1) + 1e-20)
    inside = np.zeros(n, dtype=bool)
    for a, b in spans:
        inside[int(np.ceil(a * sr / frame)) : int(b * sr / frame)] = True
    out = []
    for f in range(BLOCK - 1, n):
        if inside[f - BLOCK + 1 : f + 1].all():
            mean = power[f - BLOCK + 1 : f + 1].mean(0)
            total = mean.sum()
            if total <= 0:
                out.append(np.nan)
                continue
            expected_db = 10 / np.log(10) * np.sqrt((mean**2).sum() / total**2)
            out.append(float(energy_db[f - BLOCK + 1 : f + 1].std() / expected_db))
    return np.array(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--manifest", type=Path, default=Path("/work/shared/corpus/manifest.csv"))
    ap.add_argument("--min-s", type=float, default=8.0)
    ap.add_argument("--every", type=int, default=3, help="every n-th genuine clip")
    args = ap.parse_args()
    with args.manifest.open() as f:
        rows = [
            r for r in csv.DictReader(f) if r["label"] == "bonafide" and float(r["duration_s"]) >= args.min_s
        ][:: args.every]
    found: dict[tuple[str, str], list[NDArray[np.float64]]] = {}
    for row in rows:
        for channel in ("clean", "g711"):
            x, sr = channel_audio(args.manifest.parent / row["path"], channel)
            spans = pauses(x, sr)
            found.setdefault((channel, "natural"), []).append(stationarity(x, sr, spans))
            for kind, order in (("matched", 10), ("level", 0)):
                y = x.copy()
                for a, b in spans:
                    fill_matched_comfort_noise(y, round(a * sr), round(b * sr), sr, order)
                found.setdefault((channel, kind), []).append(stationarity(y, sr, spans))
    print(f"{len(rows)} genuine clips; z of 5-frame blocks inside pauses")
    print(
        f"{'channel':7} {'pause':8} {'blocks':>7} {'z p10':>6} {'p50':>6} {'p90':>6} {'z<1.5':>6} {'z<2':>6}"
    )
    for (channel, kind), parts in found.items():
        z = np.concatenate(parts)
        z = z[~np.isnan(z)]
        p10, p50, p90 = np.percentile(z, [10, 50, 90])
        print(
            f"{channel:7} {kind:8} {len(z):7d} {p10:6.2f} {p50:6.2f} {p90:6.2f} "
            f"{(z < 1.5).mean():6.0%} {(z < 2).mean():6.0%}"
        )


if __name__ == "__main__":
    main()
