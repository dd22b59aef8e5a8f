"""Source cards: one TOML file per source, parsed with tomllib and validated field by field.

Every problem in a card is collected and reported together, each line naming the file, the
field and what was expected, so a collector can fix a card in one pass.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spoofwatch.corpus.rules import compile_glob, fill_template, template_names
from spoofwatch.errors import ConfigError

AUDIO_EXTENSIONS = ("wav", "flac", "mp3", "ogg", "opus", "m4a", "aac", "webm")
ORIGIN_TYPES = ("git", "dir", "debian", "pypi", "generator")
LABELS = ("bonafide", "spoof")
KINDS = (
    "tts-codec-lm",
    "tts-llm",
    "tts-flow-matching",
    "tts-masked-generative",
    "tts-diffusion",
    "tts-gan-e2e",
    "tts-acoustic+vocoder",
    "tts-commercial",
    "tts-formant",
    "tts-diphone",
    "tts-hmm",
    "vc-zero-shot",
    "vc-streaming",
    "vc-any-to-one",
    "vc-diffusion",
    "codec-resynthesis",
    "vocoder",
    "vocoder-dsp",
    "ssl-resynthesis",
    "speech-edit",
    "singing-synthesis",
    "singing-vc",
    "speech-lm",
)
BONAFIDE_TAGS = (
    "read",
    "conversational",
    "spontaneous",
    "telephone",
    "codec",
    "noisy",
    "reverberant",
    "far-field",
    "expressive",
    "emotional",
    "accented",
    "singing",
    "processed",
    "child",
    "elderly",
)
# ``check``: a free-form table recording how a collector checked a sample of the clips.
# ``caps``: the card's own lower caps (``CardCaps``).
TOP_FIELDS = (
    "id",
    "title",
    "page",
    "notes",
    "origin",
    "include",
    "exclude",
    "defaults",
    "rules",
    "check",
    "caps",
)
CAP_FIELDS = ("generator_minutes", "speaker_minutes")
ORIGIN_FIELDS = ("type", "url", "key", "commit", "licence", "package", "version", "recipe", "seed")
# TOML puts ``include = ...`` written after ``[origin]`` inside that table (CARDS_SPEC's own example
# does), so include/exclude are read from the top level or from [origin], not both.
LIST_FIELDS = ("include", "exclude")
STRING_RULE_FIELDS = (
    "label",
    "evidence",
    "system",
    "generator",
    "family",
    "kind",
    "speaker",
    "lang",
    "corpus",
)
RULE_FIELDS = (
    *STRING_RULE_FIELDS,
    "year",
    "zero_shot",
    "streaming",
    "tags",
    "max_pieces",
    "trim_zeros",
    "skip",
)
MATCH_FIELDS = ("glob", "regex")
SPOOF_REQUIRED = ("system", "generator", "family", "kind", "year")
_ID = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_KEY = re.compile(r"^[a-z0-9][a-z0-9.+_-]*:[^\s@A-Z]+$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_KEY_PREFIX = {"debian": "debian:", "pypi": "pypi:", "generator": "generator:"}
NO_SYSTEM = "-"
MIN_YEAR, MAX_YEAR = 1950, 2100


class CardError(ConfigError):
    """A card that does not follow the schema (docs/corpus.md)."""


@dataclass(frozen=True)
class Origin:
    """Where a card's files come from. ``params``: a generator recipe's own settings."""

    type: str
    key: str
    licence: str
    url: str = ""
    commit: str = ""
    package: str = ""
    version: str = ""
    recipe: str = ""
    seed: int = 0
    params: Mapping[str, Any] = field(default_factory=dict)

    @property
    def pinned(self) -> str:
        """``key@commit`` (git), ``key@version`` (packages), or the key (directories, generators)."""
        pin = self.commit or self.version
        return f"{self.key}@{pin}" if pin else self.key


@dataclass(frozen=True)
class Labels:
    """What one file is, after its rule's templates were filled."""

    label: str
    evidence: str
    system: str
    generator: str
    family: str
    kind: str
    year: int | None
    zero_shot: bool
    streaming: bool
    speaker: str
    lang: str
    corpus: str
    tags: tuple[str, ...]
    max_pieces: int | None
    skip: bool
    rule: int
    # Cut runs of exact digital zero from the file's start and end before cutting pieces: an
    # origin that pads its recordings so (one class only) would teach a shortcut.
    trim_zeros: bool = False


