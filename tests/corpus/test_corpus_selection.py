"""Near copies (vectorised against the one-by-one definition), caps, splits, reserved rules 3 and 4."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from corpus_factory import babble
from spoofwatch.corpus.cards import CardCaps, Labels
from spoofwatch.corpus.config import BuildConfig, load_config
from spoofwatch.corpus.nearcopy import correlation, envelope, find_near_copies
from spoofwatch.corpus.records import Piece
from spoofwatch.corpus.reserved import asterisk_refusal, find_reserved_dir, speaker_refusal
from spoofwatch.corpus.selection import apply_caps, assign_splits
from spoofwatch.errors import ConfigError


def _labels(
    label: str = "spoof", system: str = "c:a", generator: str = "G", family: str = "F", speaker: str = "s"
) -> Labels:
    return Labels(
        label,
        "e",
        system,
        generator,
        family,
        "vocoder",
        2020,
        False,
        False,
        speaker,
        "en",
        "",
        (),
        None,
        False,
        0,
    )


def _piece(card: str, path: str, labels: Labels, seconds: float = 5.0, start: int = 0) -> Piece:
    return Piece(
        card, path, labels, "k@c", "MIT", "0" * 40, 16000, start, int(seconds * 16000), f"{card}{path}{start}"
    )


def test_vectorised_near_copies_equal_the_pairwise_definition() -> None:
    rng = np.random.default_rng(0)
    clips = [babble(s, float(rng.uniform(1.0, 6.0))) for s in range(40)]
    # near copies: a re-encode-like version (gain, small noise, shifted by 1-2 frames)
    for i in range(0, 10):
        x = clips[i] * 0.7 + rng.standard_normal(len(clips[i])).astype(np.float32) * 1e-3
        clips.append(np.concatenate([np.zeros(320 * (i % 3), dtype=np.float32), x])[: len(x) + 400])
    envs = [envelope(c) for c in clips]
    durs = [len(c) / 16000 for c in clips]
    fast = {(m.query, m.reference) for m in find_near_copies(envs, durs, envs, durs, same_set=True)}
    slow = {
        (i, j)
        for i in range(len(envs))
        for j in range(i + 1, len(envs))
        if abs(durs[i] - durs[j]) <= 0.05 and correlation(envs[i], envs[j]) >= 0.85
    }
    assert fast == slow
    assert len(slow) >= 10


def test_caps_take_round_robin_over_systems_and_files() -> None:
    config = BuildConfig(generator_minutes=0.25, speaker_minutes=0.1)  # 15 s and 6 s
    pieces = [_piece("c", f"{sys}/{i}.wav", _labels(system=f"c:{sys}")) for sys in "abc" for i in range(4)]
    pieces += [_piece("c", f"gt/{i}.wav", _labels("bonafide", "-", "", "natural", "spk1")) for i in range(4)]
    kept, dropped = apply_caps(pieces, config)
    spoof = [p for p in kept if p.labels.label == "spoof"]
    assert len(spoof) == 3 and {p.labels.system for p in spoof} == {"c:a", "c:b", "c:c"}
    assert len([p for p in kept if p.labels.label == "bonafide"]) == 2
    assert {d.reason for d in dropped} == {"over the generator cap", "over the speaker cap"}
    assert len(dropped) == 9 + 2
    again, _ = apply_caps(list(reversed(pieces)), config)
    assert [p.order for p in again] == [p.order for p in kept]


def test_a_cards_own_cap_limits_only_what_that_card_gives_to_a_pool() -> None:
    config = BuildConfig(generator_minutes=1.0, speaker_minutes=1.0)  # 60 s per generator / speaker
    narrow = [
        _piece("narrow", f"{sys}/{i}.wav", _labels(system=f"narrow:{sys}")) for sys in "ab" for i in range(6)
    ]
    other = [_piece("wide", f"x/{i}.wav", _labels(system="wide:x")) for i in range(6)]
    spoken = [
        _piece("narrow", f"gt/{i}.wav", _labels("bonafide", "-", "", "natural", "spk1")) for i in range(6)
    ]
    pieces = narrow + other + spoken
    kept, dropped = apply_caps(pieces, config)
    assert len(kept) == 12 + 6 and not any("card's" in d.reason for d in dropped)  # 60 s each
    own = {"narrow": CardCaps(generator_minutes=0.25)}  # 15 s of generator G from this card
    kept, dropped = apply_caps(pieces, config, own)
    from_narrow = [p for p in kept if p.card == "narrow" and p.labels.label == "spoof"]
    assert len(from_narrow) == 3 and {p.labels.system for p in from_narrow} == {"narrow:a", "narrow:b"}
    assert len([p for p in kept if p.card == "wide"]) == 6  # the rest of the pool stays open to others
    assert len([p for p in kept if p.labels.label == "bonafide"]) == 6  # no speaker cap of its own
    assert {d.reason for d in dropped} == {"over the card's generator cap"}  # 45 s < 60 s in the pool
    own = {"narrow": CardCaps(speaker_minutes=0.1)}
    kept, dropped = apply_caps(pieces, config, own)
    assert len([p for p in kept if p.labels.label == "bonafide"]) == 2
    assert "over the card's speaker cap" in {d.reason for d in dropped}


def test_splits_follow_the_group_and_are_stable() -> None:
    pieces = [_piece("c", f"{g}/{i}.wav", _labels(family=f"fam{g}")) for g in range(30) for i in range(3)]
    pieces += [
        _piece("c", f"b{g}/{i}.wav", _labels("bonafide", "-", "", "natural", f"spk{g}"))
        for g in range(30)
        for i in range(2)
    ]
    config = BuildConfig(dev_share=0.3)
    assign_splits(pieces, config)
    first = [p.split for p in pieces]
    by_group: dict[str, set[str]] = {}
    for p in pieces:
        by_group.setdefault(p.group, set()).add(p.split)
    assert all(len(s) == 1 for s in by_group.values())
    dev = sum(s == {"dev"} for s in by_group.values())
    assert 5 <= dev <= 35
    assign_splits(pieces, config)
    assert [p.split for p in pieces] == first


def test_speakers_another_corpus_splits_keep_its_split_across_aliased_keys(tmp_path: Path) -> None:
    def bona(speaker: str, n: int = 2) -> list[Piece]:
        return [
            _piece("c", f"{speaker}/{i}.wav", _labels("bonafide", "-", "", "natural", speaker))
            for i in range(n)
        ]

    readers = [f"{prefix}:{n}" for n in range(40) for prefix in ("librispeech", "libritts")]
    pieces = [p for r in readers for p in bona(r)] + bona("vctk:p232") + bona("vctk:p225") + bona("other:x")
    pieces += bona("ljspeech:LJ")
    free = BuildConfig(dev_share=0.5)
    assign_splits(pieces, free)
    split_of = {p.group: p.split for p in pieces}
    # Without aliases LibriTTS and LibriSpeech copies of one reader land apart (the bug this fixes).
    assert any(split_of[f"librispeech:{n}"] != split_of[f"libritts:{n}"] for n in range(40))
    path = tmp_path / "build.toml"
    (tmp_path / "dev-speakers.csv").write_text(
        "speaker,split\nvctk:p232,dev\nvctk:p225,train\nlibri:7,dev\nlibri:8,train\nlibri:8,dev\nlj,dev\n"
    )
    path.write_text(
        'dev_share = 0.5\n[splits]\nfollow = "dev-speakers.csv"\n'
        'speaker_aliases = [["librispeech", "libritts", "libri"], ["ljspeech:LJ", "lj"]]\n'
    )
    config = load_config(path)
    assert len(config.follow_splits) == 6
    assert config.speaker_aliases == (("librispeech", "libritts", "libri"), ("ljspeech:LJ", "lj"))
    assign_splits(pieces, config)
    after = {p.group: p.split for p in pieces}
    assert all(after[f"librispeech:{n}"] == after[f"libritts:{n}"] for n in range(40))
    assert after["vctk:p232"] == "dev" and after["vctk:p225"] == "train"
    assert after["ljspeech:LJ"] == "dev"  # a whole key aliased: "lj" over there
    assert after["librispeech:7"] == after["libritts:7"] == "dev"
    assert after["libritts:8"] == "dev"  # named in both splits over there: dev, never train
    # Speakers nobody names keep the split they had; so do LibriSpeech readers (the alias target).
    assert after["other:x"] == split_of["other:x"]
    assert all(after[f"librispeech:{n}"] == split_of[f"librispeech:{n}"] for n in range(9, 40))


def test_split_settings_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "build.toml"
    for text, expected in [
        ('[splits]\nfolow = "x.csv"\n', "splits.folow: unknown setting"),
        ('[splits]\nfollow = "missing.csv"\n', "splits.follow: expected a readable CSV"),
        ('[splits]\nspeaker_aliases = ["libri"]\n', "expected lists of two or more"),
        ('[development]\nfile = "x.csv"\n', "development.file: unknown setting; expected files"),
        ('[development]\nfiles = "missing.csv"\n', "development.files: expected a readable CSV"),
        ("[development]\nfiles = 3\n", "development.files: expected a CSV file name"),
    ]:
        path.write_text(text)
        with pytest.raises(ConfigError, match=expected):
            load_config(path)
    (tmp_path / "s.csv").write_text("speaker,split\nvctk:p1,test\n")
    path.write_text('[splits]\nfollow = "s.csv"\n')
    with pytest.raises(ConfigError, match=r"s.csv:2: expected columns speaker and split"):
        load_config(path)


def test_rule_3_refuses_non_english_asterisk_packages_only() -> None:
    refusal = asterisk_refusal("asterisk-core-sounds-fr-gsm", "debian:asterisk-core-sounds-fr-gsm")
    assert refusal is not None and refusal.startswith("rule 3")
    assert asterisk_refusal("", "debian:asterisk-prompt-it-menardi-alaw") is not None
    assert asterisk_refusal("asterisk-core-sounds-en-wav", "debian:asterisk-core-sounds-en-wav") is None


def test_rule_4_refuses_test_other_speakers_as_bona_fide_only() -> None:
    refusal = speaker_refusal("bonafide", "libritts:1688", "")
    assert refusal is not None and refusal.startswith("rule 4")
    assert speaker_refusal("bonafide", "librispeech:1089", "") is None  # test-clean
    assert speaker_refusal("spoof", "libritts:1688", "") is None  # a target speaker of a spoof
    assert speaker_refusal("bonafide", "x:1", "LibriTTS test-other") is not None
    assert speaker_refusal("bonafide", "page:8461_281231", "LibriTTS") is not None
    assert speaker_refusal("bonafide", "page:84_121123", "LibriTTS") is None  # dev-clean reader 84


def test_without_reserved_lists_the_build_refuses_unless_told(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SPOOFWATCH_RESERVED", raising=False)
    assert find_reserved_dir(None, tmp_path / "repo") is None
    (tmp_path / "shared" / "corpus" / "reserved").mkdir(parents=True)
    assert find_reserved_dir(None, tmp_path / "repo") == tmp_path / "shared" / "corpus" / "reserved"


def test_build_config_rejects_unknown_and_mistyped_settings(tmp_path: Path) -> None:
    path = tmp_path / "build.toml"
    path.write_text("seed = 1\n[caps]\ngenerator_minutes = 'lots'\nspeker_minutes = 2\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "caps.speker_minutes: unknown setting" in str(info.value)
    assert "generator_minutes: expected a float" in str(info.value)
    repo_config = Path(__file__).resolve().parents[2] / "corpus" / "build.toml"
    assert load_config(repo_config).max_s == 10.0


def test_the_development_tables_are_what_the_script_writes(tmp_path: Path) -> None:
    import importlib.util

    root = Path(__file__).resolve().parents[2]
    manifest = root.parent / "shared" / "corpus" / "manifest.csv"
    if not manifest.is_file():
        pytest.skip("the development corpus is not on this machine")
    script = root / "scripts" / "development_tables.py"
    spec = importlib.util.spec_from_file_location("development_tables", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(manifest, tmp_path)
    for table in ("development-files.csv", "development-speakers.csv"):
        assert (tmp_path / table).read_text() == (root / "corpus" / table).read_text(), table
    config = tmp_path / "build.toml"
    config.write_text('[development]\nfiles = "development-files.csv"\n')
    split = load_config(config).development_split()
    assert len(split) > 1000 and sum(s == "dev" for s in split.values()) > 100


def test_the_committed_lock_file_has_nothing_reserved() -> None:
    """CI's hash check of corpus/lock.csv (rules 1-4 by SHA-1, origin key and speaker)."""
    import io

    from spoofwatch.cli import main

    root = Path(__file__).resolve().parents[2]
    lock = root / "corpus" / "lock.csv"
    reserved = root.parent / "shared" / "corpus" / "reserved"
    if not lock.is_file():
        pytest.skip("no corpus/lock.csv committed yet")
    flags = ["--reserved", str(reserved)] if reserved.is_dir() else ["--no-reserved"]
    out = io.StringIO()
    code = main(
        ["corpus", "check", "--cards", str(root / "corpus" / "cards"), "--lock", str(lock), *flags], out=out
    )
    assert code == 0, out.getvalue()


