"""pyproject's extras and the CLI's word for a missing one."""

from __future__ import annotations

import io
import re
import tomllib
from contextlib import redirect_stderr
from pathlib import Path

import pytest

from spoofwatch import cli

PYPROJECT = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())


def names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\[<>=!~ ;]", r, maxsplit=1)[0].lower() for r in requirements}


def test_the_core_leaves_each_optional_package_to_its_extra() -> None:
    core = names(PYPROJECT["project"]["dependencies"])
    extras = {k: names(v) for k, v in PYPROJECT["project"]["optional-dependencies"].items()}
    assert set(extras) >= {"serve", "mic", "mqtt", "train", "onnx", "dev"}
    for module, extra in cli._EXTRA_OF.items():
        package = {"onnx": "onnx", "onnxruntime": "onnxruntime"}.get(module, module)
        assert package not in core, f"{package} is optional ([{extra}]) but in the core"
        assert package in extras[extra], f"expected {package} in the [{extra}] extra"
    assert "torch" in core and not any(r.startswith("torch==") for r in PYPROJECT["project"]["dependencies"])
    assert PYPROJECT["project"]["license"] == "MIT"


def test_a_missing_extra_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    def needs_websockets(args: object, out: object) -> int:
        raise ModuleNotFoundError("No module named 'websockets'", name="websockets")

    monkeypatch.setitem(cli.COMMANDS, "serve", needs_websockets)
    err = io.StringIO()
    with redirect_stderr(err):
        assert cli.main(["serve"]) == 2
    assert "pip install 'spoofwatch[serve]'" in err.getvalue()


def test_an_unrelated_missing_module_still_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(args: object, out: object) -> int:
        raise ModuleNotFoundError("No module named 'nowhere'", name="nowhere")

    monkeypatch.setitem(cli.COMMANDS, "serve", broken)
    with pytest.raises(ModuleNotFoundError):
        cli.main(["serve"])
