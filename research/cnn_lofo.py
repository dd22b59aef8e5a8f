"""Issue 28: a spectrogram CNN trained end to end, leave-one-family-out, alone and fused.

The reference design's other family: a small residual 1-D CNN over 64 log linear-filterbank
frames (20 ms Hann, 10 ms hop, 0-8 kHz) of a 4 s window, global mean+std pooling, one
logit "bona fide minus spoof". Every window is levelled to -26 dBFS active level exactly as
``spoofwatch.model.level`` does it (the gain comes from the window's 20 ms frame powers;
a gain multiplies a power spectrum, so it is added in the log domain), and clips shorter
than a window are tiled as ``cut_windows`` tiles them.

Protocol: the items of every ``--manifest``, all splits, keyed ``spoof:<family>`` /
``bonafide:<source>`` (``FoldScheme("family", "source")``) and dealt into ``--folds`` K
partitions (``partition_folds``); each partition is scored by a fresh network trained on the
others. Training windows: ``--crops`` random 4 s crops per clip and epoch, half of them
through the G.711 telephone channel, class-balanced loss, Adam with a cosine decay. Each
held-out clip is scored on the clean and the telephone channel: the mean window logit over
its 4 s windows at a 2 s hop.

Features are computed once per clip and channel into float16 memory maps under ``--cache``
(resumable); finished folds are kept there too, so an interrupted run picks up where it
stopped.

    PYTHONPATH=src nice -n 10 python research/cnn_lofo.py \\
        --manifest /tmp/corpus-full/manifest.csv --manifest ../shared/corpus/manifest.csv
    python research/cnn_lofo.py --scores runs/cnn_scores.csv --fuse runs/lofo_scores.csv
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from numpy.typing import NDArray
from torch import nn

from spoofwatch.audio.files import load_audio
from spoofwatch.model.level import ACTIVE_RANGE_DB, DEFAULT_TARGET_DBFS, MAX_GAIN_DB, normalise_level
from spoofwatch.train.channel import get_channel
from spoofwatch.train.corpus import LabelledItem, read_manifest
from spoofwatch.train.metrics import compute_eer
from spoofwatch.train.validate import FoldScheme, partition_folds

RATE = 16000
WINDOW = 4 * RATE
TEST_HOP = 2 * RATE
N_FFT = 320  # 20 ms
HOP = 160  # 10 ms
LEVEL_FRAME = 320  # level.FRAME_S at 16 kHz: two feature hops
N_BANDS = 64
WINDOW_FRAMES = (WINDOW - N_FFT) // HOP + 1  # 399
LEVEL_FRAMES = WINDOW // LEVEL_FRAME  # 200
STORE_FLOOR = 1e-14  # what the cache adds before the log: far below any levelled floor
LOG_FLOOR = math.log(1e-8)  # the floor of a levelled window's log band power
CHANNELS = ("clean", "telephone")
CSV_COLUMNS = ("utt_id", "label", "family", "source", "kind", "channel", "fold", "score")
DEFAULT_MANIFESTS = ("/tmp/corpus-full/manifest.csv", "/work/shared/corpus/manifest.csv")


# ---------------------------------------------------------------- items and folds


@dataclass(frozen=True)
class Clip:
    utt_id: str
    path: Path
    label: str
    family: str
    source: str
    kind: str
    fold: str


def load_clips(manifests: Sequence[str | Path], folds: int) -> list[Clip]:
    """Every item of every manifest with its leave-one-family-out partition."""
    items: list[LabelledItem] = []
    for manifest in manifests:
        items += read_manifest(manifest)
    scheme = FoldScheme("family", "source")
    scheme.check(items)
    keys = [scheme.key(it) for it in items]
    mapping = partition_folds(keys, folds)
    ids = [it.utt_id for it in items]
    if len(set(ids)) != len(ids):
        raise SystemExit("utt_id: expected unique ids across the manifests, found repeats")
    return [
        Clip(
            utt_id=it.utt_id,
            path=it.path,
            label=it.label,
            family=it.extra.get("family", ""),
            source=it.source.split("@")[0],
            kind=it.extra.get("kind", "") or ("bonafide" if it.label == "bonafide" else "unknown"),
            fold=mapping[key],
        )
        for it, key in zip(items, keys, strict=True)
    ]


def clip_seconds(manifests: Sequence[str | Path]) -> dict[str, float]:
    """Each clip's duration (the manifest's ``duration_s``, else the file header), for the
    view without tiled clips; manifests that do not exist are skipped."""
    out: dict[str, float] = {}
    for manifest in manifests:
        if not Path(manifest).exists():
            continue
        for it in read_manifest(manifest):
            cell = it.extra.get("duration_s", "")
            out[it.utt_id] = float(cell) if cell else float(sf.info(str(it.path)).duration)
    return out


def untiled(rows: Sequence[dict[str, str]], seconds: dict[str, float]) -> list[dict[str, str]]:
    """The rows of clips at least one window long: no tiled window. The corpus holds 11,873
    bona fide clips under 2 s (speech commands) and 708 spoofs, so a tiled window alone
    says "bona fide" in the pooled figure."""
    return [r for r in rows if seconds.get(r["utt_id"], 0.0) >= WINDOW / RATE]


# ---------------------------------------------------------------- features


def linear_filterbank() -> NDArray[np.float32]:
    """(N_FFT // 2 + 1, N_BANDS) triangular filters equally spaced over 0-8 kHz."""
    bins = np.arange(N_FFT // 2 + 1, dtype=np.float64)
    edges = np.linspace(0, N_FFT // 2, N_BANDS + 2)
    bank = np.zeros((len(bins), N_BANDS), dtype=np.float64)
    for b in range(N_BANDS):
        lo, mid, hi = edges[b], edges[b + 1], edges[b + 2]
        rise = (bins - lo) / (mid - lo)
        fall = (hi - bins) / (hi - mid)
        bank[:, b] = np.clip(np.minimum(rise, fall), 0.0, None)
    return bank.astype(np.float32)


_BANK = torch.from_numpy(linear_filterbank())
_HANN = torch.hann_window(N_FFT, periodic=True)


def band_log_power(samples: NDArray[np.float32]) -> NDArray[np.float16]:
    """(frames, N_BANDS) log band powers of unlevelled samples (at least N_FFT long)."""
    spec = torch.stft(torch.from_numpy(samples), N_FFT, HOP, window=_HANN, center=False, return_complex=True)
    power = spec.real.square() + spec.imag.square()  # (bins, frames)
    bands = power.T @ _BANK
    return torch.log(bands + STORE_FLOOR).numpy().astype(np.float16)


def level_powers(samples: NDArray[np.float32]) -> NDArray[np.float32]:
    """Power of each 20 ms frame, as ``level.active_level_gain`` frames a window."""
    n = len(samples) // LEVEL_FRAME
    return (
        np.square(samples[: n * LEVEL_FRAME].astype(np.float64))
        .reshape(n, LEVEL_FRAME)
        .mean(1)
        .astype(np.float32)
    )


def log_gain(powers: NDArray[np.float32]) -> NDArray[np.float32]:
    """(batch,) log power gains (ln g^2) that bring windows with these (batch, 200) 20 ms frame
    powers to -26 dBFS active level: ``level.active_level_gain`` in numpy."""
    power = powers.astype(np.float64)
    power_db = 10.0 * np.log10(power + 1e-20)
    active = power_db >= power_db.max(axis=1, keepdims=True) - ACTIVE_RANGE_DB
    active_power = (power * active).sum(axis=1) / active.sum(axis=1)
    level_db = 10.0 * np.log10(active_power + 1e-20)
    gain_db = np.minimum(DEFAULT_TARGET_DBFS - level_db, MAX_GAIN_DB)
    return (gain_db * math.log(10.0) / 10.0).astype(np.float32)


class FeatureStore:
    """Per clip and channel: log band powers and 20 ms frame powers of the (tiled if
    shorter than a window) channel-applied samples, in float16/float32 memory maps."""

    def __init__(self, cache: Path, clips: Sequence[Clip]) -> None:
        self.cache = cache
        self.clips = clips
        cache.mkdir(parents=True, exist_ok=True)
        index_path = cache / "index.json"
        ids = [c.utt_id for c in clips]
        if index_path.exists():
            index = json.loads(index_path.read_text())
            if index["utt_ids"] != ids:
                raise SystemExit(
                    f"{cache}: expected a cache of these clips, found another; use a new --cache"
                )
        else:
            index = {"utt_ids": ids, "samples": [_allocated_samples(c.path) for c in clips], "done": 0}
            index_path.write_text(json.dumps(index))
        self.samples = np.array(index["samples"], dtype=np.int64)
        self.n_frames = (self.samples - N_FFT) // HOP + 1
        self.n_level = self.samples // LEVEL_FRAME
        self.frame_off = np.concatenate([[0], np.cumsum(self.n_frames)[:-1]])
        self.level_off = np.concatenate([[0], np.cumsum(self.n_level)[:-1]])
        total_f, total_l = int(self.n_frames.sum()), int(self.n_level.sum())
        self.bands = {ch: self._map(f"bands-{ch}.f16", np.float16, (total_f, N_BANDS)) for ch in CHANNELS}
        self.levels = {ch: self._map(f"levels-{ch}.f32", np.float32, (total_l,)) for ch in CHANNELS}

    def _map(self, name: str, dtype: type, shape: tuple[int, ...]) -> np.memmap:  # type: ignore[type-arg]
        path = self.cache / name
        mode = "r+" if path.exists() else "w+"
        return np.memmap(path, dtype=dtype, mode=mode, shape=shape)

    @property
    def done(self) -> int:
        return int(json.loads((self.cache / "index.json").read_text())["done"])

    def build(self, chunk: int = 500, log: bool = True) -> None:
        """Fill the maps for the clips not done yet, recording progress every ``chunk``."""
        start = self.done
        t0 = time.time()
        for i in range(start, len(self.clips)):
            self._fill(i)
            if (i + 1) % chunk == 0 or i + 1 == len(self.clips):
                for ch in CHANNELS:
                    self.bands[ch].flush()
                    self.levels[ch].flush()
                index = json.loads((self.cache / "index.json").read_text())
                index["done"] = i + 1
                (self.cache / "index.json").write_text(json.dumps(index))
                if log:
                    rate = (i + 1 - start) / max(time.time() - t0, 1e-9)
                    print(f"features {i + 1}/{len(self.clips)} ({rate:.1f} clips/s)", flush=True)

    def _fill(self, i: int) -> None:
        n = int(self.samples[i])
        raw = load_audio(self.clips[i].path, RATE).samples
        for ch in CHANNELS:
            coded = get_channel(ch)(raw, RATE)
            if len(coded) < WINDOW:
                coded = np.resize(coded, WINDOW)  # as cut_windows tiles a short clip
            x = np.zeros(n, dtype=np.float32)
            x[: min(n, len(coded))] = coded[:n]
            f0, l0 = int(self.frame_off[i]), int(self.level_off[i])
            self.bands[ch][f0 : f0 + self.n_frames[i]] = band_log_power(x)
            self.levels[ch][l0 : l0 + self.n_level[i]] = level_powers(x)

    def window_starts(self, i: int, hop: int = TEST_HOP) -> list[int]:
        """Start samples of clip ``i``'s windows, as ``cut_windows`` cuts them."""
        return list(range(0, int(self.samples[i]) - WINDOW + 1, hop))

    def windows(self, index: NDArray[np.int64], starts: NDArray[np.int64], channel: str) -> torch.Tensor:
        """(batch, N_BANDS, WINDOW_FRAMES) levelled log band powers of the windows starting
        at sample ``starts`` (multiples of 20 ms) of clips ``index``."""
        f0 = self.frame_off[index] + starts // HOP
        l0 = self.level_off[index] + starts // LEVEL_FRAME
        bands = np.stack([self.bands[channel][f : f + WINDOW_FRAMES] for f in f0]).astype(np.float32)
        powers = np.stack([self.levels[channel][j : j + LEVEL_FRAMES] for j in l0])
        levelled = np.logaddexp(bands + log_gain(powers)[:, None, None], LOG_FLOOR)
        return torch.from_numpy(levelled.transpose(0, 2, 1).copy())


def _allocated_samples(path: Path) -> int:
    """Samples the clip has at 16 kHz (from its header), at least one window."""
    info = sf.info(str(path))
    n = info.frames if info.samplerate == RATE else round(info.frames * RATE / info.samplerate)
    return max(int(n), WINDOW)


# ---------------------------------------------------------------- the network


class ResBlock(nn.Module):
    def __init__(self, width: int, dilation: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv1d(width, width, 3, padding=dilation, dilation=dilation, bias=False),
            nn.BatchNorm1d(width),
            nn.ReLU(),
            nn.Conv1d(width, width, 3, padding=dilation, dilation=dilation, bias=False),
            nn.BatchNorm1d(width),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.body(x))


class SpectroCNN(nn.Module):
    """Input norm, a strided stem (20 ms steps), residual dilated blocks, mean+std pooling,
    one logit: bona fide minus spoof."""

    def __init__(self, width: int = 64, blocks: int = 3) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(N_BANDS)
        self.stem = nn.Sequential(
            nn.Conv1d(N_BANDS, width, 5, stride=2, padding=2, bias=False), nn.BatchNorm1d(width), nn.ReLU()
        )
        self.blocks = nn.Sequential(*(ResBlock(width, 1 + b % 3) for b in range(blocks)))
        self.expand = nn.Sequential(
            nn.Conv1d(width, 2 * width, 1, bias=False), nn.BatchNorm1d(2 * width), nn.ReLU()
        )
        self.out = nn.Linear(4 * width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.expand(self.blocks(self.stem(self.norm(x))))
        pooled = torch.cat([h.mean(dim=2), h.std(dim=2)], dim=1)
        return self.out(pooled).squeeze(1)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 2
    crops: int = 1
    batch: int = 64
    lr: float = 2e-3
    width: int = 64
    blocks: int = 3
    seed: int = 0


def _crop_starts(
    store: FeatureStore, index: NDArray[np.int64], rng: np.random.Generator
) -> NDArray[np.int64]:
    slots = (store.samples[index] - WINDOW) // LEVEL_FRAME + 1
    return (rng.integers(0, slots) * LEVEL_FRAME).astype(np.int64)


def train_network(
    store: FeatureStore,
    train: NDArray[np.int64],
    labels: NDArray[np.float32],
    cfg: TrainConfig,
    log: bool = True,
) -> SpectroCNN:
    """A fresh network trained on clips ``train`` (labels: 1 bona fide, 0 spoof)."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = SpectroCNN(cfg.width, cfg.blocks)
    y = labels[train]
    n_bona = max(float(y.sum()), 1.0)
    n_spoof = max(float(len(y) - y.sum()), 1.0)
    weight = {1.0: len(y) / (2 * n_bona), 0.0: len(y) / (2 * n_spoof)}
    order = np.concatenate([rng.permutation(train) for _ in range(cfg.epochs * cfg.crops)])
    steps = math.ceil(len(order) / cfg.batch)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps, pct_start=0.1)
    model.train()
    t0 = time.time()
    running = 0.0
    for step in range(steps):
        idx = order[step * cfg.batch : (step + 1) * cfg.batch]
        starts = _crop_starts(store, idx, rng)
        phone = rng.random(len(idx)) < 0.5
        x = torch.empty(len(idx), N_BANDS, WINDOW_FRAMES)
        for flag, ch in ((False, "clean"), (True, "telephone")):
            sel = np.flatnonzero(phone == flag)
            if len(sel):
                x[torch.from_numpy(sel)] = store.windows(idx[sel], starts[sel], ch)
        target = torch.from_numpy(labels[idx])
        w = torch.tensor([weight[float(v)] for v in labels[idx]])
        loss = (nn.functional.binary_cross_entropy_with_logits(model(x), target, reduction="none") * w).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        running = 0.98 * running + 0.02 * loss.item() if step else loss.item()
        if log and (step % 100 == 0 or step + 1 == steps):
            print(f"  step {step + 1}/{steps} loss {running:.3f} ({time.time() - t0:.0f} s)", flush=True)
    model.eval()
    return model


def score_clips(
    model: SpectroCNN, store: FeatureStore, clips: NDArray[np.int64], channel: str, batch: int = 128
) -> NDArray[np.float64]:
    """Each clip's mean window logit over its 4 s windows at a 2 s hop."""
    owners = np.array([i for i in clips for _ in store.window_starts(int(i))], dtype=np.int64)
    starts = np.array([s for i in clips for s in store.window_starts(int(i))], dtype=np.int64)
    logits = np.empty(len(owners))
    with torch.inference_mode():
        for b in range(0, len(owners), batch):
            logits[b : b + batch] = model(
                store.windows(owners[b : b + batch], starts[b : b + batch], channel)
            ).numpy()
    position = {int(c): k for k, c in enumerate(clips)}
    sums = np.zeros(len(clips))
    counts = np.zeros(len(clips))
    np.add.at(sums, [position[int(o)] for o in owners], logits)
    np.add.at(counts, [position[int(o)] for o in owners], 1)
    return sums / counts


# ---------------------------------------------------------------- the protocol


def run_folds(
    store: FeatureStore, cfg: TrainConfig, log: bool = True, train_missing: bool = True
) -> list[dict[str, str]]:
    """Score every clip on both channels by the network of the fold that held it out. A
    fold scored before (with this config) is read from the cache; with ``train_missing``
    False a fold not scored yet is left out."""
    clips = store.clips
    labels = np.array([1.0 if c.label == "bonafide" else 0.0 for c in clips], dtype=np.float32)
    folds = np.array([c.fold for c in clips])
    rows: list[dict[str, str]] = []
    for fold in sorted(set(folds.tolist())):
        held = np.flatnonzero(folds == fold).astype(np.int64)
        held_ids = _digest([clips[int(i)].utt_id for i in held])
        done = store.cache / f"scores-{fold}.json"
        if done.exists():
            saved = json.loads(done.read_text())
            if saved.get("config", asdict(cfg)) != asdict(cfg):
                raise SystemExit(
                    f"{done}: scored with {saved['config']}, expected {asdict(cfg)}; use a new --cache"
                )
            if saved.get("held", held_ids) != held_ids:
                raise SystemExit(
                    f"{done}: scored another partition's clips; use a new --cache for these folds"
                )
            scores = saved.get("scores", saved)
        elif not train_missing:
            if log:
                print(f"{fold}: not scored yet, left out", flush=True)
            continue
        else:
            train = np.flatnonzero(folds != fold).astype(np.int64)
            if log:
                print(f"{fold}: training on {len(train)} clips, holding out {len(held)}", flush=True)
            model = train_network(store, train, labels, cfg, log)
            scores = {ch: score_clips(model, store, held, ch).tolist() for ch in CHANNELS}
            done.write_text(json.dumps({"config": asdict(cfg), "held": held_ids, "scores": scores}))
        for ch in CHANNELS:
            for i, score in zip(held, scores[ch], strict=True):
                c = clips[int(i)]
                rows.append(
                    {
                        "utt_id": c.utt_id,
                        "label": c.label,
                        "family": c.family,
                        "source": c.source,
                        "kind": c.kind,
                        "channel": ch,
                        "fold": c.fold,
                        "score": f"{score:.6f}",
                    }
                )
    return rows


def _digest(ids: Sequence[str]) -> str:
    return hashlib.sha1("\n".join(ids).encode()).hexdigest()


def write_rows(path: Path, rows: Sequence[dict[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def read_rows(path: Path, need: Sequence[str]) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in need if c not in (reader.fieldnames or [])]
        if missing:
            raise SystemExit(
                f"{path}: expected columns {list(need)}, found {reader.fieldnames} (missing {missing})"
            )
        return list(reader)


def eer_report(labels: Sequence[str], kinds: Sequence[str], scores: NDArray[np.float64]) -> dict[str, object]:
    """Pooled EER (%) and, per spoof kind, that kind's spoofs against every bona fide clip."""
    lab = np.array(labels)
    kind = np.array(kinds)
    bona = scores[lab == "bonafide"]
    out: dict[str, object] = {"pooled": 100 * compute_eer(bona, scores[lab == "spoof"])[0]}
    per_kind: dict[str, float] = {}
    for k in sorted(set(kind[lab == "spoof"].tolist())):
        per_kind[k] = 100 * compute_eer(bona, scores[(lab == "spoof") & (kind == k)])[0]
    out["per_kind"] = per_kind
    out["bonafide"] = len(bona)
    out["spoof"] = int((lab == "spoof").sum())
    return out


def channel_reports(rows: Sequence[dict[str, str]]) -> dict[str, dict[str, object]]:
    out = {}
    for ch in sorted({r["channel"] for r in rows}):
        mine = [r for r in rows if r["channel"] == ch]
        scores = np.array([float(r["score"]) for r in mine])
        out[ch] = eer_report([r["label"] for r in mine], [r["kind"] for r in mine], scores)
    return out


def znorm(x: NDArray[np.float64]) -> NDArray[np.float64]:
    sd = float(x.std())
    return (x - x.mean()) / (sd if sd > 0 else 1.0)


def fuse(cnn: Sequence[dict[str, str]], other: Sequence[dict[str, str]]) -> dict[str, dict[str, object]]:
    """Per channel, over the clips both systems scored: each system alone and the equal-
    weight sum of the two systems' per-channel z-scores (a fixed rule: nothing is fitted)."""
    theirs = {(r["utt_id"], r["channel"]): float(r["score"]) for r in other}
    out: dict[str, dict[str, object]] = {}
    for ch in sorted({r["channel"] for r in cnn}):
        both = [r for r in cnn if r["channel"] == ch and (r["utt_id"], ch) in theirs]
        if not both:
            continue
        a = np.array([float(r["score"]) for r in both])
        b = np.array([theirs[(r["utt_id"], ch)] for r in both])
        labels = [r["label"] for r in both]
        kinds = [r["kind"] for r in both]
        out[ch] = {
            "clips": len(both),
            "cnn": eer_report(labels, kinds, a),
            "other": eer_report(labels, kinds, b),
            "fused": eer_report(labels, kinds, znorm(a) + znorm(b)),
        }
    return out


def _print_reports(title: str, reports: dict[str, dict[str, object]]) -> None:
    print(title)
    for ch, rep in reports.items():
        print(f"  {ch}: pooled EER {rep['pooled']:.2f} % ({rep['bonafide']} bona fide, {rep['spoof']} spoof)")
        per_kind = rep["per_kind"]
        assert isinstance(per_kind, dict)
        for k, v in per_kind.items():
            print(f"    {k:24s} {v:6.2f} %")


def _print_fusion(reports: dict[str, dict[str, object]]) -> None:
    for ch, rep in reports.items():
        print(f"{ch} ({rep['clips']} clips)")
        systems = ("cnn", "other", "fused")
        parts = [rep[s] for s in systems]
        assert all(isinstance(p, dict) for p in parts)
        table: list[dict[str, object]] = [p for p in parts if isinstance(p, dict)]
        print(f"    {'':24s} " + " ".join(f"{s:>8s}" for s in systems))
        print(f"    {'pooled':24s} " + " ".join(f"{float(str(p['pooled'])):8.2f}" for p in table))
        kinds = table[0]["per_kind"]
        assert isinstance(kinds, dict)
        for k in kinds:
            vals = []
            for p in table:
                pk = p["per_kind"]
                assert isinstance(pk, dict)
                vals.append(f"{pk[k]:8.2f}")
            print(f"    {k:24s} " + " ".join(vals))


def bench_window(reps: int, width: int, blocks: int) -> dict[str, float]:
    """Median CPU milliseconds to score one 4 s window from its samples on this thread:
    levelling, the band powers and the network (weights do not change the cost)."""
    model = SpectroCNN(width, blocks).eval()
    rng = np.random.default_rng(0)
    window = torch.from_numpy((0.1 * rng.standard_normal((1, WINDOW))).astype(np.float32))
    times = []
    with torch.inference_mode():
        for _ in range(reps + 5):
            t0 = time.process_time()
            levelled = normalise_level(window, RATE, DEFAULT_TARGET_DBFS)[0].numpy()
            bands = np.logaddexp(band_log_power(levelled).astype(np.float32), LOG_FLOOR)
            model(torch.from_numpy(bands.T.copy())[None])
            times.append(time.process_time() - t0)
    ms = 1000 * np.array(times[5:])
    return {"median_ms": float(np.median(ms)), "p90_ms": float(np.percentile(ms, 90)), "reps": reps}


def _args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest", action="append", help="repeatable; default: the built and dev corpora")
    p.add_argument("--folds", type=int, default=4, help="K family partitions (default 4)")
    p.add_argument("--cache", type=Path, default=Path("/tmp/cnn-cache"))
    p.add_argument("--out", type=Path, default=Path("/work/runs/cnn_scores.csv"))
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--crops", type=int, default=1, help="random crops per clip and epoch")
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--blocks", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-train", action="store_true", help="report the folds already scored; train none")
    p.add_argument("--features-only", action="store_true", help="fill the feature cache and stop")
    p.add_argument("--scores", type=Path, help="with --fuse: this CNN scores CSV instead of running")
    p.add_argument("--fuse", type=Path, help="another system's utt_id,channel,score CSV to fuse with")
    p.add_argument("--bench", type=int, metavar="N", help="time N one-window scorings (CPU ms) and stop")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _args(argv)
    torch.set_num_threads(args.threads)
    if args.bench is not None:
        print(json.dumps(bench_window(args.bench, args.width, args.blocks)))
        return 0
    seconds = clip_seconds(args.manifest or list(DEFAULT_MANIFESTS))
    if args.scores is not None:
        rows = read_rows(args.scores, CSV_COLUMNS)
    else:
        clips = load_clips(args.manifest or list(DEFAULT_MANIFESTS), args.folds)
        store = FeatureStore(args.cache, clips)
        store.build()
        if args.features_only:
            return 0
        cfg = TrainConfig(epochs=args.epochs, crops=args.crops, width=args.width, blocks=args.blocks)
        rows = run_folds(store, cfg, train_missing=not args.no_train)
        write_rows(args.out, rows)
        reports = channel_reports(rows)
        _print_reports(f"CNN, leave-one-family-out, K={args.folds}", reports)
        summary = {
            "command": " ".join([sys.executable, *sys.argv]),
            "folds": args.folds,
            "folds_scored": sorted({r["fold"] for r in rows}),
            "config": asdict(cfg),
            "per_fold": {
                fold: channel_reports([r for r in rows if r["fold"] == fold])
                for fold in sorted({r["fold"] for r in rows})
            },
        }
        summary["eer"] = reports
        long_rows = untiled(rows, seconds)
        if long_rows:
            summary["eer_4s_or_longer"] = channel_reports(long_rows)
            _print_reports("clips of 4 s or longer (no tiled window)", summary["eer_4s_or_longer"])
        args.out.with_name("cnn_lofo.json").write_text(json.dumps(summary, indent=2, default=str))
    if args.fuse is not None:
        other = read_rows(args.fuse, ("utt_id", "channel", "score"))
        result: dict[str, object] = {"command": " ".join([sys.executable, *sys.argv])}
        result["fusion"] = fused = fuse(rows, other)
        _print_fusion(fused)
        long_rows = untiled(rows, seconds)
        if long_rows:
            print("clips of 4 s or longer (no tiled window)")
            result["fusion_4s_or_longer"] = fused_long = fuse(long_rows, other)
            _print_fusion(fused_long)
        target = (args.scores or args.out).with_name("cnn_fusion.json")
        target.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
