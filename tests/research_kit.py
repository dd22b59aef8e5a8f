"""Loading a research script (research/*.py, not a package) as a module for its tests."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

RESEARCH = Path(__file__).resolve().parents[1] / "research"


def research_script(name: str) -> ModuleType:
    """research/<name>.py, imported once and registered under ``name`` (dataclasses look
    their module up in ``sys.modules``), with research/ on the path for its own imports."""
    if name in sys.modules:
        return sys.modules[name]
    if str(RESEARCH) not in sys.path:  # scripts import their siblings by bare name, as when run
        sys.path.insert(0, str(RESEARCH))
    spec = importlib.util.spec_from_file_location(name, RESEARCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
