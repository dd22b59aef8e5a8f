"""Which Linear layers can be int8 without losing dev accuracy? (docs/benchmarks.md)

Quantises copies of a float32 detector's encoder with different sets of Linear layers
dynamic int8, applies that detector's float32 head to their features, scores the dev split
of ../shared/corpus on the clean and the telephone channel (features extracted without the
cache, since the variants share an identity), and prints clip EER, actDCF and encoder ms
per window on one thread. The figures in docs/benchmarks.md came from the float32 card
shipped before the int8-all one, which this reproduces:

    bash scripts/train_default.sh --quantization none --C 0.01 --out /tmp/fp32-card
    .venv/bin/python research/int8_variants.py --detector /tmp/fp32-card [--corpus ../shared/corpus]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from spoofwatch.model.artifact import load_detector
from spoofwatch.model.encoders.base import EncoderIdentity
from spoofwatch.model.quantize import quantize_linear_int8
from spoofwatch.stream.core.windowing import WindowConfig
from spoofwatch.train.corpus import filter_split, read_manifest
from spoofwatch.train.extract import extract
from spoofwatch.train.fit import clip_llrs
from spoofwatch.train.metrics import act_dcf, compute_eer


class QuantisedCopy:
    """An encoder whose named Linear layers are dynamic int8."""

    def __init__(
        self, source: torch.nn.Module, identity: EncoderIdentity, window_samples: int, names: list[str]
    ) -> None:
        self.module = quantize_linear_int8(source, names)
        self.identity = identity
        self.window_samples = window_samples

    def hidden_states(self, windows: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.module.hidden_states(windows)  # type: ignore[no-any-return, operator]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="../shared/corpus")
    parser.add_argument("--detector", required=True, help="a detector trained with --quantization none")
    args = parser.parse_args()
    torch.set_num_threads(1)
    dev = filter_split(read_manifest(Path(args.corpus) / "manifest.csv"), "dev")
    # The variants quantise the float32 modules themselves, so the encoder must run unquantised.
    detector = load_detector(args.detector, quantization="none")
    assert detector.spectral is not None
    window = WindowConfig(detector.sample_rate, detector.settings.window_s, detector.settings.hop_s)
    is_bona = np.array([it.label == "bonafide" for it in dev])
    linear = [n for n, m in detector.encoder.named_modules() if type(m) is torch.nn.Linear]  # type: ignore[attr-defined]
    variants = {
        "fc1 only": [n for n in linear if n.endswith(".fc1")],
        "q/k/v + fc1": [n for n in linear if n.endswith((".fc1", ".q_proj", ".k_proj", ".v_proj"))],
        "all but fc2 (int8)": [n for n in linear if not n.endswith(".fc2")],
    }
    probe = torch.randn(1, detector.window_samples) * 0.1
    for name, names in variants.items():
        encoder = QuantisedCopy(
            detector.encoder,
            detector.encoder.identity,  # type: ignore[arg-type]
            detector.window_samples,
            names,
        )
        with torch.inference_mode():
            encoder.hidden_states(probe)
            start = time.perf_counter()
            for _ in range(10):
                encoder.hidden_states(probe)
            ms = (time.perf_counter() - start) * 100
        parts = [f"{name}: {ms:.0f} ms/window"]
        for channel in ("clean", "telephone"):
            main_set = extract(dev, encoder, window, channel=channel, progress=False, cache=False)
            spectral = extract(dev, detector.spectral, window, channel=channel, progress=False)
            features = main_set.with_spectral(spectral)
            clip = clip_llrs(
                features, detector.score_features(features.select_layers(detector.settings.layers))
            )
            bona, spoof = clip[is_bona], clip[~is_bona]
            parts.append(
                f"{channel} EER {compute_eer(bona, spoof)[0] * 100:.2f} % actDCF {act_dcf(bona, spoof):.3f}"
            )
        print(" | ".join(parts), flush=True)


if __name__ == "__main__":
    main()
