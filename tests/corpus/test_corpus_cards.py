"""Source cards: parsing, validation messages that name the field, rules and templates."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from spoofwatch.cli import main
from spoofwatch.corpus.cards import CardCaps, CardError, load_card, load_cards
from spoofwatch.corpus.rules import compile_glob

GOOD = """
id = "page"
title = "A page"

[origin]
type = "git"
url = "https://github.com/o/page"
key = "github:o/page"
commit = "0123456789abcdef0123456789abcdef01234567"
licence = "MIT"
include = ["static/**/*.wav", "static/**/*.mp3"]
exclude = ["static/ablation/**"]

[defaults]
lang = "en"
year = 2024

[[rules]]
regex = '^static/(?P<model>[a-z0-9]+)/(?P<spk>\\d+)_.*$'
label = "spoof"
system = "page:{model}"
generator = "{model}"
family = "{model}"
kind = "tts-codec-lm"
speaker = "libritts:{spk}"
evidence = "column '{model}'"

[check]
sampled = 3
"""


def _write(tmp_path: Path, text: str, name: str = "page") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


def test_a_good_card_parses_and_fills_templates_from_named_groups(tmp_path: Path) -> None:
    card = load_card(_write(tmp_path, GOOD))
    assert card.include == ("static/**/*.wav", "static/**/*.mp3")  # read from inside [origin]
    assert card.selects("static/valle/1089_x.wav") and card.selects("static/deep/er/a.mp3")
    assert not card.selects("static/ablation/a.wav") and not card.selects("static/a.txt")
    labels = card.labels_for("static/valle/1089_x.wav")
    assert labels is not None
    assert (labels.system, labels.speaker, labels.year, labels.evidence) == (
        "page:valle", "libritts:1089", 2024, "column 'valle'",
    )  # fmt: skip
    assert card.labels_for("static/other.wav") is None  # no rule: "no label"
    assert card.origin.pinned == "github:o/page@0123456789abcdef0123456789abcdef01234567"
    assert card.caps == CardCaps()  # no [caps]: the build's
    capped = load_card(_write(tmp_path, GOOD + "\n[caps]\ngenerator_minutes = 4\n"))
    assert capped.caps == CardCaps(generator_minutes=4.0, speaker_minutes=None)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (('label = "spoof"', 'label = "fake"'), "rules[0].label: expected 'bonafide' or 'spoof'"),
        (("evidence = \"column '{model}'\"", ""), "rules[0].evidence: expected what the label rests on"),
        (('kind = "tts-codec-lm"', 'kind = "tts-magic"'), "rules[0].kind: expected one of"),
        (('system = "page:{model}"', 'system = "{model}"'), "rules[0].system: expected 'page:<name>'"),
        (
            ('speaker = "libritts:{spk}"', 'speaker = "libritts:{speaker}"'),
            "rules[0].speaker: expected {name}",
        ),
        (('licence = "MIT"', ""), "origin.licence: expected a string"),
        (
            ('commit = "0123456789abcdef0123456789abcdef01234567"', 'commit = "0123abc"'),
            "origin.commit: expected the full 40-hex",
        ),
        (('key = "github:o/page"', 'key = "GitHub:O/Page"'), "origin.key: expected a lower-case key"),
        (('id = "page"', 'id = "other"'), "id: expected the file name's stem 'page'"),
        (('lang = "en"', 'lnag = "en"'), "defaults.lnag: unknown field"),
        (
            ("regex = '^static", "glob = 'x'\nregex = '^static"),
            "rules[0]: expected exactly one of glob or regex",
        ),
        (
            ("[check]\nsampled = 3", '[[rules]]\nglob = "x"\nlabel = "spoof"\nevidence = "e"'),
            "rules[1].system: expected a value for a spoof rule",
        ),
        (
            ("[check]\nsampled = 3", "[caps]\ngenerator_minutes = 0"),
            "caps.generator_minutes: expected a positive",
        ),
        (
            ("[check]\nsampled = 3", '[caps]\nspeaker_minutes = "3"'),
            "caps.speaker_minutes: expected a positive",
        ),
        (("[check]\nsampled = 3", "[caps]\nminutes = 3"), "caps.minutes: unknown field"),
    ],
)
def test_card_errors_name_the_file_and_field(tmp_path: Path, change: tuple[str, str], expected: str) -> None:
    old, new = change
    assert old in GOOD
    path = _write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(CardError) as info:
        load_card(path)
    assert str(path) in str(info.value) and expected in str(info.value)


def test_bona_fide_rules_need_a_speaker_and_known_tags(tmp_path: Path) -> None:
    text = GOOD.replace('label = "spoof"', 'label = "bonafide"\ntags = ["read", "studio"]').replace(
        'system = "page:{model}"\n', ""
    )
    text = text.replace('speaker = "libritts:{spk}"\n', "")
    with pytest.raises(CardError) as info:
        load_card(_write(tmp_path, text))
    message = str(info.value)
    assert "rules[0].speaker: expected the real speaker key" in message
    assert "rules[0].tags: expected bona fide tags" in message and "'studio'" in message


def test_generator_cards_check_the_recipe_parameters(tmp_path: Path) -> None:
    text = """
