"""A virtual microphone for tests: a private PulseAudio daemon with a pipe source.

``VirtualMic`` starts ``pulseaudio`` in user mode with its runtime and state in a
temporary folder (root needs this: it has no per-user runtime dir), loads
``module-pipe-source`` as ``virtmic`` (16 kHz mono s16le) and makes it the default
source. A writer thread feeds the FIFO in real time: queued audio first, then silence
until stopped, because PortAudio blocks on close when the pipe runs dry.

PortAudio reaches PulseAudio through ALSA's pulse plugin (Debian ``libasound2-plugins``;
``/etc/alsa/conf.d/99-pulse.conf`` makes ``default`` point at PulseAudio whenever a
server answers). PortAudio lists devices once, at initialisation, so ``start`` and
``stop`` re-initialise it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from types import TracebackType
from typing import Final

import numpy as np
from numpy.typing import NDArray

from spoofwatch.audio.files import load_audio
from waits import scaled

RATE: Final = 16000
SOURCE_NAME: Final = "virtmic"
_BLOCK: Final = RATE // 50  # 20 ms per write
_STARTUP_TIMEOUT_S: Final = 10.0


def portaudio_missing_reason() -> str | None:
    """Why sounddevice cannot load PortAudio here, or None when it can."""
    try:
        import sounddevice  # noqa: F401
    except OSError as exc:
        return f"PortAudio is not installed (Debian: apt-get install libportaudio2): {exc}"
    return None


def pulseaudio_missing_reason() -> str | None:
    """Why a virtual microphone cannot run here, or None when it can."""
    if shutil.which("pulseaudio") is None:
        return "pulseaudio is not installed (Debian: apt-get install pulseaudio)"
    return portaudio_missing_reason()


def portaudio_input_missing_reason() -> str | None:
    """Call with a VirtualMic running: why PortAudio cannot see it, or None when it can."""
    import sounddevice

    try:
        sounddevice.query_devices(kind="input")
    except sounddevice.PortAudioError as exc:
        return (
            f"PortAudio sees no input device although PulseAudio runs ({exc}); ALSA needs "
            f"its pulse plugin (Debian: apt-get install libasound2-plugins)"
        )
    return None


def refresh_portaudio() -> None:
    """Make PortAudio enumerate devices again (it does so only when initialised)."""
    import sounddevice

    sounddevice._terminate()
    sounddevice._initialize()


class VirtualMic:
    """Context manager: a PulseAudio default source fed from this process."""

    def __init__(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="spoofwatch-pulse-"))
        self.fifo = self._dir / "mic.fifo"
        self.socket = self._dir / "runtime" / "native"
        self.log = self._dir / "pulseaudio.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._pending: deque[NDArray[np.int16]] = deque()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._writer: threading.Thread | None = None
        self._saved_env: dict[str, str | None] = {}
        self.samples_written = 0

    def __enter__(self) -> VirtualMic:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        runtime = self._dir / "runtime"
        runtime.mkdir(mode=0o700)
        (self._dir / "state").mkdir(mode=0o700)
        script = self._dir / "default.pa"
        # The socket comes last: once it exists every module before it is loaded.
        script.write_text(
            f"load-module module-null-sink sink_name=nullsink\n"
            f"load-module module-pipe-source source_name={SOURCE_NAME} file={self.fifo} "
            f"format=s16le rate={RATE} channels=1\n"
            f"set-default-source {SOURCE_NAME}\n"
            f"load-module module-native-protocol-unix auth-anonymous=1 socket={self.socket}\n"
        )
        daemon_env = {
            **os.environ,
            "HOME": str(self._dir),
            "XDG_RUNTIME_DIR": str(runtime),
            "PULSE_RUNTIME_PATH": str(runtime),
            "PULSE_STATE_PATH": str(self._dir / "state"),
        }
        with open(self.log, "wb") as log:
            self._process = subprocess.Popen(
                [
                    "pulseaudio",
                    "--daemonize=no",
                    "--system=false",
                    "--exit-idle-time=-1",
                    "--disallow-exit",
                    "--disallow-module-loading",
                    "--disable-shm=yes",
                    "--use-pid-file=no",
                    "-n",
                    "-F",
                    str(script),
                    "--log-target=stderr",
                ],
                env=daemon_env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        try:
            self._wait_ready()
            self._point_clients_here()
            self._writer = threading.Thread(target=self._write_loop, name="virtmic-writer", daemon=True)
            self._writer.start()
            refresh_portaudio()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + scaled(_STARTUP_TIMEOUT_S)
        assert self._process is not None
        while not (self.socket.exists() and self.fifo.exists()):
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"pulseaudio did not start (exit status {self._process.poll()}): "
                    f"{self.log.read_text(errors='replace')[-2000:]}"
                )
            time.sleep(0.02)

    def _point_clients_here(self) -> None:
        env = {"PULSE_SERVER": f"unix:{self.socket}", "PULSE_COOKIE": str(self._dir / "cookie")}
        for key, value in env.items():
            self._saved_env[key] = os.environ.get(key)
            os.environ[key] = value

    def play(self, samples: NDArray[np.float32]) -> None:
        """Queue mono float audio at 16 kHz to come out of the microphone next."""
        pcm = np.clip(np.rint(samples * 32767.0), -32768, 32767).astype("<i2")
        with self._lock:
            for start in range(0, len(pcm), _BLOCK):
                self._pending.append(pcm[start : start + _BLOCK])

    def play_wav(self, path: str | os.PathLike[str]) -> None:
        self.play(load_audio(path, RATE).samples)

    def clear(self) -> None:
        """Drop queued audio not yet written; silence follows."""
        with self._lock:
            self._pending.clear()

    @property
    def idle(self) -> bool:
        """True once everything queued has been written."""
        with self._lock:
            return not self._pending

    def _write_loop(self) -> None:
        silence = np.zeros(_BLOCK, dtype="<i2")
        fd = os.open(self.fifo, os.O_WRONLY)
        try:
            started = time.monotonic()
            while not self._stop.is_set():
                with self._lock:
                    block = self._pending.popleft() if self._pending else silence
                os.write(fd, block.tobytes())
                self.samples_written += len(block)
                delay = started + self.samples_written / RATE - time.monotonic()
                if delay > 0:
                    self._stop.wait(delay)
        except OSError:
            pass  # the daemon went away; nothing left to feed
        finally:
            os.close(fd)

    def stop(self) -> None:
        self._stop.set()
        if self._writer is not None:
            self._writer.join(timeout=5)
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_env.clear()
        with contextlib.suppress(OSError):
            refresh_portaudio()
        shutil.rmtree(self._dir, ignore_errors=True)
