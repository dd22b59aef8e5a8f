"""Class balance within strata (``train.fit.balance_weights``) and its way into train/loso."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile

from spoofwatch.errors import DataError
from spoofwatch.train.corpus import LabelledItem, item_duration_s
from spoofwatch.train.extract import EmbeddingSet
from spoofwatch.train.fit import balance_weights, fit_head, fit_weights, source_weights
from spoofwatch.train.validate import FoldScheme, leave_one_fold_out


def _item(i: int, label: str, lang: str, seconds: float) -> LabelledItem:
    extra = {"lang": lang, "duration_s": f"{seconds:.3f}", "family": f"f{i % 3}"}
    return LabelledItem(
        Path(f"/x/{i}.wav"), label, f"u{i}", system="-" if label == "bonafide" else "s", source=f"src{i % 4}",
        extra=extra,
    )  # fmt: skip


def _corpus() -> list[LabelledItem]:
    """English: 10 bona fide, 40 spoof; Arabic: 40 bona fide (short), 10 spoof (long)."""
    items = [_item(i, "bonafide", "en", 6.0) for i in range(10)]
    items += [_item(10 + i, "spoof", "en", 6.0) for i in range(40)]
    items += [_item(50 + i, "bonafide", "ar", 1.0) for i in range(40)]
    items += [_item(90 + i, "spoof", "ar", 6.0) for i in range(10)]
    return items


def _set(items: list[LabelledItem], seed: int = 0, windows: int = 2) -> EmbeddingSet:
    rng = np.random.default_rng(seed)
    index = np.repeat(np.arange(len(items)), windows)
    feats = rng.standard_normal((len(index), 2, 4)).astype(np.float32)
    sign = np.array([1.0 if items[i].label == "bonafide" else -1.0 for i in index], dtype=np.float32)
    feats[:, 1, :] += sign[:, None]
    # The language is a perfect cue in state 0: English looks spoof, Arabic bona fide.
    feats[:, 0, 0] = [3.0 if items[i].extra["lang"] == "en" else -3.0 for i in index]
    return EmbeddingSet(tuple(items), feats, index, np.zeros(len(index)), ())


def _sums(weights: np.ndarray, s: EmbeddingSet, lang: str) -> tuple[float, float]:
    in_lang = np.array([it.extra["lang"] == lang for it in s.items])[s.item_index]
    labels = s.labels()
    return float(weights[in_lang & (labels == 1)].sum()), float(weights[in_lang & (labels == 0)].sum())


def test_each_stratum_weighs_its_two_classes_the_same_and_the_classes_balance() -> None:
    s = _set(_corpus())
    (weights,) = balance_weights([s], ["lang"], 4.0)
    for lang in ("en", "ar"):
        bona, spoof = _sums(weights, s, lang)
        assert bona == pytest.approx(spoof)
    labels = s.labels()
    assert weights[labels == 1].sum() == pytest.approx(weights[labels == 0].sum())
    assert weights.sum() == pytest.approx(len(weights))  # the total is the windows' count
    en_bona = weights[(labels == 1) & (s.item_index < 10)]
    assert np.allclose(en_bona, 2.5)  # 10 English bona fide clips weigh as 40 spoofs


def test_length_compares_clips_shorter_than_a_window_with_the_rest(tmp_path: Path) -> None:
    s = _set(_corpus())
    (weights,) = balance_weights([s], ["length"], 4.0)
    labels = s.labels()
    tiled = np.array([float(it.extra["duration_s"]) < 4.0 for it in s.items])[s.item_index]
    # Every tiled clip is bona fide: a one-class stratum, touched only by the overall balance.
    assert len(set(np.round(weights[tiled], 9).tolist())) == 1
    assert weights[tiled & (labels == 1)].sum() < tiled.sum()
    assert weights[labels == 1].sum() == pytest.approx(weights[labels == 0].sum())
    # A manifest without duration_s: the file says how long it is.
    path = tmp_path / "a.wav"
    soundfile.write(path, np.zeros(8000, dtype=np.float32), 16000)
    assert item_duration_s(LabelledItem(path, "bonafide", "a")) == pytest.approx(0.5)
    with pytest.raises(DataError, match="cannot read its duration"):
        item_duration_s(LabelledItem(tmp_path / "missing.wav", "bonafide", "m"))


def test_several_sets_count_together_and_source_weights_multiply() -> None:
    items = _corpus()
    first, second = _set(items, 0), _set(items, 1, windows=3)
    pair = balance_weights([first, second], ["lang"], 4.0)
    joined = np.concatenate(pair)
    labels = np.concatenate([first.labels(), second.labels()])
    assert joined[labels == 1].sum() == pytest.approx(joined[labels == 0].sum())
    capped = balance_weights([first], ["lang"], 4.0, source_weights([first], 5))
    plain = balance_weights([first], ["lang"], 4.0)
    assert not np.allclose(capped[0], plain[0])
    bona, spoof = _sums(capped[0], first, "en")
    assert bona == pytest.approx(spoof)
    assert fit_weights([first], None, (), 4.0) == (None, "balanced")
    assert fit_weights([first], None, ("lang",), 4.0)[1] is None
    with pytest.raises(DataError, match="expected at least one key"):
        balance_weights([first], [], 4.0)
    with pytest.raises(
        DataError, match="balance key 'langg': no manifest has that column; expected 'length' or one"
    ):
        balance_weights([first], ["langg"], 4.0)
    only_bona = _set([it for it in items if it.label == "bonafide"])
    with pytest.raises(DataError, match="both classes"):
        balance_weights([only_bona], ["lang"], 4.0)


def test_balancing_stops_a_confounded_stratum_from_deciding_the_scores() -> None:
    """Language is a cue for the class in training; balanced within languages, the head
    leans on it less, so the held-out English bona fide clips score higher."""
    items = _corpus()
    train = _set(items, 0)
    dev = _set(items, 1)
    plain = fit_head([train], [dev], layers=[0, 1], C=1.0)
    balanced = fit_head([train], [dev], layers=[0, 1], C=1.0, balance_by=("lang",))
    assert abs(balanced.head.coef_[0]) < abs(plain.head.coef_[0])  # state 0, column 0: the language
    scheme = FoldScheme("family", "source")
    kwargs = {"scheme": scheme, "C": 1.0, "progress": False}
    loso_plain = leave_one_fold_out([train], {"clean": dev}, [0, 1], **kwargs)  # type: ignore[arg-type]
    loso_bal = leave_one_fold_out([train], {"clean": dev}, [0, 1], balance_by=["lang"], **kwargs)  # type: ignore[arg-type]
    en_bona = [i for i, it in enumerate(items) if it.label == "bonafide" and it.extra["lang"] == "en"]
    assert np.mean(loso_bal["clean"].clip_scores[en_bona]) > np.mean(loso_plain["clean"].clip_scores[en_bona])
