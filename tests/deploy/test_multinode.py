"""Two ingest nodes (``spoofwatch serve`` subprocesses) behind a real HAProxy, one real
Mosquitto, and ``examples/callcenter_sim.py`` placing calls of every protocol through
HAProxy while watching one node's cluster view: every call is scored on one of the two
nodes, every synthetic turn raises its alarm, and draining a node (SIGTERM) sends new
calls to the other while its own calls run to their end; then it goes offline and exits 0."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.util
import io
import json
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import soundfile as sf
from cluster_kit import ROOT, HAProxy, Node, load_script

from fakes import noise, tone
from mosquitto_broker import (  # noqa: F401 - the fixtures register by being imported
    MosquittoBroker,
    mosquitto_factory_fixture,
    mosquitto_fixture,
)
from waits import scaled, wait_until

pytestmark = [pytest.mark.slow]

sim = load_script(ROOT / "examples" / "callcenter_sim.py", "callcenter_sim_multinode")

STREAMS_PER_CALL = 2 + 2 + 1 + 2  # AudioHook, jambonz (stereo), AudioSocket, Twilio (both tracks)

FAST_STREAM = """
[stream]
window_s = 1.0
hop_s = 0.5
alarm_min_on_s = 0.5
smoothing_n = 2
"""


def simulate(argv: list[str], timeout_s: float = 90.0) -> dict[str, Any]:
    async def bounded() -> dict[str, Any]:
        async with asyncio.timeout(scaled(timeout_s)):
            summary: dict[str, Any] = await sim.simulate([*argv, "--json"], io.StringIO())
            return summary

    return asyncio.run(bounded())


class Cluster:
    def __init__(self, nodes: list[Node], haproxy: HAProxy, broker: MosquittoBroker) -> None:
        self.nodes = nodes
        self.haproxy = haproxy
        self.broker = broker

    def sim_args(self, watch: Node, clips: tuple[str, str], *extra: str) -> list[str]:
        return [
            "--url",
            self.haproxy.url,
            "--audiosocket",
            f"127.0.0.1:{self.haproxy.audiosocket_port}",
            "--watch",
            f"{watch.url}/v1/cluster",
            "--bona-fide",
            clips[0],
            "--synthetic",
            clips[1],
            *extra,
        ]


@contextlib.contextmanager
def cluster_of(
    broker: MosquittoBroker,
    workdir: Path,
    *,
    fake: bool,
    extra: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> Iterator[Cluster]:
    """Two nodes n1, n2 behind HAProxy: FakeScorer with a 1 s window, or the real default
    detector (``extra``: more ``serve`` arguments, e.g. the scorer)."""
    config = workdir / "spoofwatch.toml"
    config.write_text(FAST_STREAM)
    nodes = [
        Node(name, broker.url, config if fake else None, fake=fake, extra=extra, env=env)
        for name in ("n1", "n2")
    ]
    haproxy: HAProxy | None = None
    try:
        for node in nodes:
            node.wait_ready(timeout_s=60 if fake else 240)
        haproxy = HAProxy(nodes, workdir)
        haproxy.wait_states({"node1": "UP", "node2": "UP"})
        yield Cluster(nodes, haproxy, broker)
    finally:
        if haproxy is not None:
            haproxy.stop()
        for node in nodes:
            node.stop()


@pytest.fixture
def fake_cluster(mosquitto: MosquittoBroker, tmp_path: Path) -> Iterator[Cluster]:
    with cluster_of(mosquitto, tmp_path, fake=True) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    folder = tmp_path_factory.mktemp("multinode-audio")
    bona_fide, synthetic = folder / "noise.wav", folder / "tone.wav"
    sf.write(bona_fide, noise(4.0, 16000, seed=7), 16000)
    sf.write(synthetic, tone(3.0, 16000), 16000)
    return str(bona_fide), str(synthetic)


def availability_watch(broker: MosquittoBroker, node: str) -> tuple[threading.Event, threading.Thread]:
    """Set the event when ``node`` publishes availability ``offline`` (retained messages
    at subscribe time are skipped: the node is online then)."""
    import paho.mqtt.subscribe as subscribe

    offline = threading.Event()

    def watch() -> None:
        def on_message(client: Any, userdata: Any, message: Any) -> None:
            if message.payload == b"offline" and not message.retain:
                offline.set()
                client.disconnect()

        subscribe.callback(
            on_message, f"spoofwatch/{node}/availability", hostname="127.0.0.1", port=broker.port
        )

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return offline, thread


def check_every_call(summary: dict[str, Any], *, false_alarms: bool = False) -> None:
    assert summary["failed"] == 0 and summary["refused"] == 0, summary["per_call"]
    assert summary["answered"] == summary["calls"]
    for call in summary["per_call"]:
        assert call["scores"] > 0, call  # every call scored
        assert call["node"] in ("n1", "n2"), call
        if call["synthetic_from_s"] is not None:
            assert call["flagged"], call  # every synthetic turn raises its alarm
        elif not false_alarms:
            assert not call["false_alarm"], call
    assert summary["detected"] == summary["synthetic_calls"] > 0


def test_calls_spread_over_two_nodes_and_a_draining_node_hands_new_calls_to_the_other(
    fake_cluster: Cluster, clips: tuple[str, str]
) -> None:
    n1, n2 = fake_cluster.nodes
    haproxy = fake_cluster.haproxy
    offline, watcher = availability_watch(fake_cluster.broker, "n1")
    first: dict[str, Any] = {}

    def first_wave() -> None:
        args = fake_cluster.sim_args(n2, clips, "--calls", "12", "--speed", "1", "--stagger-s", "0.05")
        first.update(simulate(args))

    wave = threading.Thread(target=first_wave)
    wave.start()
    # SIGTERM n1 once every call of the first wave is live (some of them on n1).
    streams = STREAMS_PER_CALL * 3  # 12 calls: three of each protocol
    wait_until(
        lambda: sum(n.health()[1].get("streams", 0) for n in (n1, n2)) == streams, 20, "all calls live"
    )
    assert n1.health()[1]["streams"] > 0
    n1.terminate()
    wait_until(lambda: n1.health()[0] == 503, 10, "n1's /healthz to say draining")
    assert n1.health()[1]["status"] == "draining"
    haproxy.wait_states({"node1": "DOWN", "node2": "UP"})
    second = simulate(
        fake_cluster.sim_args(n2, clips, "--calls", "6", "--speed", "4", "--seed", "1", "--stagger-s", "0.02")
    )
    wave.join(scaled(90))
    assert not wave.is_alive()
    assert n1.wait_exit(40) == 0, n1.log.text()[-3000:]
    assert offline.wait(scaled(10)), "n1 did not publish availability offline"
    watcher.join(scaled(5))

    check_every_call(first)
    check_every_call(second)
    assert {c["node"] for c in first["per_call"]} == {"n1", "n2"}  # spread over both
    assert {c["node"] for c in second["per_call"]} == {"n2"}  # the draining node took none
    protocols = {c["protocol"] for c in first["per_call"] + second["per_call"] if c["node"] == "n1"}
    assert len(protocols) >= 2  # WebSocket and AudioSocket calls both reached n1 through HAProxy
    log = n1.log.text()
    assert "draining: refusing new calls" in log and "drain timeout" not in log
    assert n2.health()[1]["status"] == "ok"
    assert json.loads(json.dumps(second))  # the summary is plain JSON


@pytest.fixture(scope="module")
def real_clips(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """Shorter cuts of the sim's own clips: 4 s of LibriSpeech, 5 s of eSpeak."""
    from spoofwatch.audio.files import load_audio

    folder = tmp_path_factory.mktemp("multinode-real-audio")
    paths = []
    for name, clip, seconds in (
        ("real.wav", sim.DEFAULT_BONA_FIDE[0], 4.0),
        ("espeak.wav", sim.DEFAULT_SYNTHETIC[0], 5.0),
    ):
        samples = load_audio(clip, 16000).samples[: int(seconds * 16000)]
        sf.write(folder / name, samples, 16000)
        paths.append(str(folder / name))
    return paths[0], paths[1]


