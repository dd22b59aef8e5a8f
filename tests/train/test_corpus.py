"""Tests of spoofwatch.train.corpus on the shared corpus and on small synthetic lists."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import pytest

from spoofwatch.errors import ConfigError, DataError
from spoofwatch.train.corpus import (
    LabelledItem,
    check_no_leakage,
    filter_split,
    group_key,
    leave_one_group_out,
    read_manifest,
    read_protocol,
)


def shared_corpus_dir() -> Path:
    """The shared training corpus, found next to the repository root (../shared/corpus)."""
    return Path(__file__).resolve().parents[2].parent / "shared" / "corpus"


needs_corpus = pytest.mark.skipif(
    not (shared_corpus_dir() / "manifest.csv").is_file(),
    reason=f"shared corpus not found at {shared_corpus_dir()}",
)


def write_manifest(folder: Path, text: str, name: str = "list.csv") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def touch(folder: Path, *names: str) -> None:
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).touch()


def item(utt_id: str, label: str, **fields: str) -> LabelledItem:
    return LabelledItem(path=Path(f"{utt_id}.wav"), label=label, utt_id=utt_id, **fields)  # type: ignore[arg-type]


# --- the shared corpus -------------------------------------------------------------------


@needs_corpus
def test_shared_manifest_counts() -> None:
    items = read_manifest(shared_corpus_dir() / "manifest.csv")
    assert len(items) == 1690
    counts = Counter((i.split, i.label) for i in items)
    assert counts == {
        ("train", "bonafide"): 628,
        ("train", "spoof"): 879,
        ("dev", "bonafide"): 66,
        ("dev", "spoof"): 117,
    }
    assert all(i.path.is_file() and i.path.stem == i.utt_id for i in items)
    assert {i.system for i in items if i.label == "bonafide"} == {"-"}
    assert "family" in items[0].extra and "path" not in items[0].extra


@needs_corpus
@pytest.mark.parametrize("split", ["train", "dev"])
def test_shared_protocols_agree_with_manifest(split: str) -> None:
    corpus = shared_corpus_dir()
    from_manifest = {i.utt_id: i for i in filter_split(read_manifest(corpus / "manifest.csv"), split)}
    from_protocol = read_protocol(corpus / f"protocol_{split}.txt", corpus / "audio" / split)
    assert {i.utt_id for i in from_protocol} == set(from_manifest)
    for protocol_item in from_protocol:
        manifest_item = from_manifest[protocol_item.utt_id]
        assert protocol_item.label == manifest_item.label
        assert protocol_item.system == manifest_item.system
        assert protocol_item.split == split
        assert protocol_item.path.resolve() == manifest_item.path.resolve()
        if protocol_item.label == "bonafide":
            assert protocol_item.speaker == manifest_item.speaker


@needs_corpus
def test_shared_train_and_dev_do_not_leak() -> None:
    items = read_manifest(shared_corpus_dir() / "manifest.csv")
    assert check_no_leakage(filter_split(items, "train"), filter_split(items, "dev")) == []


@needs_corpus
def test_shared_leave_one_source_out_partitions_the_corpus() -> None:
    items = read_manifest(shared_corpus_dir() / "manifest.csv")
    folds = list(leave_one_group_out(items, by="source"))
    assert [name for name, _, _ in folds] == sorted({i.source for i in items})
    assert sum(len(held) for _, _, held in folds) == len(items)
    for name, train, held in folds:
        assert {i.source for i in held} == {name}
        assert name not in {i.source for i in train}
        assert len(train) + len(held) == len(items)


# --- manifests ---------------------------------------------------------------------------


def test_manifest_fills_defaults_and_keeps_extra_columns(tmp_path: Path) -> None:
    touch(tmp_path, "a/one.wav", "two.flac")
    absolute = tmp_path / "two.flac"
    csv_path = write_manifest(
        tmp_path,
        f"label,path,lang\nbonafide,a/one.wav,en\nspoof,{absolute},ko\n",
    )
    one, two = read_manifest(csv_path)
    assert one == LabelledItem(
        path=tmp_path / "a" / "one.wav",
        label="bonafide",
        utt_id="one",
        system="-",
        speaker="unknown",
        split="unknown",
        source="list.csv",
        extra={"lang": "en"},
    )
    assert (two.path, two.utt_id, two.system, two.extra) == (absolute, "two", "unknown", {"lang": "ko"})


def test_manifest_reads_optional_columns_and_byte_order_mark(tmp_path: Path) -> None:
    touch(tmp_path, "x.wav")
    csv_path = tmp_path / "bom.csv"
    csv_path.write_text(
        "\ufeffpath,label,utt_id,system,speaker,split,source\nx.wav, spoof ,U1,A07,spk1,dev,page-a\n\n",
        encoding="utf-8",
    )
    (only,) = read_manifest(csv_path)
    assert (only.label, only.utt_id, only.system, only.speaker, only.split, only.source) == (
        "spoof",
        "U1",
        "A07",
        "spk1",
        "dev",
        "page-a",
    )
    assert only.extra == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("path,system\nx.wav,A01\n", r"list\.csv:1: expected required column\(s\) \['label'\]"),
        ("", r"list\.csv:1: expected a header line"),
        ("path,label\n", r"list\.csv: expected at least one row"),
        ("path,label,path\nx.wav,spoof,x.wav\n", r"list\.csv:1: expected unique column names"),
        ("path,label\nx.wav,spoof\nx.wav,fake\n", r"list\.csv:3: expected label .* found 'fake'"),
        ("path,label\nx.wav,Bonafide\n", r"list\.csv:2: .*found 'Bonafide'"),
        ("path,label\nx.wav,spoof,extra\n", r"list\.csv:2: expected 2 fields .* found 3"),
        ("path,label\n,spoof\n", r"list\.csv:2: expected an audio path"),
        ("path,label\nx.wav,spoof\nx.wav,spoof\n", r"list\.csv:3: .*'x' again \(first on line 2\)"),
        (
            "path,label\nx.wav,spoof\nmissing.wav,spoof\n",
            r"list\.csv:3: expected an audio file at .*missing\.wav",
        ),
    ],
)
def test_manifest_errors_name_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    touch(tmp_path, "x.wav")
    with pytest.raises(DataError, match=message):
        read_manifest(write_manifest(tmp_path, text))


def test_manifest_without_file_check_accepts_missing_audio(tmp_path: Path) -> None:
    csv_path = write_manifest(tmp_path, "path,label\nnot-here.wav,spoof\n")
    (only,) = read_manifest(csv_path, check_files=False)
    assert only.path == tmp_path / "not-here.wav"


def test_missing_manifest_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope\.csv: expected a readable manifest CSV"):
        read_manifest(tmp_path / "nope.csv")


# --- protocols ---------------------------------------------------------------------------


def test_protocol_2019_lines(tmp_path: Path) -> None:
    touch(tmp_path, "flac/LA_T_1.flac", "flac/LA_T_2.flac")
    protocol = tmp_path / "ASVspoof2019.LA.cm.train.trn.txt"
    protocol.write_text("# comment\nLA_0079 LA_T_1 - - bonafide\n\nLA_0080 LA_T_2 - A01 spoof\n")
    bona, spoof = read_protocol(protocol, tmp_path / "flac")
    assert bona == LabelledItem(
        path=tmp_path / "flac" / "LA_T_1.flac",
        label="bonafide",
        utt_id="LA_T_1",
        system="-",
        speaker="LA_0079",
        split="train",
        source="ASVspoof2019.LA.cm.train.trn.txt",
    )
    assert (spoof.label, spoof.system, spoof.speaker, spoof.extra) == ("spoof", "A01", "LA_0080", {})


def test_protocol_2021_lines_with_more_columns(tmp_path: Path) -> None:
    protocol = tmp_path / "trial_metadata.txt"
    protocol.write_text(
        "LA_0009 LA_E_1 alaw ita_tx A07 spoof notrim eval\n"
        "LA_0020 LA_E_2 g722 loc_tx bonafide bonafide notrim progress\n"
    )
    spoof, bona = read_protocol(protocol, tmp_path, ext="wav", split="eval", check_files=False)
    assert (spoof.label, spoof.system, spoof.split) == ("spoof", "A07", "eval")
    assert spoof.extra == {"field_3": "alaw", "field_4": "ita_tx", "field_7": "notrim", "field_8": "eval"}
    assert (bona.label, bona.system, bona.path) == ("bonafide", "-", tmp_path / "LA_E_2.wav")
    # The label is the second "bonafide"; the first one is the attack column.
    assert bona.extra == {
        "field_3": "g722",
        "field_4": "loc_tx",
        "field_7": "notrim",
        "field_8": "progress",
    }


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("LA_0001 LA_T_1 - bonafide", r"p\.txt:2: expected at least 5 fields .* found 4"),
        ("LA_0001 LA_T_1 - A01 fake", r"p\.txt:2: expected a 'bonafide' or 'spoof' field"),
        ("LA_0001 LA_T_0 - A01 spoof", r"p\.txt:2: .*'LA_T_0' again \(first on line 1\)"),
    ],
)
def test_protocol_errors_name_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    protocol = tmp_path / "p.txt"
    protocol.write_text(f"LA_0001 LA_T_0 - - bonafide\n{line}\n")
    with pytest.raises(DataError, match=message):
        read_protocol(protocol, tmp_path, check_files=False)


def test_protocol_checks_audio_exists(tmp_path: Path) -> None:
    protocol = tmp_path / "p.txt"
    protocol.write_text("LA_0001 LA_T_0 - - bonafide\n")
    with pytest.raises(DataError, match=r"p\.txt:1: expected an audio file at .*LA_T_0\.flac"):
        read_protocol(protocol, tmp_path)


# --- items, splits, groups, leakage ------------------------------------------------------


def test_labelled_item_validates_label_and_is_immutable() -> None:
    with pytest.raises(DataError, match="found 'fake'"):
        item("u1", "fake")
    extra = {"lang": "en"}
    one = LabelledItem(Path("u1.wav"), "spoof", "u1", extra=extra)
    extra["lang"] = "ko"
    assert one.extra == {"lang": "en"}
    assert hash(one) == hash(LabelledItem(Path("u1.wav"), "spoof", "u1", extra={"lang": "en"}))
    with pytest.raises(TypeError):
        one.extra["lang"] = "ko"  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        one.label = "bonafide"  # type: ignore[misc]


def test_filter_split_selects_and_reports_missing_split() -> None:
    items = [item("a", "spoof", split="train"), item("b", "spoof", split="dev")]
    assert filter_split(items, "dev") == [items[1]]
    with pytest.raises(DataError, match=r"'eval', found splits \['dev', 'train'\]"):
        filter_split(items, "eval")


def test_group_key_and_leave_one_group_out() -> None:
    items = [
        item("a", "bonafide", speaker="s1", source="p1"),
        item("b", "spoof", system="A01", source="p2"),
        item("c", "spoof", system="A02", source="p1"),
    ]
    assert [group_key(i, "system") for i in items] == ["-", "A01", "A02"]
    folds = list(leave_one_group_out(items))
    assert folds == [("p1", [items[1]], [items[0], items[2]]), ("p2", [items[0], items[2]], [items[1]])]
    with pytest.raises(ConfigError, match="found 'lang'"):
        group_key(items[0], "lang")  # type: ignore[arg-type]
    with pytest.raises(DataError, match="at least 2 groups"):
        list(leave_one_group_out(items[:1], by="speaker"))


def test_check_no_leakage_reports_each_kind_of_overlap() -> None:
    train = [
        item("u1", "bonafide", speaker="alice"),
        item("u2", "spoof", system="A01", speaker="bob"),
        item("u3", "bonafide"),
    ]
    dev = [
        item("u1", "spoof", system="A02"),
        item("u4", "bonafide", speaker="alice"),
        item("u5", "spoof", system="A01"),
        item("u6", "bonafide", speaker="bob"),  # bob is only a spoof target in train
        item("u7", "bonafide"),  # unknown speakers are not compared
    ]
    problems = check_no_leakage(train, dev)
    assert problems == [
        "1 utt_id(s) in both train and dev: u1",
        "1 audio file(s) in both train and dev: " + str(Path("u1.wav").resolve()),
        "1 bona fide speaker(s) in both train and dev: alice",
        "1 spoof system(s) in both train and dev: A01",
    ]
    assert check_no_leakage(train, dev[3:]) == []
