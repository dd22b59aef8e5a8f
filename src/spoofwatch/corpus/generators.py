"""Generator origins: recipes the builder runs itself (deterministically, from the card's seed).

A recipe turns a card's ``[origin]`` parameters into a list of items (a path and the exact
settings of one utterance) and renders one item to WAV bytes. The builder then treats the
items like files of any other origin: the card's include/exclude globs and rules apply to the
item paths, and each rendering is cached by a hash of (recipe, engine version, settings).

To add an engine (Piper, Kokoro, Flite, Festival, Pico, FARGAN copy-synthesis, ...): write a
class with ``name``, ``check``, ``plan``, ``render`` and ``version`` and add it to ``RECIPES``.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from spoofwatch.corpus.origins import MissingFile, OriginError


@dataclass(frozen=True)
class Item:
    path: str
    settings: Mapping[str, Any]


class Recipe(Protocol):
    name: str

    def check(self, params: Mapping[str, Any]) -> list[str]:
        """Problems with the card's parameters, each ``field: expected ..., found ...``."""
        ...

    def plan(self, params: Mapping[str, Any], seed: int) -> list[Item]: ...

    def render(self, item: Item) -> bytes: ...

    def version(self) -> str: ...


def _number_range(params: Mapping[str, Any], name: str, default: float, lo: float, hi: float) -> list[str]:
    value = params.get(name, [default, default])
    ok = (
        isinstance(value, list)
        and len(value) == 2
        and all(isinstance(v, int | float) and not isinstance(v, bool) and lo <= v <= hi for v in value)
        and value[0] <= value[1]
    )
    return [] if ok else [f"origin.{name}: expected [low, high] between {lo:g} and {hi:g}, found {value!r}"]


def _strings(params: Mapping[str, Any], name: str) -> list[str]:
    value = params.get(name)
    if isinstance(value, list) and value and all(isinstance(v, str) and v.strip() for v in value):
        return []
    return [f"origin.{name}: expected a non-empty list of non-empty strings, found {value!r}"]


class EspeakNg:
    """eSpeak NG: every voice speaks every text (or ``per_voice`` of them, drawn with the seed),
    with speed (words per minute) and pitch (0-99) drawn per utterance from the given ranges.

    Parameters: ``voices`` (e.g. ``["en-us", "en-gb+f3", "de"]``), ``texts``, optional ``speed``
    ``[low, high]`` (default 175), ``pitch`` ``[low, high]`` (default 50), ``per_voice``.
    Paths: ``<voice>/<text number, 4 digits>.wav``.
    """

    name = "espeak-ng"
    _SAFE = re.compile(r"^[A-Za-z0-9_+.-]+$")

    def check(self, params: Mapping[str, Any]) -> list[str]:
        problems = _strings(params, "voices") + _strings(params, "texts")
        problems += [
            f"origin.voices: expected voice names of letters, digits, _+.-, found {v!r}"
            for v in params.get("voices", []) or []
            if isinstance(v, str) and not self._SAFE.fullmatch(v)
        ]
        problems += _number_range(params, "speed", 175, 80, 450)
        problems += _number_range(params, "pitch", 50, 0, 99)
        per_voice = params.get("per_voice")
        if per_voice is not None and (
            not isinstance(per_voice, int) or isinstance(per_voice, bool) or per_voice < 1
        ):
            problems.append(f"origin.per_voice: expected a positive integer, found {per_voice!r}")
        unknown = sorted(set(params) - {"voices", "texts", "speed", "pitch", "per_voice"})
        problems += [f"origin.{name}: unknown espeak-ng parameter" for name in unknown]
        return problems

    def plan(self, params: Mapping[str, Any], seed: int) -> list[Item]:
        texts: Sequence[str] = params["texts"]
        speed = params.get("speed", [175, 175])
        pitch = params.get("pitch", [50, 50])
        per_voice = int(params.get("per_voice", len(texts)))
        items: list[Item] = []
        for voice in params["voices"]:
            rng = random.Random(f"{seed}:{voice}")  # str seeds hash with SHA-512: stable across runs
            chosen = sorted(rng.sample(range(len(texts)), min(per_voice, len(texts))))
            for i in chosen:
                settings = {
                    "voice": voice,
                    "text": texts[i],
                    "speed": round(rng.uniform(speed[0], speed[1])),
                    "pitch": round(rng.uniform(pitch[0], pitch[1])),
                }
                items.append(Item(f"{voice}/{i:04d}.wav", settings))
        return items

    def render(self, item: Item) -> bytes:
        program = shutil.which("espeak-ng")
        if program is None:
            raise OriginError("espeak-ng: expected the espeak-ng program on PATH (apt-get install espeak-ng)")
        s = item.settings
        with tempfile.TemporaryDirectory(prefix="spoofwatch-espeak-") as tmp:
            out = Path(tmp) / "out.wav"
            cmd = [program, "-v", str(s["voice"]), "-s", str(s["speed"]), "-p", str(s["pitch"])]
            result = subprocess.run(
                [*cmd, "-w", str(out), "--", str(s["text"])], capture_output=True, check=False
            )
            if result.returncode != 0 or not out.is_file():
                raise MissingFile(
                    f"{item.path}: espeak-ng failed: {result.stderr.decode(errors='replace').strip()}"
                )
            return out.read_bytes()

    def version(self) -> str:
        program = shutil.which("espeak-ng")
        if program is None:
            return "missing"
        out = subprocess.run([program, "--version"], capture_output=True, check=False).stdout.decode()
        found = re.search(r"speech:\s*([0-9][^\s]*)", out)
        return found.group(1) if found else "unknown"


RECIPES: dict[str, Recipe] = {r.name: r for r in (EspeakNg(),)}


def recipe_problems(recipe: str, params: Mapping[str, Any]) -> list[str]:
    if recipe not in RECIPES:
        return [f"origin.recipe: expected one of {', '.join(sorted(RECIPES))}, found {recipe!r}"]
    return RECIPES[recipe].check(params)


class GeneratorReader:
    """A recipe's items as an origin; renderings cached under ``cache/generated``."""

    def __init__(self, recipe: str, params: Mapping[str, Any], seed: int, cache: Path) -> None:
        problems = recipe_problems(recipe, params)
        if problems:
            raise OriginError("; ".join(problems))
        self.recipe = RECIPES[recipe]
        self.engine_version = self.recipe.version()
        self.items = {i.path: i for i in self.recipe.plan(params, seed)}
        self.cache = cache / "generated" / recipe

    def files(self) -> list[str]:
        return sorted(self.items)

    def read(self, path: str) -> bytes:
        item = self.items[path]
        key = json.dumps(
            {"recipe": self.recipe.name, "version": self.engine_version, **item.settings}, sort_keys=True
        )
        target = self.cache / f"{hashlib.sha256(key.encode()).hexdigest()}.wav"
        if target.is_file():
            return target.read_bytes()
        data = self.recipe.render(item)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(data)
        tmp.replace(target)
        return data

    def close(self) -> None:
        return None
