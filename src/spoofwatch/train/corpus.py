"""Labelled audio lists: manifest CSVs, ASVspoof protocol files, splits and leakage checks.

A manifest CSV has a header with the required columns ``path`` (relative to the CSV's
folder, or absolute) and ``label`` (``bonafide`` | ``spoof``). The optional columns
``utt_id``, ``system``, ``speaker``, ``split`` and ``source`` fill the fields of the same
name; every other column is kept in ``LabelledItem.extra``. A missing column or empty cell
takes a default: ``utt_id`` = the audio file's stem, ``system`` = ``-`` for bona fide and
``unknown`` for spoof, ``speaker`` and ``split`` = ``unknown``, ``source`` = the list
file's name.

Protocol files are whitespace-separated lines; see :func:`read_protocol`.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal, TypeGuard

import soundfile

from spoofwatch.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

Label = Literal["bonafide", "spoof"]
GroupBy = Literal["speaker", "system", "source"]

LABELS: tuple[Label, ...] = ("bonafide", "spoof")
UNKNOWN = "unknown"
NO_SYSTEM = "-"
REQUIRED_COLUMNS = ("path", "label")
KNOWN_COLUMNS = frozenset({"path", "label", "utt_id", "system", "speaker", "split", "source"})
GROUP_FIELDS: tuple[GroupBy, ...] = ("speaker", "system", "source")
_SPLIT_NAMES = ("train", "dev", "eval")
_MAX_SHOWN = 5


def _is_label(value: str) -> TypeGuard[Label]:
    return value in LABELS


@dataclass(frozen=True)
class LabelledItem:
    """One labelled audio file with the metadata that splits and reports group by."""

    path: Path
    label: Label
    utt_id: str
    system: str = NO_SYSTEM
    speaker: str = UNKNOWN
    split: str = UNKNOWN
    source: str = UNKNOWN
    extra: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), hash=False, compare=True)

    def __post_init__(self) -> None:
        if not _is_label(self.label):
            raise DataError(f"label: expected one of {LABELS}, found {self.label!r}")
        # A read-only copy, so a frozen item cannot change through a dict its caller kept.
        object.__setattr__(self, "extra", MappingProxyType(dict(self.extra)))


def read_manifest(csv_path: str | os.PathLike[str], *, check_files: bool = True) -> list[LabelledItem]:
    """Read a manifest CSV (see the module docstring) into items, in file order.

    Raises DataError naming the file and line for a missing header or required column,
    a row with the wrong number of fields, an empty path, a label other than
    ``bonafide``/``spoof``, a repeated ``utt_id``, or (with ``check_files``) a missing file.
    """
    csv_path = Path(csv_path)
    base_dir = csv_path.parent
    items: list[LabelledItem] = []
    first_line_of: dict[str, int] = {}
    try:
        handle = csv_path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise DataError(f"{csv_path}: expected a readable manifest CSV, found {exc}") from exc
    with handle:
        reader = csv.reader(handle)
        header = _read_header(reader, csv_path)
        for row in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise DataError(
                    f"{csv_path}:{line}: expected {len(header)} fields as in the header, found {len(row)}"
                )
            cells = {name: cell.strip() for name, cell in zip(header, row, strict=True)}
            item = _item_from_cells(cells, base_dir, csv_path.name, f"{csv_path}:{line}")
            if item.utt_id in first_line_of:
                raise DataError(
                    f"{csv_path}:{line}: expected unique utt_id values, found "
                    f"{item.utt_id!r} again (first on line {first_line_of[item.utt_id]})"
                )
            first_line_of[item.utt_id] = line
            if check_files:
                _check_exists(item.path, f"{csv_path}:{line}")
            items.append(item)
    if not items:
        raise DataError(f"{csv_path}: expected at least one row after the header, found none")
    logger.info("read %d items from manifest %s", len(items), csv_path)
    return items


def _read_header(reader: Iterator[list[str]], csv_path: Path) -> list[str]:
    header = [name.strip() for name in next(reader, [])]
    if not any(header):
        raise DataError(f"{csv_path}:1: expected a header line with columns path,label; found none")
    duplicates = sorted({name for name in header if header.count(name) > 1})
    if duplicates:
        raise DataError(f"{csv_path}:1: expected unique column names, found repeated {duplicates}")
    missing = [name for name in REQUIRED_COLUMNS if name not in header]
    if missing:
        raise DataError(f"{csv_path}:1: expected required column(s) {missing}, found columns {header}")
    return header


def _item_from_cells(cells: Mapping[str, str], base_dir: Path, list_name: str, where: str) -> LabelledItem:
    raw_path = cells["path"]
    if not raw_path:
        raise DataError(f"{where}: expected an audio path in column 'path', found an empty cell")
    label = cells["label"]
    if not _is_label(label):
        raise DataError(f"{where}: expected label 'bonafide' or 'spoof', found {label!r}")
    path = Path(raw_path)
    if not path.is_absolute():
        path = base_dir / path
    default_system = NO_SYSTEM if label == "bonafide" else UNKNOWN
    return LabelledItem(
        path=path,
        label=label,
        utt_id=cells.get("utt_id") or path.stem,
        system=cells.get("system") or default_system,
        speaker=cells.get("speaker") or UNKNOWN,
        split=cells.get("split") or UNKNOWN,
        source=cells.get("source") or list_name,
        extra={name: value for name, value in cells.items() if name not in KNOWN_COLUMNS},
    )


def _check_exists(path: Path, where: str) -> None:
    if not path.is_file():
        raise DataError(f"{where}: expected an audio file at {path}, found none")


def read_protocol(
    protocol_path: str | os.PathLike[str],
    audio_dir: str | os.PathLike[str],
    ext: str = ".flac",
    *,
    split: str | None = None,
    source: str | None = None,
    check_files: bool = True,
) -> list[LabelledItem]:
    """Read an ASVspoof-style protocol file; the audio is ``audio_dir/UTT_ID + ext``.

    Accepted lines (whitespace-separated; blank lines and lines starting with ``#`` are
    skipped):

    - ASVspoof 2019 LA: ``SPEAKER UTT_ID - SYSTEM LABEL``;
    - longer lines, such as ASVspoof 2021 LA/DF keys
      (``SPEAKER UTT_ID CODEC TRANSMISSION SYSTEM LABEL TRIM SUBSET ...``) or ASVspoof 5,
      as long as fields 1 and 2 are speaker and utterance id and the label follows the
      system. The label is the first field from the third on that is ``bonafide`` or
      ``spoof`` and is not directly followed by another such field (2021 keys write
      ``bonafide bonafide`` for bona fide trials); the system is the field before it.

    Bona fide items get system ``-``. Fields not used above and not ``-`` go to ``extra``
    as ``field_<n>`` (1-based). ``split`` defaults to ``train``, ``dev`` or ``eval`` when
    that word is part of the file name, else ``unknown``; ``source`` defaults to the file
    name.
    """
    protocol_path = Path(protocol_path)
    audio_dir = Path(audio_dir)
    suffix = ext if not ext or ext.startswith(".") else f".{ext}"
    item_split = split if split is not None else _split_from_name(protocol_path.name)
    item_source = source if source is not None else protocol_path.name
    try:
        lines = protocol_path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{protocol_path}: expected a readable protocol file, found {exc}") from exc

    items: list[LabelledItem] = []
    first_line_of: dict[str, int] = {}
    for line_number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        where = f"{protocol_path}:{line_number}"
        label_index, label = _find_label(fields, where)
        speaker, utt_id = fields[0], fields[1]
        if utt_id in first_line_of:
            raise DataError(
                f"{where}: expected unique utterance ids, found {utt_id!r} again "
                f"(first on line {first_line_of[utt_id]})"
            )
        first_line_of[utt_id] = line_number
        item = LabelledItem(
            path=audio_dir / f"{utt_id}{suffix}",
            label=label,
            utt_id=utt_id,
            system=NO_SYSTEM if label == "bonafide" else fields[label_index - 1],
            speaker=speaker,
            split=item_split,
            source=item_source,
            extra={
                f"field_{i + 1}": value
                for i, value in enumerate(fields)
                if i not in (0, 1, label_index - 1, label_index) and value != NO_SYSTEM
            },
        )
        if check_files:
            _check_exists(item.path, where)
        items.append(item)
    if not items:
        raise DataError(f"{protocol_path}: expected at least one protocol line, found none")
    logger.info("read %d items from protocol %s", len(items), protocol_path)
    return items


def _find_label(fields: Sequence[str], where: str) -> tuple[int, Label]:
    if len(fields) < 5:
        raise DataError(
            f"{where}: expected at least 5 fields (SPEAKER UTT_ID - SYSTEM LABEL), "
            f"found {len(fields)}: {' '.join(fields)!r}"
        )
    for index in range(3, len(fields)):
        value = fields[index]
        if _is_label(value) and not (index + 1 < len(fields) and _is_label(fields[index + 1])):
            return index, value
    raise DataError(
        f"{where}: expected a 'bonafide' or 'spoof' field after the system, found {' '.join(fields)!r}"
    )


def _split_from_name(name: str) -> str:
    words = set(re.split(r"[^a-z0-9]+", name.lower()))
    return next((split for split in _SPLIT_NAMES if split in words), UNKNOWN)


def filter_split(items: Iterable[LabelledItem], split: str) -> list[LabelledItem]:
    """The items whose ``split`` is ``split``; DataError if there are none."""
    item_list = list(items)
    selected = [item for item in item_list if item.split == split]
    if not selected:
        present = sorted({item.split for item in item_list})
        raise DataError(f"split: expected items in split {split!r}, found splits {present}")
    return selected


def group_key(item: LabelledItem, by: GroupBy) -> str:
    """The value of ``item`` that groups are formed by: its speaker, system or source."""
    if by not in GROUP_FIELDS:
        raise ConfigError(f"group by: expected one of {GROUP_FIELDS}, found {by!r}")
    value: str = getattr(item, by)
    return value


def leave_one_group_out(
    items: Iterable[LabelledItem], by: GroupBy = "source"
) -> Iterator[tuple[str, list[LabelledItem], list[LabelledItem]]]:
    """Yield ``(held-out group, train items, held-out items)`` for each group, sorted by name.

    Groups partition the items by :func:`group_key`, so with ``by="system"`` all bona fide
    items (system ``-``) form one group of their own. DataError if fewer than two groups.
    """
    groups: dict[str, list[LabelledItem]] = defaultdict(list)
    item_list = list(items)
    for item in item_list:
        groups[group_key(item, by)].append(item)
    if len(groups) < 2:
        raise DataError(f"leave-one-out by {by}: expected at least 2 groups, found {sorted(groups)}")
    for name in sorted(groups):
        train = [item for item in item_list if group_key(item, by) != name]
        yield name, train, groups[name]


def check_no_leakage(train: Iterable[LabelledItem], dev: Iterable[LabelledItem]) -> list[str]:
    """Problems that make ``dev`` results optimistic; an empty list means none were found.

    Checks for utterance ids and audio files in both lists, bona fide speakers in both and
    spoof systems in both. ``unknown`` speakers and systems and the system ``-`` are not
    compared.
    """
    train_list, dev_list = list(train), list(dev)
    checks: list[tuple[str, set[str], set[str]]] = [
        ("utt_id", _values(train_list, "utt_id"), _values(dev_list, "utt_id")),
        ("audio file", _paths(train_list), _paths(dev_list)),
        (
            "bona fide speaker",
            _values(train_list, "speaker", label="bonafide"),
            _values(dev_list, "speaker", label="bonafide"),
        ),
        (
            "spoof system",
            _values(train_list, "system", label="spoof"),
            _values(dev_list, "system", label="spoof"),
        ),
    ]
    problems = []
    for what, train_values, dev_values in checks:
        shared = sorted(train_values & dev_values)
        if shared:
            shown = ", ".join(shared[:_MAX_SHOWN]) + (", ..." if len(shared) > _MAX_SHOWN else "")
            problems.append(f"{len(shared)} {what}(s) in both train and dev: {shown}")
    return problems


def _values(items: Sequence[LabelledItem], attribute: str, label: Label | None = None) -> set[str]:
    values = {str(getattr(item, attribute)) for item in items if label in (None, item.label)}
    return values - {UNKNOWN, NO_SYSTEM, ""}


def _paths(items: Sequence[LabelledItem]) -> set[str]:
    return {os.path.abspath(item.path) for item in items}


def item_duration_s(item: LabelledItem) -> float:
    """The clip's duration: the manifest's ``duration_s`` when it has one, else the file's."""
    stated = item.extra.get("duration_s", "")
    try:
        value = float(stated)
    except ValueError:
        value = math.nan
    if math.isfinite(value) and value >= 0:
        return value
    try:
        return float(soundfile.info(str(item.path)).duration)
    except (OSError, RuntimeError) as exc:
        raise DataError(f"{item.path}: cannot read its duration ({exc})") from None


def at_least(items: Sequence[LabelledItem], min_s: float, name: str) -> list[LabelledItem]:
    """The items at least ``min_s`` seconds long (all of them for 0); both classes must
    remain."""
    if min_s < 0 or not math.isfinite(min_s):
        raise ConfigError(f"{name}: expected a number of seconds >= 0, found {min_s}")
    if min_s == 0:
        return list(items)
    kept = [it for it in items if item_duration_s(it) >= min_s]
    logger.info(
        "%s: %d of %d clips shorter than %g s left out", name, len(items) - len(kept), len(items), min_s
    )
    if {it.label for it in kept} != {"bonafide", "spoof"}:
        raise DataError(
            f"{name} {min_s:g}: expected clips of both classes at least that long, found "
            f"{sum(it.label == 'bonafide' for it in kept)} bona fide and "
            f"{sum(it.label == 'spoof' for it in kept)} spoof"
        )
    return kept
