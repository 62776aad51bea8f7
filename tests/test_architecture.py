"""The rules of the code's shape (docs/architecture.md), checked on the source itself.

- no import cycle between rejoinder modules, deferred imports (inside functions) too;
- packages in one order (ORDER): each imports only packages below it;
- no module imports another module's private (_underscored) name, and tests and
  benchmarks reach nothing private either;
- no source file over 450 lines (a guide to where jobs part, not a wall to press against);
- the runtime never imports `rejoinder.testing` (test-data generators).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
MAX_LINES = 450


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted((SRC / "rejoinder").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> list[tuple[str, str | None, int]]:
    """(module imported, name taken from it or None, line) for every import in the file."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, None, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for a in node.names:
                found.append((base, a.name, node.lineno))
    return found


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for name, path in MODULES.items():
        for module, taken, _ in _imports(name, path):
            target = f"{module}.{taken}" if taken and f"{module}.{taken}" in MODULES else module
            if target in MODULES and target != name:
                graph[name].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles_between_modules():
    assert _cycles(_graph()) == []


def test_the_checker_sees_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


ORDER = [
    "errors", "version", "options", "progress", "atomic", "db", "stores", "dialogue", "tokenizers",
    "formats", "padding", "data", "modeling", "safety", "generation", "training", "evaluation",
    "export", "chat", "judging", "serve", "quickstart", "improve", "rejoinder", "arguments", "cli",
    "__main__",
    "testing",
]  # fmt: skip
"""rejoinder's packages (and top-level modules), lowest first: each may import only those
before it, deferred imports included. A package's `commands` module is the command
line's and stands with `cli`; "rejoinder" is the package's own __init__."""


def _package(module: str) -> str:
    parts = module.split(".")
    if parts[-1] == "commands":
        return "cli"
    return parts[1] if len(parts) > 1 else parts[0]


def test_packages_import_only_packages_below_them():
    rank = {name: i for i, name in enumerate(ORDER)}
    assert set(rank) >= {_package(m) for m in MODULES}, "a package missing from ORDER"
    upward = {}
    for name, targets in _graph().items():
        for target in targets:
            a, b = _package(name), _package(target)
            if rank[b] > rank[a]:
                upward.setdefault((a, b), []).append(f"{name} -> {target}")
    assert upward == {}


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def test_no_module_imports_a_private_name_of_another():
    bad = [
        f"{path.relative_to(ROOT)}:{line} imports {taken} from {module}"
        for name, path in MODULES.items()
        for module, taken, line in _imports(name, path)
        if module.startswith("rejoinder") and taken and _private(taken)
    ]
    assert bad == []


def test_tests_and_benchmarks_use_public_names():
    bad = []
    for path in [*ROOT.glob("tests/**/*.py"), *ROOT.glob("benchmarks/*.py")]:
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("rejoinder"):
                bad += [
                    f"{path.name}:{node.lineno} {a.name}" for a in node.names if _private(a.name)
                ]
            elif (
                isinstance(node, ast.Attribute)
                and _private(node.attr)
                and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
            ):
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno} .{node.attr}")
    assert bad == []


def test_no_source_file_is_over_the_limit():
    long = {
        str(p.relative_to(ROOT)): n
        for p in MODULES.values()
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_the_runtime_never_imports_the_test_data_generators():
    graph = _graph()
    users = [
        name
        for name, targets in graph.items()
        if not name.startswith("rejoinder.testing")
        and any(t.startswith("rejoinder.testing") for t in targets)
    ]
    assert users == []