def test_exact_correlations_equal_the_one_pair_definition() -> None:
    from spoofwatch.corpus.nearcopy import exact_correlations

    rng = np.random.default_rng(1)
    for lengths in ([float(rng.uniform(0.3, 4.0)) for _ in range(30)], [2.0] * 15 + [2.02] * 15):
        envs = [envelope(babble(s, d)) for s, d in enumerate(lengths)]
        envs.append(np.full(len(envs[0]), -40.0))  # flat: no correlation defined
        qi = rng.integers(0, len(envs), 300)
        rj = rng.integers(0, len(envs), 300)
        fast = exact_correlations(envs, envs, qi, rj)  # the second set takes the vectorised path
        slow = np.array([correlation(envs[i], envs[j]) for i, j in zip(qi, rj, strict=True)])
        np.testing.assert_allclose(fast, slow, atol=1e-9)


def test_near_copies_count_as_duplicates_only_between_cards() -> None:
    from spoofwatch.corpus.dedup import same_material

    def real(card: str, speaker: str) -> Piece:
        return _piece(card, "a.wav", _labels("bonafide", "-", "", "natural", speaker))

    assert same_material(real("a", "x"), real("b", "y"))  # a page re-hosting another's clip
    assert not same_material(real("a", "x"), real("a", "x"))  # one speaker, two similar words
    codec = _piece("a", "c.wav", _labels(system="a:encodec-3k", family="EnCodec"))
    assert not same_material(codec, _piece("a", "d.wav", _labels(system="a:encodec-6k", family="EnCodec")))
    assert same_material(codec, _piece("b", "d.wav", _labels(system="b:encodec", family="EnCodec")))
    assert not same_material(codec, _piece("b", "d.wav", _labels(system="b:dac", family="DAC")))
    assert not same_material(codec, real("b", "x"))  # a codec copy of a real clip
