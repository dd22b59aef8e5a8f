"""The dashboard, opened mid-call in headless Chromium, draws the calls already running
from ``/v1/streams`` and lists each alarm's evidence with an audio player and a score
timeline, for evidence saved before the page opened and for new evidence arriving live.

The page, the evidence handlers and ``/v1/scores`` come from the real ``SpoofwatchServer``
with a token (the page passes it on to every fetch and to the audio player), beside the
evidence recorder on a real pipeline (``FakeScorer``: noise is bona fide, a tone is spoof).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest

from fakes import FakeScorer, noise, tone
from spoofwatch.config import EngineConfig, ServerConfig, Settings, StreamConfig
from spoofwatch.stream.app import build_tasks, evidence_http
from spoofwatch.stream.engine.pipeline import Pipeline, StreamHandle
from spoofwatch.stream.net.server import SpoofwatchServer
from test_dashboard import browser, save_screenshot, wait_for  # noqa: F401 - browser is a fixture

pytestmark = pytest.mark.browser

T = TypeVar("T")
CFG = StreamConfig(window_s=1.0, hop_s=0.5, alarm_min_on_s=0.5, smoothing_n=2)
ENGINE = EngineConfig(max_batch=8, max_wait_ms=5)
SR = 16000
WAIT_S = 10.0
TOKEN = "evidence-s3cret"


class EvidenceSite:
    """Pipeline, recorder and the real ``SpoofwatchServer`` (token on) with the evidence
    handlers mounted, on a loop in a background thread."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="evidence-site", daemon=True)
        self.tasks: list[asyncio.Task[None]] = []
        self.server: SpoofwatchServer | None = None
        self.port = 0

    def call(self, body: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(body, self.loop).result(timeout=WAIT_S * 2)

    async def _start(self) -> None:
        self.pipeline = Pipeline(FakeScorer(), CFG, ENGINE)
        settings = Settings(
            stream=CFG,
            engine=ENGINE,
            server=ServerConfig(port=0, token=TOKEN, evidence_dir=str(self.folder), evidence_seconds=6.0),
        )
        tasks = build_tasks(self.pipeline, settings, websocket=False)  # the recorder
        routes = evidence_http(self.pipeline, settings, tasks)  # and the live-stream tracker
        self.recorder_written = lambda: len(list(self.folder.glob("*.json")))
        self.tasks = [asyncio.create_task(self.pipeline.run())]
        self.tasks += [asyncio.create_task(factory()) for factory in tasks.values()]
        self.server = SpoofwatchServer(self.pipeline, settings.server, extra_routes=routes)
        await self.server.start()
        self.port = self.server.port

    async def _stop(self) -> None:
        if self.server is not None:
            await self.server.stop()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def feed(self, handle: StreamHandle, audio: np.ndarray) -> None:
        for start in range(0, len(audio), 1600):
            await handle.feed_wait(audio[start : start + 1600])

    async def call_with_alarm(self, name: str) -> dict[str, StreamHandle]:
        """Two parties; the caller turns synthetic and its evidence is written. Left open."""
        before = self.recorder_written()
        handles = {
            party: self.pipeline.open_stream(f"{name}:{party}", source="test", sample_rate=SR)
            for party in ("caller", "agent")
        }
        await self.feed(handles["caller"], np.concatenate([noise(6.0, seed=1), tone(4.0)]))
        await self.feed(handles["agent"], noise(10.0, seed=2))
        while self.recorder_written() == before:
            await asyncio.sleep(0.01)
        return handles

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}?token={TOKEN}"


@pytest.fixture
def site(tmp_path: Path) -> Iterator[EvidenceSite]:
    running = EvidenceSite(tmp_path / "evidence")
    running.thread.start()
    running.call(running._start())
    try:
        yield running
    finally:
        running.call(running._stop())
        running.loop.call_soon_threadsafe(running.loop.stop)
        running.thread.join(timeout=WAIT_S)
        running.loop.close()


AUDIO_DURATION_JS = """
const [audio, done] = [arguments[0], arguments[arguments.length - 1]];
audio.addEventListener("loadedmetadata", () => done(audio.duration), { once: true });
audio.addEventListener("error", () => done(-1), { once: true });
audio.preload = "metadata"; audio.load();
"""


def test_a_dashboard_opened_mid_call_shows_running_calls_and_plays_alarm_evidence(
    browser: Any,  # noqa: F811 - the fixture imported above
    site: EvidenceSite,
) -> None:
    site.call(site.call_with_alarm("call-1"))  # before the page opens
    browser.get(site.url("/"))
    for party in ("caller", "agent"):
        card = f"document.querySelector('section.stream[data-stream=\"call-1:{party}\"]')"
        wait_for(
            browser,
            f"{card}?.dataset.snapshot === '1' && Number({card}.dataset.points) > 5",
            f"{party}'s card",
        )
    caller = "document.querySelector('section.stream[data-stream=\"call-1:caller\"]')"
    assert browser.execute_script(f"return {caller}.dataset.alarm") == "on"
    box = "document.querySelector('#alarms .evidence')"
    wait_for(
        browser, f"Number({box}?.querySelector('canvas')?.dataset.drawn) > 0", "the evidence score timeline"
    )
    audio = browser.execute_script(f"return {box}.querySelector('audio')")
    assert audio.get_attribute("src").endswith(f".wav?token={TOKEN}")
    assert browser.execute_script(f"return {box}.closest('li').dataset.stream") == "call-1:caller"
    browser.set_script_timeout(WAIT_S)
    duration = browser.execute_async_script(AUDIO_DURATION_JS, audio)
    assert duration == pytest.approx(6.0, abs=0.05)  # the browser decoded the 6 s clip
    save_screenshot(browser, "dashboard-evidence.png")

    site.call(site.call_with_alarm("call-2"))  # live, while the page is open
    wait_for(browser, "document.querySelectorAll('#alarms .evidence').length === 2", "the live evidence")
    newest = browser.execute_script("return document.querySelector('#alarms li').dataset.stream")
    assert newest == "call-2:caller"
