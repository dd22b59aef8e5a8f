"""The dashboard of one node with ``--cluster-view`` in headless Chromium: calls placed
on two ``spoofwatch serve`` nodes (``fake_node.py``) sharing a real Mosquitto show up as
cards named NODE/STREAM, the synthetic call's alarm in the one alarm list, and both
nodes' load in the Nodes panel."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import soundfile as sf
from cluster_kit import ROOT, Node, load_script
from test_multinode import FAST_STREAM

from fakes import noise, tone
from mosquitto_broker import (  # noqa: F401 - the fixtures register by being imported
    MosquittoBroker,
    mosquitto_factory_fixture,
    mosquitto_fixture,
)
from test_dashboard import (
    browser,  # noqa: F401 - the fixture registers by being imported
    card,
    save_screenshot,
    wait_for,
)

pytestmark = [pytest.mark.slow, pytest.mark.browser]

sim = load_script(ROOT / "examples" / "callcenter_sim.py", "callcenter_sim_dashboard")


@pytest.fixture
def two_nodes(mosquitto: MosquittoBroker, tmp_path: Path) -> Iterator[list[Node]]:
    config = tmp_path / "spoofwatch.toml"
    config.write_text(FAST_STREAM)
    nodes = [Node(name, mosquitto.url, config) for name in ("n1", "n2")]
    try:
        for node in nodes:
            node.wait_ready()
        yield nodes
    finally:
        for node in nodes:
            node.stop()


def place_calls(node: Node, bona_fide: Path, synthetic: Path, fraction: str) -> dict[str, Any]:
    argv = [
        "--url", node.url, "--audiosocket", f"127.0.0.1:{node.audiosocket_port}",
        "--bona-fide", str(bona_fide), "--synthetic", str(synthetic), "--calls", "1",
        "--protocols", "audiosocket", "--speed", "0", "--synthetic-fraction", fraction, "--json",
    ]  # fmt: skip
    summary: dict[str, Any] = asyncio.run(sim.simulate(argv, io.StringIO()))
    return summary


def test_one_dashboard_shows_the_calls_alarms_and_load_of_every_node(
    browser: Any,  # noqa: F811 - the imported fixture
    two_nodes: list[Node],
    tmp_path: Path,
) -> None:
    n1, n2 = two_nodes
    bona_fide, synthetic = tmp_path / "noise.wav", tmp_path / "tone.wav"
    sf.write(bona_fide, noise(3.0, 16000, seed=3), 16000)
    sf.write(synthetic, tone(3.0, 16000), 16000)
    browser.get(f"http://127.0.0.1:{n1.port}/")
    wait_for(browser, "document.getElementById('conn').dataset.state === 'open'", "the WebSocket to open")
    wait_for(browser, "document.querySelectorAll('#nodes li').length === 2", "both nodes in the Nodes panel")

    on_n2 = place_calls(n2, bona_fide, synthetic, "1")["per_call"][0]["stream"]
    on_n1 = place_calls(n1, bona_fide, synthetic, "0")["per_call"][0]["stream"]
    for name in (f"n2/{on_n2}", f"n1/{on_n1}"):
        wait_for(browser, f"{card(name)}?.dataset.state === 'ended'", f"{name}'s card, ended")
    alarms = browser.execute_script(
        "return [...document.querySelectorAll('#alarms li')]"
        ".map(i => `${i.dataset.state} ${i.dataset.stream}`)"
    )
    assert f"on n2/{on_n2}" in alarms and not [a for a in alarms if on_n1 in a]
    panel = browser.execute_script(
        "return [...document.querySelectorAll('#nodes li')].map(li => `${li.dataset.node} ${li.innerText}`)"
    )
    assert [line.split()[0] for line in panel] == ["n1", "n2"]
    assert all("online" in line and "/64 streams" in line for line in panel), panel
    assert browser.execute_script("return document.getElementById('node').textContent") == "n1"
    assert save_screenshot(browser, "dashboard-cluster.png").stat().st_size > 10_000
