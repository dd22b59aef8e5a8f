"""Training recipes: TOML files whose ``[train]`` table gives ``spoofwatch train`` its
defaults. A packaged detector's recipe sits beside its card (``model/default/recipe.toml``)
and is named by the detector's name (``--recipe default``)."""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Any, Final

from spoofwatch.errors import ConfigError

RECIPE_FILE: Final = "recipe.toml"
PACKAGED: Final = ("default", "resynth")
# Option -> the TOML types it takes (TrainOptions' fields that `spoofwatch train` sets).
KEYS: Final[dict[str, tuple[type, ...]]] = {
    "encoder": (str,),
    "window_s": (int, float),
    "hop_s": (int, float),
    "train_hop_s": (int, float),
    "channels": (list,),
    "calibration_channels": (list,),
    "extra_channels": (list,),
    "layers": (list,),
    "C": (int, float),
    "name": (str,),
    "threshold": (str,),
    "truncate_encoder": (bool,),
    "quantization": (str,),
    "backend": (str,),
    "spectral": (str,),
    "spectral_weight": (int, float),
    "level_dbfs": (int, float),
    "fit_precision": (str,),
    "source_cap": (int,),
    "balance_by": (list,),
    "dev_min_s": (int, float),
    "train_min_s": (int, float),
    "head": (str,),
    "mlp_hidden": (int,),
    "mlp_epochs": (int,),
    "mlp_dropout": (int, float),
    "mlp_input_dropout": (int, float),
    "mlp_weight_decay": (int, float),
    "mlp_learning_rate": (int, float),
    "mlp_seed": (int,),
}


def recipe_text(name_or_path: str) -> tuple[str, str]:
    """(where, TOML text) of a packaged recipe by name or of a recipe file."""
    if name_or_path in PACKAGED:
        resource = resources.files("spoofwatch.model") / name_or_path / RECIPE_FILE
        return f"packaged recipe {name_or_path!r}", resource.read_text()
    path = Path(name_or_path)
    try:
        return str(path), path.read_text()
    except OSError as exc:
        raise ConfigError(
            f"recipe {name_or_path!r}: expected one of {list(PACKAGED)} or a readable TOML file ({exc})"
        ) from None


def load_recipe(name_or_path: str) -> dict[str, Any]:
    """The ``[train]`` table of a recipe, checked: known options of the right types."""
    where, text = recipe_text(name_or_path)
    try:
        table = tomllib.loads(text).get("train")
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: expected TOML, found a syntax error ({exc})") from None
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a [train] table")
    for key, value in table.items():
        types = KEYS.get(key)
        if types is None:
            raise ConfigError(f"{where}: unknown option {key!r}; expected some of {sorted(KEYS)}")
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise ConfigError(
                f"{where}: {key} is {value!r}; expected {' or '.join(t.__name__ for t in types)}"
            )
    return dict(table)


def as_cli_defaults(recipe: dict[str, Any]) -> dict[str, Any]:
    """A recipe as ``spoofwatch train``'s argument defaults (lists as comma-separated text)."""
    return {
        key: ",".join(str(v) for v in value) if isinstance(value, list) else value
        for key, value in recipe.items()
    }
