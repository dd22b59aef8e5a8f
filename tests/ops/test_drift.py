"""Drift statistic, sliding histograms, hysteresis and the card's reference section."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import generate_latest

from fakes import FakeScorer, noise, tone
from spoofwatch.config import EngineConfig, StreamConfig
from spoofwatch.errors import ConfigError, ModelError
from spoofwatch.events import DriftEvent, Event, parse_event, to_json
from spoofwatch.ops.drift import (
    CARD_KEY,
    DEFAULT_EDGES,
    DriftMonitor,
    DriftReference,
    SlidingHistograms,
    WindowFeatures,
    bin_index,
    detector_identity,
    drift_monitor_for,
    js_divergence,
    reference_section,
    window_features,
)
from spoofwatch.ops.metrics import ServerMetrics
from spoofwatch.stream.engine.pipeline import Pipeline


def test_js_divergence_is_zero_for_equal_one_for_disjoint_and_symmetric() -> None:
    assert js_divergence([1, 2, 3], [2, 4, 6]) == pytest.approx(0.0, abs=1e-12)
    assert js_divergence([1, 0, 0], [0, 0, 5]) == pytest.approx(1.0)
    p, q = [5, 3, 1, 0], [1, 1, 4, 3]
    assert js_divergence(p, q) == pytest.approx(js_divergence(q, p))
    # Hand-computed: p = (1, 0), q = (1/2, 1/2), m = (3/4, 1/4).
    expected = 0.5 * math.log2(1 / 0.75) + 0.5 * (0.5 * math.log2(0.5 / 0.75) + 0.5 * math.log2(0.5 / 0.25))
    assert js_divergence([1, 0], [1, 1]) == pytest.approx(expected)


def test_js_divergence_grows_with_the_shift() -> None:
    bins = np.arange(20)
    reference = np.exp(-0.5 * ((bins - 10) / 2.0) ** 2)
    shifts = [js_divergence(np.roll(reference, k), reference) for k in (0, 1, 2, 4, 8)]
    assert shifts == sorted(shifts) and shifts[0] < 1e-12 and shifts[-1] > 0.5


def test_js_divergence_refuses_mismatched_or_empty_histograms() -> None:
    with pytest.raises(ValueError, match="same bins"):
        js_divergence([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="non-negative"):
        js_divergence([0, 0], [1, 2])
    with pytest.raises(ValueError, match="non-negative"):
        js_divergence([-1, 2], [1, 2])


def test_values_beyond_the_edges_land_in_the_outer_bins() -> None:
    edges = DEFAULT_EDGES["score"]
    assert bin_index(edges, -100.0) == 0
    assert bin_index(edges, 100.0) == len(edges) - 2
    assert bin_index(edges, 0.5) == edges.index(0.0)


def test_window_features_level_and_speech_share() -> None:
    rate = 16000
    loud = np.full(rate, 0.1, dtype=np.float32)  # -20 dBFS
    half = np.concatenate([loud[: rate // 2], np.zeros(rate // 2, dtype=np.float32)])
    f = window_features(loud, rate, 1.5, True, -50.0)
    assert f.level_dbfs == pytest.approx(-20.0) and f.speech_share == 1.0 and f.score == 1.5
    assert window_features(half, rate, 0.0, True, -50.0).speech_share == pytest.approx(0.5)


def reference(score_counts: list[int]) -> DriftReference:
    """A reference whose score histogram is ``score_counts`` over bins -3..3; level and
    speech share all in one bin."""
    card = {
        CARD_KEY: {
            "features": {
                "score": {"edges": [-3, -2, -1, 0, 1, 2, 3], "bonafide": score_counts, "spoof": [1] * 6},
                "level_dbfs": {"edges": [-60, -30, 0], "bonafide": [0, 10], "spoof": [5, 5]},
                "speech_share": {"edges": [0, 0.5, 1], "bonafide": [0, 10], "spoof": [5, 5]},
            },
            "windows": {"bonafide": 10, "spoof": 6},
        }
    }
    ref = DriftReference.from_card(card)
    assert ref is not None
    return ref


def features(score: float) -> WindowFeatures:
    return WindowFeatures(score=score, level_dbfs=-20.0, speech_share=1.0, speech=True)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_monitor_fires_on_a_shift_only_after_min_windows_and_rearms_with_hysteresis() -> None:
    clock = Clock()
    monitor = DriftMonitor(
        reference([0, 0, 0, 5, 5, 0]), "n1", window_s=60.0, threshold=0.2, min_windows=10, clock=clock
    )
    events: list[DriftEvent] = []
    for i in range(10):  # like the reference: no event
        clock.now += 0.5
        event = monitor.observe(features(0.5 + i % 2))
        assert event is None
    assert monitor.windows == 10 and monitor.statistic < 0.2
    for _ in range(40):  # scores move to -2.5: fires once
        clock.now += 0.5
        if (event := monitor.observe(features(-2.5))) is not None:
            events.append(event)
    assert [e.state for e in events] == ["on"]
    on = events[0]
    assert on.node == "n1" and on.statistic > 0.2 and on.score_divergence == on.statistic
    assert on.level_divergence == 0.0 and on.speech_divergence == 0.0 and on.threshold == 0.2
    # The shifted windows age out of the 60 s period; back to the reference: off, once.
    for i in range(200):
        clock.now += 0.5
        if (event := monitor.observe(features(0.5 + i % 2))) is not None:
            events.append(event)
    assert [e.state for e in events] == ["on", "off"]
    assert events[1].statistic < 0.7 * 0.2


def test_monitor_does_not_fire_before_min_windows() -> None:
    clock = Clock()
    monitor = DriftMonitor(
        reference([0, 0, 0, 5, 5, 0]), "n", window_s=60.0, threshold=0.2, min_windows=50, clock=clock
    )
    assert all(monitor.observe(features(-2.5)) is None for _ in range(49))
    assert monitor.statistic > 0.9 and not monitor.on
    assert monitor.observe(features(-2.5)) is not None and monitor.on


def test_sliding_histograms_forget_slots_older_than_the_period() -> None:
    hist = SlidingHistograms(
        {"score": (0.0, 1.0, 2.0), "level_dbfs": (0.0, 1.0), "speech_share": (0.0, 1.0)}, 30.0, 3
    )
    hist.add(0.0, WindowFeatures(0.5, 0.5, 0.5, True))
    hist.add(12.0, WindowFeatures(1.5, 0.5, 0.5, False))  # not speech: no score count
    windows, totals = hist.totals(15.0)
    assert windows == 2 and totals["score"].tolist() == [1, 0] and totals["speech_share"].tolist() == [2]
    windows, totals = hist.totals(31.0)  # the first slot (0..10 s) has left the period
    assert windows == 1 and totals["score"].tolist() == [0, 0]
    windows, _ = hist.totals(1000.0)
    assert windows == 0


def test_reference_section_round_trips_through_the_card() -> None:
    feats = [features(0.5), features(0.5), features(-2.5), WindowFeatures(9.0, -70.0, 0.05, False)]
    section = reference_section(
        feats, ["bonafide", "bonafide", "spoof", "bonafide"], source={"made_by": "test"}
    )
    assert section["windows"] == {"bonafide": 3, "spoof": 1}
    assert sum(section["features"]["score"]["bonafide"]) == 2  # the non-speech window is left out
    assert sum(section["features"]["speech_share"]["bonafide"]) == 3
    only_bona = DriftReference.from_card({CARD_KEY: section})
    mixed = DriftReference.from_card({CARD_KEY: section}, spoof_share=0.5)
    assert only_bona is not None and mixed is not None
    zero = DEFAULT_EDGES["score"].index(0.0)
    assert only_bona.probabilities["score"][zero] == pytest.approx(1.0)
    assert mixed.probabilities["score"][zero] == pytest.approx(0.5)
    assert DriftReference.from_card({}) is None


def test_malformed_reference_and_settings_are_refused_with_the_reason() -> None:
    with pytest.raises(ModelError, match="drift_reference: malformed"):
        DriftReference.from_card({CARD_KEY: {"features": {}}})
    bad = reference_section([features(0.5)], ["bonafide"])
    bad["features"]["score"]["bonafide"] = [1, 2]
    with pytest.raises(ModelError, match=r"score\.bonafide"):
        DriftReference.from_card({CARD_KEY: bad})
    with pytest.raises(ConfigError, match="drift_threshold"):
        EngineConfig(drift_threshold=1.5)
    with pytest.raises(ConfigError, match="drift_min_windows"):
        EngineConfig(drift_min_windows=0)


def test_drift_event_round_trips_on_the_wire() -> None:
    event = DriftEvent("n", "on", 0.31234567, 0.1, 400, 900.0, 0.31234567, 0.02, 0.01)
    text = to_json(event)
    assert '"type":"drift"' in text and '"statistic":0.312346' in text
    parsed = parse_event(text)
    assert isinstance(parsed, DriftEvent) and parsed.state == "on" and parsed.windows == 400
    assert parsed.reason == ""
    paused = DriftEvent("n", "paused", 0.0, 0.1, 0, 900.0, 0.0, 0.0, 0.0, reason="no reference")
    assert parse_event(to_json(paused)) == paused


class CardScorer(FakeScorer):
    """FakeScorer with a detector card holding a drift reference: noise scores about +2."""

    def __init__(self, card: dict[str, object]) -> None:
        super().__init__()
        self.card = card


def test_pipeline_publishes_drift_through_the_hub_when_the_input_shifts() -> None:
    """Reference: windows of noise (FakeScorer: bona fide). A tone stream shifts score,
    level and speech share: the hub carries a drift event; noise alone raises none."""
    cfg = StreamConfig(window_s=1.0, hop_s=0.5)
    rate = 16000

    async def run(audio: np.ndarray, card: dict[str, object]) -> tuple[list[Event], DriftMonitor | None]:
        engine = EngineConfig(max_batch=8, max_wait_ms=1, drift_min_windows=10, drift_threshold=0.3)
        pipeline = Pipeline(CardScorer(card), cfg, engine, node="n9")
        monitor = drift_monitor_for(pipeline, engine)
        sub = pipeline.hub.subscribe(maxsize=10000)
        worker = asyncio.create_task(pipeline.run())
        handle = pipeline.open_stream("s", source="t", sample_rate=rate)
        for start in range(0, len(audio), 1600):
            await handle.feed_wait(audio[start : start + 1600])
        await handle.close()
        worker.cancel()
        events: list[Event] = []
        while not sub.queue.empty():
            events.append(sub.queue.get_nowait())
        return events, monitor

    scorer = FakeScorer()
    windows = [noise(1.0, seed=s) for s in range(40)]
    scores = scorer.score_windows(np.stack(windows))
    feats = [window_features(w, rate, float(x), True, -50.0) for w, x in zip(windows, scores, strict=True)]
    card: dict[str, object] = {CARD_KEY: reference_section(feats, ["bonafide"] * len(feats))}
    calm, monitor = asyncio.run(run(noise(12.0, seed=99), card))
    assert monitor is not None and monitor.windows >= 10
    assert not [e for e in calm if isinstance(e, DriftEvent)]
    shifted, _ = asyncio.run(run(tone(12.0) * 0.05, card))
    drift = [e for e in shifted if isinstance(e, DriftEvent)]
    assert [e.state for e in drift] == ["on"] and drift[0].node == "n9"
    assert drift_monitor_for(Pipeline(FakeScorer(), cfg), EngineConfig()) is None  # no card: off
    assert drift_monitor_for(Pipeline(CardScorer(card), cfg), EngineConfig(drift_threshold=0)) is None


def test_a_node_reference_file_replaces_the_cards_only_when_made_with_the_same_detector(
    tmp_path: Path,
) -> None:
    """engine.drift_reference: the node's own reference (here: tone windows) is used instead
    of the card's (noise windows); one made with another detector, or no reference section,
    is refused naming the file and what was expected."""
    rate = 16000
    cfg = StreamConfig(window_s=1.0, hop_s=0.5)
    card_section = reference_section(
        [window_features(noise(1.0, seed=s), rate, 2.0, True, -50.0) for s in range(20)], ["bonafide"] * 20
    )
    card: dict[str, object] = {"name": "d", "created": "2026-12-07T00:00:00+00:00", CARD_KEY: card_section}
    tones = [window_features(tone(1.0) * 0.05, rate, -3.0, True, -50.0)] * 20
    mine = reference_section(tones, ["bonafide"] * 20, source={"detector": detector_identity(card)})
    path = tmp_path / "node.json"
    path.write_text(json.dumps(mine))
    engine = EngineConfig(drift_reference=str(path))
    monitor = drift_monitor_for(Pipeline(CardScorer(card), cfg), engine)
    card_monitor = drift_monitor_for(Pipeline(CardScorer(card), cfg), EngineConfig())
    assert monitor is not None and card_monitor is not None
    for f in tones:
        monitor.observe(f)
        card_monitor.observe(f)
    assert monitor.statistic == pytest.approx(0.0) and card_monitor.statistic > 0.9

    retrained = {**card, "created": "2026-12-08T00:00:00+00:00"}
    refused = r"node\.json.*made with detector 'd \(2026-12-07.*this node runs 'd \(2026-12-08"
    with pytest.raises(ConfigError, match=refused):
        drift_monitor_for(Pipeline(CardScorer(retrained), cfg), engine)
    path.write_text(json.dumps({"windows": 3}))
    with pytest.raises(ConfigError, match="expected a drift_reference section"):
        drift_monitor_for(Pipeline(CardScorer(card), cfg), engine)
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="expected a readable JSON file"):
        drift_monitor_for(Pipeline(CardScorer(card), cfg), engine)
    broken = dict(mine)
    broken["features"] = {"score": {}}
    path.write_text(json.dumps(broken))
    with pytest.raises(ConfigError, match=r"drift_reference.*malformed"):
        drift_monitor_for(Pipeline(CardScorer(card), cfg), engine)


def test_a_hot_reload_restarts_drift_against_the_new_card_or_pauses_it_with_the_reason(
    tmp_path: Path,
) -> None:
    """The old card's scores are not comparable with the new one's: the monitor starts over
    against the new card's reference; a node reference made with the old card, or a new card
    without a reference, pauses the alarms and says why."""
    from spoofwatch.model.card_label import ScorerLabel

    rate = 16000
    cfg = StreamConfig(window_s=1.0, hop_s=0.5)
    noisy = [window_features(noise(1.0, seed=s), rate, 2.0, True, -50.0) for s in range(20)]
    tones = [window_features(tone(1.0) * 0.05, rate, -3.0, True, -50.0)] * 20
    old: dict[str, object] = {
        "name": "d",
        "created": "1",
        CARD_KEY: reference_section(noisy, ["bonafide"] * 20),
    }
    new: dict[str, object] = {
        "name": "d",
        "created": "2",
        CARD_KEY: reference_section(tones, ["bonafide"] * 20),
    }
    label = ScorerLabel("d", "0" * 64)

    pipeline = Pipeline(CardScorer(old), cfg)
    published: list[DriftEvent] = []
    pipeline.hub.add_listener(lambda e: published.append(e) if isinstance(e, DriftEvent) else None)
    monitor = drift_monitor_for(pipeline, EngineConfig(drift_min_windows=5))
    assert monitor is not None
    events = [monitor.observe(f) for f in tones]
    assert monitor.on and any(e is not None and e.state == "on" for e in events)
    pipeline.use_scorer(CardScorer(new), label)
    assert not monitor.on and monitor.windows == 0 and not monitor.paused
    # Subscribers that saw "on" are told the restart cleared it.
    assert [(e.state, e.reason) for e in published] == [
        ("off", "restarted against a new detector's reference")
    ]
    for f in tones:
        assert monitor.observe(f) is None
    assert monitor.statistic == pytest.approx(0.0)  # the new card's reference: tones are calm

    pipeline.use_scorer(CardScorer({"name": "d", "created": "3"}), label)
    assert monitor.paused == f"the new card has no {CARD_KEY}"
    assert published[-1].state == "paused" and published[-1].reason == monitor.paused
    assert all(monitor.observe(f) is None for f in noisy) and monitor.windows == 0
    # While paused the old histograms are gone and the metrics say so.
    assert monitor.measure() == 0.0
    text = generate_latest(ServerMetrics(pipeline, drift=monitor).registry).decode()
    assert "spoofwatch_drift_paused 1.0" in text and "spoofwatch_drift_statistic 0.0" in text
    pipeline.use_scorer(CardScorer(new), label)
    assert not monitor.paused and published[-1].state == "off" and len(published) == 3
    text = generate_latest(ServerMetrics(pipeline, drift=monitor).registry).decode()
    assert "spoofwatch_drift_paused 0.0" in text

    path = tmp_path / "node.json"
    path.write_text(json.dumps(reference_section(tones, ["bonafide"] * 20, source={"detector": "d (1)"})))
    pipeline = Pipeline(CardScorer(old), cfg)
    monitor = drift_monitor_for(pipeline, EngineConfig(drift_min_windows=5, drift_reference=str(path)))
    assert monitor is not None and not monitor.paused
    pipeline.use_scorer(CardScorer(new), label)
    assert "made with detector 'd (1)', but this node runs 'd (2)'" in monitor.paused


@pytest.mark.parametrize("name", ["default", "resynth"])
def test_the_packaged_cards_hold_a_reference_from_their_dev_clips(name: str) -> None:
    import json
    from importlib import resources

    card = json.loads((resources.files("spoofwatch.model") / name / "model_card.json").read_text())
    ref = DriftReference.from_card(card)
    assert ref is not None and ref.windows > 1000
    section = card[CARD_KEY]
    assert section["source"]["channels"] == card["training"]["options"]["calibration_channels"]
    # Every dev clip the card was calibrated on, at most 400 per class (pipeline.drift_sample).
    dev = card["training"]["dev_items"]
    expected = {label: min(count, 400) for label, count in dev.items()}
    assert section["source"]["clips"] == expected and min(expected.values()) > 50
    assert section["source"]["split"] == "dev"
    for feature in section["features"].values():
        assert sum(feature["spoof"]) > 0 and sum(feature["bonafide"]) > 0
    # Genuine dev windows score higher (LLR, bona fide up) than spoof ones.
    edges = np.asarray(section["features"]["score"]["edges"])
    centres = (edges[:-1] + edges[1:]) / 2
    bona, spoof = (np.asarray(section["features"]["score"][k], dtype=float) for k in ("bonafide", "spoof"))
    assert centres @ bona / bona.sum() > centres @ spoof / spoof.sum()
