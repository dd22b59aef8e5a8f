"""``spoofwatch corpus build``: cards and origins in; clips, manifest, lock file and datasheet out.

Steps: refuse reserved origins; for each selected file of each card, find its rule, refuse
reserved speakers and files, leave out files the development corpus holds, skip LFS pointers,
absent, undecodable, too short and silent files, decode (cached by SHA-1) and cut into pieces;
then remove exact and near duplicates across all cards, refuse near copies of reserved clips,
apply the caps, assign splits, and write.
"""

from __future__ import annotations

import csv
import hashlib
import multiprocessing
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import soundfile as sf

from spoofwatch.corpus.cards import Card, Labels, fill_check
from spoofwatch.corpus.clips import nonzero_span, piece_bounds, silence_reason
from spoofwatch.corpus.config import BuildConfig
from spoofwatch.corpus.datasheet import datasheet
from spoofwatch.corpus.decode import SAMPLE_RATE, DecodeCache, Decoded
from spoofwatch.corpus.dedup import remove_duplicates
from spoofwatch.corpus.generators import GeneratorReader
from spoofwatch.corpus.nearcopy import envelope
from spoofwatch.corpus.origins import MissingFile, OriginError, OriginReader, open_origin
from spoofwatch.corpus.outputs import (
    audio_path,
    lock_text,
    manifest_row,
    manifest_text,
    skips_text,
    write_text,
)
from spoofwatch.corpus.records import Piece, Skip
from spoofwatch.corpus.reserved import CUT_S, Reserved, speaker_refusal
from spoofwatch.corpus.selection import CARD_CAP_REASON, apply_caps, assign_splits
from spoofwatch.errors import AudioError, ConfigError
from spoofwatch.progress import progress

LFS_PREFIX = b"version https://git-lfs.github.com/spec/"
Log = Callable[[str], None]


@dataclass(frozen=True)
class BuildOptions:
    cards: list[Card]
    origins: Mapping[str, Path]
    out: Path
    cache: Path
    config: BuildConfig
    reserved: Reserved
    lock_dir: Path | None = None
    jobs: int = 1
    skip_missing: bool = False


@dataclass
class BuildResult:
    pieces: list[Piece] = field(default_factory=list)
    skips: list[Skip] = field(default_factory=list)

    @property
    def minutes(self) -> float:
        return sum(p.duration_s for p in self.pieces) / 60.0


def is_lfs_pointer(data: bytes) -> bool:
    return len(data) < 1024 and data.startswith(LFS_PREFIX)


def reserved_reason(message: str) -> str:
    """``reserved rule N`` from a rule message (``rule N (...)``), the datasheet's skip reason."""
    return "reserved " + message.split(" (")[0]


def parse_origins(pairs: list[str], files: list[str]) -> dict[str, Path]:
    """``ID=PATH`` pairs from the command line and from ``--origins`` files (# comments)."""
    found: dict[str, Path] = {}
    lines: list[tuple[str, str]] = [("--origin", p) for p in pairs]
    for name in files:
        try:
            text = Path(name).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(
                f"--origins {name}: expected a readable file of ID=PATH lines, found {exc}"
            ) from exc
        for number, line in enumerate(text.splitlines(), 1):
            stripped = line.split("#", 1)[0].strip()
            if stripped:
                lines.append((f"{name}:{number}", stripped))
    for where, text in lines:
        card_id, sep, path = text.partition("=")
        if not sep or not card_id.strip() or not path.strip():
            raise ConfigError(
                f"{where}: expected ID=PATH (a card id and the origin's local path), found {text!r}"
            )
        found[card_id.strip()] = Path(path.strip()).expanduser()
    return found


def _open(card: Card, options: BuildOptions) -> OriginReader:
    if card.origin.type == "generator":
        return GeneratorReader(card.origin.recipe, card.origin.params, card.origin.seed, options.cache)
    path = options.origins.get(card.id)
    if path is None:
        raise OriginError(
            f"{card.id}: expected its origin's local path (--origin {card.id}=PATH or a line in --origins), "
            "found none"
        )
    return open_origin(card.origin.type, path, card.origin.commit, options.cache)


def _pinned(card: Card, reader: OriginReader) -> str:
    if isinstance(reader, GeneratorReader):
        return f"{card.origin.key}@{reader.engine_version}"
    return card.origin.pinned


@dataclass(frozen=True)
class _Pending:
    path: str
    labels: Labels
    sha1: str
    data: bytes


