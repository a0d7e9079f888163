"""The shape of the package, held by tests: who may import what, and what nobody may do."""

from __future__ import annotations

import ast
import functools
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "outreach"
THIRD_PARTY = {"apscheduler", "sqlalchemy", "sendgrid", "python_http_client", "jinja2", "click", "rich",
               "starlette", "hypercorn", "pandas", "email_validator", "holidays", "cryptography", "markupsafe"}
TRANSPORT_NAMES = {"sendgrid", "smtp", "outbox", "memory"}


@functools.lru_cache(maxsize=1)
def modules() -> dict[str, ast.Module]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        out[name] = ast.parse(path.read_text(encoding="utf-8"), str(path))
    return out


def imports(tree: ast.Module, known: set[str] = frozenset()) -> set[str]:
    """Every module a module imports, at the top or inside a function (`from P import m`,
    where m is a module of package P, imports m)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            for a in node.names:
                found.add(f"{base}.{a.name}" if f"{base}.{a.name}" in known else base)
    return found


def test_only_the_ledger_touches_the_schema():
    for name, tree in modules().items():
        if name.startswith("outreach.ledger"):
            continue
        assert "outreach.ledger.schema" not in imports(tree, set(modules())), name
        assert not {i for i in imports(tree, set(modules())) if i.split(".")[0] == "sqlalchemy"}, \
            f"{name} imports SQLAlchemy: only the ledger talks to the database"


def test_the_states_and_the_event_rules_need_no_database():
    code = ("import sys\n"
            "class NoSQL:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] == 'sqlalchemy': raise ImportError('no SQLAlchemy here')\n"
            "sys.meta_path.insert(0, NoSQL())\n"
            "import outreach.states, outreach.events, outreach.plan, outreach.dispatch\n"
            "print('ok')")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.stdout.strip() == "ok", done.stderr


def test_no_import_cycle_among_the_modules():
    trees = modules()
    graph = {name: {i for i in imports(tree, set(trees)) if i in trees and i != name} for name, tree in trees.items()}
    # A package's face (its __init__) is where its modules' names come from: an import of
    # `outreach.ledger.x` also runs `outreach.ledger`, so both count as edges.
    for name, deps in graph.items():
        for dep in list(deps):
            parent = dep.rpartition(".")[0]
            if parent in trees and parent != name and not name.startswith(parent + "."):
                deps.add(parent)
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(dep):] + [dep]))
            if dep not in state:
                visit(dep, path + [dep])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_no_third_party_module_is_patched_or_its_private_methods_overridden():
    for name, tree in modules().items():
        aliases = {}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for a in node.names:
                    root = (a.name if isinstance(node, ast.Import) else (node.module or "")).split(".")[0]
                    if root in THIRD_PARTY:
                        aliases[a.asname or a.name.split(".")[0]] = root
        for node in ast.walk(tree):
            if isinstance(node, (ast.Assign, ast.AugAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for t in targets:
                    if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id in aliases:
                        raise AssertionError(f"{name} patches {t.value.id}.{t.attr}")
            if isinstance(node, ast.ClassDef) and any(isinstance(b, ast.Name) and b.id in aliases for b in node.bases):
                private = [f.name for f in node.body if isinstance(f, ast.FunctionDef)
                           and f.name.startswith("_") and not f.name.endswith("__")]
                assert not private, f"{name}.{node.name} overrides private methods {private}"
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.endswith("__") \
                    and isinstance(node.value, ast.Attribute) and node.value.attr in ("_aps", "scheduler"):
                raise AssertionError(f"{name} reaches into the scheduler's {node.attr}")


def test_nothing_outside_the_transports_compares_a_transport_by_name():
    for name, tree in modules().items():
        if name.startswith("outreach.transports"):
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.Compare):
                continue
            sides = [node.left, *node.comparators]
            names = {s.value for s in sides if isinstance(s, ast.Constant) and isinstance(s.value, str)}
            transport = any(isinstance(s, ast.Attribute) and s.attr in ("name", "transport") for s in sides)
            assert not (names & TRANSPORT_NAMES and transport), f"{name}, line {node.lineno}"


def test_every_module_fits_on_a_few_screens():
    for path in PACKAGE.rglob("*.py"):
        assert len(path.read_text().splitlines()) <= 450, path


def test_the_readme_maps_every_module():
    readme = (ROOT / "README.md").read_text().split("## Development", 1)[1]
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if path.name in ("__init__.py", "__main__.py"):
            continue
        if path.parent == PACKAGE:
            assert f"`{rel}`" in readme, rel
        else:  # a package's modules: the folder, then each file by name
            assert f"`{Path(rel).parent.as_posix()}/`" in readme and f"`{path.name}`" in readme, rel
