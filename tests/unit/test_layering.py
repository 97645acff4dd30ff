"""The layers of docs/architecture.md, kept by a test: who may import whom, and no import cycle at all.

Every import statement counts, at module level or inside a function. Modules are the nodes:
`catalog.api.parsing`, `devhost.host`, `function_app`; `from . import codec` is an edge to
`catalog.codec`, `from .errors import X` one to `catalog.errors`.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUTER = ("catalog.api", "catalog.tools", "catalog.adapters", "catalog.remote")
FACADE = "catalog"  # catalog/__init__.py: the package's public names, loaded lazily
COMPOSITION_ROOTS = {"catalog.bootstrap"}  # the one core module that picks an adapter
ENTRY_POINTS = {"catalog.__main__"}  # `python -m catalog`: the CLI, or `serve` (the dev host)
SDKS = ("azure.data.tables", "azure.storage", "azure.core", "azure.identity")
REMOTE_THIRD_PARTY = {"requests"}  # the HTTP client's only dependency besides the standard library


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_files() -> dict[str, Path]:
    files = {module_name(p): p for top in ("catalog", "devhost") for p in (ROOT / top).rglob("*.py")}
    files["function_app"] = ROOT / "function_app.py"
    return files


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Every module `name` imports (ours by module, third-party by their dotted name)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                child = f"{base}.{alias.name}"
                out.add(child if child in known else base)
    return out


def graph() -> dict[str, set[str]]:
    files = source_files()
    known = set(files)
    return {name: imports_of(name, path, known) for name, path in files.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module, or a module importing itself (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in edges:
                continue  # third-party
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
            if len(component) > 1 or v in edges.get(v, ()):
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def layer(name: str) -> str:
    if name == "function_app":
        return "app"
    if name.startswith("devhost"):
        return "devhost"
    for outer in OUTER:
        if name == outer or name.startswith(outer + "."):
            return outer.split(".")[1]
    if name in ENTRY_POINTS:
        return "entry"
    return "core"


def violations(edges: dict[str, set[str]]) -> list[str]:
    """Each import that breaks a rule of the layer map, as 'importer -> imported (rule)'."""
    bad = []
    for src, targets in sorted(edges.items()):
        for dst in sorted(targets):
            ours = dst in edges
            where = layer(src)
            if where == "core" and src not in COMPOSITION_ROOTS and ours and layer(dst) not in ("core",) and not (
                    src == FACADE and layer(dst) == "remote"):
                bad.append(f"{src} -> {dst} (the core imports no outer layer)")
            if where == "core" and dst.startswith(("devhost", "azure.functions")):
                bad.append(f"{src} -> {dst} (the core knows no host)")
            if src in COMPOSITION_ROOTS and ours and layer(dst) not in ("core", "adapters"):
                bad.append(f"{src} -> {dst} (the composition root picks an adapter, nothing else)")
            if where == "adapters" and ours and layer(dst) != "adapters" and dst not in (
                    "catalog.store", "catalog.errors", "catalog.settings"):
                bad.append(f"{src} -> {dst} (adapters import only the ports, errors and settings)")
            if where == "api" and ours and layer(dst) not in ("core", "api") or \
                    where == "api" and dst in COMPOSITION_ROOTS:
                bad.append(f"{src} -> {dst} (the HTTP layer imports only the core)")
            if where == "devhost" and ours and layer(dst) != "devhost" and not (
                    dst == "catalog.settings" or dst.startswith("catalog.adapters")):
                bad.append(f"{src} -> {dst} (devhost imports only the catalog's settings and adapters)")
            if dst.startswith(SDKS) and where not in ("adapters", "devhost") and not src.startswith("devhost"):
                bad.append(f"{src} -> {dst} (only adapters talk to the storage SDKs)")
            if src.startswith("catalog") and dst.startswith("azure.functions"):
                bad.append(f"{src} -> {dst} (catalog/ never imports azure.functions)")
            if ours and layer(dst) == "tools" and where not in ("tools", "entry"):
                bad.append(f"{src} -> {dst} (only the entry point uses the tooling)")
            if where == "remote" and ours and layer(dst) != "remote":
                bad.append(f"{src} -> {dst} (the HTTP client imports nothing from the catalog)")
            if where == "remote" and not ours and dst.split(".")[0] not in (
                    *sys.stdlib_module_names, *REMOTE_THIRD_PARTY):
                bad.append(f"{src} -> {dst} (the HTTP client needs only the standard library and requests)")
            if ours and layer(dst) == "remote" and where != "remote" and src != FACADE:
                bad.append(f"{src} -> {dst} (only the package facade imports the HTTP client)")
    return bad


def test_no_import_cycle_anywhere():
    assert cycles(graph()) == []


def test_every_import_follows_the_layer_map():
    assert violations(graph()) == []


def test_the_layers_exist_as_folders():
    edges = graph()
    for name in ("catalog.api", "catalog.adapters.azure", "catalog.adapters.memory", "catalog.tools.cli",
                 "catalog.service", "catalog.bootstrap", "devhost.host", "function_app", "catalog.remote.client"):
        assert name in edges, name


def test_the_checks_bite():
    """The checker itself: a cycle through a function-level import and each kind of forbidden import."""
    synthetic = {"catalog.wal": {"catalog.index"}, "catalog.index": {"catalog.wal"},
                 "catalog.service": {"catalog.tools.verify"}, "catalog.tools.verify": {"catalog.service"},
                 "catalog.adapters.azure": {"catalog.wal", "azure.data.tables"},
                 "catalog.api.parsing": {"catalog.bootstrap"}, "catalog.bootstrap": set(),
                 "devhost.host": {"catalog.service"}, "catalog.keys": {"azure.core"},
                 "catalog.remote.client": {"catalog.remote.wire", "catalog.codec", "azure.core", "httpx", "json",
                                           "requests.adapters"},
                 "catalog.remote.wire": set(), "catalog.codec": set(),
                 "catalog.tools.cli": {"catalog.remote"}, "catalog.remote": {"catalog.remote.client"},
                 "catalog": {"catalog.remote", "catalog.client"}, "catalog.client": set()}
    assert sorted(map(tuple, cycles(synthetic))) == [("catalog.index", "catalog.wal"),
                                                     ("catalog.service", "catalog.tools.verify")]
    found = "\n".join(violations(synthetic))
    for expected in ("catalog.service -> catalog.tools.verify", "catalog.adapters.azure -> catalog.wal",
                     "catalog.api.parsing -> catalog.bootstrap", "devhost.host -> catalog.service",
                     "catalog.keys -> azure.core", "catalog.remote.client -> catalog.codec",
                     "catalog.remote.client -> httpx", "catalog.tools.cli -> catalog.remote"):
        assert expected in found, (expected, found)
    flagged = {line.split(" (")[0] for line in violations(synthetic)}
    for allowed in ("catalog -> catalog.remote", "catalog.remote.client -> catalog.remote.wire",
                    "catalog.remote.client -> json", "catalog.remote.client -> requests.adapters"):
        assert allowed not in flagged, (allowed, found)

    source = "def f():\n    from .tools import cli\n"
    tree_edges = {node.module for node in ast.walk(ast.parse(source)) if isinstance(node, ast.ImportFrom)}
    assert tree_edges == {"tools"}  # imports inside functions are seen by ast.walk


def test_serve_without_the_dev_host_packages_says_what_to_install(monkeypatch, capsys):
    import sys

    from catalog.__main__ import main

    monkeypatch.setitem(sys.modules, "devhost.serve", None)  # as if uvicorn or azure.functions were missing
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'az-table-catalog-functions[serve]'" in err and len(err.strip().splitlines()) == 1
