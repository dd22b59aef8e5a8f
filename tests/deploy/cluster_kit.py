"""Processes of the multi-node tests: ``spoofwatch serve`` ingest nodes (with the real
detector or ``fake_node.py``'s FakeScorer) and HAProxy configured by
``deploy/haproxy/render.py``, each started on free ports and stopped by the test."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from mosquitto_broker import free_port
from waits import LineReader, scaled, wait_until

ROOT = Path(__file__).resolve().parents[2]
FAKE_NODE = Path(__file__).resolve().parent / "fake_node.py"
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"


def load_script(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


render = load_script(ROOT / "deploy" / "haproxy" / "render.py", "haproxy_render")


def get_json(url: str, timeout_s: float = 2.0) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


class Node:
    """One ``spoofwatch serve`` subprocess on free WebSocket and AudioSocket ports."""

    def __init__(
        self,
        name: str,
        broker_url: str,
        config: Path | None,
        *,
        fake: bool = True,
        extra: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.port = free_port()
        self.audiosocket_port = free_port()
        program = [sys.executable, str(FAKE_NODE)] if fake else [sys.executable, "-m", "spoofwatch"]
        argv = [
            *program,
            "serve",
            "--port",
            str(self.port),
            "--audiosocket-port",
            str(self.audiosocket_port),
            "--mqtt",
            broker_url,
            "--node",
            name,
            "--cluster-view",
            "--drain-timeout",
            "30",
            "--max-streams",
            "64",
        ]
        if config is not None:
            argv += ["--config", str(config)]
        argv += extra
        self.proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=None if env is None else dict(env),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stderr is not None
        self.log = LineReader(self.proc.stderr)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def health(self) -> tuple[int, dict[str, Any]]:
        return get_json(f"http://127.0.0.1:{self.port}/healthz")

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"node {self.name} exited early:\n{self.log.text()[-3000:]}")
            try:
                return self.health()[0] == 200
            except OSError:
                return False

        wait_until(ready, timeout_s, f"node {self.name} to serve", poll_s=0.2)

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    def wait_exit(self, timeout_s: float) -> int:
        return self.proc.wait(timeout=scaled(timeout_s))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=scaled(20))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class HAProxy:
    """The real ``haproxy`` in the foreground, in front of ``nodes``."""

    def __init__(self, nodes: list[Node], workdir: Path) -> None:
        self.port = free_port()
        self.audiosocket_port = free_port()
        self.stats_port = free_port()
        config = render.render(
            [render.Node("127.0.0.1", str(n.port), str(n.audiosocket_port)) for n in nodes],
            ws_bind=f"127.0.0.1:{self.port}",
            audiosocket_bind=f"127.0.0.1:{self.audiosocket_port}",
            check_interval="200ms",
            fall=1,
            rise=1,
            stats_bind=f"127.0.0.1:{self.stats_port}",
            maxconn=1000,
        )
        self.config_path = workdir / "haproxy.cfg"
        self.config_path.write_text(config)
        checked = subprocess.run([HAPROXY, "-c", "-f", str(self.config_path)], capture_output=True, text=True)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        self.proc = subprocess.Popen(
            [HAPROXY, "-db", "-f", str(self.config_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stderr is not None
        self.log = LineReader(self.proc.stderr)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def server_states(self) -> dict[tuple[str, str], str]:
        """(backend, server) -> status (UP, DOWN, ...) from HAProxy's stats CSV."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.stats_port}/stats;csv", timeout=2) as response:
            text = response.read().decode().lstrip("# ")
        rows = csv.DictReader(io.StringIO(text))
        return {
            (row["pxname"], row["svname"]): row["status"].split()[0]
            for row in rows
            if row["svname"] not in ("FRONTEND", "BACKEND")
        }

    def wait_states(self, expected: dict[str, str], timeout_s: float = 20.0) -> None:
        """Wait until every server ``nodeN`` has the ``expected`` status in both backends."""

        def reached() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"haproxy exited:\n{self.log.text()[-3000:]}")
            try:
                states = self.server_states()
            except OSError:
                return False
            if not set(expected) <= {server for (_, server) in states}:
                return False
            return all(
                status == expected[server] for (_, server), status in states.items() if server in expected
            )

        wait_until(reached, timeout_s, f"haproxy to see {expected}", poll_s=0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
