"""The scripts of experiments/ as modules, for tests: `load("benchmark")` imports experiments/benchmark.py.

experiments/ is not a package: its scripts run from the repository root and import their siblings by plain name
(`import common`, `import convergence`). `load` makes that work without leaving anything behind: while a script
is executed, experiments/ is on sys.path and the siblings loaded before are in sys.modules under their plain
names; afterwards both are as they were. Modules are cached, so a script is executed once per test session and
its siblings are shared (the `common` that `benchmark` uses is `load("common")`).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
"""The folder of the experiment scripts."""

_loaded: dict[str, ModuleType] = {}


def script_names() -> list[str]:
    """Module names of the scripts in experiments/ (file stems), sorted."""
    return sorted(path.stem for path in EXPERIMENTS.glob("*.py"))


def load(name: str) -> ModuleType:
    """experiments/<name>.py as a module (cached), with the sibling modules it imports loaded the same way.

    Args:
      name: a script's file stem, e.g. "benchmark" or "common".
    Returns:
      The executed module. Running it as a script (`__name__ == "__main__"`) is left to subprocess tests.
    Raises:
      ValueError: no such script.
    """
    if name in _loaded:
        return _loaded[name]
    siblings = script_names()
    if name not in siblings:
        raise ValueError(f"{name!r}: no experiments/{name}.py; scripts: {', '.join(siblings)}")
    saved_modules = {sibling: sys.modules.get(sibling) for sibling in siblings}
    saved_path = list(sys.path)
    for sibling in siblings:  # `import common` inside the script finds the cached module, or experiments/common.py
        sys.modules.pop(sibling, None)
    sys.modules.update(_loaded)
    sys.path.insert(0, str(EXPERIMENTS))
    try:
        spec = importlib.util.spec_from_file_location(name, EXPERIMENTS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while the class body runs
        spec.loader.exec_module(module)
        for sibling in siblings:  # siblings the script imported for the first time are kept for later loads
            if sibling not in _loaded and sibling in sys.modules:
                _loaded[sibling] = sys.modules[sibling]
    finally:
        sys.path[:] = saved_path
        for sibling, previous in saved_modules.items():
            if previous is None:
                sys.modules.pop(sibling, None)
            else:
                sys.modules[sibling] = previous
    return _loaded[name]
