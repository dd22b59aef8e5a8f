"""Local source specs for ``spoofwatch serve --source``: parse them and run them.

Accepted forms: ``mic`` (default input), ``mic:DEVICE`` (PortAudio index or name),
``file:PATH`` (replayed in real time) and ``file+fast:PATH`` (replayed as fast as the
engine scores, nothing dropped).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from spoofwatch.errors import ConfigError
from spoofwatch.stream.engine.pipeline import Pipeline
from spoofwatch.stream.sources.file import run_file_source
from spoofwatch.stream.sources.mic import run_mic_source

ACCEPTED_FORMS: Final = ("mic", "mic:DEVICE", "file:PATH", "file+fast:PATH")


@dataclass(frozen=True)
class SourceSpec:
    """``target`` is the device (None = default input) or the file path."""

    kind: Literal["mic", "file"]
    target: str | None = None
    realtime: bool = True

    def __str__(self) -> str:
        if self.kind == "mic":
            return "mic" if self.target is None else f"mic:{self.target}"
        return f"{'file' if self.realtime else 'file+fast'}:{self.target}"


def parse_source_spec(spec: str) -> SourceSpec:
    """Parse one spec; ConfigError names the accepted forms."""
    scheme, colon, rest = spec.strip().partition(":")
    if scheme == "mic" and not colon:
        return SourceSpec("mic")
    if not colon or not rest:
        raise _invalid(spec, "a non-empty DEVICE or PATH after the colon" if colon else None)
    if scheme == "mic":
        return SourceSpec("mic", rest)
    if scheme in ("file", "file+fast"):
        return SourceSpec("file", rest, realtime=scheme == "file")
    raise _invalid(spec)


def _invalid(spec: str, detail: str | None = None) -> ConfigError:
    expected = "one of " + ", ".join(repr(form) for form in ACCEPTED_FORMS)
    if detail:
        expected += f" with {detail}"
    return ConfigError(f"source spec: expected {expected}, found {spec!r}")


async def run_source(pipeline: Pipeline, spec: SourceSpec | str) -> None:
    """Run one local source until it ends (files) or is cancelled (microphones)."""
    source = parse_source_spec(spec) if isinstance(spec, str) else spec
    if source.kind == "mic":
        # Each microphone gets its own stream id so several can run side by side.
        await run_mic_source(pipeline, source.target, stream_id=str(source))
    elif source.target:
        await run_file_source(pipeline, source.target, realtime=source.realtime)
    else:
        raise _invalid(str(source), "a non-empty DEVICE or PATH after the colon")
