"""The dashboard's feedback buttons in headless Chromium (the browser machinery of
tests/test_dashboard.py) against the real server with a token, ``POST /v1/feedback``
mounted through ``extra_routes``; the feedback lands in the real feedback store."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest

from fakes import FeatureFakeScorer, noise, tone
from spoofwatch.config import ServerConfig
from spoofwatch.feedback.capture import FeatureRing
from spoofwatch.feedback.desk import FeedbackDesk
from spoofwatch.feedback.routes import feedback_routes
from spoofwatch.learning.feedback_store import FeedbackStore, read_feedback
from spoofwatch.model.identity import CardIdentity
from spoofwatch.stream.engine.pipeline import Pipeline
from spoofwatch.stream.net.server import SpoofwatchServer
from test_dashboard import CFG, ENGINE, TOKEN, browser, card, wait_for  # noqa: F401 - browser is a fixture

pytestmark = pytest.mark.browser
T = TypeVar("T")


class AppThread:
    """A pipeline with a feedback desk behind the real server (token required, the
    feedback route mounted through ``extra_routes``), on its own loop and thread."""

    def __init__(self, feedback_dir: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="feedback-app")
        self.feedback_dir = feedback_dir
        self.port = 0

    def call(self, body: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(body, self.loop).result(timeout=30)

    async def _start(self) -> None:
        card = CardIdentity(name="dash-card", sha256="d" * 64, version="1")
        self.pipeline = Pipeline(FeatureFakeScorer(), CFG, ENGINE, node="dash", card=card)
        desk = FeedbackDesk(self.pipeline, FeatureRing(), FeedbackStore(self.feedback_dir))
        self.worker = asyncio.create_task(self.pipeline.run())
        config = ServerConfig(host="127.0.0.1", port=0, token=TOKEN)
        self.server = SpoofwatchServer(self.pipeline, config, extra_routes=feedback_routes(desk))
        await self.server.start()
        self.port = self.server.port

    async def _stop(self) -> None:
        await self.server.stop()
        self.worker.cancel()
        await asyncio.gather(self.worker, return_exceptions=True)

    async def call_with_alarm(self, stream: str) -> None:
        handle = self.pipeline.open_stream(stream, source="ingest", sample_rate=16000)
        audio = np.concatenate([noise(2.0), tone(4.0)])
        for start in range(0, len(audio), 1600):
            handle.feed(audio[start : start + 1600])
            await asyncio.sleep(0.005)

    async def open_silent(self, stream: str) -> None:
        self.pipeline.open_stream(stream, source="ingest", sample_rate=16000)

    def __enter__(self) -> AppThread:
        self.thread.start()
        self.call(self._start())
        return self

    def __exit__(self, *exc: object) -> None:
        self.call(self._stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@pytest.fixture
def app(tmp_path: Path) -> Iterator[AppThread]:
    with AppThread(tmp_path / "fb") as served:
        yield served


def test_dashboard_buttons_record_feedback_on_an_alarm_and_a_stream_and_show_refusals(
    browser: Any,  # noqa: F811
    app: AppThread,
    tmp_path: Path,
) -> None:
    from selenium.webdriver.common.by import By

    browser.get(f"http://127.0.0.1:{app.port}/?token={TOKEN}")
    wait_for(browser, "document.getElementById('node')?.textContent === 'dash'", "the status event")
    app.call(app.call_with_alarm("call-a"))
    alarm_button = "#alarms li[data-state='on'] .fb button[data-label='confirmed_synthetic']"
    wait_for(browser, f'document.querySelector("{alarm_button}")', "an alarm with feedback buttons")
    browser.find_element(By.CSS_SELECTOR, alarm_button).click()
    wait_for(browser, f"{card('call-a')}?.dataset.feedback === 'confirmed_synthetic'", "the feedback event")
    note = browser.find_element(By.CSS_SELECTOR, "section.stream[data-stream='call-a'] .fb input")
    note.send_keys("agent's own voice")
    bar = "section.stream[data-stream='call-a'] .fb button[data-label='false_alarm']"
    browser.find_element(By.CSS_SELECTOR, bar).click()
    wait_for(browser, f"{card('call-a')}?.dataset.feedback === 'false_alarm'", "the second feedback event")
    app.call(app.open_silent("quiet"))  # no window scored yet: nothing to mark
    wait_for(browser, card("quiet"), "the quiet stream's card")
    quiet = "section.stream[data-stream='quiet'] .fb button[data-label='missed_synthetic']"
    browser.find_element(By.CSS_SELECTOR, quiet).click()
    refused = wait_for(
        browser,
        "[...document.querySelectorAll('#log li')].map(li => li.innerText)"
        ".find(t => t.includes('feedback refused'))",
        "the refusal in the log",
    )
    assert "(404)" in refused and "no recent windows kept" in refused
    rows = read_feedback(tmp_path / "fb")
    assert [(r.label, r.metadata["via"], r.stream_id) for r in rows] == [
        ("confirmed_synthetic", "dashboard", "call-a"),
        ("false_alarm", "dashboard", "call-a"),
    ]
    assert rows[0].metadata["alarm_t"] is not None and rows[0].window_count and rows[0].note == ""
    assert rows[1].metadata["alarm_t"] is None and rows[1].note == "agent's own voice"
    assert rows[1].window_count >= rows[0].window_count  # the whole kept stream vs the alarm's span
