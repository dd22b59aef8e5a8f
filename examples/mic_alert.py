"""Live microphone alert: watch the microphone for a synthetic voice and react to alarms.

What ``spoofwatch listen`` does, as a script to copy and extend: it loads the detector,
captures the microphone, prints one line per window (time, smoothed spoof probability as
a bar, speech or quiet) and a loud ALARM line; on top of that it runs a command of yours
whenever an alarm turns on::

    python examples/mic_alert.py [--device NAME_OR_INDEX] [--detector DIR] \\
        [--on-alarm 'notify-send "synthetic voice" "p_spoof $SPOOFWATCH_P_SPOOF"'] \\
        [--mqtt mqtt://127.0.0.1:1883] [--until-alarm]

The command gets ``SPOOFWATCH_STREAM``, ``SPOOFWATCH_T`` (seconds into the capture) and
``SPOOFWATCH_P_SPOOF`` in its environment. ``--mqtt`` also publishes every event to a
broker, as ``spoofwatch serve --mqtt`` does. Ctrl-C stops; ``--until-alarm`` stops after
the first alarm. List input devices with
``python -c "import sounddevice; print(sounddevice.query_devices())"``.

Needs the spoofwatch package and PortAudio (Debian: ``apt-get install libportaudio2``).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import sys
from typing import TextIO

from spoofwatch import (
    AlarmEvent,
    Pipeline,
    Settings,
    SpoofwatchError,
    Subscription,
    WindowScorer,
    build_tasks,
    install_signal_handlers,
    load_settings,
    remove_signal_handlers,
    run_listen,
    run_pipeline,
)

STREAM_ID = "mic"


async def react_to_alarms(
    alarms: Subscription, command: str | None, stop: asyncio.Event, *, until_alarm: bool
) -> None:
    """Run ``command`` for every alarm that turns on; set ``stop`` after the first if asked."""
    while True:
        event = await alarms.get()
        if not isinstance(event, AlarmEvent) or event.state != "on":
            continue
        if command:
            env = {
                **os.environ,
                "SPOOFWATCH_STREAM": event.stream,
                "SPOOFWATCH_T": f"{event.t:.3f}",
                "SPOOFWATCH_P_SPOOF": f"{event.p_spoof:.4f}",
            }
            process = await asyncio.create_subprocess_shell(command, env=env)
            if status := await process.wait():
                print(f"--on-alarm command exited with status {status}", file=sys.stderr, flush=True)
        if until_alarm:
            stop.set()


async def watch_microphone(
    scorer: WindowScorer,
    settings: Settings,
    *,
    device: str | None = None,
    on_alarm: str | None = None,
    until_alarm: bool = False,
    out: TextIO | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """``spoofwatch listen`` plus an alarm hook; runs until Ctrl-C, ``stop`` or (with
    ``until_alarm``) the first alarm. A microphone that cannot be opened raises its
    SpoofwatchError (ConfigError, AudioError) here."""
    stop = stop or asyncio.Event()
    pipeline = Pipeline(scorer, settings.stream, settings.engine, node=settings.server.node)
    alarms = pipeline.hub.subscribe(
        STREAM_ID, keep_alarms=True, name="mic-alert", predicate=lambda e: isinstance(e, AlarmEvent)
    )
    failures: list[SpoofwatchError] = []

    async def listen() -> None:
        # Stop by cancelling the microphone first: it then closes its own stream, so its
        # last windows are scored and no block arrives at a stream already closed.
        listening = asyncio.create_task(
            run_listen(pipeline, device, out=out, stream_id=STREAM_ID, run_worker=False), name="mic"
        )
        stopping = asyncio.create_task(stop.wait(), name="mic-stop")
        try:
            await asyncio.wait({listening, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (listening, stopping):
                task.cancel()
            await asyncio.wait({listening, stopping})
        error = None if listening.cancelled() else listening.exception()
        if isinstance(error, SpoofwatchError):  # no such device, no PortAudio...
            failures.append(error)
        elif error is not None:
            raise error

    tasks = build_tasks(pipeline, settings, websocket=False)  # MQTT / JSONL sinks from settings
    tasks["listen"] = listen
    tasks["alert"] = lambda: react_to_alarms(alarms, on_alarm, stop, until_alarm=until_alarm)
    installed = install_signal_handlers(stop)
    try:
        # The pipeline's own stop event stays unset: it ends when the microphone has.
        await run_pipeline(pipeline, tasks, asyncio.Event(), stop_when_done={"listen"})
    finally:
        remove_signal_handlers(installed)
        pipeline.hub.unsubscribe(alarms)
    if failures:
        raise failures[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", help="input device name or index (default: the system default)")
    parser.add_argument("--detector", metavar="DIR", help="detector directory (default: the shipped one)")
    parser.add_argument("--config", metavar="FILE", help="TOML file with [stream], [engine], [server] tables")
    parser.add_argument("--mqtt", metavar="URL", help="also publish events to this MQTT broker")
    parser.add_argument("--on-alarm", metavar="SHELL_COMMAND", help="run this when an alarm turns on")
    parser.add_argument("--until-alarm", action="store_true", help="stop after the first alarm")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        settings = load_settings(args.config)
        server = dataclasses.replace(
            settings.server,
            mqtt=args.mqtt or settings.server.mqtt,
            detector=args.detector or settings.server.detector,
        )
        settings = dataclasses.replace(settings, server=server)
        from spoofwatch import load_detector  # imports torch: only when running

        detector = load_detector(
            settings.server.detector, window_s=settings.stream.window_s, hop_s=settings.stream.hop_s
        )
        asyncio.run(
            watch_microphone(
                detector, settings, device=args.device, on_alarm=args.on_alarm, until_alarm=args.until_alarm
            )
        )
    except SpoofwatchError as exc:
        print(f"mic_alert: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
