"""Experiment (README, Accuracy): what a clip loses when a vocoder remakes it, beside the
shipped features.

The idea is DIRE's (Wang et al., ICCV 2023, for images): a generator's output is close to
what a generator can remake, a camera's or a microphone's is not, and the gap says more
about "made by a generator" than about which generator. Here the remaker is FARGAN (plain
analysis and resynthesis, no pitch move). Every clip, after its channel, is vocoded whole,
its windows get the shipped recipe's features, and the head reads the original's features
and one of:
- the residual (original minus resynthesis) of the spectral block (LFCC and phase
  coherence, mean and std: 160 more features inside the spectral block, weight 2);
- that residual and the residual of Whisper states 0-4 (5,120 more, as five more states);
- the LFCC or the phase columns of the spectral residual alone;
- the resynthesis's own spectral block instead of the residual (a linear head can turn it
  into the residual, but the L2 penalty treats the two differently);
- the phase residual again, but with each levelled 4 s window vocoded on its own, as a
  streaming detector would have to (the product's `lfcc-phase-resynth` front end);
- the phase residual with each clip remade as a stream could share one remake between its
  overlapping windows: every 1 s block vocoded once, with 0.5 s of warm-up before it and
  0.1 s after (`vocode_streamed`; a quarter of the per-window variant's vocoder work).
The FARGAN copies that train the shipped card get their resynthesis the same way.
Leave-one-source-out with the shipped recipe (three training channels, copies through the
clean one, Asterisk sources as one fold), against the shipped features alone.

    PYTHONPATH=src python research/resynthesis_residual.py --manifest ../shared/corpus/manifest.csv

About 10 minutes per variant with the caches filled (`--variants` picks some; the window
variant vocodes every window first, about 15 minutes more). Needs the FARGAN program
(`scripts/build_fargan.sh`) and the copies (`spoofwatch copysynth`).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import soundfile as sf
from copies_grouped import SHIPPED_CHANNELS, compare_variants, recipe_parser, shipped_sets
from numpy.typing import NDArray
from spectral_blocks import LAYERS, LEVEL_DBFS, WINDOW, recipe_extractor
from tqdm import tqdm

from spoofwatch.audio.files import load_audio
from spoofwatch.model.encoders.phase import LfccPhaseEncoder
from spoofwatch.model.encoders.weights import cache_root
from spoofwatch.model.resynthesis.encoder import PHASE_COLUMNS
from spoofwatch.model.resynthesis.remake import StreamedRemake
from spoofwatch.model.resynthesis.vocoder import SAMPLE_RATE, find_vocoder, vocode
from spoofwatch.train.channel import get_channel
from spoofwatch.train.corpus import LabelledItem
from spoofwatch.train.extract import EmbeddingSet
from spoofwatch.train.extract import extract as extract_embeddings

RESYNTH_ROOT = cache_root() / "resynthesis" / "fargan"


WARM_UP_S = 0.5  # default audio before each block the vocoder warms up on, then dropped


def vocode_streamed(
    samples: NDArray[np.float32], vocoder: Path, warm_up_s: float = WARM_UP_S
) -> NDArray[np.float32]:
    """A clip remade as a stream could: every 1 s block vocoded once, with ``warm_up_s`` of the
    audio before it and 0.1 s after it, the block's own part kept; the blocks joined. The
    product's streamed remake (``model.remake``) with another warm-up; with 0.2 s, it is
    the packaged ``resynth`` card's remake, bit for bit."""
    return StreamedRemake(vocoder, warm_up=round(warm_up_s * SAMPLE_RATE)).clip(samples)


def resynthesised(
    items: Sequence[LabelledItem], channel: str, out: Path, streamed_warm_up_s: float | None = None
) -> list[LabelledItem]:
    """``items`` with their paths pointing at a FARGAN resynthesis of each clip after ``channel``
    (whole, or block by block with ``streamed_warm_up_s`` when given; written once under
    ``out``; labels and sources unchanged)."""
    vocoder, transform = find_vocoder(), get_channel(channel)
    out.mkdir(parents=True, exist_ok=True)

    def one(item: LabelledItem) -> LabelledItem:
        path = out / f"{item.utt_id}.flac"
        if not path.exists():
            samples = transform(load_audio(item.path, SAMPLE_RATE).samples, SAMPLE_RATE)
            if streamed_warm_up_s is None:
                remade = vocode(samples, vocoder)
            else:
                remade = vocode_streamed(samples, vocoder, streamed_warm_up_s)
            sf.write(path, remade, SAMPLE_RATE, subtype="PCM_16")
        return replace(item, path=path)

    with ThreadPoolExecutor(2) as pool:
        return list(tqdm(pool.map(one, items), total=len(items), desc=f"resynthesis {channel}"))


def paired_windows(original: EmbeddingSet, remade: EmbeddingSet) -> NDArray[np.int64]:
    """For each window of ``original``, the window of ``remade`` at the same place in the same
    item (the last one where the resynthesis gave fewer windows)."""
    out = np.empty(len(original.item_index), dtype=np.int64)
    for i in np.unique(original.item_index):
        mine = np.flatnonzero(original.item_index == i)
        theirs = np.flatnonzero(remade.item_index == i)
        if len(theirs) == 0:
            raise SystemExit(f"no resynthesised window for {original.items[int(i)].path}")
        out[mine] = theirs[np.minimum(np.arange(len(mine)), len(theirs) - 1)]
    return out


# Pooled spectral columns: the means of the 80 per-frame values (60 LFCC, 20 phase), then
# their standard deviations; the LFCC ones here, the phase ones (PHASE_COLUMNS) from the
# product's resynthesis front end.
LFCC_COLUMNS = np.r_[0:60, 80:140]


