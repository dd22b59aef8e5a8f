"""``spoofwatch listen``: live microphone alert in the terminal.

Runs the microphone source and prints one line per score (stream time, smoothed spoof
probability as a bar, speech or quiet) and a loud ALARM line when the alarm turns on or
off. Output goes to the ``out`` text stream the caller hands in; this is the terminal
front end, not library logging.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Final, TextIO

from spoofwatch.events import AlarmEvent, ErrorEvent, Event, GapEvent, ScoreEvent, StreamEvent
from spoofwatch.stream.engine.hub import Subscription
from spoofwatch.stream.engine.pipeline import Pipeline
from spoofwatch.stream.sources.mic import run_mic_source

_RED: Final = "\033[1;31m"
_GREEN: Final = "\033[1;32m"
_RESET: Final = "\033[0m"
_BELL: Final = "\a"


def probability_bar(p: float, width: int) -> str:
    filled = min(width, max(0, round(p * width)))
    return "[" + "#" * filled + "." * (width - filled) + "]"


def format_event(event: Event, *, bar_width: int = 30, color: bool = False) -> str | None:
    """The terminal line for one event, or None for events the terminal does not show."""
    if isinstance(event, ScoreEvent):
        flag = "speech" if event.speech else "quiet"
        bar = probability_bar(event.smoothed, bar_width)
        return f"{event.t_end:8.1f} s  spoof {bar} {event.smoothed:4.2f}  {flag}"
    if isinstance(event, AlarmEvent):
        if event.state == "on":
            line = (
                f"*** ALARM ON: synthetic voice suspected on {event.stream} at {event.t:.1f} s "
                f"(p_spoof {event.p_spoof:.2f}) ***"
            )
            return f"{_BELL}{_RED}{line}{_RESET}" if color else line
        line = f"*** ALARM OFF: {event.stream} at {event.t:.1f} s (p_spoof {event.p_spoof:.2f}) ***"
        return f"{_GREEN}{line}{_RESET}" if color else line
    if isinstance(event, StreamEvent):
        if event.state == "start":
            return f"listening on {event.source} ({event.sample_rate} Hz); Ctrl-C to stop"
        return f"stopped listening on {event.source}"
    if isinstance(event, GapEvent):
        return f"{event.t_end:8.1f} s  gap of {event.t_end - event.t_start:.2f} s ({event.cause}): not scored"
    if isinstance(event, ErrorEvent):
        return f"error ({event.code}): {event.message}"
    return None


def _show(event: Event, out: TextIO, bar_width: int, color: bool) -> None:
    line = format_event(event, bar_width=bar_width, color=color)
    if line is not None:
        out.write(line + "\n")
        out.flush()


async def _print_events(sub: Subscription, out: TextIO, bar_width: int, color: bool) -> None:
    while True:
        _show(await sub.get(), out, bar_width, color)


async def run_listen(
    pipeline: Pipeline,
    device: str | int | None = None,
    *,
    out: TextIO | None = None,
    stream_id: str = "mic",
    sample_rate: int | None = None,
    block_s: float = 0.05,
    bar_width: int = 30,
    color: bool | None = None,
    run_worker: bool = True,
) -> None:
    """Listen on ``device`` and print alerts to ``out`` (default: stdout) until cancelled.

    ``run_worker`` starts the pipeline's inference worker here; pass False when the
    caller runs ``pipeline.run()`` itself. ``color`` defaults to whether ``out`` is a
    terminal. A source error (no such device, say) is raised as is.
    """
    out = sys.stdout if out is None else out
    use_color = out.isatty() if color is None else color
    sub = pipeline.hub.subscribe(stream_id, keep_alarms=True, name="terminal")
    worker = asyncio.create_task(pipeline.run(), name="spoofwatch-worker") if run_worker else None
    printer = asyncio.create_task(_print_events(sub, out, bar_width, use_color), name="listen-printer")
    source = asyncio.create_task(
        run_mic_source(pipeline, device, stream_id=stream_id, sample_rate=sample_rate, block_s=block_s),
        name="listen-mic",
    )
    # The source goes first: closing its stream waits for the worker to score the last windows.
    tasks = [t for t in (source, printer, worker) if t is not None]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
            await asyncio.wait([task])
        while not sub.queue.empty():
            _show(sub.queue.get_nowait(), out, bar_width, use_color)
        pipeline.hub.unsubscribe(sub)
    for task in tasks:
        if not task.cancelled() and (exc := task.exception()) is not None:
            raise exc
