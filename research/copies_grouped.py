"""FARGAN pitch-moved copies (`spoofwatch copysynth` default) as extra training spoofs under a
leave-one-source-out fold grouping (default: the two Asterisk sources, one voice, as one
fold): pooled EER, per-source EER of every held-out spoof source with at least 10 spoofs,
each fold's bona fide EER against every spoof and mean score, and the gain over 1,000
draws of the folds with replacement. The shipped card uses the copies through the clean
channel.

    PYTHONPATH=src python research/copies_grouped.py --manifest ../shared/corpus/manifest.csv

Needs the copies from vocoder_copies.py (or `spoofwatch copysynth --out C [--seed 1]`);
features come from the embedding cache. About 20 minutes on 2 cores with the cache filled
(`--runs 1` for the shipped recipe only).
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray
from spectral_blocks import (
    CHANNELS,
    LAYERS,
    RECIPE,
    cached_blocks,
    cached_sets,
    recipe_extractor,
    with_spectral,
)

from spoofwatch.model.encoders.weights import cache_root
from spoofwatch.train.channel import CHANNELS as CHANNEL_REGISTRY
from spoofwatch.train.channel import Channel
from spoofwatch.train.corpus import read_manifest
from spoofwatch.train.extract import EmbeddingSet
from spoofwatch.train.metrics import compute_eer
from spoofwatch.train.validate import LosoResult, fold_key, leave_one_source_out

# The two Asterisk sources are one voice (README, Accuracy): held out together.
ASTERISK_AS_ONE = ["debian:asterisk*"]
SHIPPED_CHANNELS = tuple(RECIPE["channels"])  # clean, telephone, augmented
DEFAULT_COPIES = cache_root() / "copies" / "fargan-ps" / "manifest.csv"


def bootstrap_gain(
    before: LosoResult, after: LosoResult, folds: NDArray[np.str_], draws: int = 1000
) -> NDArray[np.float64]:
    """EER gain (points) of ``after`` over ``before`` for each draw of the folds with replacement."""
    label = np.array([it.label == "bonafide" for it in before.items])
    names = sorted(set(folds.tolist()))
    rng = np.random.default_rng(0)
    gains = []
    for _ in range(draws):
        counts = np.zeros(len(label), dtype=int)
        for name in rng.choice(names, len(names)):
            counts += folds == name
        idx = np.repeat(np.arange(len(label)), counts)
        a, b, lab = before.clip_scores[idx], after.clip_scores[idx], label[idx]
        ok = ~np.isnan(a) & ~np.isnan(b)
        gains.append(
            100 * (compute_eer(a[ok & lab], a[ok & ~lab])[0] - compute_eer(b[ok & lab], b[ok & ~lab])[0])
        )
    return np.array(gains)


def bona_eer(result: LosoResult, folds: NDArray[np.str_], name: str) -> float:
    """EER (%) of fold ``name``'s bona fide clips against every spoof."""
    label = np.array([it.label == "bonafide" for it in result.items])
    ok = ~np.isnan(result.clip_scores)
    scores = result.clip_scores
    return 100 * compute_eer(scores[ok & label & (folds == name)], scores[ok & ~label])[0]


def recipe_loso(
    train_sets: Sequence[EmbeddingSet],
    test_set: EmbeddingSet,
    test_channel: str,
    extra_sets: Sequence[EmbeddingSet],
    fold_groups: Sequence[str],
    layers: Sequence[int] = LAYERS,
) -> LosoResult:
    """Leave-one-source-out with the shipped head's settings (states 0-4 unless ``layers``,
    C 0.001, spectral weight 2)."""
    return leave_one_source_out(
        train_sets,
        test_set,
        layers,
        C=0.001,
        spectral_weight=2.0,
        test_channel=test_channel,
        progress=False,
        extra_sets=extra_sets,
        fold_groups=fold_groups,
    )


def loso_grid(
    runs: dict[str, tuple[Sequence[EmbeddingSet], Sequence[EmbeddingSet]]],
    tests: dict[str, EmbeddingSet],
    fold_groups: Sequence[str],
    layers: Mapping[str, Sequence[int]] | None = None,
) -> dict[tuple[str, str], LosoResult]:
    """``recipe_loso`` for every run (title: training sets, extra training sets; the head
    reads ``layers[title]`` where given, else states 0-4) and test channel, printing one line
    of EER and minDCF per run."""
    results: dict[tuple[str, str], LosoResult] = {}
    for title, (train_sets, extra_sets) in runs.items():
        run_layers = (layers or {}).get(title, LAYERS)
        cells = []
        for test, test_set in tests.items():
            result = recipe_loso(train_sets, test_set, test, extra_sets, fold_groups, run_layers)
            results[(title, test)] = result
            cells.append(f"{test} EER {100 * result.metrics.eer:5.2f} % minDCF {result.metrics.min_dcf:.3f}")
        print(f"{title:32s} " + "  ".join(cells), flush=True)
    return results