@dataclass(frozen=True)
class Rule:
    index: int
    pattern: re.Pattern[str]
    values: Mapping[str, Any]

    def labels(self, path: str, card_id: str) -> Labels | None:
        match = self.pattern.fullmatch(path)
        if match is None:
            return None
        groups = {k: v or "" for k, v in match.groupdict().items()}
        v = {k: _fill(value, groups) for k, value in self.values.items()}
        label = str(v.get("label", ""))
        year = _year(v.get("year"))
        return Labels(
            label=label,
            evidence=str(v.get("evidence", "")),
            system=str(v.get("system", NO_SYSTEM)) if label == "spoof" else NO_SYSTEM,
            generator=str(v.get("generator", "")),
            family=str(v.get("family", "natural" if label == "bonafide" else "")),
            kind=str(v.get("kind", "")),
            year=year,
            zero_shot=bool(v.get("zero_shot", False)),
            streaming=bool(v.get("streaming", False)),
            speaker=str(v.get("speaker", "-" if label == "spoof" else f"{card_id}:unknown")),
            lang=str(v.get("lang", "und")),
            corpus=str(v.get("corpus", "")),
            tags=tuple(str(t) for t in v.get("tags", ())),
            max_pieces=int(v["max_pieces"]) if "max_pieces" in v else None,
            skip=bool(v.get("skip", False)),
            rule=self.index,
            trim_zeros=bool(v.get("trim_zeros", False)),
        )


@dataclass(frozen=True)
class CardCaps:
    """A card's own caps, lower than the build's for a narrow origin (few voices, one format):
    minutes taken from this card per generator and per bona fide speaker; None = the build's."""

    generator_minutes: float | None = None
    speaker_minutes: float | None = None


@dataclass(frozen=True)
class Card:
    id: str
    title: str
    origin: Origin
    include: tuple[str, ...]
    exclude: tuple[str, ...]
    rules: tuple[Rule, ...]
    path: Path
    page: str = ""
    notes: str = ""
    include_patterns: tuple[re.Pattern[str], ...] = ()
    exclude_patterns: tuple[re.Pattern[str], ...] = ()
    caps: CardCaps = CardCaps()

    def selects(self, path: str) -> bool:
        """An audio file the include globs take and no exclude glob drops."""
        if path.rsplit(".", 1)[-1].lower() not in AUDIO_EXTENSIONS or "." not in path:
            return False
        if not any(p.fullmatch(path) for p in self.include_patterns):
            return False
        return not any(p.fullmatch(path) for p in self.exclude_patterns)

    def labels_for(self, path: str) -> Labels | None:
        """The first matching rule's labels, or None (no rule: skipped as "no label")."""
        for rule in self.rules:
            found = rule.labels(path, self.id)
            if found is not None:
                return found
        return None


def _year(value: Any) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except ValueError:
        return None


