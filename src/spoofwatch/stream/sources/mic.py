"""Microphone source: PortAudio (via sounddevice) capture into the pipeline as one stream.

PortAudio calls back on its own thread with each block. The callback copies the block and
hands it to the event loop with ``call_soon_threadsafe``; on the loop it goes into a
bounded queue whose drop policy is ``DROP_OLDEST_BLOCK`` (counted), so a stalled loop
costs old audio, never memory. Capture runs at the device's own rate unless one is asked
for; the pipeline resamples.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from spoofwatch.audio.pcm import check_sample_rate
from spoofwatch.errors import AudioError, ConfigError
from spoofwatch.stream.engine.pipeline import Pipeline
from spoofwatch.stream.sources.file import close_interrupted

logger = logging.getLogger(__name__)

DROP_OLDEST_BLOCK: Final = "drop-oldest-block"
# Blocks buffered between the PortAudio thread and the event loop, in seconds of audio.
QUEUE_SECONDS: Final = 2.0
STOP_TIMEOUT_S: Final = 3.0


@dataclass
class MicCounters:
    blocks: int = 0
    dropped_blocks: int = 0
    overflows: int = 0
    lost_samples: int = 0  # overruns and dropped blocks, reported to the stream as gaps


@dataclass
class Block:
    """A captured block and the samples lost just before it (an overrun, a dropped block)."""

    samples: NDArray[np.float32]
    lost_before: int = 0


def drop_oldest(queue: asyncio.Queue[Block | None]) -> int:
    """Make room in a full queue: drop the oldest block; its samples (and the loss before
    it) become loss before the block now oldest. Returns what is left to carry: the loss,
    when no block remains in the queue to take it."""
    dropped = queue.get_nowait()
    lost = 0 if dropped is None else dropped.lost_before + len(dropped.samples)
    rest = [queue.get_nowait() for _ in range(queue.qsize())]
    if rest and rest[0] is not None:
        rest[0].lost_before += lost
        lost = 0
    for item in rest:
        queue.put_nowait(item)
    return lost


@dataclass(frozen=True)
class InputDevice:
    index: int
    name: str
    default_sample_rate: int


def _sounddevice() -> ModuleType:
    """Import sounddevice lazily: it loads PortAudio at import and fails without it."""
    try:
        import sounddevice as module
    except OSError as exc:
        raise AudioError(
            f"microphone capture: expected the PortAudio library (Debian/Ubuntu: apt-get install "
            f"libportaudio2), found it missing: {exc}"
        ) from None
    sounddevice: ModuleType = module
    return sounddevice


def list_input_devices() -> list[str]:
    """Names of the input devices PortAudio sees now (``index: name``)."""
    sd = _sounddevice()
    return [
        f"{info['index']}: {info['name']}" for info in sd.query_devices() if info["max_input_channels"] > 0
    ]


def find_input_device(device: str | int | None) -> InputDevice:
    """Resolve an index, a (sub)name or None (the default input) to an input device."""
    sd = _sounddevice()
    wanted: str | int | None = int(device) if isinstance(device, str) and device.isdigit() else device
    try:
        info: Any = sd.query_devices(wanted, "input")
    except (ValueError, sd.PortAudioError) as exc:
        available = list_input_devices()
        listing = "; ".join(available) if available else "none (is a sound server or card present?)"
        asked = "the default input device" if device is None else f"input device {device!r}"
        raise ConfigError(
            f"microphone: expected {asked}, found none ({exc}); available input devices: {listing}"
        ) from None
    rate = check_sample_rate(round(float(info["default_samplerate"])), name="device sample rate")
    return InputDevice(int(info["index"]), str(info["name"]), rate)


async def run_mic_source(
    pipeline: Pipeline,
    device: str | int | None = None,
    *,
    stream_id: str = "mic",
    sample_rate: int | None = None,
    block_s: float = 0.05,
) -> None:
    """Capture ``device`` (index, name or None for the default) as stream ``stream_id``
    until cancelled, then stop capture and close the stream."""
    if not (math.isfinite(block_s) and 0 < block_s <= 1.0):
        raise ConfigError(f"block_s: expected seconds in (0, 1], found {block_s!r}")
    sd = _sounddevice()
    found = find_input_device(device)
    rate = (
        found.default_sample_rate
        if sample_rate is None
        else check_sample_rate(sample_rate, name="microphone sample rate")
    )
    block = max(1, round(block_s * rate))
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Block | None] = asyncio.Queue(maxsize=max(4, math.ceil(QUEUE_SECONDS / block_s)))
    counters = MicCounters()

    def offer(item: Block | None) -> None:  # on the loop thread
        if queue.full():
            lost = drop_oldest(queue)
            counters.dropped_blocks += 1
            if item is not None:
                item.lost_before += lost
        queue.put_nowait(item)

    def hand_over(item: Block | None) -> None:  # on PortAudio's thread
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody listens any more
            loop.call_soon_threadsafe(offer, item)

    def on_block(indata: NDArray[np.float32], frames: int, time: Any, status: Any) -> None:
        if status.input_overflow:
            counters.overflows += 1
        # How much an overflow lost is unknown: PortAudio's ADC times cannot tell (through
        # PulseAudio's ALSA plugin they jump by seconds with its buffering, not with loss),
        # so one block is counted; the audio either side is spliced, never filled.
        lost = frames if status.input_overflow else 0
        hand_over(Block(indata[:, 0].copy(), lost))  # PortAudio reuses indata after we return

    try:
        stream = sd.InputStream(
            device=found.index,
            samplerate=rate,
            channels=1,
            dtype="float32",
            blocksize=block,
            callback=on_block,
            finished_callback=lambda: hand_over(None),
        )
    except (sd.PortAudioError, ValueError) as exc:
        raise AudioError(
            f"microphone {found.name!r}: expected to open it for 1-channel capture at {rate} Hz, found: {exc}"
        ) from None
    try:
        handle = pipeline.open_stream(stream_id, source=f"mic:{found.name}", sample_rate=rate, trusted=True)
    except BaseException:
        stream.close()
        raise
    try:
        try:
            stream.start()
        except sd.PortAudioError as exc:
            raise AudioError(f"microphone {found.name!r}: expected capture to start, found: {exc}") from None
        while (captured := await queue.get()) is not None:
            counters.blocks += 1
            if captured.lost_before:  # no window is scored across the hole (docs/protocol.md)
                counters.lost_samples += captured.lost_before
                handle.gap(captured.lost_before / rate, "overrun")
            handle.feed(captured.samples)
        raise AudioError(f"microphone {found.name!r}: expected audio until stopped, found capture ended")
    except BaseException as exc:
        await _stop(stream, found.name)
        logger.info(
            "microphone %r stopped: %d blocks, %d dropped (%s), %d input overflows, %.2f s lost as gaps",
            found.name,
            counters.blocks,
            counters.dropped_blocks,
            DROP_OLDEST_BLOCK,
            counters.overflows,
            counters.lost_samples / rate,
        )
        await close_interrupted(handle, exc)
        raise


async def _stop(stream: Any, name: str) -> None:
    """Stop and close capture off the loop; PortAudio can block here when a device stalls."""

    def stop_and_close() -> None:
        try:
            stream.stop()
            stream.close()
        except Exception as exc:  # already stopping; a failure here must not mask why
            logger.warning("microphone %r: error while stopping capture: %s", name, exc)

    try:
        async with asyncio.timeout(STOP_TIMEOUT_S):
            await asyncio.to_thread(stop_and_close)
    except TimeoutError:
        logger.warning("microphone %r did not stop within %.0f s; abandoning it", name, STOP_TIMEOUT_S)
