"""A real mosquitto broker, and a cuttable TCP proxy, for MQTT integration tests.

``MosquittoBroker`` writes a config into a temporary folder, starts ``mosquitto`` on a
free 127.0.0.1 port, waits until the port accepts connections and can be stopped,
killed and restarted on the same port. Its log (the broker's stderr) is kept next to the
config so a failing test can show it.

Fixtures (import ``mosquitto_fixture`` / ``mosquitto_factory_fixture`` into a test module,
or list ``"mosquitto_broker"`` in the root conftest's ``pytest_plugins``); the fixture
names are:

- ``mosquitto_factory`` — ``make(start=True, port=None, extra_config="")`` returns a new
  broker; every broker it made is stopped at teardown.
- ``mosquitto`` — one started broker.

Both skip the test, naming the reason, when the mosquitto binary is not installed.

``TcpProxy`` sits between a client and the broker: ``cut()`` aborts live connections
without an MQTT DISCONNECT (so the broker publishes the client's Last Will), ``pause()``
refuses new connections and ``resume()`` accepts them again. It runs on the test's event
loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType

import pytest

from waits import scaled

_FALLBACK_BINARY = "/usr/sbin/mosquitto"
LOCALHOST = "127.0.0.1"


def mosquitto_binary() -> str | None:
    """The mosquitto executable, or None when it is not installed."""
    found = shutil.which("mosquitto")
    if found:
        return found
    return _FALLBACK_BINARY if os.access(_FALLBACK_BINARY, os.X_OK) else None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOCALHOST, 0))
        port: int = sock.getsockname()[1]
        return port


def port_accepts(port: int, host: str = LOCALHOST) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


class MosquittoBroker:
    """One mosquitto process bound to 127.0.0.1:port; anonymous, no persistence."""

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        *,
        extra_config: str = "",
        binary: str | None = None,
    ) -> None:
        found = binary or mosquitto_binary()
        if found is None:
            raise FileNotFoundError("expected a mosquitto binary on PATH or at /usr/sbin, found none")
        self.binary = found
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port if port is not None else free_port()
        self.host = LOCALHOST
        self.config_path = self.workdir / f"mosquitto-{self.port}.conf"
        self.log_path = self.workdir / f"mosquitto-{self.port}.log"
        self.extra_config = extra_config
        self._process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _write_config(self) -> None:
        lines = [
            f"listener {self.port} {self.host}",
            "allow_anonymous true",
            "persistence false",
            # stderr goes to our log file; a file log_dest could be unwritable once
            # mosquitto drops root privileges.
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            self.extra_config,
        ]
        self.config_path.write_text("\n".join(lines) + "\n")

    def start(self, timeout_s: float = 5.0) -> None:
        """Start the broker and return once its port accepts TCP connections."""
        if self.running:
            return
        self._write_config()
        log = self.log_path.open("ab")
        try:
            self._process = subprocess.Popen(
                [self.binary, "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        finally:
            log.close()
        self.starts += 1
        deadline = time.monotonic() + scaled(timeout_s)
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"mosquitto on port {self.port} exited with status {self._process.returncode} "
                    f"while starting; expected it to keep running. Log:\n{self.log_tail()}"
                )
            if port_accepts(self.port, self.host):
                return
            time.sleep(0.02)
        self.kill()
        raise TimeoutError(
            f"mosquitto did not accept connections on port {self.port} within {timeout_s} s. "
            f"Log:\n{self.log_tail()}"
        )

    def stop(self, timeout_s: float = 5.0) -> None:
        """SIGTERM (a clean broker shutdown), then SIGKILL if it does not exit in time."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._process = None

    def kill(self) -> None:
        """SIGKILL: the broker vanishes without closing anything cleanly."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.kill()
            process.wait()
        self._process = None

    def restart(self, timeout_s: float = 5.0) -> None:
        self.stop(timeout_s)
        self.start(timeout_s)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> MosquittoBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


BrokerFactory = Callable[..., MosquittoBroker]


def _require_mosquitto() -> str:
    binary = mosquitto_binary()
    if binary is None:
        pytest.skip("mosquitto is not installed (expected /usr/sbin/mosquitto or mosquitto on PATH)")
    return binary


@pytest.fixture(name="mosquitto_factory")
def mosquitto_factory_fixture(tmp_path: Path) -> Iterator[BrokerFactory]:
    """``make(start=True, port=None, extra_config="")``: brokers stopped at teardown."""
    binary = _require_mosquitto()
    made: list[MosquittoBroker] = []

    def make(*, start: bool = True, port: int | None = None, extra_config: str = "") -> MosquittoBroker:
        attempts = 1 if port is not None else 3
        for attempt in range(attempts):
            broker = MosquittoBroker(
                tmp_path / f"broker-{len(made)}", port, extra_config=extra_config, binary=binary
            )
            made.append(broker)
            if not start:
                return broker
            try:
                broker.start()
                return broker
            except RuntimeError:
                # The free port was taken between choosing it and binding it; pick another.
                if attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")

    yield make
    for broker in made:
        broker.stop()


@pytest.fixture(name="mosquitto")
def mosquitto_fixture(mosquitto_factory: BrokerFactory) -> MosquittoBroker:
    """A started broker on a free port."""
    return mosquitto_factory()


class TcpProxy:
    """Forward 127.0.0.1:port to a target; cut, refuse and accept connections on demand."""

    def __init__(self, target_port: int, target_host: str = LOCALHOST) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.host = LOCALHOST
        self.port = 0
        self.accepted = 0
        self._server: asyncio.Server | None = None
        self._transports: set[asyncio.WriteTransport] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    async def start(self) -> None:
        """Listen (on a free port the first time, on the same port after ``pause``)."""
        if self._server is not None:
            return
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def pause(self) -> None:
        """Stop listening: new connections are refused; live ones are kept."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def resume(self) -> None:
        await self.start()

    def cut(self) -> None:
        """Abort every live connection, both sides, with no goodbye."""
        for transport in list(self._transports):
            transport.abort()
        self._transports.clear()

    async def close(self) -> None:
        self.cut()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._server is not None:
            self._server.close()
            self._server = None

    async def __aenter__(self) -> TcpProxy:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                self.target_host, self.target_port
            )
        except OSError:
            client_writer.transport.abort()
            return
        pair = (client_writer.transport, upstream_writer.transport)
        self._transports.update(pair)
        pumps = [
            asyncio.create_task(self._pump(client_reader, upstream_writer)),
            asyncio.create_task(self._pump(upstream_reader, client_writer)),
        ]
        self._tasks.update(pumps)
        try:
            # When either side goes away, the other is aborted: the proxy is a wire.
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            for transport in pair:
                transport.abort()
                self._transports.discard(transport)
            self._tasks.difference_update(pumps)

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
