"""False alarms on genuine speech with holes in it, and whether spoofs with the same holes
still alarm: the shipped default detector through the real streaming pipeline
(``Pipeline``, its resampler, windowing, speech gate, smoothing and alarm hysteresis).

Each clip (bona fide for the false-alarm rate, spoof for the miss rate; corpus clips of
at least ``--min-s`` seconds, picked evenly over the sorted list) is streamed as one call,
clean at 16 kHz or through G.711 mu-law at 8 kHz (holes made after the codec, as a
network or gateway makes them; ``g711-pcmu``: the same call, then encoded to mu-law once more
after the holes, as a source that delivers PCMU (AudioHook, Twilio) carries a gateway's
filler; ``clean`` and ``g711`` are the default), with one of these holes:

- ``none``: the clip as it is;
- ``discarded-1s``: 1 s of audio lost in the middle (AudioHook ``discarded``);
- ``paused-12s``: a 12 s recording pause in the middle (AudioHook ``paused``/``resumed``);
- ``zeros-200ms``: three 200 ms runs of digital silence replacing speech (a muted leg);
- ``plc``: packet-loss concealment, bursts of 60 ms lost once a second, each filled by
  repeating the last 20 ms frame with a fade to silence (the G.711 Appendix I shape);
- ``comfort-noise``: two 1 s stretches replaced by comfort noise at -60 dBFS.
- ``dtx``: discontinuous transmission: every pause (runs of at least 60 ms more than
  30 dB below the loudest 20 ms frame) replaced by comfort noise at -60 dBFS, as a
  sender's VAD and the receiver's CN generator (RFC 3389) make it.
- ``dtx-matched``: the same pauses replaced by comfort noise made from each pause's own
  level and spectral envelope (order-10 LPC), as a silence descriptor carries them to
  the decoder (RFC 3389): background kept, breaths and room tails lost;
- ``dtx-level``: the same with a descriptor that carries the level only (white noise at
  each pause's own level), as many gateways send it.

Stream policies: ``before`` is the old behaviour (every hole arrives as audio: zeros for
a known gap, as the AudioHook source filled them; ``silence_gap_s`` = 0, no
comfort-noise rule); ``no-cn`` is gap-aware streaming without the comfort-noise rule
(known gaps go through ``StreamHandle.gap``, digital silence runs are gaps, gaps up to
``gap_tolerance_s`` = 1 s are spliced, longer ones restart windowing: the default until
2026-12-06, and ``after`` in the tables measured before then); ``after`` is the shipped
default (``no-cn`` plus comfort noise as gaps: runs of 20 ms frames at or below -45 dBFS
whose spectrum is flat, ``quiet_min_flatness`` 0.8, cause ``comfort-noise``, always
spliced); ``restart`` restarts windowing after every gap over 0.1 s (the alternative
measured, and rejected: as few false alarms, but short holes cost so many windows that
spoofs are missed); ``quiet-55`` is ``no-cn`` plus runs of 20 ms frames at or below
-55 dBFS RMS, whatever their spectrum, treated as gaps (measured, and rejected: it
removes comfort noise but splices out natural pauses too; measured before comfort noise
was always spliced); ``quiet-45`` is the default with the spectrum test off
(``quiet_min_flatness`` 0: every quiet run at or below -45 dBFS is comfort noise, spliced). A
clip alarms when its stream raises any alarm; ``filler win`` counts scored windows with
more than 0.1 s of a hole's content (zeros, concealment, comfort noise) inside their
audio.

    PYTHONPATH=src python research/gap_false_alarms.py \\
        --manifest /work/shared/corpus/manifest.csv --bonafide 80 --spoof 40

About 10 minutes on 2 cores for those sizes.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from spoofwatch.audio.files import load_audio
from spoofwatch.audio.pcm import mulaw_decode, mulaw_encode
from spoofwatch.audio.resample import resample
from spoofwatch.config import StreamConfig
from spoofwatch.events import AlarmEvent, Event, ScoreEvent
from spoofwatch.model.artifact import load_detector
from spoofwatch.model.scorer import WindowScorer
from spoofwatch.stream.engine.pipeline import Pipeline
from spoofwatch.train.concealment import (
    fill_comfort_noise,
    fill_matched_comfort_noise,
    fill_plc,
    fill_zeros,
    pauses,
)

FILLER_TOLERANCE_S = 0.1  # a window with more hole content than this counts as scored over filler
HOLES = (
    "none",
    "discarded-1s",
    "paused-12s",
    "zeros-200ms",
    "plc",
    "comfort-noise",
    "dtx",
    "dtx-matched",
    "dtx-level",
)
CHANNELS = ("clean", "g711", "g711-pcmu")
# name -> (stream settings, whether known gaps go through StreamHandle.gap)
POLICIES: dict[str, tuple[StreamConfig, bool]] = {
    "before": (StreamConfig(silence_gap_s=0.0, quiet_level_dbfs=-120.0), False),
    "no-cn": (StreamConfig(quiet_level_dbfs=-120.0), True),
    "after": (StreamConfig(), True),
    "quiet-55": (StreamConfig(quiet_level_dbfs=-55.0, quiet_min_flatness=0.0), True),
    "quiet-45": (StreamConfig(quiet_min_flatness=0.0), True),
    "restart": (StreamConfig(gap_tolerance_s=0.1, quiet_level_dbfs=-120.0), True),
}


@dataclass
class Piece:
    """Stream audio, or a known gap (``audio`` None) of ``seconds``."""

    audio: NDArray[np.float32] | None
    seconds: float = 0.0
    cause: str = ""


@dataclass
class Call:
    pieces: list[Piece]
    holes: list[tuple[float, float]]  # stream-time spans with no genuine audio


def _silence(n: int) -> NDArray[np.float32]:
    return np.zeros(n, dtype=np.float32)


def _known_gap(audio: NDArray[np.float32], sr: int, seconds: float, cause: str) -> Call:
    """``seconds`` of the call missing in the middle: the audio either side is kept."""
    mid = len(audio) // 2
    t0 = mid / sr
    return Call(
        [Piece(audio[:mid]), Piece(None, seconds, cause), Piece(audio[mid:])],
        [(t0, t0 + seconds)],
    )


def _replaced(
    audio: NDArray[np.float32], sr: int, spans: list[tuple[float, float]], fill: Callable[..., None]
) -> Call:
    out = audio.copy()
    for a, b in spans:
        fill(out, round(a * sr), round(b * sr), sr)
    return Call([Piece(out)], spans)


def make_call(audio: NDArray[np.float32], sr: int, hole: str) -> Call:
    dur = len(audio) / sr
    if hole == "none":
        return Call([Piece(audio)], [])
    if hole == "discarded-1s":
        return _known_gap(audio, sr, 1.0, "discarded")
    if hole == "paused-12s":
        return _known_gap(audio, sr, 12.0, "paused")
    if hole == "zeros-200ms":
        spans = [(dur * f, dur * f + 0.2) for f in (0.3, 0.5, 0.7)]
        return _replaced(audio, sr, spans, fill_zeros)
    if hole == "plc":
        spans = [(t, t + 0.06) for t in np.arange(1.0, dur - 0.1, 1.0)]
        return _replaced(audio, sr, spans, fill_plc)
    if hole == "comfort-noise":
        spans = [(dur * f, dur * f + 1.0) for f in (0.3, 0.6)]
        return _replaced(audio, sr, spans, fill_comfort_noise)
    if hole == "dtx":
        return _replaced(audio, sr, pauses(audio, sr), fill_comfort_noise)
    if hole == "dtx-matched":
        return _replaced(audio, sr, pauses(audio, sr), fill_matched_comfort_noise)
    if hole == "dtx-level":
        return _replaced(audio, sr, pauses(audio, sr), partial(fill_matched_comfort_noise, order=0))
    raise ValueError(f"hole: expected one of {HOLES}, got {hole!r}")


@dataclass
class Outcome:
    alarmed: bool
    scored: int
    over_filler: int
    p_spoof_mean: float


async def stream_call(pipeline: Pipeline, call: Call, sr: int, policy: str, name: str) -> Outcome:
    sub = pipeline.hub.subscribe(name, maxsize=100_000)
    handle = pipeline.open_stream(name, source="experiment", sample_rate=sr, trusted=True)
    for piece in call.pieces:
        if piece.audio is not None:
            await handle.feed_wait(piece.audio)
        elif not POLICIES[policy][1]:  # the old AudioHook source filled zeros (each ping of a pause anew)
            await handle.feed_wait(_silence(round(piece.seconds * sr)))
        else:
            handle.gap(piece.seconds, piece.cause)
    await handle.close()
    events: list[Event] = []
    while not sub.queue.empty():
        events.append(sub.queue.get_nowait())
    pipeline.hub.unsubscribe(sub)
    scores = [e for e in events if isinstance(e, ScoreEvent)]
    tolerance = FILLER_TOLERANCE_S
    window_s = pipeline.scorer.window_samples / pipeline.scorer.sample_rate
    over = sum(filler_inside(s, call.holes, window_s) > tolerance for s in scores)
    speech = [s.p_spoof for s in scores if s.speech]
    return Outcome(
        alarmed=any(isinstance(e, AlarmEvent) and e.state == "on" for e in events),
        scored=len(scores),
        over_filler=over,
        p_spoof_mean=float(np.mean(speech)) if speech else float("nan"),
    )


def filler_inside(score: ScoreEvent, holes: list[tuple[float, float]], window_s: float) -> float:
    """Seconds of hole content in a scored window's audio: its overlap with the holes less
    what the stream spliced out of its span (a window spans more than ``window_s`` of the
    stream's clock only by the gaps removed from it)."""
    overlap = sum(max(0.0, min(score.t_end, b) - max(score.t_start, a)) for a, b in holes)
    removed = max(0.0, score.t_end - score.t_start - window_s)
    return max(0.0, overlap - removed)


def pick(manifests: list[Path], label: str, count: int, min_s: float, split: str = "") -> list[Path]:
    """``count`` clips of ``label``, evenly over the manifests' rows pooled and sorted by
    utt_id; each path is read relative to its own manifest's folder."""
    rows: list[tuple[str, Path]] = []
    for manifest in manifests:
        with manifest.open() as f:
            rows += [
                (r["utt_id"], manifest.parent / r["path"])
                for r in csv.DictReader(f)
                if r["label"] == label
                and float(r["duration_s"]) >= min_s
                and (not split or r["split"] == split)
            ]
    rows.sort(key=lambda r: r[0])
    step = max(1, len(rows) // count) if count else 1
    return [path for _, path in rows[::step][:count]]


def pcmu(audio: NDArray[np.float32]) -> NDArray[np.float32]:
    return mulaw_decode(mulaw_encode(np.clip(audio, -1.0, 1.0)))


def delivered(call: Call, channel: str) -> Call:
    """The call as the source delivers it: ``g711-pcmu`` encodes it to mu-law again after
    the holes (the rest of the audio is mu-law already and does not change)."""
    if channel != "g711-pcmu":
        return call
    return Call(
        [Piece(None if p.audio is None else pcmu(p.audio), p.seconds, p.cause) for p in call.pieces],
        call.holes,
    )


def channel_audio(path: Path, channel: str) -> tuple[NDArray[np.float32], int]:
    audio = load_audio(path).samples  # 16 kHz mono
    if channel == "clean":
        return audio, 16000
    return pcmu(resample(audio, 16000, 8000)), 8000


async def measure(
    detector: WindowScorer,
    clips: dict[str, list[Path]],
    holes: list[str],
    policies: list[str],
    channels: list[str],
) -> None:
    print(
        f"{'label':9} {'channel':7} {'hole':14} {'policy':7} {'alarm rate':>11} {'windows':>8} "
        f"{'filler win':>10} {'mean p_spoof':>12}"
    )
    for policy in policies:
        config = POLICIES[policy][0]
        pipeline = Pipeline(detector, config)
        worker = asyncio.create_task(pipeline.run())
        try:
            for label, paths in clips.items():
                for channel in channels:
                    audios = [channel_audio(p, channel) for p in paths]
                    for hole in holes:
                        outcomes = [
                            await stream_call(
                                pipeline,
                                delivered(make_call(a, sr, hole), channel),
                                sr,
                                policy,
                                f"{label}-{i}",
                            )
                            for i, (a, sr) in enumerate(audios)
                        ]
                        rate = np.mean([o.alarmed for o in outcomes])
                        alarmed = sum(o.alarmed for o in outcomes)
                        print(
                            f"{label:9} {channel:7} {hole:14} {policy:7} "
                            f"{alarmed:3d}/{len(outcomes):<3d}{rate:5.0%} "
                            f"{sum(o.scored for o in outcomes):8d} "
                            f"{sum(o.over_filler for o in outcomes):10d} "
                            f"{np.nanmean([o.p_spoof_mean for o in outcomes]):12.3f}",
                            flush=True,
                        )
        finally:
            worker.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--manifest",
        type=Path,
        action="append",
        help="labelled clips with duration_s (repeatable: rows pooled; default ../shared/corpus)",
    )
    parser.add_argument("--bonafide", type=int, default=80)
    parser.add_argument("--spoof", type=int, default=40)
    parser.add_argument("--min-s", type=float, default=8.0)
    parser.add_argument("--split", default="", help="only clips of this split (default: all)")
    parser.add_argument("--detector", default=None, help="detector directory (default: the packaged default)")
    parser.add_argument("--holes", default=",".join(HOLES))
    parser.add_argument("--policies", default=",".join(POLICIES), help="stream policies to run")
    parser.add_argument("--channels", default="clean,g711", help=f"channels to run, of {CHANNELS}")
    args = parser.parse_args()

    def names(option: str, text: str, known: Sequence[str]) -> list[str]:
        chosen = [name for name in text.split(",") if name]
        for name in chosen:
            if name not in known:
                parser.error(f"--{option}: expected names from {list(known)}, got {name!r}")
        return chosen

    holes = names("holes", args.holes, HOLES)
    policies = names("policies", args.policies, list(POLICIES))
    channels = names("channels", args.channels, CHANNELS)
    manifests = args.manifest or [Path("/work/shared/corpus/manifest.csv")]
    clips = {
        "bonafide": pick(manifests, "bonafide", args.bonafide, args.min_s, args.split),
        "spoof": pick(manifests, "spoof", args.spoof, args.min_s, args.split),
    }
    detector = load_detector(args.detector)
    asyncio.run(measure(detector, {k: v for k, v in clips.items() if v}, holes, policies, channels))


if __name__ == "__main__":
    main()
