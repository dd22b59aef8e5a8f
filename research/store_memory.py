"""Peak memory of training from the on-disk feature store at scale (docs/accuracy-lofo.md).

``fit``: fabricates one pack per training channel shaped like ``--windows`` windows of the
default card's features (Whisper base hidden states 0-4, mean+std pooled: 5 x 1024 float16
on disk, plus the 160 lfcc-phase columns in memory), then fits the head exactly as
``spoofwatch train`` and every ``loso`` fold do (``StackedRows`` -> ``LinearHead``). The
solver is stopped after ``--max-iter`` iterations: L-BFGS keeps a fixed history, so its
memory does not grow with iterations, and the full fit would take CPU hours here.
``pack``: fabricates a per-item cache of ``--windows`` windows (``--per-item`` per item) and
packs it into one memory-mapped store, as ``extract`` does after extraction.

Prints the peak resident memory of the process (``ru_maxrss``, which counts the pages of
memory-mapped files it has touched too) and the largest anonymous share seen.
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import numpy as np

from spoofwatch.model.head import LinearHead
from spoofwatch.train.corpus import LabelledItem
from spoofwatch.train.extract import EmbeddingSet
from spoofwatch.train.fit import StackedRows
from spoofwatch.train.store import open_pack, pack_path, write_pack

STATES, DIM2, SPECTRAL = 5, 1024, 160


def _peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _fabricate(path: Path, rows: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(rows, STATES, DIM2))
    for start in range(0, rows, 4096):
        stop = min(start + 4096, rows)
        out[start:stop] = rng.standard_normal((stop - start, STATES, DIM2), dtype=np.float32)
        out.flush()
    del out


def fit(args: argparse.Namespace) -> None:
    items_n = args.windows // args.per_item
    items = tuple(
        LabelledItem(Path(f"/x/{i}.flac"), "bonafide" if i % 3 == 0 else "spoof", f"u{i}")
        for i in range(items_n)
    )
    index = np.repeat(np.arange(items_n, dtype=np.int64), args.per_item)
    sets = []
    for channel in range(args.channels):
        path = args.dir / f"channel{channel}.npy"
        if not path.is_file() or len(np.load(path, mmap_mode="r")) < len(index):
            _fabricate(path, len(index), channel)
        spectral = np.random.default_rng(100 + channel).standard_normal(
            (len(index), SPECTRAL), dtype=np.float32
        )
        features = np.load(path, mmap_mode="r")[: len(index)]  # a larger store's first rows
        sets.append(EmbeddingSet(items, features, index, np.zeros(len(index)), (), spectral))
    print(f"fabricated: peak {_peak_gib():.2f} GiB", flush=True)
    start = time.monotonic()
    rows = StackedRows(sets, list(range(STATES)))
    dtype = np.float32 if args.precision == "float32" else np.float64
    weights = np.r_[np.ones(STATES * DIM2), np.full(SPECTRAL, 2.0)]
    LinearHead(C=0.001, max_iter=args.max_iter, fit_dtype=dtype).fit(rows, rows.labels(), weights)
    print(
        f"fit {rows.shape[0]} windows x {rows.shape[1]} columns at {args.precision}: "
        f"{time.monotonic() - start:.0f} s, peak RSS {_peak_gib():.2f} GiB",
        flush=True,
    )


def pack(args: argparse.Namespace) -> None:
    cache = args.dir / "items"
    cache.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    entries: list[Path | None] = []
    for i in range(args.windows // args.per_item):
        path = cache / f"{i:08d}.npz"
        if not path.is_file():
            feats = rng.standard_normal((args.per_item, STATES, DIM2), dtype=np.float32).astype(np.float16)
            np.savez(path, features=feats, t_start=np.arange(args.per_item, dtype=np.float64))
        entries.append(path)
    print(f"fabricated: peak {_peak_gib():.2f} GiB", flush=True)
    start = time.monotonic()
    target = pack_path(args.dir, [e.stem if e else None for e in entries])
    if not target.is_dir():
        write_pack(target, entries, (STATES, DIM2))
    stored = open_pack(target)
    print(
        f"packed {len(stored.features)} windows: {time.monotonic() - start:.0f} s, "
        f"peak RSS {_peak_gib():.2f} GiB",
        flush=True,
    )


def extract_subset(args: argparse.Namespace) -> None:
    """The default card's extraction (Whisper base states 0-4 at int8-window, lfcc-phase,
    -26 dBFS, 4 s windows ``--hop-s`` apart) of the first ``--seconds`` of audio of a manifest
    (from row ``--skip``), into the ordinary cache, then packed."""
    from spoofwatch.stream.windowing import WindowConfig

    from spoofwatch.model.encoders.registry import EncoderSpec, build_encoder
    from spoofwatch.train.corpus import read_manifest
    from spoofwatch.train.extract import extract_with_spectral
    from spoofwatch.train.pipeline import encoder_spec, feature_encoder

    chosen, total = [], 0.0
    for item in read_manifest(args.manifest)[args.skip :]:
        if total >= args.seconds:
            break
        chosen.append(item)
        total += float(item.extra.get("duration_s") or 0.0)
    _, _, encoder = feature_encoder(encoder_spec("whisper-base"), 4.0, [0, 1, 2, 3, 4], "int8-window")
    spectral = build_encoder(EncoderSpec(kind="lfcc-phase", name="lfcc-phase"), 4.0)
    window = WindowConfig(encoder.identity.sample_rate, 4.0, args.hop_s)
    print(f"encoders built: peak {_peak_gib():.2f} GiB", flush=True)
    start = time.monotonic()
    done = extract_with_spectral(chosen, encoder, spectral, window, channel=args.channel, level_dbfs=-26.0)
    print(
        f"extracted {len(chosen)} clips ({total:.0f} s of audio, {len(done.features)} windows, "
        f"{args.channel}): {time.monotonic() - start:.0f} s, peak RSS {_peak_gib():.2f} GiB",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("fit", "pack", "extract"))
    parser.add_argument("--dir", type=Path, default=Path("store-memory"), help="where fabricated stores go")
    parser.add_argument("--manifest", type=Path, help="extract: the corpus manifest")
    parser.add_argument("--seconds", type=float, default=900.0, help="extract: seconds of audio")
    parser.add_argument("--skip", type=int, default=0, help="extract: manifest rows skipped first")
    parser.add_argument("--channel", default="clean", help="extract: channel")
    parser.add_argument("--hop-s", type=float, default=2.0, help="extract: hop between windows")
    parser.add_argument("--windows", type=int, default=72_000, help="windows per channel")
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--per-item", type=int, default=5, help="windows per item")
    parser.add_argument("--precision", choices=("float64", "float32"), default="float64")
    parser.add_argument("--max-iter", type=int, default=3)
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    {"fit": fit, "pack": pack, "extract": extract_subset}[args.mode](args)


if __name__ == "__main__":
    main()
