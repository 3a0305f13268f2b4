"""The package's import graph: no cycles, and the library never imports the CLI.

Every ``import`` / ``from ... import`` statement counts, at any nesting level (a function-level import is
still a dependency, only a later one). Run ``python tests/test_imports.py`` to print the graph's problems.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "fastgan"
# Modules allowed to import fastgan.commands: the CLI itself.
CLI = ("fastgan.commands", "fastgan.cli", "fastgan.__main__")


def modules(root: Path = PACKAGE) -> dict[str, Path]:
    """Dotted name -> file, for every module of the package. A compiled extension counts through its
    ``.pyi`` stub, so ``from fastgan.metrics import _trace_sqrt`` names that module, not the package."""
    out = {}
    for p in sorted(root.rglob("*.py*")):
        if p.suffix not in (".py", ".pyi"):
            continue
        parts = list(p.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out.setdefault(".".join(parts), p)
    return out


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the package modules it imports."""
    mods = modules(root)

    def known(name: str) -> str | None:  # a.b.c.attr -> the longest prefix that is a module
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        if path.suffix == ".pyi":
            continue
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: level 1 is this package, 2 its parent, ...
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            for t in targets:
                if t.split(".")[0] == root.name and (k := known(t)) and k != mod:
                    graph[mod].add(k)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph)))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Library modules importing the CLI layer."""
    return [f"{m} -> {t}" for m, ts in sorted(graph.items()) if not m.startswith(CLI)
            for t in sorted(ts) if t.startswith("fastgan.commands")]


def test_the_walker_sees_nested_relative_and_extension_imports(tmp_path):
    """Negative controls: the checks below would catch what they claim to."""
    pkg = tmp_path / "fastgan"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "commands").mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "commands" / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from . import a\n")
    (pkg / "sub" / "_native.pyi").write_text("def f() -> None: ...\n")
    (pkg / "sub" / "a.py").write_text("def f():\n    if True:\n        from ..sub import b\n")
    (pkg / "sub" / "b.py").write_text("from fastgan.sub.a import f\nimport fastgan.commands\n")
    (pkg / "sub" / "c.py").write_text("from fastgan.sub import _native\n")
    g = import_graph(pkg)
    assert g["fastgan.sub.a"] == {"fastgan.sub.b"}  # relative, inside a function, inside an if
    assert g["fastgan.sub.c"] == {"fastgan.sub._native"}  # the extension, not its package
    assert cycles(g) == [["fastgan.sub.a", "fastgan.sub.b"]]
    assert upward_imports(g) == ["fastgan.sub.b -> fastgan.commands"]


def test_no_import_cycles_in_the_package():
    g = import_graph()
    assert len(g) > 50 and "fastgan.engine.build" in g["fastgan.engine.loop"]  # the walk saw the package
    assert cycles(g) == []


def test_only_the_cli_imports_fastgan_commands():
    g = import_graph()
    assert "fastgan.commands._options" in g["fastgan.commands.train"]  # the walk saw the commands
    assert upward_imports(g) == []


# Third-party packages of the optional extras: a module that needs one is skipped where it is missing.
OPTIONAL = {"onnx", "onnxruntime", "onnxscript", "triton", "nvidia", "lmdb", "tensorboard"}


def test_every_module_imports():
    """Each module loads on its own (the quick lane then exercises them through the other tests)."""
    import importlib

    missing = []
    for name, path in modules().items():
        if path.suffix == ".pyi" or name == "fastgan.__main__":
            continue
        try:
            importlib.import_module(name)
        except ImportError as e:
            if (e.name or "").split(".")[0] not in OPTIONAL:
                raise
            missing.append(f"{name} ({e.name})")
    assert len(missing) <= 3, missing  # at most the ONNX, DALI and LMDB modules, where those extras are absent


def test_importing_the_library_loads_no_command_module():
    code = ("import sys, fastgan.export, fastgan.metrics, fastgan.engine, fastgan.data; "
            "print([m for m in sys.modules if m.startswith('fastgan.commands')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.strip() == "[]", out.stdout


if __name__ == "__main__":
    graph = import_graph()
    problems = [f"CYCLE: {' <-> '.join(c)}" for c in cycles(graph)]
    problems += [f"UPWARD: {u}" for u in upward_imports(graph)]
    print("\n".join(problems) or f"{len(graph)} modules: no cycles, no library import of fastgan.commands")
    sys.exit(1 if problems else 0)