@pytest.mark.real_weights
def test_two_nodes_with_the_real_default_detector_flag_every_synthetic_turn(
    mosquitto: MosquittoBroker, tmp_path: Path, real_clips: tuple[str, str]
) -> None:
    """The shipped detector on both nodes, LibriSpeech turning to eSpeak through G.711 and
    HAProxy: every call is scored by one of the nodes and every turn to synthetic speech
    is flagged. (False alarms on bona fide speech are the detector's business, measured in
    docs/accuracy.md, not this deployment's.)"""
    with cluster_of(mosquitto, tmp_path, fake=False) as cluster:
        watch = cluster.nodes[1]
        args = cluster.sim_args(watch, real_clips, "--calls", "4", "--speed", "1", "--stagger-s", "0.2")
        summary = simulate([*args, "--keep-scores"], timeout_s=120)
    assert summary["dropped_windows"] == 0, summary
    check_every_call(summary, false_alarms=True)
    assert summary["synthetic_calls"] == 2
    assert {c["node"] for c in summary["per_call"]} == {"n1", "n2"}
    check_scores_equal_local(summary, real_clips)


@functools.cache
def local_detector() -> Any:
    """The default detector, loaded once for the tests of this module."""
    from spoofwatch.model.artifact import load_detector

    return load_detector()


