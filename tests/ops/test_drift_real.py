"""Drift alarms end to end on the real default detector and the real pipeline: genuine
speech through a low-bitrate codec and G.711 fires drift; the same genuine clips drawn like
the card's reference (dev clips under its calibration channels) move the score and level
less than that."""

from __future__ import annotations

import asyncio
import csv
import json
import random
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from numpy.typing import NDArray

from spoofwatch.audio.files import load_audio
from spoofwatch.config import EngineConfig, StreamConfig
from spoofwatch.events import DriftEvent
from spoofwatch.model.artifact import detector_dir, load_detector
from spoofwatch.model.scorer import WindowScorer
from spoofwatch.ops.drift import DriftMonitor, drift_monitor_for
from spoofwatch.stream.engine.pipeline import Pipeline
from spoofwatch.train.channel import get_channel

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"
CLIPS = 24  # bona fide dev clips, about 80 windows
# The monitor judges once nearly all the windows are in: on these clips the 138-card card's
# score divergence is 0.115 bits after 60 windows and 0.087 after 100 (the 134-card card's:
# 0.068 after 100), so a 60-window estimate is as noisy as the margin under the threshold.
MIN_WINDOWS = 90

pytestmark = [
    pytest.mark.real_weights,
    pytest.mark.slow,
    pytest.mark.skipif(
        not (CORPUS / "manifest.csv").is_file(), reason=f"shared corpus not found at {CORPUS}"
    ),
]

# Two speech codecs at telephone rates, each followed by the G.711 call path.
CODECS = (["-c:a", "libopus", "-b:a", "6k", "-f", "ogg"], ["-c:a", "g723_1", "-b:a", "6300", "-f", "wav"])


def bona_fide_dev_clips(min_s: float) -> list[NDArray[np.float32]]:
    """Bona fide dev clips of at least ``min_s`` seconds (the card's reference was made from
    dev clips of at least its ``dev_min_s``)."""
    with (CORPUS / "manifest.csv").open(newline="") as f:
        rows = [
            r
            for r in csv.DictReader(f)
            if r["split"] == "dev" and r["label"] == "bonafide" and float(r["duration_s"]) >= min_s
        ]
    rows.sort(key=lambda r: r["utt_id"])
    chosen = random.Random(7).sample(rows, CLIPS)
    return [load_audio(CORPUS / r["path"]).samples for r in chosen]


def codec(audio: NDArray[np.float32], args: list[str], work: Path) -> NDArray[np.float32]:
    """``audio`` (16 kHz) through ffmpeg's encoder at 8 kHz and back, then G.711."""
    source, coded, decoded = work / "in.wav", work / "coded", work / "out.wav"
    sf.write(source, audio, 16000)
    run = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-i"]
    subprocess.run([*run, str(source), "-ar", "8000", "-ac", "1", *args, str(coded)], check=True)
    subprocess.run([*run, str(coded), "-ar", "16000", "-ac", "1", str(decoded)], check=True)
    out = load_audio(decoded).samples
    return get_channel("telephone")(out, 16000)


def drift_over(
    detector: WindowScorer, streams: list[NDArray[np.float32]]
) -> tuple[list[DriftEvent], DriftMonitor]:
    """Stream each clip through a real pipeline with the card's drift monitor attached."""

    async def run() -> tuple[list[DriftEvent], DriftMonitor]:
        engine = EngineConfig(drift_min_windows=MIN_WINDOWS, max_speed=0.0)
        pipeline = Pipeline(detector, StreamConfig(), engine)
        monitor = drift_monitor_for(pipeline, engine)
        assert monitor is not None, "the default card should hold a drift reference"
        sub = pipeline.hub.subscribe(maxsize=100_000)
        worker = asyncio.create_task(pipeline.run())
        for n, audio in enumerate(streams):
            handle = pipeline.open_stream(f"call-{n}", source="test", sample_rate=16000)
            for start in range(0, len(audio), 16000):
                await handle.feed_wait(audio[start : start + 16000])
            await handle.close()
        worker.cancel()
        events = []
        while not sub.queue.empty():
            event = sub.queue.get_nowait()
            if isinstance(event, DriftEvent):
                events.append(event)
        return events, monitor

    return asyncio.run(run())


def test_codec_degraded_genuine_speech_fires_drift_and_the_reference_mix_moves_less(tmp_path: Path) -> None:
    detector = load_detector(detector_dir())
    card = json.loads((detector_dir() / "model_card.json").read_text())
    clips = bona_fide_dev_clips(card["training"]["options"].get("dev_min_s", 0.0))
    channels = ["clean", "telephone", "telephone-level"]  # the card's calibration channels
    like_reference = [get_channel(channels[n % 3])(clip, 16000) for n, clip in enumerate(clips)]
    degraded = [codec(clip, CODECS[n % 2], tmp_path) for n, clip in enumerate(clips)]

    calm, calm_monitor = drift_over(detector, like_reference)
    assert calm_monitor.windows >= MIN_WINDOWS
    # The card's reference is mostly the built corpus's dev clips (telephone and room
    # recordings, not here); these studio clips differ from it in speech share alone, so
    # the features the scores depend on must stay calm, and the codec must move more.
    assert calm_monitor.divergence["score"] < EngineConfig().drift_threshold
    assert calm_monitor.divergence["level_dbfs"] < EngineConfig().drift_threshold
    assert all(e.score_divergence < e.threshold and e.level_divergence < e.threshold for e in calm)
    calm_peak = max([e.statistic for e in calm], default=max(calm_monitor.divergence.values()))

    shifted, shifted_monitor = drift_over(detector, degraded)
    assert shifted_monitor.windows >= MIN_WINDOWS
    assert [e.state for e in shifted] == ["on"], f"no drift on codec audio: {shifted_monitor.divergence}"
    assert shifted[0].statistic > shifted[0].threshold == EngineConfig().drift_threshold
    assert max(shifted_monitor.divergence.values()) > calm_peak
    print(f"reference mix: {calm_monitor.divergence}; codec: {shifted_monitor.divergence}")