def _decode_one(root: Path, sha1: str, data: bytes, name: str) -> Decoded | str:
    try:
        return DecodeCache(root).get(sha1, data, name)
    except AudioError as exc:
        return str(exc)


class Decoder:
    """Decodes batches of files through the cache, in ``jobs`` processes (1: in this one)."""

    def __init__(self, root: Path, jobs: int) -> None:
        self.root = root
        self.batch = max(1, 8 * jobs)
        # spawn, not fork: a forked child can inherit a held lock of soxr's or numpy's threads.
        context = multiprocessing.get_context("spawn")
        self.pool = ProcessPoolExecutor(jobs, mp_context=context) if jobs > 1 else None

    def decode(self, items: list[tuple[str, bytes, str]]) -> list[Decoded | str]:
        if self.pool is None:
            return [_decode_one(self.root, *item) for item in items]
        futures = [self.pool.submit(_decode_one, self.root, *item) for item in items]
        return [f.result() for f in futures]

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()


class _CardPass:
    """One card's files → pieces and skips."""

    def __init__(
        self, card: Card, options: BuildOptions, seen: dict[str, str], decoder: Decoder, log: Log
    ) -> None:
        self.card, self.options, self.seen, self.log = card, options, seen, log
        self.config = options.config
        self.development = options.config.development_split()
        self.decoder = decoder
        self.pieces: list[Piece] = []
        self.skips: list[Skip] = []

    def skip(self, path: str, reason: str, detail: str = "", seconds: float = 0.0) -> None:
        self.skips.append(Skip(self.card.id, path, reason, detail, seconds))

    def run(self) -> None:
        card = self.card
        refusal = self.options.reserved.origin_refusal(card)
        if refusal:
            self.log(f"{card.id}: origin {card.origin.key} refused: {refusal}")
            self.skip("*", reserved_reason(refusal), refusal)
            return
        reader = _open(card, self.options)
        try:
            origin = _pinned(card, reader)
            selected = [f for f in reader.files() if card.selects(f)]
            pending: list[_Pending] = []
            for path in progress(selected, total=len(selected), desc=card.id, unit="file"):
                item = self._prepare(reader, path)
                if item is not None:
                    pending.append(item)
                if len(pending) >= self.decoder.batch:
                    self._decode(pending, origin)
                    pending = []
            self._decode(pending, origin)
        finally:
            reader.close()

    def _prepare(self, reader: OriginReader, path: str) -> _Pending | None:
        """A file to decode, or None when it is left out before decoding (the skip is recorded)."""
        labels = self.card.labels_for(path)
        if labels is None:
            self.skip(path, "no label", "no rule matches this path")
            return None
        if labels.skip:
            self.skip(path, "skip rule", labels.evidence)
            return None
        problem = fill_check(labels)
        if problem:
            self.skip(path, "bad labels", f"rules[{labels.rule}]: {problem}")
            return None
        refusal = speaker_refusal(labels.label, labels.speaker, labels.corpus)
        if refusal:
            self.skip(path, reserved_reason(refusal), refusal)
            return None
        try:
            data = reader.read(path)
        except MissingFile as exc:
            self.skip(path, "absent", str(exc))
            return None
        if is_lfs_pointer(data):
            self.skip(path, "LFS pointer", "the repository holds a Git LFS pointer, not the audio")
            return None
        sha1 = hashlib.sha1(data).hexdigest()
        refusal = self.options.reserved.file_refusal(sha1)
        if refusal:
            self.skip(path, reserved_reason(refusal), refusal)
            return None
        split = self.development.get(sha1)
        if split is not None:
            why = (
                "kept out so that its dev split stays unseen"
                if split == "dev"
                else "it is trained alongside, and one copy is enough"
            )
            self.skip(
                path, f"in the development corpus ({split})", f"the development corpus holds this file: {why}"
            )
            return None
        if sha1 in self.seen:
            self.skip(path, "exact duplicate (same file)", f"of {self.seen[sha1]}")
            return None
        self.seen[sha1] = f"{self.card.id}:{path}"
        return _Pending(path, labels, sha1, data)

    def _decode(self, pending: list[_Pending], origin: str) -> None:
        results = self.decoder.decode([(p.sha1, p.data, p.path) for p in pending])
        for item, result in zip(pending, results, strict=True):
            if isinstance(result, str):
                self.skip(item.path, "undecodable", result)
            else:
                self._cut(item.path, item.labels, origin, item.sha1, result)

    def _cut(self, path: str, labels: Labels, origin: str, sha1: str, decoded: Decoded) -> None:
        config = self.config
        first, end = nonzero_span(decoded.pcm) if labels.trim_zeros else (0, len(decoded.pcm))
        pcm = decoded.pcm[first:end]
        if len(pcm) < config.min_s * SAMPLE_RATE:
            trimmed = " after trimming digital zeros" if labels.trim_zeros else ""
            self.skip(path, "too short", f"{len(pcm) / SAMPLE_RATE:.2f} s{trimmed} < {config.min_s:g} s")
            return
        silent = silence_reason(pcm, config)
        if silent:
            self.skip(path, "silent", silent, decoded.duration_s)
            return
        bounds = piece_bounds(len(pcm), config, labels.max_pieces)
        used = bounds[-1][1] if bounds else 0
        limit = labels.max_pieces or config.max_pieces
        if len(bounds) == limit and len(pcm) - used >= config.min_last_s * SAMPLE_RATE:
            self.skip(path, "beyond max_pieces", f"after {limit} pieces", (len(pcm) - used) / SAMPLE_RATE)
        for piece_start, piece_stop in bounds:
            start, stop = first + piece_start, first + piece_stop
            segment = decoded.pcm[start:stop]
            silent = silence_reason(segment, config)
            if silent:
                self.skip(
                    path,
                    "silent piece",
                    f"at {start / SAMPLE_RATE:.2f} s: {silent}",
                    len(segment) / SAMPLE_RATE,
                )
                continue
            self.pieces.append(
                Piece(
                    card=self.card.id,
                    path=path,
                    labels=labels,
                    origin=origin,
                    licence=self.card.origin.licence,
                    sha1_orig=sha1,
                    orig_sr=decoded.orig_sr,
                    start=start,
                    length=stop - start,
                    pcm_sha1=hashlib.sha1(segment.tobytes()).hexdigest(),
                    envelope=envelope(segment),
                    first_8s=envelope(segment[: int(CUT_S * SAMPLE_RATE)]),
                )
            )