def appended(original: EmbeddingSet, remade: EmbeddingSet, variant: str) -> EmbeddingSet:
    """``original`` with ``variant``'s features of its resynthesis appended: to the spectral
    block (the residual original minus resynthesis of all of it, of its LFCC or phase columns
    only, or the resynthesis's own block) and, for the Whisper variant, the residual of
    states 0-4 as five more states."""
    assert original.spectral is not None and remade.spectral is not None
    pair = paired_windows(original, remade)
    residual = original.spectral - remade.spectral[pair]
    extra = {
        "spectral residual": residual,
        "spectral + Whisper residual": residual,
        "LFCC residual": residual[:, LFCC_COLUMNS],
        "phase residual": residual[:, PHASE_COLUMNS],
        "spectral of the resynthesis": remade.spectral[pair],
    }[variant]
    # float32 before the arithmetic: cached sets are float16 memory maps (train/store.py).
    features = np.asarray(original.features, dtype=np.float32)
    if variant == "spectral + Whisper residual":
        diff = features[:, LAYERS] - np.asarray(remade.features[pair][:, LAYERS], dtype=np.float32)
        features = np.concatenate([features, diff], axis=1)
    return replace(original, spectral=np.concatenate([original.spectral, extra], axis=1), features=features)


def window_resynthesis_sets(
    sets: dict[str, EmbeddingSet], copy_set: EmbeddingSet
) -> tuple[dict[str, EmbeddingSet], EmbeddingSet]:
    """The shipped features with the phase residual of each window against its own FARGAN
    remake appended to the spectral block: the product's ``lfcc-phase-resynth`` front end
    (what ``--detector resynth`` computes, one window at a time)."""
    extract = recipe_extractor("lfcc-phase-resynth")
    return {ch: extract(sets[ch].items, ch) for ch in SHIPPED_CHANNELS}, extract(copy_set.items, "clean")


WINDOW_VARIANT = "phase residual per window"
STREAMED_VARIANT = "phase residual of a streamed remake"
VARIANTS = (
    "spectral residual",
    "spectral + Whisper residual",
    "LFCC residual",
    "phase residual",
    "spectral of the resynthesis",
    WINDOW_VARIANT,
    STREAMED_VARIANT,
)


def main() -> None:
    parser = recipe_parser(__doc__)
    parser.add_argument(
        "--variants", default=",".join(VARIANTS), help=f"comma-separated, from: {', '.join(VARIANTS)}"
    )
    parser.add_argument(
        "--warm-up-s",
        type=float,
        default=WARM_UP_S,
        help="streamed remake: seconds of audio before each block the vocoder warms up on",
    )
    args = parser.parse_args()
    if not 0.0 <= args.warm_up_s <= 4.0:
        parser.error(f"--warm-up-s: expected seconds in [0, 4], found {args.warm_up_s}")
    chosen = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(chosen) - set(VARIANTS))
    if unknown:
        parser.error(f"--variants: expected names from {', '.join(VARIANTS)}, found {', '.join(unknown)}")
    sets, copy_set = shipped_sets(args.manifest, args.copies)
    remade: dict[str, EmbeddingSet] = {}
    if any(variant not in (WINDOW_VARIANT, STREAMED_VARIANT) for variant in chosen):
        # Clips remade whole, then windowed: only the whole-clip variants read them.
        extract = recipe_extractor()
        remade = {
            ch: extract(resynthesised(sets[ch].items, ch, RESYNTH_ROOT / ch), "clean")
            for ch in SHIPPED_CHANNELS
        }
        remade["copies"] = extract(resynthesised(copy_set.items, "clean", RESYNTH_ROOT / "copies"), "clean")
    streamed: dict[str, EmbeddingSet] = {}
    if STREAMED_VARIANT in chosen:
        # Only the remakes' spectral block is read: no Whisper pass over them.
        front_end = LfccPhaseEncoder(WINDOW.window_s)

        def spectral_only(items: Sequence[LabelledItem]) -> EmbeddingSet:
            done = extract_embeddings(items, front_end, WINDOW, channel="clean", level_dbfs=LEVEL_DBFS)
            return replace(done, spectral=done.features.reshape(len(done.features), -1))

        warm_up = args.warm_up_s
        root = RESYNTH_ROOT / f"streamed-w{round(warm_up * 1000)}"
        streamed = {
            ch: spectral_only(resynthesised(sets[ch].items, ch, root / ch, streamed_warm_up_s=warm_up))
            for ch in SHIPPED_CHANNELS
        }
        copies = resynthesised(copy_set.items, "clean", root / "copies", streamed_warm_up_s=warm_up)
        streamed["copies"] = spectral_only(copies)
    n_states = sets["clean"].features.shape[1]
    plus_whisper = [*LAYERS, *range(n_states, n_states + len(LAYERS))]
    variants = {"shipped": (sets, copy_set)}
    for variant in chosen:
        if variant == WINDOW_VARIANT:
            variants[variant] = window_resynthesis_sets(sets, copy_set)
        elif variant == STREAMED_VARIANT:
            variants[variant] = (
                {ch: appended(sets[ch], streamed[ch], "phase residual") for ch in SHIPPED_CHANNELS},
                appended(copy_set, streamed["copies"], "phase residual"),
            )
        else:
            variants[variant] = (
                {ch: appended(sets[ch], remade[ch], variant) for ch in SHIPPED_CHANNELS},
                appended(copy_set, remade["copies"], variant),
            )
    compare_variants(variants, layers={"spectral + Whisper residual": plus_whisper})


if __name__ == "__main__":
    main()
