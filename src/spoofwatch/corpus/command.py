"""``spoofwatch corpus build|check|stats``: arguments and printing (the work is in the modules)."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from spoofwatch.errors import ConfigError

if TYPE_CHECKING:
    from spoofwatch.corpus.cards import Card
    from spoofwatch.corpus.reserved import Reserved

_PACKAGE_ROOT = Path(__file__).resolve().parents[3]  # the repository, for an editable install


def _repo_root() -> Path:
    cwd = Path.cwd()
    return cwd if (cwd / "corpus").is_dir() or not (_PACKAGE_ROOT / "corpus").is_dir() else _PACKAGE_ROOT


def add_corpus_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    corpus = sub.add_parser("corpus", help="build the training corpus from source cards (docs/corpus.md)")
    verbs = corpus.add_subparsers(dest="corpus_command", required=True)
    b = verbs.add_parser(
        "build", help="decode, cut, de-duplicate, cap and split; write clips, manifest, lock"
    )
    _cards_option(b)
    b.add_argument(
        "--origin",
        action="append",
        default=[],
        metavar="ID=PATH",
        help="local copy of a card's origin (repeatable)",
    )
    b.add_argument(
        "--origins", action="append", default=[], metavar="FILE", help="file of ID=PATH lines (# comments)"
    )
    b.add_argument("--only", metavar="ID[,ID]", help="build only these cards (to test one)")
    b.add_argument(
        "--out", metavar="DIR", help="clips and tables (default: <cache>/corpus, never the repository)"
    )
    b.add_argument(
        "--cache", metavar="DIR", help="decoded audio, unpacked packages (default: <cache>/corpus-cache)"
    )
    b.add_argument("--config", metavar="TOML", help="build settings (default: corpus/build.toml)")
    b.add_argument(
        "--lock-dir", metavar="DIR", help="also write lock.csv and DATASHEET.md here (e.g. corpus)"
    )
    b.add_argument("--jobs", type=int, default=1, metavar="N", help="decoding processes (default 1)")
    b.add_argument(
        "--skip-missing",
        action="store_true",
        help="leave out (and count) cards whose origin has no local path",
    )
    _reserved_options(b)
    c = verbs.add_parser(
        "check", help="validate cards; check a lock file and (--audio) built clips against the reserved lists"
    )
    _cards_option(c)
    c.add_argument("--lock", metavar="CSV", help="lock file to check (default: corpus/lock.csv if present)")
    c.add_argument(
        "--audio",
        metavar="MANIFEST",
        help="also check this manifest's clips for near copies of reserved clips",
    )
    _reserved_options(c)
    s = verbs.add_parser("stats", help="print the datasheet of a built manifest")
    s.add_argument("manifest", metavar="MANIFEST")


def _cards_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cards", metavar="DIR", help="folder of source cards (default: corpus/cards)")


def _reserved_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--reserved",
        metavar="DIR",
        help="reserved lists (default: $SPOOFWATCH_RESERVED, else ../shared/corpus/reserved beside "
        "the repository)",
    )
    group.add_argument(
        "--no-reserved",
        action="store_true",
        help="build without the reserved lists (rules 3 and 4 still apply)",
    )


def _reserved(args: argparse.Namespace) -> Reserved:
    from spoofwatch.corpus.reserved import Reserved, find_reserved_dir

    if args.no_reserved:
        return Reserved()
    directory = find_reserved_dir(args.reserved, _repo_root())
    if directory is None:
        raise ConfigError(
            "refusing to build: no reserved lists found (--reserved DIR, $SPOOFWATCH_RESERVED, or "
            "../shared/corpus/reserved beside the repository); pass --no-reserved to go without them"
        )
    return Reserved.load(directory)


def _cards(args: argparse.Namespace, only: tuple[str, ...] = ()) -> list[Card]:
    from spoofwatch.corpus.cards import load_cards

    directory = Path(args.cards) if args.cards else _repo_root() / "corpus" / "cards"
    return load_cards(directory, only)


def cmd_corpus(args: argparse.Namespace, out: TextIO) -> int:
    if args.corpus_command == "build":
        return _build(args, out)
    if args.corpus_command == "check":
        return _check(args, out)
    return _stats(args, out)


def _build(args: argparse.Namespace, out: TextIO) -> int:
    from spoofwatch.corpus.build import BuildOptions, build, parse_origins
    from spoofwatch.corpus.config import load_config
    from spoofwatch.model.encoders.weights import cache_root

    only = tuple(x.strip() for x in (args.only or "").split(",") if x.strip())
    cards = _cards(args, only)
    default_config = _repo_root() / "corpus" / "build.toml"
    config_path = Path(args.config) if args.config else default_config if default_config.is_file() else None
    options = BuildOptions(
        cards=cards,
        origins=parse_origins(args.origin, args.origins),
        out=Path(args.out) if args.out else cache_root() / "corpus",
        cache=Path(args.cache) if args.cache else cache_root() / "corpus-cache",
        config=load_config(config_path),
        reserved=_reserved(args),
        lock_dir=Path(args.lock_dir) if args.lock_dir else None,
        jobs=args.jobs,
        skip_missing=args.skip_missing,
    )
    if args.jobs < 1:
        raise ConfigError(f"--jobs: expected 1 or more decoding processes, found {args.jobs}")
    reserved = options.reserved.directory or "none (--no-reserved)"
    print(
        f"building {len(cards)} card(s) into {options.out} (reserved lists: {reserved})", file=out, flush=True
    )

    def log(line: str) -> None:
        print(line, file=out, flush=True)

    build(options, log)
    return 0


def _check(args: argparse.Namespace, out: TextIO) -> int:
    cards = _cards(args)
    print(f"{len(cards)} card(s) valid", file=out)
    reserved = _reserved(args)
    failures = 0
    lock = Path(args.lock) if args.lock else _repo_root() / "corpus" / "lock.csv"
    if args.lock or lock.is_file():
        failures += _check_lock(lock, reserved, out)
    if args.audio:
        failures += _check_audio(Path(args.audio), reserved, out)
    print("nothing reserved found" if not failures else f"{failures} reserved row(s) found", file=out)
    return 1 if failures else 0


def _rows(path: Path, needed: tuple[str, ...]) -> list[dict[str, str]]:
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in needed if c not in (reader.fieldnames or [])]
            if missing:
                raise ConfigError(f"{path}: expected columns {list(needed)}, found {reader.fieldnames}")
            return list(reader)
    except OSError as exc:
        raise ConfigError(f"{path}: expected a readable CSV, found {exc}") from exc


def _check_lock(lock: Path, reserved: Reserved, out: TextIO) -> int:
    from spoofwatch.corpus.reserved import speaker_refusal

    rows = _rows(lock, ("sha1_orig", "origin"))
    hits = 0
    for row in rows:
        sha1 = row["sha1_orig"].strip().lower()
        why = [
            reserved.file_refusal(sha1),
            None if sha1 in reserved.allowed else reserved.origin_key_refusal(row["origin"]),
            speaker_refusal(row.get("label", ""), row.get("speaker", "")),
        ]
        reasons = [w for w in why if w]
        if reasons:
            hits += 1
            print(f"{lock}: {row.get('card', '?')}:{row.get('path', '?')}: {'; '.join(reasons)}", file=out)
    print(f"{lock}: {len(rows)} rows checked against rules 1-4", file=out)
    return hits


def _check_audio(manifest: Path, reserved: Reserved, out: TextIO) -> int:
    import soundfile as sf

    from spoofwatch.corpus.nearcopy import envelope
    from spoofwatch.corpus.reserved import CUT_S

    rows = [
        r
        for r in _rows(manifest, ("path", "sha1_orig"))
        if r["sha1_orig"].strip().lower() not in reserved.allowed
    ]
    envs, durs, firsts = [], [], []
    for row in rows:
        x, sr = sf.read(manifest.parent / row["path"], dtype="int16")
        if x.ndim != 1 or sr != 16000:
            raise ConfigError(
                f"{manifest}: {row['path']}: expected mono 16 kHz audio, found {x.ndim} dims at {sr} Hz"
            )
        envs.append(envelope(x))
        durs.append(len(x) / sr)
        firsts.append(envelope(x[: int(CUT_S * sr)]))
    refused = reserved.near_copies(envs, durs, firsts)
    for i, message in refused.items():
        print(f"{manifest}: {rows[i]['path']}: {message}", file=out)
    print(f"{manifest}: {len(rows)} clips compared with {len(reserved.envelopes)} reserved clips", file=out)
    return len(refused)


def _stats(args: argparse.Namespace, out: TextIO) -> int:
    from spoofwatch.corpus.datasheet import datasheet
    from spoofwatch.corpus.outputs import read_skips

    manifest = Path(args.manifest)
    rows = _rows(manifest, ("label", "duration_s"))
    skips_file = manifest.parent / "skips.csv"
    skips = read_skips(skips_file) if skips_file.is_file() else []
    print(datasheet(rows, skips), file=out, end="")
    return 0
