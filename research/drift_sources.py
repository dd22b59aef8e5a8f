"""How far does each source of a card's drift reference sit from the reference's mix?

The drift monitor (spoofwatch.ops.drift) compares a node's recent windows with the card's
bona fide mix: the dev clips of every corpus the card was trained on, under its calibration
channels. A node whose callers are all like one of those sources is not drifting, yet its
histograms differ from the mix. This streams the reference's bona fide clips (as
``spoofwatch train`` picks them: at most 400, evenly by utt_id) through the detector, groups
the windows by corpus and by source, and prints each group's Jensen-Shannon divergence from
the mix per feature, next to the sampling noise of a random draw of as many clips from the
mix (what the same number of windows gives with no source effect at all).

With ``--test-sets`` it also streams the two sets of tests/ops/test_drift_real.py (24 genuine
dev clips of the development corpus under the calibration channels, and the same clips through
low-rate codecs and G.711) and prints their divergence from the mix and from the closest blend
of the corpora's own bona fide histograms (``min over w of JS(x, w a + (1 - w) b)``). Usage::

    python research/drift_sources.py src/spoofwatch/model/default \\
        --manifest ../shared/corpus/manifest.csv --manifest $BUILT/manifest.csv
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import random
import subprocess
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import soundfile as sf

from spoofwatch.audio.files import load_audio
from spoofwatch.model.artifact import CARD_FILE, load_detector
from spoofwatch.ops.drift import FEATURES, WindowFeatures, js_divergence, reference_section
from spoofwatch.ops.drift_reference import stream_features
from spoofwatch.train.channel import get_channel

PER_CLASS = 400


def histogram(features: list[WindowFeatures], name: str) -> np.ndarray:
    """One feature's counts, binned as the monitor bins them (ops.drift.reference_section)."""
    section = reference_section(features, ["bonafide"] * len(features))
    return np.asarray(section["features"][name]["bonafide"], dtype=np.float64)


def divergences(features: list[WindowFeatures], mix: dict[str, np.ndarray]) -> dict[str, float]:
    out = {}
    for name in FEATURES:
        counts = histogram(features, name)
        out[name] = js_divergence(counts, mix[name]) if counts.sum() > 0 else float("nan")
    return out


def blend_divergence(counts: np.ndarray, parts: list[np.ndarray], steps: int = 101) -> tuple[float, float]:
    """The smallest JS divergence of ``counts`` from a blend of two histograms, and its weight."""
    a, b = (p / p.sum() for p in parts)
    best = min((js_divergence(counts, w * a + (1 - w) * b), w) for w in np.linspace(0, 1, steps))
    return best


def codec(audio: np.ndarray, args: list[str], work: Path) -> np.ndarray:
    source, coded, decoded = work / "in.wav", work / "coded", work / "out.wav"
    sf.write(source, audio, 16000)
    run = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-i"]
    subprocess.run([*run, str(source), "-ar", "8000", "-ac", "1", *args, str(coded)], check=True)
    subprocess.run([*run, str(coded), "-ar", "16000", "-ac", "1", str(decoded)], check=True)
    return get_channel("telephone")(load_audio(decoded).samples, 16000)


CODECS = (["-c:a", "libopus", "-b:a", "6k", "-f", "ogg"], ["-c:a", "g723_1", "-b:a", "6300", "-f", "wav"])