def compare_variants(
    variants: Mapping[str, tuple[Mapping[str, EmbeddingSet], EmbeddingSet]],
    tests: Sequence[str] = SHIPPED_CHANNELS,
    layers: Mapping[str, Sequence[int]] | None = None,
    fold_groups: Sequence[str] = ASTERISK_AS_ONE,
) -> None:
    """The shipped-recipe experiments' comparison: each variant (title: its features per
    channel, its copies' features through the clean channel) trained on the shipped channels
    and tested on each of ``tests`` of its own sets, under ``fold_groups``; then every
    variant against the first (``compare_to_first``). ``layers`` as ``loso_grid`` takes them."""
    results: dict[tuple[str, str], LosoResult] = {}
    for title, (sets, copies) in variants.items():
        run = {title: ([sets[ch] for ch in SHIPPED_CHANNELS], [copies])}
        results.update(loso_grid(run, {test: sets[test] for test in tests}, fold_groups, layers))
    compare_to_first(results, list(variants), tests, fold_groups)


def compare_training_channels(
    sets: dict[str, EmbeddingSet],
    copies: EmbeddingSet,
    runs: dict[str, tuple[str, ...]],
    tests: Sequence[str],
    fold_groups: Sequence[str],
) -> None:
    """Two runs (title: training channels, copies through the clean channel) on each test
    channel, then the second against the first (``print_comparison``)."""
    grid = {title: ([sets[ch] for ch in train], [copies]) for title, train in runs.items()}
    results = loso_grid(grid, {test: sets[test] for test in tests}, fold_groups)
    compare_to_first(results, list(runs), tests, fold_groups)


def compare_to_first(
    results: Mapping[tuple[str, str], LosoResult],
    titles: Sequence[str],
    tests: Sequence[str],
    fold_groups: Sequence[str],
) -> None:
    """``print_comparison`` of every run after the first against the first, per test channel
    (``results`` as ``loso_grid`` returns them)."""
    base = titles[0]
    folds = np.array([fold_key(it, fold_groups) for it in results[(base, tests[0])].items])
    for title in titles[1:]:
        for test in tests:
            print_comparison(f"{title}, {test}", results[(base, test)], results[(title, test)], folds)


