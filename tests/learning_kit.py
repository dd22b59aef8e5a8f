"""A tiny world for the learning tests: a random two-layer wav2vec2 on disk, a synthetic
labelled corpus (tones = spoof, white noise = bona fide), a base card trained on it, and
feedback made by scoring new clips with that card."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from fakes import RATE, clip, save_tiny_wav2vec2, write_manifest
from spoofwatch.learning.feedback_store import FeedbackRecord, FeedbackStore
from spoofwatch.model.artifact import load_detector
from spoofwatch.model.identity import card_identity, feature_space
from spoofwatch.stream.core.windowing import WindowConfig, cut_windows
from spoofwatch.train.corpus import LabelledItem
from spoofwatch.train.pipeline import TrainOptions, train_detector


def write_corpus(root: Path) -> list[LabelledItem]:
    root.mkdir(parents=True, exist_ok=True)
    items = []
    for split, n, offset in (("train", 8, 0), ("dev", 6, 100)):
        for i in range(n):
            for label in ("bonafide", "spoof"):
                utt = f"{split}-{label}-{i}"
                path = root / f"{utt}.wav"
                sf.write(path, clip(label, offset + i + (50 if label == "spoof" else 0)), RATE)
                items.append(
                    LabelledItem(path=path, label=label, utt_id=utt, split=split, source=f"s{i % 2}")  # type: ignore[arg-type]
                )
    return items


def train_base(tmp_path: Path, **changes: Any) -> tuple[Path, Path, Path]:
    """(base card, training manifest, dev manifest) of a card trained on the corpus
    (``changes``: other ``TrainOptions``)."""
    model = tmp_path / "tiny-w2v2"
    save_tiny_wav2vec2(model)
    items = write_corpus(tmp_path / "audio")
    train_csv = write_manifest(tmp_path / "train.csv", items)
    dev_csv = write_manifest(tmp_path / "dev.csv", [it for it in items if it.split == "dev"])
    options = TrainOptions(
        encoder=f"hf:{model}",
        window_s=2.0,
        hop_s=1.0,
        train_hop_s=1.0,
        channels=("clean",),
        layers=(0, 1),
        C=1.0,
        name="tiny",
    )
    options = replace(options, **changes)
    train_detector(items, None, tmp_path / "base", options, progress=False)
    return tmp_path / "base", train_csv, dev_csv


def give_feedback(
    card: Path, store_dir: Path, verdicts: Sequence[tuple[str, str, int]], label_of: Callable[[str], str]
) -> list[int]:
    """Score each (stream id, clip kind, seed) with ``card`` and store its windows' features
    with ``label_of(kind)``, as the server does; returns the record ids."""
    detector = load_detector(card)
    identity = card_identity(card)
    space = feature_space(detector.card)
    window = WindowConfig(RATE, detector.settings.window_s, detector.settings.hop_s)
    ids = []
    with FeedbackStore(store_dir) as store:
        for stream_id, kind, seed in verdicts:
            windows = cut_windows(clip(kind, seed), window)
            features = detector.features(np.stack([w.samples for w in windows]))
            record = FeedbackRecord(
                stream_id=stream_id,
                label=label_of(kind),
                features=features,
                detector_name=identity.name,
                detector_sha256=identity.sha256,
                t_start=windows[0].t_start,
                t_end=windows[-1].t_start + detector.settings.window_s,
                note=f"{kind} clip {seed}",
                metadata={"kind": kind},
                feature_space=space,
            )
            ids.append(store.add(record))
    return ids