def utt_id(piece: Piece) -> str:
    digest = hashlib.sha1(f"{piece.card}|{piece.path}|{piece.start}".encode()).hexdigest()[:12]
    return f"{piece.card}-{digest}"


def build(options: BuildOptions, log: Log) -> BuildResult:
    result = BuildResult()
    seen: dict[str, str] = {}
    missing = [
        c.id
        for c in options.cards
        if c.origin.type != "generator"
        and c.id not in options.origins
        and not options.reserved.origin_refusal(c)
    ]
    if missing and not options.skip_missing:
        raise OriginError(
            "expected the local path of every card's origin (--origin ID=PATH or --origins FILE), "
            f"found none for {len(missing)} card(s): {', '.join(sorted(missing))}; add them, "
            "leave them out with --only, or pass --skip-missing"
        )
    for card_id in sorted(missing):
        log(f"{card_id}: left out, no local path given for its origin (--skip-missing)")
        result.skips.append(Skip(card_id, "*", "origin not given", "no --origin/--origins entry"))
    decoder = Decoder(options.cache / "decoded", options.jobs)
    try:
        for card in sorted((c for c in options.cards if c.id not in missing), key=lambda c: c.id):
            result.skips += _run_card(card, options, seen, decoder, result, log)
    finally:
        decoder.close()
    _finish(result, options, log)
    return result


def _run_card(
    card: Card, options: BuildOptions, seen: dict[str, str], decoder: Decoder, result: BuildResult, log: Log
) -> list[Skip]:
    step = _CardPass(card, options, seen, decoder, log)
    step.run()
    result.pieces += step.pieces
    counts = Counter(s.reason for s in step.skips)
    minutes = sum(p.duration_s for p in step.pieces) / 60.0
    left = ", ".join(f"{r} {n}" for r, n in sorted(counts.items())) or "none"
    log(
        f"{card.id}: {len(step.pieces)} pieces ({minutes:.1f} min) from "
        f"{len({p.path for p in step.pieces})} files; left out: {left}"
    )
    return step.skips


def _finish(result: BuildResult, options: BuildOptions, log: Log) -> None:
    pieces, dup_skips = remove_duplicates(result.pieces, options.config.threshold, options.config.near_min_s)
    result.skips += dup_skips
    log(f"duplicates: {len(dup_skips)} pieces removed ({Counter(s.reason for s in dup_skips).most_common()})")
    pieces = _refuse_near_copies(pieces, options.reserved, result.skips, log)
    pieces, capped = apply_caps(pieces, options.config, {c.id: c.caps for c in options.cards})
    result.skips += capped
    own = sum(s.reason.startswith(CARD_CAP_REASON) for s in capped)
    log(f"caps: {len(capped)} pieces over a generator or speaker cap left out ({own} by a card's own cap)")
    assign_splits(pieces, options.config)
    for p in pieces:
        p.utt_id = utt_id(p)
    result.pieces = pieces
    _write(result, options, log)


