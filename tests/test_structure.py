"""The package layout: no import circles, commands on top, imports at the top, code maps.

Read from the source with `ast` (nothing is imported), so a circle hidden inside a function
counts too. `python tests/test_structure.py` prints the package-level import graph.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "sassid_jax"
# What runs a command; no other module of the package may import these.
COMMANDS = ("sassid_jax.cli", "sassid_jax.train", "sassid_jax.modes")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    """{dotted name: path} of every module of the package (packages as their __init__)."""
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(tree: ast.AST, known: dict[str, Path]) -> list[tuple[str, ast.stmt]]:
    """(imported module of the package, statement) for every import in tree, at any depth.
    `from pkg import name` counts as importing pkg.name when that is a module, else pkg."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, node) for a in node.names if a.name.startswith("sassid_jax")]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sassid_jax"):
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.append((full if full in known else node.module, node))
    return found


def import_graph() -> dict[str, set[str]]:
    """{module: modules of the package it imports}."""
    known = modules()
    graph = {}
    for name, path in known.items():
        tree = ast.parse(path.read_text(), str(path))
        graph[name] = {target for target, _ in _imports(tree, known) if target != name}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def is_command(name: str) -> bool:
    return any(name == c or name.startswith(c + ".") for c in COMMANDS)


def package_of(name: str) -> str:
    """sassid_jax.io.photos -> io; sassid_jax.train -> train; sassid_jax -> (top)."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else "(top)"


def test_no_import_circle():
    found = circles(import_graph())
    assert not found, "import circles: " + "; ".join(" <-> ".join(c) for c in found)


def test_circle_finder_finds_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_graph_sees_the_known_imports():
    # Guards the reader above: it must see plain, from-package and function-level imports.
    graph = import_graph()
    assert "sassid_jax.nn.layers" in graph["sassid_jax.nn.bnn"]
    assert "sassid_jax.training.sharding" in graph["sassid_jax.training.run_context"]
    assert "sassid_jax.modes.denoise" in graph["sassid_jax.cli"]


def test_library_does_not_import_the_commands():
    graph = import_graph()
    bad = sorted(
        f"{name} -> {target}"
        for name, targets in graph.items()
        if not is_command(name) and name != "sassid_jax"
        for target in targets
        if is_command(target)
    )
    assert not bad, "library modules import a command: " + ", ".join(bad)


def _comment_near(lines: list[str], lineno: int) -> bool:
    """A comment on the import's line, or on the line above its group of imports."""
    i = lineno - 1
    while i > 0 and lines[i - 1].strip().startswith(("from ", "import ")):
        i -= 1
    return "#" in lines[lineno - 1] or lines[i - 1].strip().startswith("#")


def test_imports_are_at_the_top():
    """A function-level import needs a comment saying why (a heavy dependency loaded late)."""
    bad = []
    for path in modules().values():
        text = path.read_text()
        lines = text.splitlines()
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for inner in ast.walk(node):
                late = isinstance(inner, ast.Import | ast.ImportFrom)
                if late and not _comment_near(lines, inner.lineno):
                    bad.append(f"{path.relative_to(REPO)}:{inner.lineno}")
    assert not bad, "function-level imports without a comment saying why: " + ", ".join(bad)


def _docstring_entries(path: Path) -> list[str]:
    """Names of the '- `name`: ...' lines of a package's docstring."""
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    return [
        line.split("`")[1] for line in doc.splitlines() if line.startswith("- `") and "`:" in line
    ]


PACKAGES = sorted(p.parent for p in PACKAGE.rglob("__init__.py"))


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_package_docstring_is_its_code_map(package: Path):
    listed = _docstring_entries(package / "__init__.py")
    present = sorted(
        p.stem if p.is_file() else p.name
        for p in package.iterdir()
        if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()
    )
    assert len(listed) == len(set(listed)), f"{package.name}: a module is listed twice"
    assert sorted(listed) == present, (
        f"{package.relative_to(REPO)}/__init__.py lists {sorted(listed)}, the folder {present}"
    )


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300
    )


def test_light_imports_load_no_tensorflow():
    """Config checks and `import sassid_jax` stay fast: TensorFlow loads only with a dataset."""
    run = _run(
        "import sys, sassid_jax, sassid_jax.configuration, sassid_jax.nn, sassid_jax.modes.denoise;"
        "print('tensorflow' in sys.modules)"
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "False"


def test_public_api_resolves():
    run = _run(
        "import sassid_jax;"
        "missing = [n for n in sassid_jax.__all__ if getattr(sassid_jax, n, None) is None];"
        "print(missing, len(sassid_jax.__all__))"
    )
    assert run.returncode == 0, run.stderr[-2000:]
    missing, count = run.stdout.strip().rsplit(" ", 1)
    assert missing == "[]" and int(count) >= 10


def package_graph() -> dict[str, set[str]]:
    """{package: packages it imports}, modules of the top level as their own names."""
    edges: dict[str, set[str]] = defaultdict(set)
    for name, targets in import_graph().items():
        for target in targets:
            a, b = package_of(name), package_of(target)
            if a != b:
                edges[a].add(b)
    return edges


if __name__ == "__main__":
    for source, targets in sorted(package_graph().items()):
        print(f"{source:>14} -> {', '.join(sorted(targets))}")
    print("circles:", circles(import_graph()) or "none")
