"""The package's import graph: no cycles, the CLI is only imported by itself, and importing jaxppo is light."""

from __future__ import annotations

import ast
from pathlib import Path

from tests import helpers

PACKAGE = Path(__file__).resolve().parents[1] / "jaxppo"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> jaxppo modules it imports (at any depth of the file, function-level imports included)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("jaxppo"):
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith("jaxppo")]
            for target in targets:
                if target in modules and target != name:
                    graph[name].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle_in_the_package():
    graph = import_graph()
    # The package __init__ re-exports the public names; it sits above every module (only a lazy jaxppo.load).
    library = {name: {t for t in targets if t != "jaxppo"} for name, targets in graph.items()}
    assert find_cycle(library) is None, find_cycle(library)


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_library_never_imports_the_command_line():
    for name, targets in import_graph().items():
        if not name.startswith("jaxppo.cli"):
            assert not any(t.startswith("jaxppo.cli") for t in targets), (name, targets)


def test_importing_jaxppo_is_light_and_changes_no_process_state():
    # jax itself sets a few variables when imported (TF_CPP_MIN_LOG_LEVEL, ...): compare after importing jax.
    code = ("import os, sys, jax; before = dict(os.environ); import jaxppo; "
            "assert dict(os.environ) == before, 'environment changed'; "
            "heavy = [m for m in ('gymnax', 'orbax.checkpoint', 'tensorboardX', 'wandb', 'matplotlib', 'brax', "
            "'jumanji', 'craftax', 'tyro') if m in sys.modules]; "
            "assert not heavy, heavy; "
            "from jax._src import xla_bridge; assert not xla_bridge.backends_are_initialized(); print('ok')")
    result = helpers.run_python(code)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-2000:]