def _refuse_near_copies(pieces: list[Piece], reserved: Reserved, skips: list[Skip], log: Log) -> list[Piece]:
    if not reserved.envelopes:
        return pieces
    candidates = [p for p in pieces if p.sha1_orig not in reserved.allowed]
    refused = reserved.near_copies(
        [p.envelope for p in candidates], [p.duration_s for p in candidates], [p.first_8s for p in candidates]
    )
    gone = set()
    why_of_file: dict[str, str] = {}
    for i, message in refused.items():
        p = candidates[i]
        skips.append(Skip(p.card, p.path, reserved_reason(message), message, p.duration_s))
        log(f"{p.card}: {p.path} @ {p.seg_start_s:.2f} s refused: {message}")
        gone.add(id(p))
        why_of_file.setdefault(p.sha1_orig, message)
    # A long file cut into pieces may match a reserved clip with one piece only: the rest of
    # that recording is just as reserved.
    for p in candidates:
        if id(p) not in gone and p.sha1_orig in why_of_file:
            first = why_of_file[p.sha1_orig]
            message = f"{first.split(' (')[0]} (another piece of the same file matched: {first})"
            skips.append(Skip(p.card, p.path, reserved_reason(message), message, p.duration_s))
            log(f"{p.card}: {p.path} @ {p.seg_start_s:.2f} s refused: {message}")
            gone.add(id(p))
    log(
        f"reserved audio check: {len(candidates)} pieces compared with {len(reserved.envelopes)} "
        f"reserved clips, {len(gone)} refused"
    )
    return [p for p in pieces if id(p) not in gone]


def _previous_pcm(manifest: Path) -> dict[str, str]:
    if not manifest.is_file():
        return {}
    with manifest.open(newline="", encoding="utf-8") as handle:
        return {r["path"]: r.get("pcm_sha1", "") for r in csv.DictReader(handle)}


def _write(result: BuildResult, options: BuildOptions, log: Log) -> None:
    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    previous = _previous_pcm(out / "manifest.csv")
    cache = DecodeCache(options.cache / "decoded")
    by_file: dict[str, list[Piece]] = {}
    for p in result.pieces:
        by_file.setdefault(p.sha1_orig, []).append(p)
    written = 0
    for sha1, group in progress(
        sorted(by_file.items()), total=len(by_file), desc="writing clips", unit="file"
    ):
        todo = [
            p
            for p in group
            if not (previous.get(audio_path(p)) == p.pcm_sha1 and (out / audio_path(p)).is_file())
        ]
        if not todo:
            continue
        decoded = cache.get(sha1, None, group[0].path)
        for p in todo:
            target = out / audio_path(p)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(target.stem + ".tmp.flac")
            sf.write(
                tmp, decoded.pcm[p.start : p.start + p.length], SAMPLE_RATE, subtype="PCM_16", format="FLAC"
            )
            tmp.replace(target)
            written += 1
    wanted = {out / audio_path(p) for p in result.pieces}
    stale = (
        [f for f in (out / "audio").rglob("*.flac") if f not in wanted] if (out / "audio").is_dir() else []
    )
    for f in stale:
        f.unlink()
    rows = [manifest_row(p) for p in sorted(result.pieces, key=lambda p: p.order)]
    sheet = datasheet(rows, result.skips)
    texts = {
        "manifest.csv": manifest_text(result.pieces),
        "lock.csv": lock_text(result.pieces),
        "skips.csv": skips_text(result.skips),
        "DATASHEET.md": sheet,
    }
    for name, text in texts.items():
        write_text(out / name, text)
    if options.lock_dir is not None:
        write_text(options.lock_dir / "lock.csv", texts["lock.csv"])
        write_text(options.lock_dir / "DATASHEET.md", sheet)
    log(
        f"wrote {out / 'manifest.csv'}: {len(result.pieces)} clips, {result.minutes:.1f} min "
        f"({written} FLAC written, {len(stale)} stale removed); lock.csv, DATASHEET.md, skips.csv beside it"
        + (f"; lock.csv and DATASHEET.md also in {options.lock_dir}" if options.lock_dir else "")
    )
