"""Experiment (issue 28, the read-English confound): does more genuine speech, added to
training only, lower held-out false alarms without moving the folds?

`spoofwatch loso` deals every manifest clip into fold partitions, so adding sources to the
manifests reshuffles which sources are held out together and no longer compares with an
earlier run. Here the added manifests are training-only (like `--extra-manifest`, every
fold trains on them and none is scored) but go through their own channels (`--added-channels`,
default the training channels), while `--extra-manifest` keeps its own (`--extra-channels`,
e.g. the FARGAN copies on clean only). So the folds, held-out clips and every other setting
are the control run's, and only the added clips differ.

    PYTHONPATH=src python research/added_bonafide_lofo.py <spoofwatch loso arguments> \\
        --added-manifest NEW.csv [--added-channels clean,telephone,...]

Writes `--scores-out` as `spoofwatch loso` does and prints each test channel's pooled EER as JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from spoofwatch.cli import _channel_list, _loso_results, _read_extra_items, _write_loso_scores, build_parser
from spoofwatch.train.corpus import item_duration_s


def main(argv: list[str]) -> int:
    extra = argparse.ArgumentParser(add_help=False)
    extra.add_argument("--added-manifest", action="append", default=[], help="training-only clips")
    extra.add_argument("--added-channels", default=None, help="their channels (default: --train-channels)")
    mine, rest = extra.parse_known_args(argv)
    if "-h" in rest or "--help" in rest:
        print(__doc__)
        extra.print_help()
        print("\nthen every `spoofwatch loso` argument:")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args = build_parser().parse_args(["loso", *rest])
    # One class only may be added, so at_least's both-classes check does not apply.
    added = [it for it in _read_extra_items(mine.added_manifest) if item_duration_s(it) >= args.min_s]
    channels = _channel_list(mine.added_channels or args.train_channels)
    run = _loso_results(args, added=[(added, channels)])
    if args.scores_out:
        _write_loso_scores(Path(args.scores_out), run.scheme, run.results)
    summary = {channel: {"eer": r.metrics.eer, "clips": len(r.items)} for channel, r in run.results.items()}
    print(json.dumps({"added_manifests": mine.added_manifest, "added_items": len(added), "results": summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