def _fill(value: Any, groups: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return fill_template(value, groups)
    if isinstance(value, list):
        return [_fill(v, groups) for v in value]
    return value


class _Problems:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines: list[str] = []

    def add(self, where: str, message: str) -> None:
        self.lines.append(f"{self.path}: {where}: {message}")

    def raise_if_any(self) -> None:
        if self.lines:
            raise CardError("\n".join(self.lines))


def load_card(path: Path) -> Card:
    """Parse and validate one card; raise CardError listing every problem in it."""
    problems = _Problems(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise CardError(f"{path}: expected a readable UTF-8 TOML file, found {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise CardError(f"{path}: expected valid TOML, found a syntax error: {exc}") from exc
    for name in sorted(set(data) - set(TOP_FIELDS)):
        problems.add(name, f"unknown field; expected one of {', '.join(TOP_FIELDS)}")
    card_id = _string(data, "id", problems, required=True)
    if card_id and not _ID.fullmatch(card_id):
        problems.add("id", f"expected [a-z0-9][a-z0-9-]*, found {card_id!r}")
    if card_id and card_id != path.stem:
        problems.add("id", f"expected the file name's stem {path.stem!r}, found {card_id!r}")
    title = _string(data, "title", problems, required=True)
    if "check" in data and not isinstance(data["check"], dict):
        problems.add("check", f"expected a table recording the sample check, found {data['check']!r}")
    raw_origin = data.get("origin")
    if isinstance(raw_origin, dict):
        data = dict(data)
        for name in LIST_FIELDS:
            if name in raw_origin:
                if name in data:
                    problems.add(
                        f"origin.{name}", f"expected {name} once, found it at the top and in [origin]"
                    )
                data[name] = raw_origin[name]
        raw_origin = {k: v for k, v in raw_origin.items() if k not in LIST_FIELDS}
    origin = _origin(raw_origin, problems)
    include = _globs(data, "include", problems, required=origin is not None and origin.type != "generator")
    exclude = _globs(data, "exclude", problems, required=False)
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        problems.add("defaults", f"expected a table, found {type(defaults).__name__}")
        defaults = {}
    for name in sorted(set(defaults) - set(RULE_FIELDS)):
        problems.add(f"defaults.{name}", f"unknown field; expected one of {', '.join(RULE_FIELDS)}")
    caps = _caps(data.get("caps", {}), problems)
    raw_rules = data.get("rules")
    rules: list[Rule] = []
    if not isinstance(raw_rules, list) or not raw_rules:
        problems.add("rules", "expected at least one [[rules]] table")
    else:
        for i, raw in enumerate(raw_rules):
            rule = _rule(i, raw, defaults, card_id, problems)
            if rule is not None:
                rules.append(rule)
    problems.raise_if_any()
    assert origin is not None
    return Card(
        id=card_id,
        title=title,
        origin=origin,
        include=tuple(include or ("**/*",)),
        exclude=tuple(exclude),
        rules=tuple(rules),
        path=path,
        page=_string(data, "page", problems),
        notes=_string(data, "notes", problems),
        include_patterns=tuple(compile_glob(g) for g in include or ("**/*",)),
        exclude_patterns=tuple(compile_glob(g) for g in exclude),
        caps=caps,
    )


def _caps(raw: Any, problems: _Problems) -> CardCaps:
    if not isinstance(raw, dict):
        problems.add("caps", f"expected a table ({', '.join(CAP_FIELDS)}), found {raw!r}")
        return CardCaps()
    for name in sorted(set(raw) - set(CAP_FIELDS)):
        problems.add(f"caps.{name}", f"unknown field; expected one of {', '.join(CAP_FIELDS)}")
    minutes: dict[str, float] = {}
    for name in CAP_FIELDS:
        value = raw.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            problems.add(f"caps.{name}", f"expected a positive number of minutes, found {value!r}")
        else:
            minutes[name] = float(value)
    return CardCaps(**minutes)


def load_cards(directory: Path, only: Sequence[str] = ()) -> list[Card]:
    """Every ``*.toml`` card in ``directory`` (or those named in ``only``), sorted by id."""
    if not directory.is_dir():
        raise CardError(f"{directory}: expected a folder of source cards (*.toml), found none")
    paths = sorted(directory.glob("*.toml"))
    if only:
        by_stem = {p.stem: p for p in paths}
        missing = [name for name in only if name not in by_stem]
        if missing:
            raise CardError(f"--only: expected card ids found in {directory}, found no card {missing}")
        paths = [by_stem[name] for name in sorted(set(only))]
    if not paths:
        raise CardError(f"{directory}: expected at least one source card (*.toml), found none")
    errors: list[str] = []
    cards: list[Card] = []
    for path in paths:
        try:
            cards.append(load_card(path))
        except CardError as exc:
            errors.append(str(exc))
    if errors:
        raise CardError("\n".join(errors))
    check_unique(cards)
    return cards


def check_unique(cards: Iterable[Card]) -> None:
    seen: dict[str, Path] = {}
    keys: dict[str, Path] = {}
    problems: list[str] = []
    for card in cards:
        if card.id in seen:
            problems.append(
                f"{card.path}: id: expected a unique id, found {card.id!r} also in {seen[card.id]}"
            )
        seen[card.id] = card.path
        if card.origin.type != "generator" and card.origin.pinned in keys:
            problems.append(
                f"{card.path}: origin.key: expected one card per origin, found {card.origin.pinned!r} "
                f"also in {keys[card.origin.pinned]}"
            )
        keys[card.origin.pinned] = card.path
    if problems:
        raise CardError("\n".join(problems))


def _string(data: Mapping[str, Any], name: str, problems: _Problems, *, required: bool = False) -> str:
    value = data.get(name)
    if value is None:
        if required:
            problems.add(name, "expected a string, found nothing (required)")
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        problems.add(name, f"expected a non-empty string, found {value!r}")
        return ""
    return value


def _globs(data: Mapping[str, Any], name: str, problems: _Problems, *, required: bool) -> list[str]:
    value = data.get(name)
    if value is None:
        if required:
            problems.add(name, "expected a list of globs over paths at the origin, found nothing (required)")
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        problems.add(name, f"expected a list of non-empty glob strings, found {value!r}")
        return []
    return list(value)


def _origin(raw: Any, problems: _Problems) -> Origin | None:
    if not isinstance(raw, dict):
        problems.add("origin", "expected an [origin] table, found none")
        return None
    kind = raw.get("type")
    if kind not in ORIGIN_TYPES:
        problems.add("origin.type", f"expected one of {', '.join(ORIGIN_TYPES)}, found {kind!r}")
        return None
    known = ORIGIN_FIELDS
    params = {k: v for k, v in raw.items() if k not in known}
    if kind != "generator":
        for name in sorted(params):
            problems.add(f"origin.{name}", f"unknown field; expected one of {', '.join(known)}")
        params = {}
    sub = _Prefixed(problems, "origin.")
    key = _string(raw, "key", sub, required=True)
    if key and not _KEY.fullmatch(key):
        problems.add(
            "origin.key", f"expected a lower-case key such as github:owner/name (no @commit), found {key!r}"
        )
    prefix = _KEY_PREFIX.get(kind)
    if key and prefix and not key.startswith(prefix):
        problems.add("origin.key", f"expected a key starting with {prefix!r} for type {kind}, found {key!r}")
    licence = _string(raw, "licence", sub, required=True)
    commit = _string(raw, "commit", sub, required=kind == "git")
    if commit and not _COMMIT.fullmatch(commit):
        problems.add("origin.commit", f"expected the full 40-hex commit, found {commit!r}")
    url = _string(raw, "url", sub, required=kind == "git")
    package = _string(raw, "package", sub, required=kind in ("debian", "pypi"))
    version = _string(raw, "version", sub, required=kind in ("debian", "pypi"))
    recipe = _string(raw, "recipe", sub, required=kind == "generator")
    if kind == "generator" and recipe:
        from spoofwatch.corpus.generators import recipe_problems

        for line in recipe_problems(recipe, params):
            where, _, message = line.partition(": ")
            problems.add(where, message)
    seed = raw.get("seed", 0)
    if kind == "generator" and (not isinstance(seed, int) or isinstance(seed, bool)):
        problems.add("origin.seed", f"expected an integer seed, found {seed!r}")
        seed = 0
    return Origin(
        type=kind,
        key=key,
        licence=licence,
        url=url,
        commit=commit,
        package=package,
        version=version,
        recipe=recipe,
        seed=int(seed),
        params=params,
    )


class _Prefixed(_Problems):
    def __init__(self, parent: _Problems, prefix: str) -> None:
        super().__init__(parent.path)
        self.parent, self.prefix = parent, prefix

    def add(self, where: str, message: str) -> None:
        self.parent.add(self.prefix + where, message)


def _rule(
    index: int, raw: Any, defaults: Mapping[str, Any], card_id: str, problems: _Problems
) -> Rule | None:
    where = f"rules[{index}]"
    if not isinstance(raw, dict):
        problems.add(where, f"expected a table, found {raw!r}")
        return None
    for name in sorted(set(raw) - set(RULE_FIELDS) - set(MATCH_FIELDS)):
        problems.add(f"{where}.{name}", f"unknown field; expected glob or regex and {', '.join(RULE_FIELDS)}")
    if ("glob" in raw) == ("regex" in raw):
        problems.add(where, "expected exactly one of glob or regex")
        return None
    groups: set[str] = set()
    try:
        if "regex" in raw:
            pattern = re.compile(str(raw["regex"]))
            groups = set(pattern.groupindex)
        else:
            pattern = compile_glob(str(raw["glob"]))
    except re.error as exc:
        problems.add(f"{where}.regex", f"expected a Python regular expression, found an error: {exc}")
        return None
    values = {**{k: v for k, v in defaults.items() if k in RULE_FIELDS}, **raw}
    values = {k: v for k, v in values.items() if k in RULE_FIELDS}
    _check_rule_values(values, where, groups, card_id, problems)
    return Rule(index=index, pattern=pattern, values=values)


def _check_rule_values(
    v: Mapping[str, Any], where: str, groups: set[str], card_id: str, problems: _Problems
) -> None:
    for name in STRING_RULE_FIELDS:
        if name in v and not isinstance(v[name], str):
            problems.add(f"{where}.{name}", f"expected a string, found {v[name]!r}")
    for name, value in v.items():
        texts = value if isinstance(value, list) else [value]
        for text in texts:
            if isinstance(text, str):
                unknown = sorted(template_names(text) - groups)
                if unknown:
                    problems.add(
                        f"{where}.{name}",
                        f"expected {{name}} placeholders that are named groups of the regex "
                        f"({sorted(groups) or 'none'}), found {unknown}",
                    )
    skip = v.get("skip", False)
    if not isinstance(skip, bool):
        problems.add(f"{where}.skip", f"expected true or false, found {skip!r}")
    if not isinstance(v.get("evidence"), str) or not v.get("evidence", "").strip():
        problems.add(f"{where}.evidence", "expected what the label rests on (or, with skip, the reason)")
    for name in ("zero_shot", "streaming", "trim_zeros"):
        if name in v and not isinstance(v[name], bool):
            problems.add(f"{where}.{name}", f"expected true or false, found {v[name]!r}")
    if "max_pieces" in v and (
        not isinstance(v["max_pieces"], int) or isinstance(v["max_pieces"], bool) or v["max_pieces"] < 1
    ):
        problems.add(f"{where}.max_pieces", f"expected a positive integer, found {v['max_pieces']!r}")
    tags = v.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        problems.add(f"{where}.tags", f"expected a list of strings, found {tags!r}")
        tags = []
    if skip is True:
        return
    label = v.get("label")
    if label not in LABELS:
        problems.add(
            f"{where}.label", f"expected 'bonafide' or 'spoof' (here or in [defaults]), found {label!r}"
        )
        return
    year = v.get("year")
    if year is not None and not (
        (isinstance(year, int) and not isinstance(year, bool) and MIN_YEAR <= year <= MAX_YEAR)
        or (isinstance(year, str) and template_names(year))
    ):
        problems.add(f"{where}.year", f"expected a year between {MIN_YEAR} and {MAX_YEAR}, found {year!r}")
    if label == "bonafide":
        if not v.get("speaker"):
            problems.add(f"{where}.speaker", "expected the real speaker key for bona fide (e.g. vctk:p225)")
        unknown_tags = sorted(set(tags) - set(BONAFIDE_TAGS))
        if unknown_tags:
            problems.add(
                f"{where}.tags",
                f"expected bona fide tags from {', '.join(BONAFIDE_TAGS)}, found {unknown_tags}",
            )
        if v.get("system", NO_SYSTEM) != NO_SYSTEM:
            problems.add(f"{where}.system", f"expected '-' (or nothing) for bona fide, found {v['system']!r}")
        return
    for name in SPOOF_REQUIRED:
        if v.get(name) in (None, ""):
            problems.add(f"{where}.{name}", "expected a value for a spoof rule (here or in [defaults])")
    system = v.get("system")
    if isinstance(system, str) and system and not system.startswith(f"{card_id}:"):
        problems.add(f"{where}.system", f"expected '{card_id}:<name>' (the card id first), found {system!r}")
    kind = v.get("kind")
    if isinstance(kind, str) and kind and not template_names(kind) and kind not in KINDS:
        problems.add(f"{where}.kind", f"expected one of {', '.join(KINDS)}, found {kind!r}")


def fill_check(labels: Labels) -> str | None:
    """A problem with filled-in labels that only the path could reveal (None when fine)."""
    if labels.skip:
        return None
    if labels.label == "spoof" and labels.kind not in KINDS:
        return f"kind: expected one of the kind vocabulary, found {labels.kind!r}"
    if labels.label == "spoof" and labels.year is None:
        return "year: expected a year for a spoof"
    return None
