"""The ``robustness`` subcommand's arguments and handler (``cli`` registers it)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, TextIO


def add_robustness_parser(sub: Any) -> argparse.ArgumentParser:
    rb: argparse.ArgumentParser = sub.add_parser(
        "robustness", help="EER under laundering, a white-box attack and one defence"
    )
    rb.add_argument("--manifest", required=True, metavar="CSV", help="labelled manifest")
    rb.add_argument("--split", help="only items of this split (e.g. dev)")
    rb.add_argument("--out", required=True, metavar="DIR", help="folder for report.json and report.md")
    rb.add_argument(
        "--detector", metavar="DIR", help="card to test (default: $SPOOFWATCH_DETECTOR or default)"
    )
    rb.add_argument(
        "--transforms", help="comma-separated families or names (default: all; see docs/robustness.md)"
    )
    rb.add_argument("--per-class", type=int, default=32, help="clips per class, drawn with --seed (0 = all)")
    rb.add_argument("--seed", type=int, default=0, help="subsample and random transforms (default 0)")
    rb.add_argument("--windows", type=int, default=1, help="first windows of each clip scored (default 1)")
    rb.add_argument("--attack-clips", type=int, default=8, help="spoof windows attacked (0 = no attack)")
    rb.add_argument(
        "--attack-snrs", default="60,50,40", help="perturbation budgets as SNR dB (default 60,50,40)"
    )
    rb.add_argument("--attack-steps", type=int, default=4, help="PGD steps per window and budget (default 4)")
    rb.add_argument(
        "--defence-snr", type=float, default=40.0, help="SNR of the randomisation noise (default 40)"
    )
    rb.add_argument("--json", action="store_true", help="last line of stdout is the report JSON")
    return rb


def cmd_robustness(args: argparse.Namespace, out: TextIO) -> int:
    from spoofwatch.errors import ConfigError
    from spoofwatch.robustness.report import RobustnessOptions, run_report
    from spoofwatch.train.corpus import filter_split, read_manifest

    try:
        snrs = tuple(float(x) for x in args.attack_snrs.split(",") if x.strip())
    except ValueError:
        raise ConfigError(f"--attack-snrs {args.attack_snrs!r}: expected SNRs in dB, e.g. 60,50,40") from None
    if args.per_class < 0 or args.windows < 1 or args.attack_clips < 0 or args.attack_steps < 1:
        raise ConfigError(
            "expected --per-class >= 0, --windows >= 1, --attack-clips >= 0, --attack-steps >= 1"
        )
    items = read_manifest(args.manifest)
    if args.split:
        items = filter_split(items, args.split)
    options = RobustnessOptions(
        per_class=args.per_class,
        seed=args.seed,
        windows=args.windows,
        transforms=tuple(t for t in args.transforms.split(",") if t) if args.transforms else None,
        attack_clips=args.attack_clips,
        attack_snrs=snrs,
        attack_steps=args.attack_steps,
        defence_snr=args.defence_snr,
    )

    def progress(line: str) -> None:
        print(line, file=sys.stderr if args.json else out, flush=True)

    report = run_report(args.detector, items, args.out, options, progress)
    if args.json:
        print(json.dumps(report), file=out)
    else:
        print((Path(args.out) / "report.md").read_text(), file=out)
    return 0
