"""The import graph of curate/, models/ and flows/, read from every import statement, at the top of
a module and inside functions alike: no cycle, and no import against the declared layer order

    0  leaves      curate.errors, curate.files (atomic files, config diffs), curate.stats (pure
                   statistics)
    1  models      model code: may import the leaves, nothing else of curate
    2  curate      the library: stages, scoring, io, audit, report, CLI
    3  flows       the only place that imports ray and prefect
    4  the CLI     curate.cli: the thin layer on top, which starts the flows

A module may import its own layer and the layers below it. (A package's __init__ importing its
submodules is the usual registration, and a submodule importing a sibling, not the package, is how
our registries avoid a cycle: models/heads/base.py, models/backbones/base.py.)"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("curate", "models", "flows")
LEAVES = {"curate.errors", "curate.files", "curate.stats"}


def layer(module: str) -> int:
    if module in LEAVES:
        return 0
    if module == "curate.cli" or module.startswith("curate.cli."):
        return 4
    return {"models": 1, "curate": 2, "flows": 3}[module.split(".")[0]]


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for p in (ROOT / pkg).rglob("*.py"):
            out[".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")] = p
    return out


def graph() -> dict[str, set[str]]:
    mods = modules()

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    edges = {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        out = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
                # ``from pkg import sub``: the edge goes to the submodule; other names to the module
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            else:
                continue
            for t in targets:
                if t.split(".")[0] in PACKAGES:
                    r = t if t in mods else resolve(t)
                    if r and r != name:
                        out.add(r)
        edges[name] = out
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_the_checker_finds_a_cycle_and_an_uphill_import():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert layer("models.cards") > layer("curate.files") and layer("curate.cli") > layer("models.cards")


def test_no_import_cycle():
    assert cycles(graph()) == []


def test_no_import_runs_uphill():
    bad = sorted(f"{a} -> {b}" for a, bs in graph().items() for b in bs if layer(b) > layer(a))
    assert bad == []