def recipe_parser(doc: str | None) -> argparse.ArgumentParser:
    """The shipped-recipe experiments' command line: ``--manifest`` and ``--copies`` (the
    FARGAN copies, default ``DEFAULT_COPIES``); ``doc`` is its help, layout kept."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--copies", type=Path, default=DEFAULT_COPIES)
    return parser


def compare_fourth_channel(doc: str | None, name: str, transform: Channel) -> None:
    """Command line (``doc`` its help): the shipped recipe (clean, telephone and augmented
    training, the FARGAN copies through the clean channel) with and without ``transform`` as a
    fourth training channel for both classes, under the Asterisk grouping
    (``compare_training_channels``). ``name`` is an experiment-only channel name; it keys the
    embedding cache."""
    args = recipe_parser(doc).parse_args()
    CHANNEL_REGISTRY[name] = transform
    sets, copy_set = shipped_sets(args.manifest, args.copies, extra_channels=(name,))
    runs = {
        "shipped (clean, telephone, augmented)": SHIPPED_CHANNELS,
        f"shipped + {name}": (*SHIPPED_CHANNELS, name),
    }
    compare_training_channels(sets, copy_set, runs, SHIPPED_CHANNELS, ASTERISK_AS_ONE)


def shipped_sets(
    manifest: Path, copies: Path, extra_channels: Sequence[str] = ()
) -> tuple[dict[str, EmbeddingSet], EmbeddingSet]:
    """The shipped recipe's features of every manifest item through its three training
    channels (and ``extra_channels``), and of the copies in ``copies`` through the clean one."""
    sets = dict(cached_sets(manifest, "lfcc-phase"))
    extract = recipe_extractor()
    for channel in ("augmented", *extra_channels):
        sets[channel] = extract(sets["clean"].items, channel)
    return sets, extract(read_manifest(copies), "clean")


def shipped_blocks(
    manifest: Path,
    copies: Path,
    recipe: str,
    candidates: Callable[[torch.Tensor], dict[str, torch.Tensor]],
) -> tuple[dict[str, EmbeddingSet], EmbeddingSet, dict[str, dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """``shipped_sets`` and the ``candidates`` blocks of each of them (``cached_blocks``, kept
    under ``recipe``): the sets, the copies, each channel's blocks and the copies' blocks."""
    sets, copy_set = shipped_sets(manifest, copies)
    blocks = {ch: cached_blocks(s, ch, recipe, candidates) for ch, s in sets.items()}
    return sets, copy_set, blocks, cached_blocks(copy_set, "clean", recipe, candidates)


def block_variants(
    sets: Mapping[str, EmbeddingSet],
    copies: EmbeddingSet,
    blocks: Mapping[str, Mapping[str, np.ndarray]],
    copy_blocks: Mapping[str, np.ndarray],
    chosen: Mapping[str, Sequence[str]],
    drop: np.ndarray | None = None,
) -> dict[str, tuple[dict[str, EmbeddingSet], EmbeddingSet]]:
    """``compare_variants``'s variants: for each title, the sets and copies with the blocks
    it names appended to the spectral block, after dropping the ``drop`` columns; a title
    that names none keeps the shipped features as they are."""
    variants = {}
    for title, names in chosen.items():
        if not names:
            variants[title] = (dict(sets), copies)
            continue
        variants[title] = (
            {ch: with_spectral(s, [blocks[ch][n] for n in names], drop=drop) for ch, s in sets.items()},
            with_spectral(copies, [copy_blocks[n] for n in names], drop=drop),
        )
    return variants


def print_comparison(label: str, before: LosoResult, after: LosoResult, folds: NDArray[np.str_]) -> None:
    """The fold-bootstrap gain of ``after`` over ``before``, the EER of each fold's spoofs
    (folds with at least 10) and of each fold's bona fide clips (at least 10) against every
    spoof, with the mean held-out bona fide score."""
    per_fold = Counter((str(f), it.label) for it, f in zip(before.items, folds, strict=True))
    g = bootstrap_gain(before, after, folds)
    print(
        f"\n{label}: gain {g.mean():.2f} points, 90 % interval {np.percentile(g, 5):.2f} to "
        f"{np.percentile(g, 95):.2f}, positive in {100 * (g > 0).mean():.0f} % of draws"
    )
    pairs = []
    for name, eer in sorted(before.per_source_eer.items(), key=lambda kv: -kv[1]):
        if per_fold[(name, "spoof")] >= 10:
            pairs.append((100 * eer, 100 * after.per_source_eer[name]))
            print(f"  {name:44s} {pairs[-1][0]:5.1f} -> {pairs[-1][1]:5.1f}")
    b, a = np.array(pairs).T
    print(
        f"  mean per-source EER over {len(pairs)} sources {b.mean():.1f} -> {a.mean():.1f}; "
        f"worse in {(a > b + 0.5).sum()}, better in {(a < b - 0.5).sum()}"
    )
    print("  bona fide of each fold with at least 10: EER against every spoof, mean score")
    for name in sorted(before.per_source_bonafide_mean):
        if per_fold[(name, "bonafide")] >= 10:
            print(
                f"  {name:44s} {bona_eer(before, folds, name):5.1f} -> {bona_eer(after, folds, name):5.1f}"
                f"   {before.per_source_bonafide_mean[name]:5.2f} -> "
                f"{after.per_source_bonafide_mean[name]:5.2f}"
            )


def main() -> None:
    parser = recipe_parser(__doc__)
    parser.add_argument(
        "--second-draw",
        type=Path,
        default=cache_root() / "copies" / "fargan-ps-seed1" / "manifest.csv",
        help="copies with another draw of pitch factors (`copysynth --seed 1`)",
    )
    parser.add_argument("--fold-group", action="append", default=None)
    parser.add_argument("--runs", help="comma-separated run numbers to make (0 is always made; default all)")
    args = parser.parse_args()
    groups: list[str] = ["debian:asterisk*"] if args.fold_group is None else args.fold_group
    sets = cached_sets(args.manifest, "lfcc-phase")
    extract = recipe_extractor()
    manifests = {"draw 0": args.copies, "draw 1": args.second_draw}
    # title: the (copies, training channel) pairs it adds
    all_runs: list[tuple[str, tuple[tuple[str, str], ...]]] = [
        ("no copies (the previous card)", ()),
        ("copies, clean channel (shipped)", (("draw 0", "clean"),)),
        ("copies, clean and telephone", (("draw 0", "clean"), ("draw 0", "telephone"))),
        ("two draws of copies, clean channel", (("draw 0", "clean"), ("draw 1", "clean"))),
    ]
    chosen = {0, *(int(n) for n in args.runs.split(","))} if args.runs else set(range(len(all_runs)))
    runs = dict(run for n, run in enumerate(all_runs) if n in chosen)
    copy_sets = {
        (draw, ch): extract(read_manifest(manifests[draw]), ch)
        for draw, ch in sorted({pair for pairs in runs.values() for pair in pairs})
    }
    grid = {
        title: (list(sets.values()), [copy_sets[pair] for pair in pairs]) for title, pairs in runs.items()
    }
    results = loso_grid(grid, {test: sets[test] for test in CHANNELS}, groups)
    compare_to_first(results, list(runs), CHANNELS, groups)


if __name__ == "__main__":
    main()
