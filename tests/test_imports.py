"""The packages import one way (tuner → analysis → search_spaces → trainables) and no module imports
itself through others: a walk over every `import` in the source, function-level ones included
(a lazy import hides a circle from Python, not from a reader)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("tuner", "analysis", "search_spaces", "trainables")
#: Which packages each may import (besides itself).
ALLOWED = {
    "tuner": {"analysis", "search_spaces", "trainables"},
    "analysis": {"search_spaces", "trainables"},
    "search_spaces": {"trainables"},
    "trainables": set(),
}


#: Known crossings still to remove: the Tune driver resolves a searcher's sampled point with
#: search_spaces (which itself builds on trainables.config); moving `resolved_trial` below both is
#: the follow-up. Module-level circles are already absent (see the test above).
KNOWN = {"trainables.trainable → search_spaces.spaces"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules `name` imports anywhere in its file (`from a import b` may name module a.b)."""
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")[: len(name.split(".")) - node.level + (1 if is_pkg else 0)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:  # 'a.b.c' where only 'a.b' is a module
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def graph() -> dict[str, set[str]]:
    mods = project_modules()
    return {name: imports(name, path, set(mods)) for name, path in mods.items()}


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    """One import circle of g (as a path that returns to its start), or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(g.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (c := visit(m)):
                return c
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(g):
        if n not in state and (c := visit(n)):
            return c
    return None


def _package_of_module(m: str) -> str:
    return m.split(".")[0]


def test_the_cycle_finder_finds_a_circle_and_accepts_a_tree():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_walk_sees_lazy_and_relative_imports():
    g = graph()
    assert "analysis.collect" in g["tuner.sweep"]  # imported inside a function
    assert "trainables.metric_keys" in g["trainables.loop"]


def test_no_module_imports_itself_through_others():
    assert find_cycle(graph()) is None, " → ".join(find_cycle(graph()) or [])


def test_packages_import_one_way():
    wrong = sorted(f"{a} → {b}" for a, deps in graph().items() for b in deps
                   if _package_of_module(b) != _package_of_module(a)
                   and _package_of_module(b) not in ALLOWED[_package_of_module(a)])
    assert set(wrong) == KNOWN, sorted(set(wrong) - KNOWN)
