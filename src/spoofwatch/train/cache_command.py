"""``spoofwatch cache list|prune``: arguments and printing (the work is in ``cache_usage``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:  # the CLI registers this parser at start-up: numpy loads only when cache runs
    from spoofwatch.train.cache_usage import CacheUsage


def add_cache_parser(sub: Any) -> argparse.ArgumentParser:
    cache: argparse.ArgumentParser = sub.add_parser(
        "cache", help="what the embedding cache holds; remove packs and unused extractions"
    )
    verbs = cache.add_subparsers(dest="cache_command", required=True)
    listing = verbs.add_parser("list", help="sizes and last use of every extractor folder and its packs")
    prune = verbs.add_parser(
        "prune",
        help="remove leftovers of interrupted runs; with options, packs and unused extractions",
    )
    for parser in (listing, prune):
        parser.add_argument("--cache", metavar="DIR", help="cache directory (default: $SPOOFWATCH_CACHE)")
        parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    prune.add_argument(
        "--packs", action="store_true", help="remove every pack (remade from the per-item cache when needed)"
    )
    prune.add_argument(
        "--unused-days",
        type=float,
        metavar="N",
        help="remove packs and whole extractor folders not used for N days (their items are re-extracted)",
    )
    prune.add_argument("--dry-run", action="store_true", help="print what would go, remove nothing")
    return cache


def cmd_cache(args: argparse.Namespace, out: TextIO) -> int:
    from spoofwatch.model.encoders.weights import cache_root
    from spoofwatch.train.cache_usage import carry_out, describe, human_bytes, plan_prune, survey

    root = Path(args.cache).expanduser() if args.cache else cache_root()
    usage = survey(root)
    if args.cache_command == "list":
        if args.json:
            print(json.dumps(_usage_json(usage)), file=out)
        else:
            print("\n".join(describe(usage)), file=out)
        return 0
    plan = plan_prune(usage, packs=args.packs, unused_days=args.unused_days)
    failed = [] if args.dry_run else carry_out(plan.removals)
    if args.json:
        print(
            json.dumps(
                {
                    "dry_run": args.dry_run,
                    "removed": [{"path": str(r.path), "bytes": r.bytes, "why": r.why} for r in plan.removals],
                    "bytes": plan.bytes,
                    "failed": [{"path": str(r.path), "error": why} for r, why in failed],
                }
            ),
            file=out,
        )
    else:
        verb = "would remove" if args.dry_run else "removed"
        for removal in plan.removals:
            print(f"{verb} {removal.path} ({human_bytes(removal.bytes)}): {removal.why}", file=out)
        for removal, why in failed:
            print(f"could not remove {removal.path}: {why}", file=out)
        freed = plan.bytes - sum(r.bytes for r, _ in failed)
        print(f"{verb} {len(plan.removals) - len(failed)} entries, {human_bytes(freed)}", file=out)
    return 1 if failed else 0


def _usage_json(usage: CacheUsage) -> dict[str, Any]:
    return {
        "root": str(usage.root),
        "bytes": usage.total_bytes,
        "extractors": [
            {
                "name": e.path.name,
                "items": e.items,
                "item_bytes": e.item_bytes,
                "packs": len(e.packs),
                "pack_bytes": e.pack_bytes,
                "last_used": e.last_used,
            }
            for e in usage.extractors
        ],
        "leftovers": [{"path": str(x.path), "bytes": x.bytes} for x in usage.leftovers],
        "others": [{"name": p.name, "bytes": size} for p, size in usage.others],
    }
