"""The package's import graph, read with ``ast`` (nothing is imported): no module imports
itself back through others, and none reaches into another module's private names."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "spoofwatch"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted((SRC / PACKAGE).rglob("*.py"))}


def imports_of(path: Path, known: set[str]) -> list[tuple[str, str | None, int]]:
    """(imported module, imported name or None, line) for every package import, lazy ones too."""
    found: list[tuple[str, str | None, int]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(a.name, None, node.lineno) for a in node.names if a.name.split(".")[0] == PACKAGE]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] != PACKAGE:
                continue
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                if submodule in known:  # ``from package import module``
                    found.append((submodule, None, node.lineno))
                else:
                    found.append((node.module, alias.name, node.lineno))
    return found


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: {m for m, _, _ in imports_of(path, known) if m != name} for name, path in mods.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)) is not None:
            return cycle
    return None


def test_the_package_has_no_import_cycle() -> None:
    graph = import_graph()
    assert len(graph) > 50  # the walk found the package
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph) or [])}"


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_module_imports_another_modules_private_names() -> None:
    mods = modules()
    known = set(mods)
    reaches = [
        f"{name}:{line} imports {module}.{imported}"
        for name, path in mods.items()
        for module, imported, line in imports_of(path, known)
        if imported is not None and imported.startswith("_") and not imported.startswith("__")
    ]
    assert reaches == []


# The streaming side runs without torch: its modules, and the tests of its pure parts.
TORCH_FREE_PACKAGES = ("spoofwatch.audio", "spoofwatch.stream")
TORCH_FREE_TESTS = (
    "test_ring",
    "test_windowing",
    "test_smoothing",
    "test_speech",
    "test_pcm",
    "test_twilio",
    "test_audiohook",
    "test_jambonz",
    "test_ws_ingest",
    "test_limits",
    "test_siprec_protocols",
)


def test_streaming_modules_and_their_pure_tests_import_no_torch() -> None:
    tests = Path(__file__).resolve().parent
    program = f"""
import importlib, pkgutil, sys
sys.path[:0] = [{str(tests)!r}, {str(tests / "stream")!r}]
for package in {TORCH_FREE_PACKAGES!r}:
    root = importlib.import_module(package)
    for info in pkgutil.walk_packages(root.__path__, package + "."):
        if info.name.endswith(".mic"):
            continue  # needs PortAudio, which is not torch either; tested in test_mic
        importlib.import_module(info.name)
for name in {TORCH_FREE_TESTS!r}:
    importlib.import_module(name)
print(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers")))
"""
    result = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(SRC)},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
