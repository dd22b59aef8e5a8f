"""Shared by the spectral-block experiments (phase_frames.py, phase_pooling.py): the shipped
recipe's cached features, extra per-window blocks computed on the same levelled windows,
and leave-one-source-out with those blocks appended to the spectral ones."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from spoofwatch.audio.files import load_audio
from spoofwatch.model.encoders.base import Encoder
from spoofwatch.model.encoders.registry import EncoderSpec, build_encoder
from spoofwatch.model.encoders.weights import cache_root
from spoofwatch.model.level import normalise_level
from spoofwatch.stream.core.windowing import WindowConfig, cut_windows
from spoofwatch.train.channel import get_channel
from spoofwatch.train.corpus import LabelledItem, read_manifest
from spoofwatch.train.extract import EmbeddingSet, extract_with_spectral
from spoofwatch.train.pipeline import feature_encoder
from spoofwatch.train.recipe import load_recipe
from spoofwatch.train.validate import leave_one_source_out

# The shipped recipe, from its one source (src/spoofwatch/model/default/recipe.toml).
RECIPE = load_recipe("default")
LEVEL_DBFS = float(RECIPE["level_dbfs"])
LAYERS = list(RECIPE["layers"])
# Not the recipe's int8-window: every recorded comparison (research/README.md) was made on
# int8-all features, which the embedding cache holds; int8_variants.py compares the two.
HARNESS_QUANTIZATION = "int8-all"
WINDOW = WindowConfig(16000, float(RECIPE["window_s"]), float(RECIPE["train_hop_s"]))
CHANNELS = ("clean", "telephone")  # the channels the experiments report on


def recipe_extractor(
    spectral_kind: str = "lfcc-phase",
    wrap: Callable[[Encoder], Encoder] | None = None,
    spectral: Encoder | None = None,
) -> Callable[[Sequence[LabelledItem], str], EmbeddingSet]:
    """``extract(items, channel)``: Whisper base states ``LAYERS`` (int8-all; passed through
    ``wrap`` when given, which must give the result an identity of its own: it keys the cache) and the
    ``spectral_kind`` block (or the ``spectral`` encoder's, when given) of every levelled
    training window of ``items`` through ``channel``, from the embedding cache (or extracted
    into it). The encoders are built once, here."""
    _, _, whisper = feature_encoder(
        EncoderSpec("whisper-ct2", str(RECIPE["encoder"])), WINDOW.window_s, LAYERS, HARNESS_QUANTIZATION
    )
    if wrap is not None:
        whisper = wrap(whisper)
    if spectral is None:
        spectral = build_encoder(EncoderSpec(spectral_kind, spectral_kind), 4.0)

    def extract(items: Sequence[LabelledItem], channel: str) -> EmbeddingSet:
        return extract_with_spectral(
            list(items), whisper, spectral, WINDOW, channel=channel, level_dbfs=LEVEL_DBFS
        )

    return extract


def cached_sets(manifest: Path, spectral_kind: str) -> dict[str, EmbeddingSet]:
    """The shipped recipe's features (``recipe_extractor``) of every manifest item, per channel."""
    items = read_manifest(manifest)
    extract = recipe_extractor(spectral_kind)
    return {ch: extract(items, ch) for ch in CHANNELS}


def extra_blocks(
    base: EmbeddingSet, channel: str, blocks: Callable[[torch.Tensor], dict[str, torch.Tensor]]
) -> dict[str, np.ndarray]:
    """``blocks(windows)`` for each item's levelled windows, in ``base``'s window order."""
    transform = get_channel(channel)
    out: dict[str, list[np.ndarray]] = {}
    with torch.inference_mode():
        for i, item in enumerate(base.items):
            if not (base.item_index == i).any():
                continue
            samples = transform(load_audio(item.path, 16000).samples, 16000)
            windows = torch.from_numpy(np.stack([w.samples for w in cut_windows(samples, WINDOW)]))
            windows = normalise_level(windows, 16000, LEVEL_DBFS)
            for name, values in blocks(windows).items():
                out.setdefault(name, []).append(values.float().numpy())
    return {name: np.concatenate(parts) for name, parts in out.items()}


def cached_blocks(
    base: EmbeddingSet, channel: str, recipe: str, blocks: Callable[[torch.Tensor], dict[str, torch.Tensor]]
) -> dict[str, np.ndarray]:
    """``extra_blocks`` of ``base`` through ``channel``, kept in the experiment cache under
    ``recipe`` (name and version of what ``blocks`` computes) and the items' paths."""
    key = hashlib.sha256("|".join([recipe, channel, *(str(it.path) for it in base.items)]).encode())
    path = cache_root() / "experiments" / f"{recipe}-{channel}-{key.hexdigest()[:16]}.npz"
    if path.exists():
        with np.load(path) as data:
            return {name: data[name] for name in data.files}
    out = extra_blocks(base, channel, blocks)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **out)
    return out


def with_spectral(
    s: EmbeddingSet, blocks: Sequence[np.ndarray], drop: np.ndarray | None = None
) -> EmbeddingSet:
    """``s`` with ``blocks`` appended to its spectral features, after dropping the ``drop``
    columns (e.g. a block the appended one replaces)."""
    assert s.spectral is not None
    kept = s.spectral if drop is None else np.delete(s.spectral, drop, axis=1)
    return replace(s, spectral=np.concatenate([kept, *blocks], axis=1).astype(s.spectral.dtype))


def print_loso(label: str, sets: dict[str, EmbeddingSet], appended: dict[str, list[np.ndarray]]) -> None:
    """Leave-one-source-out EER, clean and telephone (C 0.001, spectral weight 2, trained on
    both channels), with ``appended[channel]`` after each set's spectral features."""
    chosen = {ch: with_spectral(s, appended[ch]) for ch, s in sets.items()}
    eers = []
    for test in CHANNELS:
        result = leave_one_source_out(
            list(chosen.values()),
            chosen[test],
            LAYERS,
            C=0.001,
            spectral_weight=2.0,
            test_channel=test,
            progress=False,
        )
        eers.append(100 * result.metrics.eer)
    print(f"{label:48s} LOSO clean {eers[0]:5.2f} %  telephone {eers[1]:5.2f} %", flush=True)
