"""The ``retrain``, ``canary`` and ``promote`` subcommands' arguments and handlers (``cli``
registers them; library code is imported when a command runs, so ``--help`` stays fast)."""

from __future__ import annotations

import argparse
import json
import shlex
from typing import Any, TextIO

_DEFAULT_WEIGHT = 5.0  # learning.retrain.DEFAULT_FEEDBACK_WEIGHT
_DEFAULT_HOLDOUT = 0.2  # learning.holdout.DEFAULT_HOLDOUT
_DEFAULT_RATE_TOLERANCE = 0.01  # learning.canary.DEFAULT_RATE_TOLERANCE
_DEFAULT_DCF_TOLERANCE = 0.05  # learning.canary.DEFAULT_DCF_TOLERANCE


def add_learning_parsers(sub: Any) -> dict[str, argparse.ArgumentParser]:
    rt = sub.add_parser(
        "retrain", help="refit a card's head on its training features plus analysts' feedback"
    )
    rt.add_argument("--feedback", required=True, metavar="DIR", help="feedback directory (feedback.sqlite3)")
    rt.add_argument(
        "--base",
        metavar="CARD",
        help="card to retrain (default: $SPOOFWATCH_DETECTOR or the packaged default)",
    )
    rt.add_argument("--out", required=True, metavar="CARD", help="candidate card directory to write")
    rt.add_argument(
        "--feedback-weight",
        type=float,
        default=_DEFAULT_WEIGHT,
        help=f"each feedback window counts as this many training windows (default {_DEFAULT_WEIGHT:g})",
    )
    rt.add_argument(
        "--holdout",
        type=float,
        default=_DEFAULT_HOLDOUT,
        help="fraction of feedback streams kept out of training for the canary "
        f"(default {_DEFAULT_HOLDOUT:g}; by stream-id hash)",
    )
    rt.add_argument(
        "--manifest",
        action="append",
        metavar="CSV",
        help="the base's training manifest(s) (default: those the base card names; repeat for several)",
    )
    rt.add_argument("--dev-manifest", action="append", metavar="CSV", help="the base's dev manifest(s)")
    rt.add_argument(
        "--extra-manifest", action="append", metavar="CSV", help="the base's extra training items"
    )
    rt.add_argument("--name", help="the candidate's name (default: the base's)")
    rt.add_argument("--json", action="store_true", help="last line of stdout is one JSON object")
    ca = sub.add_parser("canary", help="compare a candidate card with the current one; exit 1 if it is worse")
    ca.add_argument("candidate", metavar="CANDIDATE", help="candidate card directory")
    ca.add_argument(
        "--against",
        metavar="CURRENT",
        help="current card (default: $SPOOFWATCH_DETECTOR or the packaged default)",
    )
    ca.add_argument("--manifest", required=True, metavar="CSV", help="pinned evaluation manifest")
    ca.add_argument("--split", help="only items of this split (manifest column)")
    ca.add_argument("--channel", default="clean", help="channel applied before scoring (default clean)")
    ca.add_argument("--feedback", metavar="DIR", help="also compare on the feedback the candidate held out")
    ca.add_argument(
        "--tolerance",
        type=float,
        default=_DEFAULT_RATE_TOLERANCE,
        help="how much worse an error rate (EER, false-alarm, miss rate; a fraction) may be "
        f"(default {_DEFAULT_RATE_TOLERANCE:g})",
    )
    ca.add_argument(
        "--dcf-tolerance",
        type=float,
        default=_DEFAULT_DCF_TOLERANCE,
        help=f"how much worse minDCF and actDCF may be (default {_DEFAULT_DCF_TOLERANCE:g})",
    )
    ca.add_argument("--no-record", action="store_true", help="do not write canary.json beside the candidate")
    ca.add_argument("--json", action="store_true", help="last line of stdout is one JSON object")
    pr = sub.add_parser("promote", help="install a card that passed its canary as the current one; rollback")
    pr.add_argument("candidate", nargs="?", metavar="CANDIDATE", help="candidate card directory")
    pr.add_argument(
        "--detectors",
        metavar="DIR",
        help="detector directory (cards/, current, history.jsonl)"
        " (default: $SPOOFWATCH_DETECTORS or ./detectors)",
    )
    pr.add_argument("--force", action="store_true", help="promote without a passing canary record")
    pr.add_argument("--rollback", action="store_true", help="make the previous card current again")
    pr.add_argument("--json", action="store_true", help="last line of stdout is one JSON object")
    return {"retrain": rt, "canary": ca, "promote": pr}


def _retrain_command(args: argparse.Namespace) -> str:
    """The retrain command line, as the flags were given (for the card's lineage)."""
    words = ["spoofwatch", "retrain", "--feedback", args.feedback, "--out", args.out]
    if args.base:
        words += ["--base", args.base]
    words += ["--feedback-weight", f"{args.feedback_weight:g}", "--holdout", f"{args.holdout:g}"]
    for flag, values in (("--manifest", args.manifest), ("--dev-manifest", args.dev_manifest)):
        for value in values or ():
            words += [flag, value]
    for value in args.extra_manifest or ():
        words += ["--extra-manifest", value]
    if args.name:
        words += ["--name", args.name]
    return shlex.join(words)


def cmd_retrain(args: argparse.Namespace, out: TextIO) -> int:
    from spoofwatch.learning.retrain import RetrainOptions, retrain

    options = RetrainOptions(
        feedback_weight=args.feedback_weight,
        holdout=args.holdout,
        manifests=None if args.manifest is None else tuple(args.manifest),
        dev_manifests=None if args.dev_manifest is None else tuple(args.dev_manifest),
        extra_manifests=None if args.extra_manifest is None else tuple(args.extra_manifest),
        name=args.name,
        command=_retrain_command(args),
        progress=not args.json,
    )
    report = retrain(args.base, args.feedback, args.out, options)
    print(json.dumps(report) if args.json else json.dumps(report, indent=2), file=out)
    return 0


def cmd_canary(args: argparse.Namespace, out: TextIO) -> int:
    from spoofwatch.learning.canary import Tolerance, format_table, run_canary
    from spoofwatch.train.corpus import filter_split, read_manifest

    items = read_manifest(args.manifest)
    if args.split:
        items = filter_split(items, args.split)
    record = run_canary(
        args.candidate,
        args.against,
        items,
        manifest=args.manifest,
        feedback_dir=args.feedback,
        tolerance=Tolerance(rate=args.tolerance, dcf=args.dcf_tolerance),
        channel=args.channel,
        progress=not args.json,
        write_record=not args.no_record,
    )
    print(json.dumps(record) if args.json else format_table(record), file=out)
    return 0 if record["passed"] else 1


def cmd_promote(args: argparse.Namespace, out: TextIO) -> int:
    from spoofwatch.errors import ConfigError
    from spoofwatch.learning.promote import promote, rollback

    if args.rollback == (args.candidate is not None):
        raise ConfigError("promote: expected a CANDIDATE card or --rollback (one of them)")
    done = (
        rollback(args.detectors)
        if args.rollback
        else promote(args.candidate, args.detectors, force=args.force)
    )
    if args.json:
        print(json.dumps(done.to_dict()), file=out)
    else:
        verb = "rolled back to" if done.action == "rollback" else "promoted"
        forced = " (forced, no passing canary)" if done.forced else ""
        print(f"{verb} {done.name} v{done.version} {done.sha256[:12]} -> {done.path}{forced}", file=out)
    return 0


LEARNING_COMMANDS = {"retrain": cmd_retrain, "canary": cmd_canary, "promote": cmd_promote}
