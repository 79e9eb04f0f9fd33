"""The shape of SPEC §1, checked on the source: packages seen only through their `__init__.py`,
no import cycle between modules or between packages, no module over 500 lines, a short top.

Imports are read with `ast` from every file (function-level ones too), so a cycle that only a
late import hides still counts.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOP_LEVEL = ("daemon", "extractors", "storage")
MAX_LINES = 500
# server.py, config.py and cli.py, plus at most a dozen modules (issue 17); __init__ and
# __main__ are not modules of their own.
TOP_MODULES_ALLOWED = 3 + 12


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for top in TOP_LEVEL:
        for path in sorted((ROOT / top).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(path: Path) -> Iterator[str]:
    """Every module `path` imports (`from a import b` yields `a.b` when that is a module)."""
    tree = ast.parse(path.read_text())
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                yield candidate if candidate in MODULES else base


def _graph() -> dict[str, set[str]]:
    return {name: {m for m in _imports(path) if m in MODULES and m != name}
            for name, path in MODULES.items()}


def _package_of(module: str) -> str:
    """`daemon.smtp` for `daemon.smtp.session`; the module itself at the top of `daemon/`."""
    parts = module.split(".")
    if parts[0] != "daemon":
        return parts[0]
    return ".".join(parts[:2])


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


def test_no_module_imports_in_a_cycle() -> None:
    assert _cycle(_graph()) is None


def test_no_two_packages_import_each_other() -> None:
    packages: dict[str, set[str]] = {}
    for module, imported in _graph().items():
        mine = _package_of(module)
        packages.setdefault(mine, set()).update(
            p for p in map(_package_of, imported) if p != mine)
    assert _cycle(packages) is None


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def test_a_package_is_reached_only_through_its_init() -> None:
    """`from daemon.smtp import X` from outside `daemon/smtp/`, never `daemon.smtp.session`."""
    reaching_in = []
    for module, imported in _graph().items():
        mine = _package_of(module)
        for target in imported:
            theirs = _package_of(target)
            if theirs != mine and theirs != target and _is_package(theirs) \
                    and theirs.startswith("daemon."):
                reaching_in.append(f"{module} imports {target}")
    assert reaching_in == []


def test_pure_layers_import_nothing_above_them() -> None:
    """`extractors/` knows neither `storage/` nor `daemon/`; `storage/` does not know `daemon/`."""
    wrong = [f"{m} imports {t}" for m, imported in _graph().items() for t in imported
             if (m.startswith("extractors") and not t.startswith("extractors"))
             or (m.startswith("storage") and t.startswith("daemon"))]
    assert wrong == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_stay_under_500_lines(module: str) -> None:
    assert len(MODULES[module].read_text().splitlines()) <= MAX_LINES


def test_the_top_of_daemon_holds_few_modules() -> None:
    top = [p.name for p in (ROOT / "daemon").glob("*.py")
           if p.name not in ("__init__.py", "__main__.py")]
    assert len(top) <= TOP_MODULES_ALLOWED, sorted(top)


def test_every_package_names_what_it_exports() -> None:
    """Each `daemon/<package>/__init__.py` lists its public names in `__all__`, each bound."""
    for init in sorted((ROOT / "daemon").glob("*/__init__.py")):
        tree = ast.parse(init.read_text())
        exported = next((ast.literal_eval(n.value) for n in tree.body
                         if isinstance(n, ast.Assign)
                         and any(isinstance(t, ast.Name) and t.id == "__all__"
                                 for t in n.targets)), None)
        bound = {alias.asname or alias.name for n in tree.body
                 if isinstance(n, ast.ImportFrom) for alias in n.names}
        assert exported is not None, init
        assert set(exported) <= bound, (init, set(exported) - bound)
