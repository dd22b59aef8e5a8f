"""How much of the augmented training channel to keep: the shipped recipe (clean, telephone
and augmented training channels, the FARGAN copies through the clean channel) with the
augmented channel's windows kept for every clip, for none, for a share of the clips drawn
by utterance id, or only for the clips whose drawn chain (``augment``'s ``applied``) lacks a
transform, beside a random share of the same size.

Two checks per variant:
- leave-one-source-out under the Asterisk grouping on the clean, telephone and augmented
  test channels, with the fold bootstrap against the shipped recipe (``--skip-loso`` leaves
  it out);
- the family from outside the corpus (``kokoro_spoofs.py --eval-with``): a head fitted on
  the train split, as ``spoofwatch train`` fits it, scores dev's bona fide clips against the
  Kokoro clips through the clean and the telephone channel; the gap to the shipped recipe
  comes with a bootstrap over dev's bona fide speakers. Dev's own EER is printed beside it.
  ``--resample N`` adds the shipped recipe and the one without the augmented channel, each
  trained on N random draws of 90 % of the training clips: how far this check moves when
  only the draw of training clips changes (the speaker bootstrap does not cover that).

    PYTHONPATH=src python research/augmented_share.py --manifest ../shared/corpus/manifest.csv \\
        --kokoro-eval ~/.cache/spoofwatch/extras/kokoro/eval.csv

The heads read the harness's int8-all features at a 2 s hop, not the card's int8-window
features at the 1 s streaming hop, so the Kokoro figures sit near, not on, `spoofwatch eval`'s.
Replaying every clip's chain takes about 5 minutes once (then cached); the Kokoro check
about a minute per variant, leave-one-source-out about 5.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
from copies_grouped import (
    ASTERISK_AS_ONE,
    SHIPPED_CHANNELS,
    compare_to_first,
    loso_grid,
    recipe_parser,
    shipped_sets,
)
from numpy.typing import NDArray
from paired_dev_gap import eer_points
from spectral_blocks import CHANNELS, LAYERS, recipe_extractor

from spoofwatch.audio.files import load_audio
from spoofwatch.model.encoders.weights import cache_root
from spoofwatch.model.head import LinearHead
from spoofwatch.train.augment import augmented_channel
from spoofwatch.train.corpus import LabelledItem, read_manifest
from spoofwatch.train.extract import EmbeddingSet
from spoofwatch.train.fit import clip_llrs, column_weights, stack

DEFAULT_KOKORO_EVAL = cache_root() / "extras" / "kokoro" / "eval.csv"


def drawn_chains(items: Sequence[LabelledItem]) -> list[list[str]]:
    """The transforms the augmented channel applies to each item, replayed once and kept in
    the experiment cache."""
    key = hashlib.sha256("|".join(str(it.path) for it in items).encode()).hexdigest()[:16]
    path = cache_root() / "experiments" / f"augmented-chains-v1-{key}.json"
    if path.exists():
        chains: list[list[str]] = json.loads(path.read_text())
        return chains
    chains = []
    for item in items:
        applied: list[str] = []
        augmented_channel(load_audio(item.path, 16000).samples, 16000, applied=applied)
        chains.append(applied)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(chains))
    return chains


def share_of_ids(items: Sequence[LabelledItem], share: float, salt: str = "") -> NDArray[np.bool_]:
    """A deterministic ``share`` of the items, drawn by a hash of their utterance ids."""
    # sha256, not crc32: crc32 is affine, so salts of one length would give the same split.
    draws = [
        int.from_bytes(hashlib.sha256(f"{salt}|{it.utt_id}".encode()).digest()[:8], "big") for it in items
    ]
    return np.array(draws) / 2**64 < share


def variants(
    items: Sequence[LabelledItem], chains: Sequence[Sequence[str]]
) -> dict[str, NDArray[np.bool_] | None]:
    """Title: which clips keep their augmented windows (None: the shipped channel as a
    training set, every clip)."""
    out: dict[str, NDArray[np.bool_] | None] = {
        "shipped: every clip": None,
        "no augmented channel": np.zeros(len(items), dtype=bool),
        "half of the clips": share_of_ids(items, 0.5),
        "a quarter of the clips": share_of_ids(items, 0.25),
    }
    groups = {
        "noise": {"noise"},
        "reverb": {"reverb"},
        "packet_loss": {"packet_loss"},
        "band_limit": {"band_limit"},
        "gain": {"gain"},
        "a wideband codec": {"opus", "vorbis", "mp3"},
        "a telephone codec": {"alaw", "mulaw", "gsm"},
    }
    for title, names in groups.items():
        without = np.array([not names & set(chain) for chain in chains])
        out[f"clips whose chain lacks {title}"] = without
        out[f"random {100 * without.mean():.0f} % of the clips (for {title})"] = share_of_ids(
            items, float(without.mean()), salt=title
        )
    for draw in range(1, 5):
        out[f"half of the clips, draw {draw}"] = share_of_ids(items, 0.5, salt=f"draw {draw}")
    return out


def fit_on_train(
    train_sets: Sequence[EmbeddingSet], extra_sets: Sequence[EmbeddingSet]
) -> Callable[[EmbeddingSet], NDArray[np.float64]]:
    """The shipped head (states 0-4, C 0.001, spectral weight 2) fitted on the train split's
    windows, as ``spoofwatch train`` fits it (extra items of split dev left out); returns
    its clip scores (mean window score) of a set."""
    train = [s.only([it.split == "train" for it in s.items]) for s in train_sets]
    train += [s.only([it.split != "dev" for it in s.items]) for s in extra_sets]
    x, y = stack(train, LAYERS)
    head = LinearHead(C=0.001).fit(x, y, column_weights(train, LAYERS, 2.0))
    return lambda s: clip_llrs(s, head.decision_function(s.select_layers(LAYERS)))


def speaker_gap(
    first: NDArray[np.float64], other: NDArray[np.float64], items: Sequence[LabelledItem], draws: int = 1000
) -> NDArray[np.float64]:
    """EER of ``other`` minus ``first`` (points) over draws of the bona fide speakers with
    replacement; the spoof clips stay as they are."""
    bona = np.array([it.label == "bonafide" for it in items])
    speakers = np.array([it.speaker for it in items])
    names = sorted(set(speakers[bona].tolist()))
    rng = np.random.default_rng(0)
    gaps = []
    for _ in range(draws):
        counts = (~bona).astype(int)
        for name in rng.choice(names, len(names)):
            counts += bona & (speakers == name)
        idx = np.repeat(np.arange(len(items)), counts)
        gaps.append(eer_points(other[idx], bona[idx]) - eer_points(first[idx], bona[idx]))
    return np.array(gaps)


def external_check(
    runs: Mapping[str, tuple[Sequence[EmbeddingSet], Sequence[EmbeddingSet]]],
    kokoro: Mapping[str, EmbeddingSet],
    dev: Mapping[str, EmbeddingSet],
) -> None:
    """Per run: EER of dev's bona fide against the Kokoro clips and dev's own EER, per channel,
    and the first run's gap to each later one."""
    first_title = next(iter(runs))
    first: dict[str, NDArray[np.float64]] = {}
    for title, (train_sets, extra_sets) in runs.items():
        score = fit_on_train(train_sets, extra_sets)
        cells = []
        for ch, s in kokoro.items():
            clip = score(s)
            bona = np.array([it.label == "bonafide" for it in s.items])
            dev_clip = score(dev[ch])
            dev_bona = np.array([it.label == "bonafide" for it in dev[ch].items])
            cell = f"{ch} Kokoro {eer_points(clip, bona):5.2f} % dev {eer_points(dev_clip, dev_bona):5.2f} %"
            if title == first_title:
                first[ch] = clip
            else:
                g = speaker_gap(first[ch], clip, s.items)
                low, high = np.percentile(g, [5, 95])
                cell += f" (vs first {g.mean():+.2f}, 90 % {low:+.2f} to {high:+.2f})"
            cells.append(cell)
        print(f"{title:44s} " + "  ".join(cells), flush=True)


