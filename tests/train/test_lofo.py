"""Leave-one-family-out: spoof families and bona fide sources held out separately, every clip
scored by a head that never saw its fold, per-fold reports, and the ``loso`` command's
``--fold-by``, several manifests and several test channels."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from numpy.typing import NDArray

from fakes import save_tiny_wav2vec2
from spoofwatch.cli import main
from spoofwatch.errors import DataError
from spoofwatch.model.head import LinearHead
from spoofwatch.train.corpus import LabelledItem
from spoofwatch.train.extract import EmbeddingSet
from spoofwatch.train.metrics import compute_eer
from spoofwatch.train.validate import (
    FoldFitter,
    FoldScheme,
    leave_one_fold_out,
    leave_one_source_out,
    partition_folds,
)

FAMILIES = ("tts", "vc", "vocoder")
SOURCES = ("page-a", "page-b", "page-c")


def _items() -> list[LabelledItem]:
    items = []
    for i in range(60):
        source = SOURCES[i % 3]
        if i % 2 == 0:
            items.append(LabelledItem(Path(f"/x/{i}.wav"), "bonafide", f"u{i}", source=f"{source}@v1"))
        else:
            family = FAMILIES[(i // 2) % 3]
            extra = {"family": family, "generator": f"{family}-{i % 4}"}
            items.append(
                LabelledItem(Path(f"/x/{i}.wav"), "spoof", f"u{i}", system=family, source=source, extra=extra)
            )
    return items


def _set(items: list[LabelledItem], seed: int) -> EmbeddingSet:
    """Two windows per item; column 0 of state 0 is the item's position (to see who is
    scored), state 1 separates the classes."""
    rng = np.random.default_rng(seed)
    index = np.repeat(np.arange(len(items)), 2)
    feats = rng.standard_normal((len(index), 2, 4)).astype(np.float32)
    feats[:, 0, 0] = index
    sign = np.array([1.0 if items[i].label == "bonafide" else -1.0 for i in index], dtype=np.float32)
    feats[:, 1, :] += sign[:, None]
    return EmbeddingSet(tuple(items), feats, index, np.zeros(len(index)), ())


def _copies(items: list[LabelledItem]) -> list[LabelledItem]:
    """Training-only vocoder copies of the bona fide items (no family column)."""
    return [
        LabelledItem(
            Path(f"/c/{it.utt_id}.wav"), "spoof", f"{it.utt_id}-copy", system="copy", source=it.source
        )
        for it in items
        if it.label == "bonafide"
    ]


Call = tuple[set[int], set[int]]


def _recording_fitter(log: list[Call]) -> FoldFitter:
    """Fits a real head and records, per fold, the rows it trained on and the rows it scored
    (by column 0: the item's position; 1000 + position for a copy)."""

    def fit(
        x: NDArray[np.float32],
        y: NDArray[np.int64],
        weights: NDArray[np.float64] | None,
        keys: NDArray[np.str_],
    ) -> Callable[[NDArray[np.float32]], NDArray[np.float64]]:
        trained = {int(i) for i in x[:, 0]}
        head = LinearHead(C=1.0).fit(x, y, weights)

        def score(features: NDArray[np.float32]) -> NDArray[np.float64]:
            log.append((trained, {int(i) for i in features[:, 0]}))
            return head.decision_function(features)

        return score

    return fit


def test_family_folds_never_train_on_the_clips_they_score() -> None:
    items = _items()
    copies = _copies(items)
    extra = _set(copies, 9)
    extra.features[:, 0, 0] += 1000
    scheme = FoldScheme("family", "source")
    log: list[Call] = []
    results = leave_one_fold_out(
        [_set(items, 1)],
        {"clean": _set(items, 1), "telephone": _set(items, 2)},
        [0, 1],
        scheme=scheme,
        extra_sets=[extra],
        fit=_recording_fitter(log),
        progress=False,
    )
    folds = {scheme.key(it) for it in items}
    assert folds == {
        "spoof:tts",
        "spoof:vc",
        "spoof:vocoder",
        "bonafide:page-a",
        "bonafide:page-b",
        "bonafide:page-c",
    }
    assert len(log) == 2 * len(folds)  # each fold's head scores both channels
    scored_by_fold: dict[str, set[int]] = {}
    for trained, scored in log:
        (held,) = {scheme.key(items[i]) for i in scored}  # one fold scored per head
        assert not {scheme.key(items[i]) for i in trained if i < 1000} & {held}
        if held.startswith("bonafide:"):  # the copies of its genuine clips stay out too
            source = held.split(":", 1)[1]
            assert not [i for i in trained if i >= 1000 and copies[i - 1000].source.startswith(source)]
            assert any(i >= 1000 for i in trained)  # the other sources' copies train it
        else:  # all bona fide and the other families train it
            assert {i for i in trained if i < 1000 and items[i].label == "bonafide"} == {
                i for i, it in enumerate(items) if it.label == "bonafide"
            }
        scored_by_fold.setdefault(held, set()).update(scored)
    assert set().union(*scored_by_fold.values()) == set(range(len(items)))  # every clip scored
    result = results["clean"]
    assert result.metrics.n_bonafide + result.metrics.n_spoof == len(items)
    assert set(result.folds) == folds
    for family in FAMILIES:
        report = result.folds[f"spoof:{family}"]
        assert report["spoof_clips"] == 10 and report["bonafide_clips"] == 0
        assert 0.0 <= report["spoof_eer"] <= 0.2 and 0.0 <= report["missed"] <= 1.0
    for source in SOURCES:
        report = result.folds[f"bonafide:{source}"]
        assert report["bonafide_clips"] == 10 and report["spoof_clips"] == 0
        assert {"false_alarms", "bonafide_eer", "bonafide_mean_score"} <= set(report)


def test_partitioned_folds_fit_k_heads_and_no_head_scores_a_cell_it_trained_on() -> None:
    items = _items()
    copies = _copies(items)
    extra = _set(copies, 9)
    extra.features[:, 0, 0] += 1000
    scheme = FoldScheme("family", "source", partitions=2)
    log: list[Call] = []
    results = leave_one_fold_out(
        [_set(items, 1)],
        {"clean": _set(items, 1)},
        [0, 1],
        scheme=scheme,
        extra_sets=[extra],
        fit=_recording_fitter(log),
        progress=False,
    )
    assert len(log) == 2  # two fits, not six
    cells = [scheme.key(it) for it in items]
    for trained, scored in log:
        held = {cells[i] for i in scored}
        assert len(held) >= 2 and {c.split(":")[0] for c in held} == {"spoof", "bonafide"}
        assert not {cells[i] for i in trained if i < 1000} & held
        held_sources = {c.split(":", 1)[1] for c in held if c.startswith("bonafide:")}
        assert not [i for i in trained if i >= 1000 and copies[i - 1000].source.split("@")[0] in held_sources]
    assert set().union(*(scored for _, scored in log)) == set(range(len(items)))
    # reported per cell, as without partitions
    assert set(results["clean"].folds) == set(cells)


def test_partition_folds_deal_largest_first_into_balanced_deterministic_folds() -> None:
    keys = (
        ["spoof:a"] * 5
        + ["spoof:b"] * 3
        + ["spoof:c"] * 2
        + ["spoof:d"] * 1
        + ["bonafide:x"] * 4
        + ["bonafide:y"]
    )
    mapping = partition_folds(keys, 2)
    assert mapping == {
        "spoof:a": "part-01",
        "spoof:b": "part-02",
        "spoof:c": "part-02",
        "spoof:d": "part-01",  # 5 and 5: the tie goes to the first
        "bonafide:x": "part-01",
        "bonafide:y": "part-02",
    }
    assert partition_folds(list(reversed(keys)), 2) == mapping
    with pytest.raises(DataError, match="expected at least 3 bonafide values to deal, found 2"):
        partition_folds(keys, 3)
    with pytest.raises(DataError, match=r"expected 0 .* or at least 2, found 1"):
        FoldScheme("family", "source", partitions=1).check(_items())


def test_a_seeded_deal_holds_other_cells_out_together_and_stays_balanced() -> None:
    keys = [f"spoof:f{i:02d}" for i in range(40) for _ in range(1 + i % 5)]
    keys += [f"bonafide:s{i:02d}" for i in range(12) for _ in range(3)]
    default = partition_folds(keys, 4)
    assert partition_folds(keys, 4, deal=0) == default
    deals = [partition_folds(keys, 4, deal=n) for n in (1, 2)]
    assert deals[0] == partition_folds(list(reversed(keys)), 4, deal=1)  # deterministic per seed
    assert deals[0] != default and deals[1] != default and deals[0] != deals[1]
    for mapping in (default, *deals):
        assert sorted(mapping) == sorted(set(keys))  # every cell dealt once
        for kind in ("spoof:", "bonafide:"):
            sizes = {
                fold: sum(keys.count(k) for k in mapping if k.startswith(kind) and mapping[k] == fold)
                for fold in set(mapping.values())
            }
            assert len(sizes) == 4 and max(sizes.values()) - min(sizes.values()) <= 5  # a cell's size at most


def test_a_deal_needs_partitions_and_a_seed_of_at_least_one() -> None:
    with pytest.raises(DataError, match=r"fold deal: expected 0, or a seed >= 1 .* found deal 2 with 0"):
        FoldScheme("family", "source", deal=2).check(_items())
    with pytest.raises(DataError, match="found deal -1 with 4 partitions"):
        FoldScheme("family", "source", partitions=4, deal=-1).check(_items())


def test_by_source_the_scheme_is_leave_one_source_out() -> None:
    items = _items()
    scheme = FoldScheme()
    assert not scheme.separate
    assert {scheme.key(it) for it in items} == set(SOURCES)  # both classes, @version dropped
    old = leave_one_source_out([_set(items, 1)], _set(items, 1), [0, 1], C=1.0, progress=False)
    new = leave_one_fold_out([_set(items, 1)], {"clean": _set(items, 1)}, [0, 1], C=1.0, progress=False)
    np.testing.assert_array_equal(old.clip_scores, new["clean"].clip_scores)
    assert old.per_source_eer == new["clean"].per_source_eer


def test_an_unknown_or_empty_fold_column_is_refused_naming_the_columns() -> None:
    items = _items()
    with pytest.raises(DataError, match=r"fold column 'colour': expected one of .*'family', 'generator'"):
        FoldScheme("colour").check(items)
    blank = [*items, LabelledItem(Path("/x/b.wav"), "spoof", "blank", extra={"family": ""})]
    with pytest.raises(
        DataError, match=r"expected a value for every spoof item, found 1 empty \(first \['blank'\]\)"
    ):
        FoldScheme("family").check(blank)


def _write(path: Path, rows: list[dict[str, str]]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _tiny_corpus(root: Path, prefix: str, generators: tuple[str, ...]) -> list[dict[str, str]]:
    rng = np.random.default_rng(len(prefix))
    rate = 16000
    rows = []
    for i in range(8):
        label = "bonafide" if i % 2 == 0 else "spoof"
        t = np.arange(2 * rate) / rate
        audio = 0.1 * rng.standard_normal(t.size)
        if label == "spoof":
            audio = 0.3 * np.sin(2 * np.pi * rng.uniform(300, 900) * t) + 0.02 * audio
        path = root / f"{prefix}{i}.wav"
        sf.write(path, audio.astype(np.float32), rate)
        generator = generators[i // 2 % len(generators)] if label == "spoof" else ""
        rows.append(
            {
                "path": str(path),
                "label": label,
                "utt_id": f"{prefix}{i}",
                "split": "train" if i < 6 else "dev",
                "source": f"{prefix}src{i % 4 // 2}",
                "generator": generator,
            }
        )
    return rows


def test_loso_command_holds_out_generators_over_several_manifests_and_channels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SPOOFWATCH_CACHE", str(tmp_path / "cache"))
    save_tiny_wav2vec2(tmp_path / "w2v2")
    first = _write(tmp_path / "a.csv", _tiny_corpus(tmp_path, "a", ("g1", "g2")))
    second = _write(tmp_path / "b.csv", _tiny_corpus(tmp_path, "b", ("g3",)))
    base = [
        "loso",
        "--manifest",
        str(first),
        "--manifest",
        str(second),
        "--encoder",
        f"hf:{tmp_path / 'w2v2'}",
    ]
    base += ["--window-s", "1", "--hop-s", "1", "--layers", "0,1", "--C", "1", "--train-channels", "clean"]
    assert main([*base, "--fold-by", "colour", "--json"], io.StringIO()) != 0
    err = capsys.readouterr().err
    assert "fold column 'colour'" in err and "'generator'" in err and "'source'" in err
    assert not (tmp_path / "cache").exists()  # refused before any extraction
    out = io.StringIO()
    argv = [
        *base,
        "--fold-by",
        "generator",
        "--split",
        "train",
        "--test-channel",
        "clean,telephone",
        "--json",
    ]
    assert main(argv, out) == 0
    summary = json.loads(out.getvalue().strip().splitlines()[-1])
    assert summary["protocol"] == "leave-one-generator-out" and summary["bonafide_fold_by"] == "source"
    assert set(summary["test_channels"]) == {"clean", "telephone"}
    clean = summary["test_channels"]["clean"]
    assert clean["n_bonafide"] == 6 and clean["n_spoof"] == 6  # split train of both manifests
    assert set(clean["folds"]) == {
        "spoof:g1",
        "spoof:g2",
        "spoof:g3",
        "bonafide:asrc0",
        "bonafide:asrc1",
        "bonafide:bsrc0",
        "bonafide:bsrc1",
    }
    text = io.StringIO()
    assert main([*base, "--fold-by", "generator"], text) == 0
    lines = text.getvalue().splitlines()
    assert lines[0].startswith("leave-one-generator-out (clean): EER")
    assert any(line.strip().startswith("spoof:g3") and "missed at the pooled EER" in line for line in lines)
    assert any(line.strip().startswith("bonafide:bsrc1") and "false alarms" in line for line in lines)
    dealt = io.StringIO()
    scores = tmp_path / "scores.csv"
    argv = [*base, "--fold-by", "generator", "--fold-partitions", "2", "--scores-out", str(scores), "--json"]
    assert main(argv, dealt) == 0
    partitioned = json.loads(dealt.getvalue().strip().splitlines()[-1])
    assert partitioned["fold_partitions"] == 2 and set(partitioned["folds"]) == set(clean["folds"])
    with scores.open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == partitioned["n_bonafide"] + partitioned["n_spoof"]
    assert {r["cell"] for r in rows} == set(partitioned["folds"]) and {r["channel"] for r in rows} == {
        "clean"
    }
    bona = [float(r["score"]) for r in rows if r["label"] == "bonafide"]
    spoof = [float(r["score"]) for r in rows if r["label"] == "spoof"]
    assert compute_eer(bona, spoof)[0] == pytest.approx(partitioned["eer"])
    balanced = io.StringIO()
    argv = [*base, "--fold-by", "generator", "--balance-by", "length,source", "--json"]
    assert main(argv, balanced) == 0
    weighed = json.loads(balanced.getvalue().strip().splitlines()[-1])
    assert weighed["balance_by"] == "length,source" and set(weighed["folds"]) == set(clean["folds"])
    nonlinear = io.StringIO()
    mlp = [
        "--head",
        "mlp",
        "--mlp-hidden",
        "8",
        "--mlp-epochs",
        "2",
        "--scores-out",
        str(tmp_path / "mlp.csv"),
    ]
    assert main([*base, "--fold-by", "generator", *mlp, "--json"], nonlinear) == 0
    fitted = json.loads(nonlinear.getvalue().strip().splitlines()[-1])
    assert fitted["head"]["kind"] == "mlp" and fitted["head"]["hidden"] == 8 and weighed["head"] == "linear"
    assert set(fitted["folds"]) == set(clean["folds"])
    with (tmp_path / "mlp.csv").open() as handle:
        mlp_scores = {r["utt_id"]: float(r["score"]) for r in csv.DictReader(handle)}
    assert len(mlp_scores) == fitted["n_bonafide"] + fitted["n_spoof"]
    assert mlp_scores != {r["utt_id"]: float(r["score"]) for r in rows}  # another head scored them
    assert main([*base, "--head", "mlp", "--mlp-dropout", "1"], io.StringIO()) != 0
    assert "expected dropouts in [0, 1), found 1.0" in capsys.readouterr().err
    longer = io.StringIO()
    assert main([*base, "--fold-by", "generator", "--min-s", "1.5", "--json"], longer) == 0
    kept = json.loads(longer.getvalue().strip().splitlines()[-1])  # every clip is 2 s long
    assert kept["min_s"] == 1.5 and kept["n_bonafide"] == weighed["n_bonafide"]
    assert main([*base, "--fold-by", "generator", "--min-s", "3"], io.StringIO()) != 0
    assert "--min-s 3: expected clips of both classes at least that long, found 0" in capsys.readouterr().err
    assert main([*base, "--fold-by", "generator", "--fold-partitions", "1"], io.StringIO()) != 0
    assert "fold partitions: expected 0" in capsys.readouterr().err
    redealt = io.StringIO()
    argv = [*base, "--fold-by", "generator", "--fold-partitions", "2", "--fold-deal", "3", "--json"]
    assert main(argv, redealt) == 0
    other = json.loads(redealt.getvalue().strip().splitlines()[-1])
    assert other["fold_deal"] == 3 and partitioned["fold_deal"] == 0
    assert set(other["folds"]) == set(clean["folds"])  # per cell as before, dealt otherwise
    assert main([*base, "--fold-by", "generator", "--fold-deal", "3"], io.StringIO()) != 0
    assert "fold deal: expected 0, or a seed >= 1 together with fold partitions" in capsys.readouterr().err
    assert main([*base[:3], "--manifest", str(first), *base[5:]], io.StringIO()) != 0
    assert "expected unique utt_id values across the manifests" in capsys.readouterr().err


def test_a_source_cap_weighs_each_large_source_as_cap_clips_and_changes_the_fit() -> None:
    from spoofwatch.train.fit import StackedRows, source_weights

    items = _items()
    big = [
        LabelledItem(Path(f"/big/{i}.wav"), "bonafide", f"big{i}", source="commands@v1") for i in range(40)
    ]
    pooled = _set(items + big, 3)
    (weights,) = source_weights([pooled], 10)
    per_item = weights[np.searchsorted(pooled.item_index, np.arange(len(pooled.items)))]
    assert np.allclose(per_item[len(items) :], 10 / 40)  # 40 clips weigh as 10
    assert np.allclose(per_item[: len(items)], 1.0)  # sources of 10 clips: at the cap
    assert np.allclose(source_weights([pooled], None)[0], 1.0)
    rows = StackedRows([pooled], [0, 1], [pooled.item_index % 2 == 0])
    assert len(rows.weights([weights])) == rows.shape[0]
    scheme = FoldScheme("family", "source")
    plain = leave_one_fold_out([pooled], {"clean": pooled}, [0, 1], scheme=scheme, C=1.0, progress=False)
    capped = leave_one_fold_out(
        [pooled], {"clean": pooled}, [0, 1], scheme=scheme, C=1.0, progress=False, source_cap=10
    )
    assert not np.allclose(plain["clean"].clip_scores, capped["clean"].clip_scores)