def local_windows(clips: tuple[str, str], calls: int) -> list[list[tuple[float, float]]]:
    """Each call's customer audio, as the sim plans it, scored by the local default
    detector in this process: (t_end, score) per window."""
    from spoofwatch.events import ScoreEvent
    from spoofwatch.stream.engine.pipeline import Pipeline

    planned = sim.plan_calls(
        calls, sim.PROTOCOLS, sim.load_clips([clips[0]]), sim.load_clips([clips[1]]), 0.5, 0
    )

    async def score() -> list[list[tuple[float, float]]]:
        pipeline = Pipeline(local_detector())
        sub = pipeline.hub.subscribe(maxsize=100_000)
        worker = asyncio.create_task(pipeline.run())
        for call in planned:
            handle = pipeline.open_stream(f"call-{call.index}", source="test", sample_rate=sim.RATE)
            handle.feed(call.customer)
            await handle.close()
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)
        found: dict[str, list[tuple[float, float]]] = {}
        while not sub.queue.empty():
            event = sub.queue.get_nowait()
            if isinstance(event, ScoreEvent):
                found.setdefault(event.stream, []).append((event.t_end, event.score))
        return [found.get(f"call-{call.index}", []) for call in planned]

    return asyncio.run(score())


def check_scores_equal_local(summary: dict[str, Any], clips: tuple[str, str]) -> None:
    """Every window each node scored equals the local detector's score of it (to 1e-4)."""
    expected = local_windows(clips, len(summary["per_call"]))
    for call, local in zip(summary["per_call"], expected, strict=True):
        served = {round(t, 3): score for t, score in call["windows"]}
        offline = {round(t, 3): score for t, score in local}
        assert served.keys() == offline.keys(), (call["call"], sorted(served), sorted(offline))
        for t_end, score in served.items():
            assert score == pytest.approx(offline[t_end], abs=1e-4), (call["call"], t_end)


@pytest.mark.real_weights
def test_two_nodes_on_the_ray_pool_lose_no_call_when_a_replica_dies_and_score_as_local(
    mosquitto: MosquittoBroker, tmp_path: Path, real_clips: tuple[str, str]
) -> None:
    """``--scorer ray``: both nodes send their windows to a local Ray Serve pool of two
    replicas of the default detector; one replica is killed while the calls run. Every
    call is scored, every synthetic turn flagged, and every window's score equals the local
    detector's (so no window was lost to the dead replica)."""
    pytest.importorskip("ray")
    if importlib.util.find_spec("spoofwatch.pool") is None:
        pytest.skip("the Ray Serve pool (spoofwatch.pool) is not in this checkout")
    from ray_pool import ray_pool

    result: dict[str, Any] = {}
    with ray_pool(replicas=2) as pool:
        extra = ["--scorer", "ray", "--ray-address", pool.address]
        with cluster_of(mosquitto, tmp_path, fake=False, extra=extra, env=pool.env) as cluster:
            args = cluster.sim_args(cluster.nodes[1], real_clips, "--calls", "4", "--speed", "1")
            wave = threading.Thread(target=lambda: result.update(simulate([*args, "--keep-scores"], 150)))
            wave.start()
            live = 2 + 2 + 1 + 2  # 4 calls, one per protocol
            wait_until(
                lambda: sum(n.health()[1].get("streams", 0) for n in cluster.nodes) == live, 60, "calls"
            )
            time.sleep(1.0)  # a few windows on each replica first
            pool.kill_replica()
            wave.join(scaled(180))
    assert pool.killed and result, "the run did not finish"
    check_every_call(result, false_alarms=True)
    check_scores_equal_local(result, real_clips)
