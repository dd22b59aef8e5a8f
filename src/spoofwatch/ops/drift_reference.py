"""A detector's drift reference, measured the way the node will measure its input.

Each labelled clip, under each calibration channel, is streamed through a real pipeline on
the detector (same windows, speech gate and scores as served); every scored window's
features are histogrammed per class into the card's ``drift_reference`` section
(``spoofwatch.ops.drift``). Used by ``spoofwatch train`` and by
``scripts/drift_reference.py`` for cards trained before it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from spoofwatch.audio.files import load_audio
from spoofwatch.config import EngineConfig, StreamConfig
from spoofwatch.errors import SpoofwatchError
from spoofwatch.model.scorer import WindowScorer
from spoofwatch.ops.drift import WindowFeatures, reference_section, window_features
from spoofwatch.stream.core.windowing import Window
from spoofwatch.stream.engine.pipeline import Pipeline, StreamHandle
from spoofwatch.train.channel import get_channel

logger = logging.getLogger(__name__)

CHUNK_S = 1.0
CONCURRENT = 8

Clip = tuple[str, str, NDArray[np.float32]]  # (stream id, label, audio at the model rate)


async def stream_features(
    scorer: WindowScorer, clips: Sequence[Clip], hop_s: float = 1.0
) -> tuple[list[WindowFeatures], list[str]]:
    """Each clip streamed through a real pipeline (windows of the scorer's length, ``hop_s``
    apart); every scored window's features and the label of its clip."""
    stream_config = StreamConfig(window_s=scorer.window_samples / scorer.sample_rate, hop_s=hop_s)
    engine = EngineConfig(max_speed=0.0, max_stream_s=0.0, queue_windows=4096, max_streams=CONCURRENT)
    pipeline = Pipeline(scorer, stream_config, engine)
    gate = stream_config.speech_threshold_dbfs
    label_of = {stream_id: label for stream_id, label, _ in clips}
    features: list[WindowFeatures] = []
    labels: list[str] = []

    def observe(stream: StreamHandle, window: Window, score: float, speech: bool) -> None:
        features.append(window_features(window.samples, window.sample_rate, score, speech, gate))
        labels.append(label_of[stream.stream_id])

    pipeline.window_observers.append(observe)
    slots = asyncio.Semaphore(CONCURRENT)
    rate = scorer.sample_rate

    async def one(stream_id: str, audio: NDArray[np.float32]) -> None:
        async with slots:
            handle = pipeline.open_stream(stream_id, source="reference", sample_rate=rate, trusted=True)
            step = round(CHUNK_S * rate)
            for start in range(0, len(audio), step):
                await handle.feed_wait(audio[start : start + step])
            await handle.close()

    worker = asyncio.create_task(pipeline.run(), name="drift-reference")
    try:
        await asyncio.gather(*(one(stream_id, audio) for stream_id, _, audio in clips))
    finally:
        worker.cancel()
    return features, labels


def drift_reference(
    scorer: WindowScorer,
    clips: Sequence[tuple[str, str, Path]],
    channels: Sequence[str],
    source: Mapping[str, Any] | None = None,
    *,
    hop_s: float = 1.0,
) -> dict[str, Any]:
    """The ``drift_reference`` card section of ``clips`` ((id, label, path)) under each of
    ``channels`` (``spoofwatch.train.channel``); clips that cannot be read are left out
    and counted."""
    rate = scorer.sample_rate
    audio: list[Clip] = []
    unreadable = 0
    for utt, label, path in clips:
        try:
            audio.append((utt, label, load_audio(path, rate).samples))
        except SpoofwatchError as exc:
            logger.warning("drift reference: %s left out (%s)", path, exc)
            unreadable += 1
    streams: list[Clip] = []
    for channel in channels:
        transform = get_channel(channel)
        streams += [(f"{channel}:{utt}", label, transform(samples, rate)) for utt, label, samples in audio]
    features, labels = asyncio.run(stream_features(scorer, streams, hop_s))
    about = {
        "clips": {lab: sum(1 for _, x, _ in audio if x == lab) for lab in ("bonafide", "spoof")},
        "clips_unreadable": unreadable,
        "channels": list(channels),
        "path": "each clip streamed through the pipeline (stream defaults), as served",
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        **(source or {}),
    }
    return reference_section(features, labels, source=about)