def test_sets(corpus: Path, min_s: float, rate: int) -> dict[str, list[tuple[str, str, np.ndarray]]]:
    """tests/ops/test_drift_real.py's calm and codec streams."""
    with (corpus / "manifest.csv").open(newline="") as f:
        rows = [
            r
            for r in csv.DictReader(f)
            if r["split"] == "dev" and r["label"] == "bonafide" and float(r["duration_s"]) >= min_s
        ]
    rows.sort(key=lambda r: r["utt_id"])
    chosen = random.Random(7).sample(rows, 24)
    clips = [load_audio(corpus / r["path"]).samples for r in chosen]
    channels = ["clean", "telephone", "telephone-level"]
    with tempfile.TemporaryDirectory() as tmp:
        coded = [codec(c, CODECS[n % 2], Path(tmp)) for n, c in enumerate(clips)]
    calm = [(f"calm-{n}", "calm", get_channel(channels[n % 3])(c, rate)) for n, c in enumerate(clips)]
    return {"calm": calm, "codec": [(f"codec-{n}", "codec", c) for n, c in enumerate(coded)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("detector", type=Path)
    parser.add_argument("--manifest", type=Path, action="append", required=True)
    parser.add_argument("--draws", type=int, default=100, help="random draws for the sampling noise")
    parser.add_argument("--json", type=Path, help="write the per-group table here too")
    parser.add_argument(
        "--test-sets", type=Path, help="the development corpus: also stream the drift test's sets"
    )
    args = parser.parse_args()
    card = json.loads((args.detector / CARD_FILE).read_text())
    options = card["training"]["options"]
    min_s = float(options.get("dev_min_s", 0.0))
    channels = list(options.get("calibration_channels") or ["clean"])
    rows = []
    for manifest in args.manifest:
        with manifest.open(newline="") as f:
            for r in csv.DictReader(f):
                if r["split"] == "dev" and r["label"] == "bonafide" and float(r["duration_s"]) >= min_s:
                    r["_path"] = str(manifest.parent / r["path"])
                    r["_corpus"] = manifest.parent.name
                    r["_source"] = r.get("card") or r.get("corpus") or "?"
                    rows.append(r)
    rows.sort(key=lambda r: r["utt_id"])
    if len(rows) > PER_CLASS:
        step = len(rows) / PER_CLASS
        rows = [rows[int(i * step)] for i in range(PER_CLASS)]
    detector = load_detector(args.detector)
    rate = detector.sample_rate
    clips = []
    for r in rows:
        audio = load_audio(r["_path"], rate).samples
        for channel in channels:
            clips.append((f"{channel}:{r['utt_id']}", r["utt_id"], get_channel(channel)(audio, rate)))
    features, utts = asyncio.run(stream_features(detector, clips))
    by_utt: dict[str, list[WindowFeatures]] = defaultdict(list)
    for f, utt in zip(features, utts, strict=True):
        by_utt[utt].append(f)
    mix = {name: histogram(features, name) for name in FEATURES}
    groups: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        groups[f"corpus {r['_corpus']}"].append(r["utt_id"])
        groups[f"source {r['_source']}"].append(r["utt_id"])
    rng = random.Random(0)
    all_utts = [r["utt_id"] for r in rows]
    table = []
    for group, members in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        if len(members) < 10:
            continue
        mine = [f for u in members for f in by_utt[u]]
        noise = [
            divergences([f for u in rng.sample(all_utts, len(members)) for f in by_utt[u]], mix)
            for _ in range(args.draws)
        ]
        entry = {
            "group": group,
            "clips": len(members),
            "windows": len(mine),
            "js": divergences(mine, mix),
            "histograms": {n: histogram(mine, n).tolist() for n in FEATURES},
            "noise_mean": {n: float(np.mean([d[n] for d in noise])) for n in FEATURES},
            "noise_p95": {n: float(np.percentile([d[n] for d in noise], 95)) for n in FEATURES},
        }
        table.append(entry)
        js = entry["js"]
        print(
            f"{group[:70]:70s} {len(members):4d} clips {len(mine):5d} win  "
            + "  ".join(
                f"{n} {js[n]:.3f} (noise {entry['noise_mean'][n]:.3f}/{entry['noise_p95'][n]:.3f})"
                for n in FEATURES
            )
        )
    print("mix score histogram", mix["score"].astype(int).tolist())
    corpora = sorted(g for g in groups if g.startswith("corpus "))
    parts = {n: [histogram([f for u in groups[g] for f in by_utt[u]], n) for g in corpora] for n in FEATURES}
    for g, *_ in zip(corpora, parts["score"], strict=True):
        print(g, "score histogram", parts["score"][corpora.index(g)].astype(int).tolist())
    tests = {}
    if args.test_sets:
        for name, streams in test_sets(args.test_sets, min_s, rate).items():
            got, _ = asyncio.run(stream_features(detector, streams))
            row = {"windows": len(got), "js": divergences(got, mix)}
            if len(corpora) == 2:
                row["blend"] = {n: blend_divergence(histogram(got, n), parts[n]) for n in FEATURES}
            row["histograms"] = {n: histogram(got, n).tolist() for n in FEATURES}
            tests[name] = row
            print(name, json.dumps(row))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "mix": {n: mix[n].tolist() for n in FEATURES},
                    "corpora": {
                        g: {n: parts[n][i].tolist() for n in FEATURES} for i, g in enumerate(corpora)
                    },
                    "groups": table,
                    "tests": tests,
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
