"""The package's modules import each other one way: no module reaches itself through its imports.

Every import statement counts, those inside functions too (a deferred import hides a circle from Python's import
machinery, not from the design). A package's ``__init__`` imports its submodules, so importing a package is an edge
to each module its ``__init__`` imports.
"""

import ast
import os
from pathlib import Path

import hf_ddpm

PACKAGE = Path(hf_ddpm.__file__).resolve().parent


def module_graph(package: Path) -> dict[str, set[str]]:
    """Each module of ``package`` (dotted name) → the modules of the package it imports anywhere in its source."""
    modules: dict[str, tuple[Path, list[str]]] = {}
    # os.walk follows links: hf_ddpm/pipelines is a link to the repository's pipelines/ (pathlib's rglob skips it)
    paths = sorted(Path(folder, file) for folder, _, files in os.walk(package, followlinks=True)
                   for file in files if file.endswith(".py"))
    for path in paths:
        parts = [package.name, *path.relative_to(package).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
            home = parts
        else:
            home = parts[:-1]
        modules[".".join(parts)] = (path, home)
    graph = {}
    for name, (path, home) in modules.items():
        imported = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                base = home[:len(home) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                # ``from x import y``: the module x.y where y is one, else the module (or package) x
                candidates = [f"{target}.{alias.name}" if f"{target}.{alias.name}" in modules else target
                              for alias in node.names]
            elif isinstance(node, ast.Import):
                candidates = [alias.name for alias in node.names]
            else:
                continue
            imported.update(c for c in candidates if c in modules and c != name)
        graph[name] = imported
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each a set of modules that import each
    other, directly or through others."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_deferred_and_package_imports(tmp_path):
    """The checker finds a circle closed by an import inside a function through a package's ``__init__`` — the
    shape of the one this project had (training.config → hub → hub.card → training.config)."""
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("from .b import thing\n")
    (package / "sub" / "b.py").write_text("from ..a import other\nthing = 1\n")
    (package / "a.py").write_text("def other():\n    from .sub import thing\n    return thing\n")
    (package / "c.py").write_text("from . import a\n")
    graph = module_graph(package)
    assert graph["pkg.c"] == {"pkg.a"}
    assert circles(graph) == [["pkg.a", "pkg.sub", "pkg.sub.b"]]


def test_hf_ddpm_has_no_import_circle():
    graph = module_graph(PACKAGE)
    assert "hf_ddpm.hub" in graph["hf_ddpm.training.trainer"] | graph["hf_ddpm.training.outputs"]
    assert circles(graph) == []