def resampled_runs(
    sets: Mapping[str, EmbeddingSet], copies: EmbeddingSet, draws: int, share: float = 0.9
) -> dict[str, tuple[Sequence[EmbeddingSet], Sequence[EmbeddingSet]]]:
    """The shipped recipe and the one without the augmented channel, each on ``draws`` random
    ``share``s of the training clips (a copy goes with its original): how far the external
    check moves when only the draw of training clips changes."""
    runs: dict[str, tuple[Sequence[EmbeddingSet], Sequence[EmbeddingSet]]] = {}
    for draw in range(draws):
        keep = share_of_ids(sets["clean"].items, share, salt=f"training {draw}")
        kept_ids = {it.utt_id for it, k in zip(sets["clean"].items, keep, strict=True) if k}
        kept_copies = copies.only([it.extra.get("copy_of") in kept_ids for it in copies.items])
        for title, channels in (("shipped", SHIPPED_CHANNELS), ("no augmented channel", CHANNELS)):
            label = f"{title}, {100 * share:.0f} % of the clips, draw {draw}"
            runs[label] = ([sets[ch].only(keep) for ch in channels], [kept_copies])
    return runs


def main() -> None:
    parser = recipe_parser(__doc__)
    parser.add_argument("--kokoro-eval", type=Path, default=DEFAULT_KOKORO_EVAL)
    parser.add_argument("--skip-loso", action="store_true")
    parser.add_argument("--only", help="comma-separated variant numbers to run (0, the shipped, always runs)")
    parser.add_argument(
        "--resample",
        type=int,
        default=0,
        help="also check the shipped recipe and the one without the augmented channel on this "
        "many random 90 %% draws of the training clips (external check only)",
    )
    args = parser.parse_args()
    sets, copies = shipped_sets(args.manifest, args.copies)
    items = sets["clean"].items
    chains = drawn_chains(items)
    counts = Counter(name for chain in chains for name in chain or ["(nothing)"])
    print("augmented chains, clips with each transform:", dict(sorted(counts.items())), flush=True)
    chosen = variants(items, chains)
    if args.only:
        picked = {0, *(int(n) for n in args.only.split(","))}
        chosen = {t: keep for n, (t, keep) in enumerate(chosen.items()) if n in picked}
    runs: dict[str, tuple[Sequence[EmbeddingSet], Sequence[EmbeddingSet]]] = {}
    for title, keep in chosen.items():
        if keep is None:
            runs[title] = ([sets[ch] for ch in SHIPPED_CHANNELS], [copies])
        else:
            runs[title] = ([sets[ch] for ch in CHANNELS], [copies, sets["augmented"].only(keep)])
    extract = recipe_extractor()
    eval_items = read_manifest(args.kokoro_eval)
    kokoro = {ch: extract(eval_items, ch) for ch in CHANNELS}
    dev = {ch: sets[ch].only([it.split == "dev" for it in items]) for ch in CHANNELS}
    external_check({**runs, **resampled_runs(sets, copies, args.resample)}, kokoro, dev)
    if not args.skip_loso:
        results = loso_grid(runs, {test: sets[test] for test in SHIPPED_CHANNELS}, ASTERISK_AS_ONE)
        compare_to_first(results, list(runs), SHIPPED_CHANNELS, ASTERISK_AS_ONE)


if __name__ == "__main__":
    main()
