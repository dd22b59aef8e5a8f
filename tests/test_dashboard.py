"""The live dashboard in headless Chromium against a real loopback server.

The server (``SpoofwatchServer`` + ``Pipeline`` with ``FakeScorer``: noise is bona fide,
a tone is spoof) runs on its own event loop in a background thread; Selenium drives the
Debian ``chromium`` through ``/usr/bin/chromedriver``. Selenium Manager is disabled, so
nothing is ever downloaded. Screenshots go to ``artifacts/screenshots/`` (gitignored) or
``$SPOOFWATCH_TEST_ARTIFACTS``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import threading
import urllib.request
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
from aiohttp import web
from numpy.typing import NDArray
from websockets.sync.client import ClientConnection, connect

from fakes import FakeScorer, noise, tone
from spoofwatch.config import EngineConfig, ServerConfig, StreamConfig
from spoofwatch.stream.engine.pipeline import Pipeline
from spoofwatch.stream.net.server import STATIC_DIR, SpoofwatchServer, index_html

pytestmark = pytest.mark.browser

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = Path(os.environ.get("SPOOFWATCH_TEST_ARTIFACTS", REPO / "artifacts" / "screenshots"))
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--mute-audio",
    "--window-size=1280,860",
)
CFG = StreamConfig(window_s=1.0, hop_s=0.5, alarm_min_on_s=0.5, smoothing_n=2)
ENGINE = EngineConfig(max_batch=8, max_wait_ms=5)
TOKEN = "dash-s3cret"
WAIT_S = 10.0

# Alarm shading is translucent red; the line is blue; the threshold (dark orange) and
# the grey grid, dots and labels match neither test.
PIXEL_COUNTS_JS = """
const canvas = arguments[0];
const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
let red = 0, blue = 0;
for (let i = 0; i < data.length; i += 4) {
  const r = data[i], g = data[i + 1], b = data[i + 2], a = data[i + 3];
  if (a === 0) continue;
  if (r > g + 60 && r > b + 60 && Math.abs(g - b) < 20) red += 1;
  if (b > r + 60 && b > g + 60) blue += 1;
}
return [red, blue];
"""


def chromium_missing_reason() -> str | None:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        return (
            f"headless browser test needs {' and '.join(missing)} "
            "(Debian: apt-get install chromium chromium-driver)"
        )
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "headless browser test needs Selenium (pip install selenium)"
    return None


class ServerThread:
    """A pipeline and its WebSocket server on an event loop in a background thread."""

    def __init__(self, token: str | None) -> None:
        self.token = token
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="dashboard-server", daemon=True)
        self.pipeline: Pipeline | None = None
        self.server: SpoofwatchServer | None = None
        self.worker: asyncio.Task[None] | None = None
        self.port = 0

    def call(self, body: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(body, self.loop).result(timeout=WAIT_S)

    async def _start(self) -> None:
        if self.pipeline is None:
            self.pipeline = Pipeline(FakeScorer(window_s=1.0), CFG, ENGINE)
            self.worker = asyncio.create_task(self.pipeline.run(), name="worker")
        self.server = SpoofwatchServer(
            self.pipeline, ServerConfig(host="127.0.0.1", port=self.port, token=self.token)
        )
        await self.server.start()
        self.port = self.server.port

    async def _stop_server(self) -> None:
        if self.server is not None:
            await self.server.stop()
            self.server = None

    async def _close(self) -> None:
        await self._stop_server()
        if self.worker is not None:
            self.worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.worker

    def start(self) -> None:
        """Start (or, after ``stop_server``, restart on the same port)."""
        if not self.thread.is_alive():
            self.thread.start()
        self.call(self._start())

    def stop_server(self) -> None:
        self.call(self._stop_server())

    def close(self) -> None:
        self.call(self._close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=WAIT_S)
        self.loop.close()

    def url(self, path: str, scheme: str = "http") -> str:
        query = f"?token={self.token}" if self.token else ""
        return f"{scheme}://127.0.0.1:{self.port}{path}{query}"


@pytest.fixture
def served() -> Iterator[ServerThread]:
    server = ServerThread(TOKEN)
    server.start()
    yield server
    server.close()


@pytest.fixture
def served_open() -> Iterator[ServerThread]:
    server = ServerThread(None)
    server.start()
    yield server
    server.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    reason = chromium_missing_reason()
    if reason:
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.selenium_manager import SeleniumManager

    def refuse(*args: object, **kwargs: object) -> dict[str, str]:
        raise AssertionError("Selenium Manager must not run: it would download a driver or browser")

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SeleniumManager, "binary_paths", refuse)
        driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
        try:
            yield driver
        finally:
            driver.quit()


# ---------------------------------------------------------------- helpers


def s16(audio: NDArray[np.float32]) -> bytes:
    return np.clip(np.rint(audio * 32768), -32768, 32767).astype("<i2").tobytes()


@contextlib.contextmanager
def open_ingest(server: ServerThread, stream: str) -> Iterator[ClientConnection]:
    with connect(server.url("/v1/ingest", "ws"), max_queue=None, open_timeout=WAIT_S) as ws:
        start = {"type": "start", "stream": stream, "encoding": "pcm_s16le", "sample_rate": 16000}
        ws.send(json.dumps(start))
        yield ws


def send_audio(ws: ClientConnection, audio: NDArray[np.float32], chunk: int = 1600) -> None:
    for start in range(0, len(audio), chunk):
        ws.send(s16(audio[start : start + chunk]))


def stop_ingest(ws: ClientConnection, stream: str) -> None:
    ws.send('{"type":"stop"}')
    while True:
        event = json.loads(ws.recv(timeout=WAIT_S))
        if event["type"] == "stream" and event["stream"] == stream and event["state"] == "end":
            break


def wait_for(driver: Any, script: str, what: str) -> Any:
    """Poll a JavaScript expression until it is truthy; its value is returned."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, WAIT_S, poll_frequency=0.05).until(
            lambda d: d.execute_script(f"return ({script});")
        )
    except TimeoutException:
        log = driver.execute_script("return document.getElementById('log')?.innerText")
        raise AssertionError(f"expected {what} within {WAIT_S} s; dashboard log:\n{log}") from None


