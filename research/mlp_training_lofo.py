"""Experiment (issue 28): does how the MLP head is trained, not what it reads, move
leave-one-family-out? Seeds, seed ensembles, sharpness-aware minimisation, a floor on the
standardisation's scale; and does a held-out clip's own page (its near copies, its
ground truth) in training move its score?

The shipped head (`model/mlp_head.py`) is one 256-unit layer trained 4 epochs with AdamW and
dropout. Two cheap levers the large corpus has not been asked about:

- **seed ensembles**: the mean logit of heads trained from different seeds (variance only;
  each added head costs one more 5,280 x 256 product per window when streaming);
- **sharpness-aware minimisation** (SAM, Foret et al., ICLR 2021; for spoofing countermeasures
  trained on several corpora, Shim et al., Interspeech 2023): each step first climbs to the
  worst weights within an L2 ball of radius ``rho`` and takes the gradient there, favouring
  flat minima, which generalise better to unseen domains; twice the training time, no
  streaming cost.

Every arm is fitted in every fold on the same standardised matrix as ``MLPHead.fit``
standardises it, by the head's own ``train_network`` (``seed0`` is the shipped head
exactly, so its figures are the README's deal figures); each arm's scores are pooled over
folds as ``spoofwatch loso`` pools them and written as ``loso --scores-out`` writes them, to
``OUT/<arm>.csv`` (feed them to ``research/lofo_report.py``; average arms' clip scores with
``--ensemble``).

    PYTHONPATH=src python research/mlp_training_lofo.py --arms seed0,seed1,seed2,sam0 \\
        --out runs/mlp-arms-deal0 <the README's spoofwatch loso arguments, --head mlp>
    python research/mlp_training_lofo.py --ensemble runs/mlp-arms-deal0/seed0.csv \\
        runs/mlp-arms-deal0/seed1.csv runs/mlp-arms-deal0/seed2.csv --out ens.csv

Arms: ``seedN`` (the shipped training with seed N), ``samN`` (SAM, ``--sam-rho``, seed N),
``floorN`` (seed N, each column's deviation floored at the float16 spacing of its mean).
``--exclude held-cards`` also leaves out of each fold's training every clip from a card
(demo page, package) that has a clip held out in the fold; ``random-cards`` leaves out as
many training clips from cards drawn at random (the control).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

import spoofwatch.train.validate as validate
from spoofwatch.cli import _loso_results, _write_loso_scores, build_parser
from spoofwatch.model.head import checked_fit_input, standardised
from spoofwatch.model.mlp_head import MLPHead, MLPOptions, row_weights, train_network
from spoofwatch.train.fit import StackedRows, column_weights, fit_weights
from spoofwatch.train.validate import _pooled, fold_layout

logger = logging.getLogger("mlp_training_lofo")


def sam_ascent(rho: float) -> Callable[[Callable[[], torch.Tensor], torch.nn.Module], None]:
    """SAM's step for ``train_network``'s ``before_step``: with the batch's gradient in
    place, move the weights ``rho`` along it (the worst point of the ball, to first order),
    take the gradient there, and move back; the optimiser then steps with that gradient."""

    def ascend(batch_loss: Callable[[], torch.Tensor], net: torch.nn.Module) -> None:
        params = [p for p in net.parameters() if p.requires_grad]
        with torch.no_grad():
            norm = torch.norm(torch.stack([p.grad.norm() for p in params if p.grad is not None]))
            moves = []
            for p in params:
                move = torch.zeros_like(p) if p.grad is None else p.grad * (rho / (norm + 1e-12))
                p.add_(move)
                moves.append(move)
        net.zero_grad()
        batch_loss().backward()  # type: ignore[no-untyped-call]
        with torch.no_grad():
            for p, move in zip(params, moves, strict=True):
                p.sub_(move)

    return ascend


def parse_arm(arm: str) -> tuple[int, str]:
    """(seed, kind) of ``seedN`` / ``samN`` / ``floorN``."""
    for prefix in ("seed", "sam", "floor"):
        if arm.startswith(prefix) and arm[len(prefix) :].isdigit():
            return int(arm[len(prefix) :]), prefix
    raise SystemExit(f"--arms: expected seedN, samN or floorN, found {arm!r}")


def floored(
    mean: NDArray[np.float64], scale: NDArray[np.float64], weights: NDArray[np.float64] | None
) -> NDArray[np.float64]:
    """The standardisation's scale with each column's deviation floored at the float16
    spacing of its mean (the features are stored as float16: a column that varies by less
    is rounding noise, which the head would otherwise read at full scale)."""
    w = np.ones_like(scale) if weights is None else np.asarray(weights, dtype=np.float64)
    spacing = np.spacing(np.abs(mean).astype(np.float16)).astype(np.float64)
    return np.maximum(scale * w, spacing) / w


def card_of(item: Any) -> str:
    """The page or package a clip came from: its manifest's ``card``, else its ``source``
    (the development corpus has no cards)."""
    return str(item.extra.get("card") or f"source:{validate.column_value(item, 'source')}")


def excluded_cards(
    items: list[Any], hold_keys: NDArray[np.str_], name: str, mode: str, rng: np.random.Generator
) -> set[str]:
    """The cards whose clips fold ``name`` leaves out of training besides its own held-out
    cells. ``held-cards``: every card with a clip held out in the fold (its other clips are
    near copies, prompts or sources of the held-out ones: a demo page's ground truth and the
    codec copies of it). ``random-cards``: as many training clips, from cards drawn at
    random among the others (the control: the same loss of training data, no pairing)."""
    if mode == "none":
        return set()
    cards = np.array([card_of(it) for it in items])
    held = set(cards[hold_keys == name].tolist())
    if mode == "held-cards":
        return held
    target = int(np.isin(cards[hold_keys != name], list(held)).sum())
    others = sorted(set(cards.tolist()) - held)
    chosen: set[str] = set()
    count = 0
    counts = {
        c: int(n) for c, n in zip(*np.unique(cards[hold_keys != name], return_counts=True), strict=True)
    }
    for index in rng.permutation(len(others)):
        if count >= target:
            break
        chosen.add(others[index])
        count += counts.get(others[index], 0)
    return chosen


def multi_arm_lofo(
    arms: list[str], sam_rho: float, store: dict[str, Any], exclude: str = "none"
) -> Callable[..., Any]:
    """A stand-in for ``validate.leave_one_fold_out`` that fits every arm in every fold and
    keeps each arm's pooled results in ``store``; it returns the first arm's."""

    def run(
        train_sets: Any, test_sets: Any, layers: Any, *, scheme: Any, mlp: MLPOptions | None, **kw: Any
    ) -> Any:
        if mlp is None:
            raise SystemExit("expected --head mlp")
        if kw.get("source_cap") is not None or kw.get("balance_by"):
            raise SystemExit("--source-cap and --balance-by are not supported here")
        extra_sets = kw.get("extra_sets", ())
        items = next(iter(test_sets.values())).items
        keys = np.array([scheme.key(it) for it in items])
        names = sorted(set(keys.tolist()))
        layout = fold_layout(scheme, keys, names, train_sets, extra_sets)
        hold_keys, training = layout.hold_keys, layout.training
        weights = column_weights(train_sets, layers, kw.get("spectral_weight", 1.0))
        per_set, class_weight = fit_weights([s for s, _, _ in training], None, (), kw.get("window_s", 4.0))
        assert per_set is None and class_weight == "balanced"
        scores = {a: {ch: np.full(len(t.features), np.nan) for ch, t in test_sets.items()} for a in arms}
        folds = layout.folds
        rng = np.random.default_rng(0)
        for n, name in enumerate(folds):
            start = time.monotonic()
            dropped = excluded_cards(list(items), hold_keys, name, exclude, rng)
            masks = [
                (own != name)
                & (other != name)
                & ~np.isin(np.array([card_of(it) for it in s.items]), list(dropped))[s.item_index]
                for s, own, other in training
            ]
            rows = StackedRows([s for s, _, _ in training], layers, masks)
            y, _ = checked_fit_input(rows, rows.labels(), None)
            matrix, mean, scale = standardised(rows, weights, np.float32)
            held = hold_keys == name
            tests = {ch: t.select_layers(layers, held[t.item_index]) for ch, t in test_sets.items()}
            floor_scale = floored(mean, scale, weights)
            floor_columns = np.flatnonzero(floor_scale != scale)
            # floorN arms after the others: they rescale the matrix's affected columns in place.
            for arm in sorted(arms, key=lambda a: parse_arm(a)[1] == "floor"):
                seed, kind = parse_arm(arm)
                options = MLPOptions(**{**mlp.to_dict(), "seed": seed})
                arm_scale = scale
                if kind == "floor":
                    arm_scale = floor_scale
                    ratio = (scale[floor_columns] / floor_scale[floor_columns]).astype(np.float32)
                    if not np.all(ratio == 1):
                        matrix[:, floor_columns] *= ratio
                        scale = floor_scale  # the matrix now holds the floored columns
                ascent = sam_ascent(sam_rho) if kind == "sam" else None
                head = MLPHead(options).take_network(
                    train_network(matrix, y, row_weights(y, None, "balanced"), options, ascent),
                    mean,
                    arm_scale,
                )
                for ch, t in test_sets.items():
                    scores[arm][ch][held[t.item_index]] = head.decision_function(tests[ch])
            del matrix
            logger.info(
                "fold %d/%d %s: %d rows (%d cards left out, %d columns floored), %.0f s",
                n + 1,
                len(folds),
                name,
                len(y),
                len(dropped),
                len(floor_columns),
                time.monotonic() - start,
            )
        for arm in arms:
            store[arm] = {ch: _pooled(t, scores[arm][ch], keys, names, ch) for ch, t in test_sets.items()}
        return store[arms[0]]

    return run


def ensemble(paths: list[Path], out: Path) -> None:
    """The mean clip score of several arms' ``--scores-out`` files (the same clips)."""
    tables = []
    for path in paths:
        with path.open(newline="") as handle:
            tables.append({(r["utt_id"], r["channel"]): r for r in csv.DictReader(handle)})
    common = [k for k in tables[0] if all(k in t for t in tables[1:])]
    with out.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["utt_id", "label", "system", "cell", "channel", "score"])
        for key in common:
            row = tables[0][key]
            mean = np.mean([float(t[key]["score"]) for t in tables])
            writer.writerow(
                [row["utt_id"], row["label"], row["system"], row["cell"], row["channel"], f"{mean:.6f}"]
            )