id = "gen"
title = "generated"
[origin]
type = "generator"
key = "generator:espeak-ng"
licence = "GPL-3.0"
recipe = "espeak-ng"
seed = 1
voices = ["en-us"]
texts = []
speed = [300, 100]
[[rules]]
glob = "**/*.wav"
label = "spoof"
system = "gen:x"
generator = "eSpeak"
family = "eSpeak"
kind = "tts-formant"
year = 2015
evidence = "generated"
"""
    with pytest.raises(CardError) as info:
        load_card(_write(tmp_path, text, "gen"))
    assert "origin.texts: expected a non-empty list" in str(info.value)
    assert "origin.speed: expected [low, high]" in str(info.value)
    with pytest.raises(CardError, match=r"origin.recipe: expected one of espeak-ng"):
        load_card(_write(tmp_path, text.replace('recipe = "espeak-ng"', 'recipe = "nope"'), "gen"))


def test_cli_reports_every_bad_card_naming_the_field_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _write(tmp_path, GOOD.replace('label = "spoof"', 'label = "maybe"'))
    _write(tmp_path, GOOD.replace('id = "page"', 'id = "page2"').replace('licence = "MIT"', ""), "page2")
    code = main(["corpus", "check", "--cards", str(tmp_path), "--no-reserved"], out=io.StringIO())
    err = capsys.readouterr().err
    assert code == 2
    assert "page.toml: rules[0].label: expected 'bonafide' or 'spoof'" in err
    assert "page2.toml: origin.licence: expected a string" in err
    assert "Traceback" not in err


def test_only_names_cards_that_exist(tmp_path: Path) -> None:
    _write(tmp_path, GOOD)
    assert [c.id for c in load_cards(tmp_path, ("page",))] == ["page"]
    with pytest.raises(CardError, match=r"--only: expected card ids found in .*\['nope'\]"):
        load_cards(tmp_path, ("nope",))


@pytest.mark.parametrize(
    ("glob", "path", "matches"),
    [
        ("static/**/*.wav", "static/a.wav", True),
        ("static/**/*.wav", "static/x/y/a.wav", True),
        ("static/*.wav", "static/x/a.wav", False),
        ("static/ablation/**", "static/ablation/q/r.wav", True),
        ("**/*", "a.wav", True),
        ("a/*/gt.wav", "a/b/gt.wav", True),
        ("[!x]?.mp3", "ab.mp3", True),
        ("[!x]?.mp3", "xb.mp3", False),
        ("a+b (1).wav", "a+b (1).wav", True),
    ],
)
def test_globs_treat_double_star_as_any_depth_and_star_as_one_segment(
    glob: str, path: str, matches: bool
) -> None:
    assert bool(compile_glob(glob).fullmatch(path)) is matches
