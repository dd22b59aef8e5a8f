"""Experiment (README, Accuracy): classic voice-quality measures beside the shipped features.
Praat (through parselmouth, its maintained Python binding) measures how irregular each
glottal cycle is: jitter (cycle-to-cycle period change: local, RAP, PPQ5), shimmer (the same
for amplitude: local, APQ3, APQ5, dB) and the harmonics-to-noise ratio (mean and std over
10 ms frames), with the voiced share of the window and the spread of its pitch in
semitones. Synthetic voices are often more regular than a human larynx, and none of these
reads the recording's coloration or level (each levelled window; the pitch's own height is
left out, since it names a speaker rather than a generator). Two blocks beside the shipped
spectral block under the shipped recipe (FARGAN copies through the clean channel, clean +
telephone + augmented training, Asterisk sources as one fold):
- all eleven measures (jitter and shimmer as logarithms);
- jitter and shimmer only (seven).

A window Praat finds no voice in gets fixed fill values, and its voiced share (0) says so.

    .venv/bin/pip install praat-parselmouth==0.4.7
    PYTHONPATH=src python research/voice_quality.py --manifest ../shared/corpus/manifest.csv
"""

from __future__ import annotations

import numpy as np
import torch
from copies_grouped import block_variants, compare_variants, recipe_parser, shipped_blocks

try:
    import parselmouth
    from parselmouth.praat import call
except ImportError:  # main() says how to install it; --help works without it
    parselmouth = None

VERSION = 1
SAMPLE_RATE = 16000
PITCH_FLOOR_HZ, PITCH_CEILING_HZ = 75.0, 500.0
# Praat's defaults for jitter and shimmer: shortest and longest period, largest period
# factor, largest amplitude factor.
PERIODS = (0.0001, 0.02, 1.3)
# Where Praat measures nothing (no voiced cycles): log jitter and shimmer of about 2 % and
# 10 %, an HNR of 0 dB, no pitch spread.
FILL = np.array([0.0, 0.0, -4.0, -4.5, -4.5, -2.3, -3.0, -2.8, 0.0, 0.0, 0.0])
JITTER_SHIMMER = slice(2, 9)


def measures(window: np.ndarray) -> np.ndarray:
    """The eleven measures of one window (NaN where Praat finds nothing to measure)."""
    sound = parselmouth.Sound(window.astype(np.float64), SAMPLE_RATE)
    pitch = sound.to_pitch_cc(time_step=0.01, pitch_floor=PITCH_FLOOR_HZ, pitch_ceiling=PITCH_CEILING_HZ)
    f0 = pitch.selected_array["frequency"]
    voiced = f0 > 0
    spread = float(np.std(12 * np.log2(f0[voiced]))) if voiced.sum() > 1 else np.nan
    cycles = call([sound, pitch], "To PointProcess (cc)")
    jitter = [call(cycles, f"Get jitter ({k})", 0, 0, *PERIODS) for k in ("local", "rap", "ppq5")]
    shimmer = [
        call([sound, cycles], f"Get shimmer ({k})", 0, 0, *PERIODS, 1.6)
        for k in ("local", "apq3", "apq5", "local_dB")
    ]
    hnr = sound.to_harmonicity_cc(0.01, PITCH_FLOOR_HZ, 0.1, 1.0).values.ravel()
    hnr = hnr[hnr > -199]  # Praat marks unvoiced frames -200
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.log(np.array(jitter + shimmer, dtype=np.float64))
    hnr_stats = [hnr.mean(), hnr.std()] if hnr.size else [np.nan, np.nan]
    return np.array([voiced.mean(), spread, *logs, *hnr_stats])


def candidates(windows: torch.Tensor) -> dict[str, torch.Tensor]:
    rows = np.stack([measures(w) for w in windows.double().numpy()])
    rows = np.where(np.isfinite(rows), rows, FILL)
    values = torch.from_numpy(rows)
    return {"all eleven": values, "jitter and shimmer": values[:, JITTER_SHIMMER]}


def main() -> None:
    args = recipe_parser(__doc__).parse_args()
    if parselmouth is None:
        raise SystemExit("parselmouth is not installed: .venv/bin/pip install praat-parselmouth==0.4.7")
    found = shipped_blocks(args.manifest, args.copies, f"praat-voice-quality-v{VERSION}", candidates)
    names = ("all eleven", "jitter and shimmer")
    chosen = {"shipped": [], **{f"+ voice quality, {name}": [name] for name in names}}
    compare_variants(block_variants(*found, chosen))


if __name__ == "__main__":
    main()
