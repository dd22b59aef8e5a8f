"""Speed perturbation (Ko et al., Interspeech 2015: the clip resampled as if played 10 %
slower or faster, so tempo, pitch and formants move together) as a fourth training channel
beside the shipped card's clean, telephone and augmented ones, both classes alike, the
factor (0.9 or 1.1) drawn per clip from its samples. For the spoofs it also moves a
vocoder's artefacts (upsampling tones, frame-rate periodicity) to other frequencies, so the
head cannot tie them to the exact frequencies of the training generators; for the bona fide
clips it adds voices. Leave-one-source-out under the Asterisk grouping on the clean,
telephone and augmented test channels, with the fold bootstrap against the shipped recipe.

    PYTHONPATH=src python research/speed_channel.py --manifest ../shared/corpus/manifest.csv

About 20 minutes on 2 cores with the shipped channels' embeddings cached. Result (2026-11-27): not
adopted (clean 17.40 -> 18.16 %, telephone 19.34 -> 18.70 %, augmented 25.33 -> 26.34 %; README).
"""

from __future__ import annotations

import zlib

import numpy as np
from copies_grouped import compare_fourth_channel
from numpy.typing import NDArray
from scipy.signal import resample_poly

# (up, down) of the polyphase resampler: 10/9 plays the clip 10 % slower, 10/11 10 % faster.
FACTORS = ((10, 9), (10, 11))


def speed_perturb(samples: NDArray[np.float32], sample_rate: int) -> NDArray[np.float32]:
    rng = np.random.default_rng(zlib.crc32(np.ascontiguousarray(samples).tobytes()) ^ 0x53504544)
    up, down = FACTORS[int(rng.integers(len(FACTORS)))]
    y = resample_poly(samples.astype(np.float64), up, down)
    return np.clip(y, -1.0, 1.0).astype(np.float32)


if __name__ == "__main__":
    compare_fourth_channel(__doc__, "speed", speed_perturb)
