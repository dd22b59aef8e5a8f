"""Every research script answers ``--help`` (it imports, and its names still exist in
src). One interpreter runs them all, so torch is imported once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RESEARCH = REPO / "research"
SCRIPTS = sorted(p.name for p in RESEARCH.glob("*.py"))

RUNNER = """
import contextlib, io, json, runpy, sys
results = {}
for name in sys.argv[1:]:
    sys.argv = [name, "--help"]
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            runpy.run_path(name, run_name="__main__")
        results[name] = "exited without SystemExit: --help did not stop it"
    except SystemExit as exc:
        text = out.getvalue()
        ok = exc.code in (0, None) and "usage" in text.lower()
        results[name] = "ok" if ok else f"{exc.code}: {text[-300:]}"
    except BaseException as exc:
        results[name] = f"{type(exc).__name__}: {exc}"
print(json.dumps(results))
"""


@pytest.mark.slow
def test_every_research_script_answers_help() -> None:
    assert len(SCRIPTS) > 20
    shared = {"spectral_blocks.py"}  # the harness module: no command line
    scripts = [s for s in SCRIPTS if s not in shared]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(RESEARCH)])}
    result = subprocess.run(
        [sys.executable, "-c", RUNNER, *scripts], cwd=RESEARCH, capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr[-2000:]
    outcomes = json.loads(result.stdout.strip().splitlines()[-1])
    assert {name: outcome for name, outcome in outcomes.items() if outcome != "ok"} == {}
    assert sorted(outcomes) == scripts


def test_the_index_lists_every_script() -> None:
    index = (RESEARCH / "README.md").read_text()
    assert [s for s in SCRIPTS if f"`{s}`" not in index] == []