def main(argv: list[str]) -> int:
    mine = argparse.ArgumentParser(add_help=False)
    mine.add_argument("--arms", default="seed0,sam0", help="comma-separated: seedN, samN")
    mine.add_argument("--sam-rho", type=float, default=0.05, help="SAM's neighbourhood radius")
    mine.add_argument("--out", type=Path, help="folder of <arm>.csv (or the --ensemble file)")
    mine.add_argument("--ensemble", nargs="+", type=Path, help="average these scores files into --out")
    mine.add_argument(
        "--exclude",
        choices=("none", "held-cards", "random-cards"),
        default="none",
        help="leave out of each fold's training the cards of its held-out clips, or as many random cards",
    )
    ours, rest = mine.parse_known_args(argv)
    if "-h" in rest or "--help" in rest:
        print(__doc__)
        mine.print_help()
        print("\nthen every `spoofwatch loso` argument (--head mlp)")
        return 0
    if ours.out is None:
        raise SystemExit("--out is required")
    if ours.ensemble:
        ensemble(ours.ensemble, ours.out)
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(2)
    arms = [a for a in ours.arms.split(",") if a]
    for arm in arms:
        parse_arm(arm)
    store: dict[str, Any] = {}
    validate.leave_one_fold_out = multi_arm_lofo(arms, ours.sam_rho, store, ours.exclude)  # type: ignore[assignment]
    args = build_parser().parse_args(["loso", *rest])
    run = _loso_results(args)
    ours.out.mkdir(parents=True, exist_ok=True)
    summary = {}
    for arm in arms:
        _write_loso_scores(ours.out / f"{arm}.csv", run.scheme, store[arm])
        summary[arm] = {ch: round(100 * r.metrics.eer, 2) for ch, r in store[arm].items()}
    print(json.dumps({"sam_rho": ours.sam_rho, "exclude": ours.exclude, "eer_percent_clips_min_s": summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
