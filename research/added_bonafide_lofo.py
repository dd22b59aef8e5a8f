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

Writes what `spoofwatch loso --json --scores-out` writes.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

from spoofwatch.cli import _channel_list, _loso_items, _read_extra_items, _write_loso_scores, build_parser
from spoofwatch.model.encoders.registry import build_encoder
from spoofwatch.stream.core.windowing import WindowConfig
from spoofwatch.train.corpus import at_least, item_duration_s
from spoofwatch.train.extract import extract_with_spectral
from spoofwatch.train.pipeline import encoder_spec, feature_encoder, mlp_options, spectral_front_end_spec
from spoofwatch.train.validate import FoldScheme, leave_one_fold_out


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
    mlp = mlp_options(args)
    items = at_least(_loso_items(args), args.min_s, "--min-s")
    scheme = FoldScheme(args.fold_by, args.bonafide_fold_by, tuple(args.fold_group), args.fold_partitions)
    scheme.check(items)
    layers = [int(x) for x in args.layers.split(",")]
    truncate_to = layers if args.truncate_encoder else None
    _, _, encoder = feature_encoder(
        encoder_spec(args.encoder), args.window_s, truncate_to, args.quantization, args.backend
    )
    window = WindowConfig(encoder.identity.sample_rate, args.window_s, args.hop_s)
    spectral_spec = spectral_front_end_spec(None if args.spectral == "none" else args.spectral)
    spectral = None if spectral_spec is None else build_encoder(spectral_spec, args.window_s)

    def embed(chosen: list[Any], channel: str) -> Any:
        return extract_with_spectral(
            chosen, encoder, spectral, window, channel=channel, level_dbfs=args.level_dbfs
        )

    train_sets = [embed(items, c) for c in _channel_list(args.train_channels)]
    test_sets = {c: embed(items, c) for c in _channel_list(args.test_channel)}
    extra_items = _read_extra_items(args.extra_manifest)
    extra_channels = args.extra_channels or args.train_channels
    extra_sets = [embed(extra_items, c) for c in _channel_list(extra_channels) if extra_items]
    # One class only may be added, so at_least's both-classes check does not apply.
    added = [it for it in _read_extra_items(mine.added_manifest) if item_duration_s(it) >= args.min_s]
    added_channels = mine.added_channels or args.train_channels
    extra_sets += [embed(added, c) for c in _channel_list(added_channels) if added]
    results = leave_one_fold_out(
        train_sets,
        test_sets,
        layers,
        scheme=scheme,
        C=args.C,
        spectral_weight=args.spectral_weight,
        extra_sets=extra_sets,
        fit_dtype=np.float32 if args.fit_precision == "float32" else np.float64,
        source_cap=args.source_cap,
        balance_by=_channel_list(args.balance_by),
        window_s=args.window_s,
        mlp=mlp,
    )
    if args.scores_out:
        _write_loso_scores(Path(args.scores_out), scheme, results)
    summary = {
        channel: {"eer": result.metrics.eer, "clips": len(result.items)}
        for channel, result in results.items()
    }
    print(json.dumps({"added_manifests": mine.added_manifest, "added_items": len(added), "results": summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
