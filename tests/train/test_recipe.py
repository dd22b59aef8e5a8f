"""Training recipes: the packaged ones agree with their detectors' cards, and ``train
--recipe`` takes them as defaults that flags override."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from spoofwatch import cli
from spoofwatch.errors import ConfigError
from spoofwatch.train.pipeline import HEAD_FIELDS, TrainOptions
from spoofwatch.train.recipe import PACKAGED, as_cli_defaults, load_recipe


def card_options(name: str) -> dict[str, Any]:
    card = json.loads((resources.files("spoofwatch.model") / name / "model_card.json").read_text())
    options: dict[str, Any] = card["training"]["options"]
    # None and [] are "not set" (no source cap, no balance keys), and a linear head's MLP
    # options unused: a recipe leaves them out.
    linear = options.get("head", "linear") == "linear"
    unused = {name for name in HEAD_FIELDS if linear and options.get(name) == getattr(TrainOptions(), name)}
    return {
        k: v for k, v in options.items() if k != "max_batch" and v is not None and v != [] and k not in unused
    }


@pytest.mark.parametrize("name", PACKAGED)
def test_a_packaged_recipe_is_what_its_detector_was_trained_with(name: str) -> None:
    assert load_recipe(name) == card_options(name)


def test_train_takes_the_recipe_as_defaults_and_flags_win(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def record(args: Any, out: Any) -> int:
        seen.update(vars(args))
        return 0

    monkeypatch.setitem(cli.COMMANDS, "train", record)
    argv = ["train", "--recipe", "default", "--manifest", "m.csv", "--out", "o", "--C", "0.5"]
    assert cli.main(argv) == 0
    recipe = as_cli_defaults(load_recipe("default"))
    assert seen["C"] == 0.5  # the flag
    assert seen["channels"] == recipe["channels"] == "clean,telephone,augmented-gaps,telephone-gaps"
    assert seen["layers"] == "0,1,2,3,4" and seen["truncate_encoder"] is True
    assert seen["level_dbfs"] == -26.0 and seen["spectral"] == "lfcc-phase"
    seen.clear()
    assert cli.main(["train", "--manifest", "m.csv", "--out", "o"]) == 0
    assert seen["channels"] == "clean,telephone" and seen["spectral"] == "none"  # no recipe: as before


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[train]\nwindow = 4\n", "unknown option 'window'"),
        ("[train]\nC = 'big'\n", "C is 'big'; expected int or float"),
        ("[train]\ntruncate_encoder = 1\n", "expected bool"),
        ("[training]\nC = 1.0\n", r"expected a \[train\] table"),
        ("[train\n", "expected TOML"),
    ],
)
def test_a_bad_recipe_says_what_was_expected(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "recipe.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_recipe(str(path))


def test_a_missing_recipe_names_the_packaged_ones() -> None:
    with pytest.raises(ConfigError, match=r"expected one of \['default', 'resynth'\]"):
        load_recipe("no-such-recipe.toml")
