"""Head fitting, layer choice, clip pooling and leave-one-source-out on synthetic embeddings."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from spoofwatch.errors import DataError
from spoofwatch.model.head import LinearHead
from spoofwatch.train.corpus import LabelledItem
from spoofwatch.train.extract import EmbeddingSet
from spoofwatch.train.fit import clip_llrs, evaluate_set, fit_head, stack
from spoofwatch.train.validate import fold_key, leave_one_source_out

N_STATES, WIDTH = 3, 4


def _items(n: int, sources: list[str], seed: int) -> list[LabelledItem]:
    rng = np.random.default_rng(seed)
    items = []
    for i in range(n):
        label = "bonafide" if i % 2 == 0 else "spoof"
        source = sources[int(rng.integers(len(sources)))]
        items.append(
            LabelledItem(
                Path(f"/x/{seed}_{i}.flac"),
                label,
                f"u{seed}_{i}",
                system="-" if label == "bonafide" else "A",
                source=source,
            )
        )
    return items


def _embed(
    items: list[LabelledItem], informative_state: int, seed: int, windows_per_item: int = 3
) -> EmbeddingSet:
    """Only ``informative_state`` separates the classes; the others are noise."""
    rng = np.random.default_rng(seed)
    index = np.repeat(np.arange(len(items)), windows_per_item)
    feats = rng.standard_normal((len(index), N_STATES, 2 * WIDTH)).astype(np.float32)
    sign = np.array([1.0 if items[i].label == "bonafide" else -1.0 for i in index], dtype=np.float32)
    feats[:, informative_state, :] += 1.5 * sign[:, None]
    return EmbeddingSet(tuple(items), feats, index, np.zeros(len(index)), ())


def test_layer_search_picks_the_informative_state_and_calibrates() -> None:
    train_items = _items(200, ["s"], 1)
    dev_items = _items(100, ["s"], 2)
    fitted = fit_head([_embed(train_items, 1, 1)], [_embed(dev_items, 1, 2)])
    assert 1 in fitted.layers
    assert fitted.layer_search["1"] < fitted.layer_search["0"]
    assert fitted.layer_search["1"] < fitted.layer_search["2"]
    metrics = evaluate_set(fitted, _embed(_items(100, ["s"], 3), 1, 3))
    assert metrics.eer < 0.05
    assert metrics.act_dcf < 0.2  # calibrated LLRs give good Bayes decisions


def test_clip_llrs_are_window_means() -> None:
    items = _items(2, ["s"], 0)
    emb = EmbeddingSet(tuple(items), np.zeros((3, 1, 2), np.float32), np.array([0, 0, 1]), np.zeros(3), ())
    assert clip_llrs(emb, np.array([1.0, 3.0, -2.0])).tolist() == [2.0, -2.0]


def test_only_keeps_the_chosen_items_with_their_own_windows() -> None:
    items = _items(4, ["s"], 0)
    index = np.array([0, 0, 1, 2, 2, 2, 3])
    feats = np.arange(7, dtype=np.float32).reshape(7, 1, 1)
    emb = EmbeddingSet(tuple(items), feats, index, np.arange(7.0), (), spectral=feats[:, 0] * 10)
    kept = emb.only([False, True, False, True])
    assert kept.items == (items[1], items[3])
    assert kept.item_index.tolist() == [0, 1]
    assert kept.features[:, 0, 0].tolist() == [2.0, 6.0]
    assert kept.t_start.tolist() == [2.0, 6.0]
    assert kept.spectral is not None and kept.spectral[:, 0].tolist() == [20.0, 60.0]
    assert clip_llrs(kept, np.array([1.0, -1.0])).tolist() == [1.0, -1.0]
    with pytest.raises(DataError, match="one keep flag per item"):
        emb.only([True])
    nothing = emb.only([False] * 4)
    assert nothing.items == () and nothing.select_layers([0]).shape == (0, 2)
    x, y = stack([emb, nothing], [0])
    assert x.shape == (7, 2) and len(y) == 7


def test_leave_one_source_out_never_trains_on_the_held_out_source() -> None:
    # Source "b" is separable only through a state the other sources never use: a
    # detector that saw "b" in training would score it perfectly, LOSO must not.
    items = _items(300, ["a", "b", "c"], 4)
    emb = _b_only_in_state_2(items, 4)
    result = leave_one_source_out([emb], emb, [0, 1, 2], progress=False)
    assert result.per_source_eer["a"] < 0.1
    assert result.per_source_eer["b"] > 0.2
    assert result.metrics.n_bonafide + result.metrics.n_spoof == len(items)


def test_leave_one_source_out_fits_each_fold_with_the_given_fitter() -> None:
    items = _items(300, ["a", "b", "c"], 4)
    emb = _b_only_in_state_2(items, 4)
    seen: list[set[str]] = []

    def sign_flipped(
        x: np.ndarray, y: np.ndarray, weights: np.ndarray | None, keys: np.ndarray
    ) -> Callable[[np.ndarray], np.ndarray]:
        assert len(keys) == len(x) == len(y)
        seen.append(set(keys.tolist()))
        head = LinearHead(C=0.01).fit(x, y, weights)
        return lambda features: -head.decision_function(features)

    plain = leave_one_source_out([emb], emb, [0, 1, 2], progress=False)
    flipped = leave_one_source_out([emb], emb, [0, 1, 2], progress=False, fit=sign_flipped)
    assert sorted(map(sorted, seen)) == [["a", "b"], ["a", "c"], ["b", "c"]]  # each fold without its source
    assert np.allclose(flipped.clip_scores, -plain.clip_scores, atol=1e-6)
    assert flipped.metrics.eer > 0.5 > plain.metrics.eer


def _b_only_in_state_2(items: list[LabelledItem], seed: int) -> EmbeddingSet:
    """Sources "b…" separable only through state 2, the others only through state 0."""
    emb = _embed(items, 0, seed)
    b_windows = np.array([items[i].source.startswith("b") for i in emb.item_index])
    emb.features[b_windows, 0, :] = np.random.default_rng(seed).standard_normal((b_windows.sum(), 2 * WIDTH))
    sign = np.array([1.0 if items[i].label == "bonafide" else -1.0 for i in emb.item_index])
    emb.features[b_windows, 2, :] += 3.0 * sign[b_windows, None]
    return emb


def _extra_showing_state_2(source: str) -> EmbeddingSet:
    """200 extra items of ``source``, separable through state 2 (strongly)."""
    extra_items = [
        LabelledItem(Path(f"/x/extra_{i}.flac"), it.label, f"extra_{i}", system="X", source=source)
        for i, it in enumerate(_items(200, [source], 6))
    ]
    extra = _embed(extra_items, 2, 6)
    extra.features[:, 2, :] *= 2.0
    return extra


def test_leave_one_source_out_trains_on_extra_items_of_other_sources_and_never_scores_them() -> None:
    items = _items(300, ["a", "b", "c"], 4)
    emb = _b_only_in_state_2(items, 4)
    # Extra items of source "a" that show state 2's evidence: the folds holding out "b"
    # learn it from them, so "b" is now scored well.
    extra = _extra_showing_state_2("a")
    without = leave_one_source_out([emb], emb, [0, 1, 2], progress=False)
    with_extra = leave_one_source_out([emb], emb, [0, 1, 2], progress=False, extra_sets=[extra])
    assert without.per_source_eer["b"] > 0.2
    assert with_extra.per_source_eer["b"] < 0.1
    assert with_extra.metrics.n_bonafide + with_extra.metrics.n_spoof == len(items)
    assert "X" not in with_extra.metrics.per_system


def test_leave_one_source_out_holds_extra_items_out_with_their_source() -> None:
    items = _items(300, ["a", "b", "c"], 4)
    emb = _b_only_in_state_2(items, 4)
    # The same evidence, but in extra items of source "b" itself: its fold must not see them.
    extra = _extra_showing_state_2("b@v2")
    result = leave_one_source_out([emb], emb, [0, 1, 2], progress=False, extra_sets=[extra])
    assert result.per_source_eer["b"] > 0.2


def test_fold_groups_hold_linked_sources_out_together() -> None:
    # "b1" and "b2" are one voice published twice: both separable only through state 2.
    # Held out one at a time, each fold learns state 2 from the other and scores it well;
    # as one fold, neither is seen, as with a voice the detector never met.
    items = _items(400, ["a", "b1", "b2", "c"], 7)
    emb = _b_only_in_state_2(items, 7)
    apart = leave_one_source_out([emb], emb, [0, 1, 2], progress=False)
    together = leave_one_source_out([emb], emb, [0, 1, 2], progress=False, fold_groups=["b*"])
    assert apart.per_source_eer["b1"] < 0.1 and apart.per_source_eer["b2"] < 0.1
    assert set(together.per_source_eer) == {"a", "b*", "c"}
    assert together.per_source_eer["b*"] > 0.2
    # b's genuine clips score lower once no fold has seen the voice.
    assert together.per_source_bonafide_mean["b*"] < min(
        apart.per_source_bonafide_mean["b1"], apart.per_source_bonafide_mean["b2"]
    )
    assert together.metrics.n_bonafide + together.metrics.n_spoof == len(items)


def test_fold_key_uses_the_first_matching_group_and_strips_the_version() -> None:
    item = LabelledItem(Path("/x/1.flac"), "spoof", "u1", system="A", source="debian:asterisk-en@1.6")
    assert fold_key(item) == "debian:asterisk-en"
    assert fold_key(item, ["lj*", "debian:asterisk*", "*"]) == "debian:asterisk*"
    assert fold_key(item, ["lj*|debian:asterisk-en", "*"]) == "lj*|debian:asterisk-en"


def test_a_fold_group_that_matches_nothing_is_an_error() -> None:
    items = _items(40, ["a", "b"], 5)
    emb = _embed(items, 0, 5)
    with pytest.raises(DataError, match=r"fold groups \['asterisk\*'\] match no source"):
        leave_one_source_out([emb], emb, [0], progress=False, fold_groups=["asterisk*"])


def test_leave_one_source_out_needs_two_sources() -> None:
    items = _items(20, ["only"], 5)
    emb = _embed(items, 0, 5)
    with pytest.raises(DataError, match="at least 2 sources"):
        leave_one_source_out([emb], emb, [0], progress=False)


def test_accumulated_evidence_uses_the_first_k_windows_in_time_order() -> None:
    from spoofwatch.train.fit import accumulated_evidence_eer

    items = [
        LabelledItem(Path("/b.flac"), "bonafide", "b"),
        LabelledItem(Path("/s.flac"), "spoof", "s", system="A"),
    ]
    # Windows listed out of time order on purpose. First window of each clip misleads
    # (bona fide scored low, spoof high); later windows are right.
    index = np.array([0, 0, 0, 1, 1, 1])
    t_start = np.array([2.0, 0.0, 1.0, 1.0, 0.0, 2.0])
    llrs = np.array([5.0, -3.0, 5.0, -5.0, 3.0, -5.0])
    emb = EmbeddingSet(tuple(items), np.zeros((6, 1, 2), np.float32), index, t_start, ())
    eer = accumulated_evidence_eer(emb, llrs, max_windows=3)
    assert eer[1] == 1.0
    assert eer[2] == 0.0
    assert eer[3] == 0.0
