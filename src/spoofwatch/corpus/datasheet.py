"""DATASHEET.md from the manifest rows and the skips: what the corpus holds and what it left out."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence

from spoofwatch.corpus.records import Skip

Row = Mapping[str, str]


def _min(rows: Iterable[Row]) -> float:
    return sum(float(r["duration_s"]) for r in rows) / 60.0


def _table(header: Sequence[str], body: Iterable[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in body:
        lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
    return [*lines, ""]


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


_COLUMNS = (
    "split",
    "system",
    "generator",
    "family",
    "speaker",
    "year",
    "kind",
    "zero_shot",
    "streaming",
    "lang",
    "tags",
    "origin",
    "license",
    "evidence",
)


def datasheet(rows_in: Sequence[Row], skips: Sequence[Skip], title: str = "Corpus datasheet") -> str:
    """The datasheet; rows of manifests without the builder's columns (e.g. ../shared/corpus) work too."""
    rows = [{**dict.fromkeys(_COLUMNS, ""), "card": r.get("source", "?"), **r} for r in rows_in]
    bona = [r for r in rows if r["label"] == "bonafide"]
    spoof = [r for r in rows if r["label"] == "spoof"]
    out = [
        f"# {title}",
        "",
        "Written by `spoofwatch corpus build` (docs/corpus.md); every number comes from the manifest.",
        "",
    ]
    out += ["## Totals", ""]
    body = []
    for split in ("train", "dev", "all"):
        sel = [r for r in rows if split == "all" or r["split"] == split]
        b = [r for r in sel if r["label"] == "bonafide"]
        s = [r for r in sel if r["label"] == "spoof"]
        body.append(
            (
                split,
                len(b),
                _min(b),
                len({r["speaker"] for r in b}),
                len(s),
                _min(s),
                len({r["system"] for r in s}),
                len({r["generator"] for r in s}),
                len({r["family"] for r in s}),
            )
        )
    out += _table(
        (
            "split",
            "bona fide clips",
            "bona fide min",
            "speakers",
            "spoof clips",
            "spoof min",
            "systems",
            "generators",
            "families",
        ),
        body,
    )
    out += ["## Spoof families by year", ""]
    by_year: dict[str, list[Row]] = defaultdict(list)
    for r in spoof:
        by_year[r["year"] or "?"].append(r)
    out += _table(
        ("year", "families", "systems", "min", "families (names)"),
        (
            (
                y,
                len({r["family"] for r in rs}),
                len({r["system"] for r in rs}),
                _min(rs),
                ", ".join(sorted({r["family"] for r in rs})),
            )
            for y, rs in sorted(by_year.items())
        ),
    )
    out += ["## Kinds", ""]
    by_kind: dict[str, list[Row]] = defaultdict(list)
    for r in spoof:
        by_kind[r["kind"] or "?"].append(r)
    out += _table(
        ("kind", "families", "systems", "clips", "min"),
        (
            (k, len({r["family"] for r in rs}), len({r["system"] for r in rs}), len(rs), _min(rs))
            for k, rs in sorted(by_kind.items())
        ),
    )
    zs = [r for r in spoof if r["zero_shot"] == "true"]
    zs23 = [r for r in zs if r["year"].isdigit() and int(r["year"]) >= 2023]
    st = [r for r in spoof if r["streaming"] == "true"]
    out += ["## Zero-shot and streaming", ""]
    out += _table(
        ("subset", "families", "systems", "min"),
        (
            (name, len({r["family"] for r in rs}), len({r["system"] for r in rs}), _min(rs))
            for name, rs in (
                ("zero-shot", zs),
                ("zero-shot, published 2023 or later", zs23),
                ("streaming / low-latency", st),
            )
        ),
    )
    out += ["## Languages", ""]
    langs = sorted({r["lang"] for r in rows})
    out += _table(
        ("lang", "bona fide min", "bona fide speakers", "spoof min"),
        (
            (
                lang,
                _min(r for r in bona if r["lang"] == lang),
                len({r["speaker"] for r in bona if r["lang"] == lang}),
                _min(r for r in spoof if r["lang"] == lang),
            )
            for lang in langs
        ),
    )
    out += ["## Bona fide tags", ""]
    tag_rows: dict[str, list[Row]] = defaultdict(list)
    for r in bona:
        for tag in (r["tags"] or "").split(";"):
            tag_rows[tag or "(none)"].append(r)
    out += _table(
        ("tag", "clips", "min", "speakers"),
        ((t, len(rs), _min(rs), len({r["speaker"] for r in rs})) for t, rs in sorted(tag_rows.items())),
    )
    out += ["## Sources, licences and label evidence", ""]
    by_card: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        by_card[r["card"]].append(r)
    out += _table(
        ("card", "origin", "licence", "bona fide min", "spoof min", "systems"),
        (
            (
                c,
                rs[0]["origin"],
                rs[0]["license"],
                _min(r for r in rs if r["label"] == "bonafide"),
                _min(r for r in rs if r["label"] == "spoof"),
                len({r["system"] for r in rs if r["label"] == "spoof"}),
            )
            for c, rs in sorted(by_card.items())
        ),
    )
    for card, rs in sorted(by_card.items()):
        evidence = Counter((r["label"], r["system"], r["evidence"]) for r in rs)
        out.append(f"- **{card}**")
        for (label, system, text), n in sorted(evidence.items()):
            what = "bona fide" if label == "bonafide" else system
            out.append(f"  - {what} ({n} clips): {text}")
    out.append("")
    out += ["## Left out", ""]
    reasons = Counter(skip.reason for skip in skips)
    seconds: dict[str, float] = defaultdict(float)
    for skip in skips:
        seconds[skip.reason] += skip.seconds
    out += _table(
        ("reason", "count", "min (clips cut already)"),
        ((r, n, seconds[r] / 60.0) for r, n in sorted(reasons.items())),
    )
    per_card: dict[str, Counter[str]] = defaultdict(Counter)
    for skip in skips:
        per_card[skip.card][skip.reason] += 1
    out += _table(
        ("card", "left out (reason: count)"),
        ((c, "; ".join(f"{r}: {n}" for r, n in sorted(cnt.items()))) for c, cnt in sorted(per_card.items())),
    )
    return "\n".join(out).rstrip() + "\n"