def card(stream: str) -> str:
    return f"document.querySelector('section.stream[data-stream=\"{stream}\"]')"


def card_attr(driver: Any, stream: str, name: str) -> str | None:
    value: str | None = driver.execute_script(f"return {card(stream)}?.dataset.{name} ?? null;")
    return value


def pixel_counts(driver: Any, stream: str) -> tuple[int, int]:
    canvas = driver.execute_script(f"return {card(stream)}.querySelector('canvas');")
    red, blue = driver.execute_script(PIXEL_COUNTS_JS, canvas)
    return int(red), int(blue)


def save_screenshot(driver: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    assert driver.save_screenshot(str(path)), f"expected a screenshot at {path}"
    return path


# ---------------------------------------------------------------- tests


def test_the_packaged_page_is_served_at_root_and_loads_nothing_from_elsewhere(served: ServerThread) -> None:
    page = (STATIC_DIR / "index.html").read_bytes()
    assert index_html() == page
    with urllib.request.urlopen(served.url("/"), timeout=WAIT_S) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/html")
        assert response.read() == page
    html = page.decode()
    # Offline machines: no external or extra resources (style and script are inline).
    assert re.findall(r"""(?:src|href)\s*=\s*["']([^"'#][^"']*)["']""", html) == []
    assert "/v1/scores" in html


def test_dashboard_charts_live_scores_and_lists_the_alarm_with_a_token(
    browser: Any, served: ServerThread
) -> None:
    browser.get(served.url("/"))
    wait_for(browser, "document.getElementById('conn').dataset.state === 'open'", "the WebSocket to open")
    wait_for(browser, "document.getElementById('load').textContent.includes('/64 streams')", "a status event")

    with open_ingest(served, "call-42") as synthetic, open_ingest(served, "call-43") as genuine:
        stream_noise_then_tone(browser, synthetic, genuine)
    for stream in ("call-42", "call-43"):
        wait_for(browser, f"{card(stream)}.dataset.state === 'ended'", f"{stream} marked ended")
    assert card_attr(browser, "call-43", "alarm") == "off"
    alarm_streams = browser.execute_script(
        "return [...document.querySelectorAll('#alarms li')].map(li => li.dataset.stream)"
    )
    assert set(alarm_streams) == {"call-42"}  # on, then off when the stream closed
    log = browser.execute_script(
        "return [...document.querySelectorAll('#log li')].map(i => `${i.dataset.kind} ${i.dataset.stream}`)"
    )
    assert {"start call-42", "end call-42", "start call-43", "end call-43"} <= set(log)
    shot = save_screenshot(browser, "dashboard-ended.png")
    assert shot.stat().st_size > 10_000


def stream_noise_then_tone(browser: Any, synthetic: ClientConnection, genuine: ClientConnection) -> None:
    """call-42 turns synthetic after 3 s, call-43 stays genuine; the charts follow live."""
    send_audio(synthetic, noise(3.0, seed=1))
    send_audio(genuine, noise(3.0, seed=2))
    # 3 s at window 1 s, hop 0.5 s: 5 windows each
    wait_for(browser, f"{card('call-42')}?.dataset.drawn === '5'", "5 points drawn for call-42")
    wait_for(browser, f"{card('call-43')}?.dataset.drawn === '5'", "5 points drawn for call-43")
    red_before, blue_before = pixel_counts(browser, "call-42")
    assert blue_before > 50, "expected the smoothed line drawn in blue"
    assert red_before < 20, "expected no alarm shading before the synthetic part"
    assert card_attr(browser, "call-42", "alarm") == "off"
    assert browser.execute_script("return document.querySelectorAll('#alarms li').length") == 0

    send_audio(synthetic, tone(4.0))
    send_audio(genuine, noise(4.0, seed=3))
    wait_for(
        browser,
        'document.querySelector(\'#alarms li[data-stream="call-42"][data-state="on"]\')',
        "an alarm for call-42 in the alarm list",
    )
    wait_for(browser, f"{card('call-42')}.dataset.drawn === '13'", "all 13 points of call-42 drawn")
    assert card_attr(browser, "call-42", "alarm") == "on"
    wait_for(browser, f"{card('call-43')}.dataset.drawn === '13'", "all 13 points of call-43 drawn")
    red_after, _ = pixel_counts(browser, "call-42")
    assert red_after > red_before + 500, f"expected the alarm period shaded, found {red_after} red pixels"
    alarm_text = browser.execute_script(
        "return document.querySelector('#alarms li[data-stream=\"call-42\"]').innerText"
    )
    assert re.search(r"\d\d:\d\d:\d\d", alarm_text) and "ALARM ON at" in alarm_text

    save_screenshot(browser, "dashboard.png")  # live, alarm on: the picture the README shows
    stop_ingest(synthetic, "call-42")
    stop_ingest(genuine, "call-43")


def healthz_with_detector(
    original: Callable[[SpoofwatchServer], web.Response],
) -> Callable[[SpoofwatchServer], web.Response]:
    """/healthz naming the detector, as the dashboard expects when the server reports it."""

    def healthz(self: SpoofwatchServer) -> web.Response:
        response = original(self)
        assert isinstance(response.body, bytes)
        body = json.loads(response.body)
        body["detector"] = body.get("detector") or "whisper-base-test"
        response.body = json.dumps(body).encode()
        return response

    return healthz


def test_dashboard_reconnects_after_the_server_restarts_and_rereads_its_identity(
    browser: Any, served_open: ServerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    browser.get(served_open.url("/"))
    wait_for(browser, "document.body.dataset.connects === '1'", "the first connection")
    served_open.stop_server()
    wait_for(browser, "document.getElementById('conn').dataset.state !== 'open'", "the drop to be noticed")
    assert not browser.execute_script("return document.getElementById('notice').hidden")
    monkeypatch.setattr(SpoofwatchServer, "_healthz", healthz_with_detector(SpoofwatchServer._healthz))
    served_open.start()  # same port, a new server that names its detector
    wait_for(browser, "document.body.dataset.connects === '2'", "a reconnection")
    wait_for(browser, "document.getElementById('conn').dataset.state === 'open'", "the connection to be open")
    with urllib.request.urlopen(served_open.url("/healthz"), timeout=WAIT_S) as response:
        detector = json.load(response)["detector"]
    wait_for(
        browser, f"document.getElementById('detector').textContent === {json.dumps(detector)}", "the detector"
    )

    with open_ingest(served_open, "after-restart") as ws:
        send_audio(ws, noise(2.0))
        stop_ingest(ws, "after-restart")
    wait_for(browser, f"{card('after-restart')}?.dataset.state === 'ended'", "the new stream shown")
    wait_for(browser, f"{card('after-restart')}.dataset.drawn === '3'", "its 3 points drawn")  # next frame
    save_screenshot(browser, "dashboard-reconnected.png")


def test_missing_browser_is_reported_with_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    reason = chromium_missing_reason()
    assert reason is not None and "apt-get install chromium chromium-driver" in reason


def test_dashboard_shows_a_gap_and_logs_it(browser: Any, served: ServerThread) -> None:
    browser.get(served.url("/"))
    wait_for(browser, "document.getElementById('conn').dataset.state === 'open'", "the WebSocket to open")
    with open_ingest(served, "call-gap") as ws:
        send_audio(ws, noise(2.0, seed=4))
        ws.send(json.dumps({"type": "gap", "seconds": 3.0, "cause": "paused"}))
        send_audio(ws, noise(2.0, seed=5))
        wait_for(browser, f"{card('call-gap')}?.dataset.gaps === '1'", "the gap drawn for call-gap")
        stop_ingest(ws, "call-gap")
    log = browser.execute_script(
        "return [...document.querySelectorAll('#log li[data-kind=\"gap\"]')].map(li => li.innerText)"
    )
    assert len(log) == 1 and "gap 2.0-5.0 s (paused): not scored" in log[0]
