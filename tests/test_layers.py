"""The package's shape: its layers, no import circles, no giant classes or functions.

mpitiny is layered:

- ``mpitiny/dag/``: the DAG model, its loading and its conversions; pure Python and numpy;
- ``mpitiny/queue/``: the one-sided machinery (shared memory, steal queues, release counts,
  result and state stores);
- ``mpitiny/io/``: files only (run directories, journals, atomic commits, ingested inputs);
- ``mpitiny/engine/``: the engine, which uses all of the above;
- at the top: ``api``, ``cli``, ``report`` (users of the engine), ``errors``, ``state``, ``tasks``.

The tests here read every module's source (``ast``: nothing is imported, so a broken module
fails here with the reason, not with an ImportError) and check that the lower layers do not
import the engine or its users, and that no import circle exists. Every ``import`` statement
counts, a lazy one inside a function as much as one at the top of the module; for the circles,
those under ``if TYPE_CHECKING:`` do not (they never run).
"""
from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "mpitiny"

MAX_CLASS_LINES = 399       # "every class under 400 lines"
MAX_FUNCTION_LINES = 80

# What the lower layers may not import at all: the engine and what is built on it.
ENGINE_AND_USERS = ("mpitiny.engine", "mpitiny.cli", "mpitiny.api", "mpitiny.report",
                    "mpitiny.__main__")
# mpitiny/dag/ is the bottom layer: none of the queue, and of io only the count of an input's
# splits (dag/load.py checks a "splits" family against the input it names), inside a function.
DAG_MAY_IMPORT_LAZILY = ("mpitiny.io.splits",)


@dataclass(frozen=True)
class Import:
    source: str          # the importing module, e.g. "mpitiny.io.rundir"
    target: str          # the mpitiny module imported, e.g. "mpitiny.engine.loop"
    path: str            # the importing file, relative to the repository
    line: int
    lazy: bool           # inside a function
    type_only: bool      # under ``if TYPE_CHECKING:``

    def where(self) -> str:
        how = " (inside a function)" if self.lazy else ""
        how += " (under TYPE_CHECKING)" if self.type_only else ""
        return f"{self.path}:{self.line}{how}: {self.source} imports {self.target}"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_files() -> dict[str, Path]:
    """Every module of the package: its dotted name -> its file."""
    files = sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)
    return {module_name(p): p for p in files}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


class _ImportVisitor(ast.NodeVisitor):
    def __init__(self, module: str, path: Path, is_package: bool, modules: set[str]) -> None:
        self.module = module
        self.path = str(path.relative_to(ROOT))
        self.package = module if is_package else module.rpartition(".")[0]
        self.modules = modules
        self.depth = 0              # functions we are inside
        self.type_only = 0          # ``if TYPE_CHECKING:`` blocks we are inside
        self.found: list[Import] = []

    def _add(self, target: str, node: ast.stmt) -> None:
        if target == "mpitiny" or target.startswith("mpitiny."):
            self.found.append(Import(self.module, target, self.path, node.lineno,
                                     self.depth > 0, self.type_only > 0))

    def _in_function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = _in_function

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            self.type_only += 1
            for child in node.body:
                self.visit(child)
            self.type_only -= 1
            for child in node.orelse:
                self.visit(child)
        else:
            self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = self.package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            base = f"{base}.{node.module}" if node.module else base
        else:
            base = node.module or ""
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            # ``from mpitiny.io import journal`` imports the module mpitiny.io.journal;
            # ``from mpitiny.io import open_splits`` a name of the package mpitiny.io.
            self._add(sub if sub in self.modules else base, node)


def all_imports() -> list[Import]:
    files = package_files()
    modules = set(files)
    found: list[Import] = []
    for name, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        visitor = _ImportVisitor(name, path, path.name == "__init__.py", modules)
        visitor.visit(tree)
        found.extend(visitor.found)
    return list(dict.fromkeys(found))     # ``from m import a, b``: one import of m


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


# ---------------------------------------------------------------------------- the layers

def test_lower_layers_do_not_import_the_engine():
    bad = [imp.where() for imp in all_imports()
           if any(_under(imp.source, layer) for layer in ("mpitiny.dag", "mpitiny.queue",
                                                           "mpitiny.io"))
           and (any(_under(imp.target, top) for top in ENGINE_AND_USERS)
                or imp.target == "mpitiny")]
    assert not bad, (
        "mpitiny/dag/, mpitiny/queue/ and mpitiny/io/ may not import the engine nor what is "
        "built on it (mpitiny.engine, cli, api, report, or the package mpitiny itself, which "
        "re-exports api); move the shared piece down a layer instead:\n  " + "\n  ".join(bad))


def test_dag_imports_neither_queue_nor_io():
    bad = []
    for imp in all_imports():
        if not _under(imp.source, "mpitiny.dag"):
            continue
        if _under(imp.target, "mpitiny.queue") or _under(imp.target, "mpitiny.engine"):
            bad.append(imp.where() + "  (dag/ may not use the queue or the engine)")
        elif _under(imp.target, "mpitiny.io"):
            if not imp.lazy:
                bad.append(imp.where() + "  (dag/ may not import io at module level)")
            elif imp.target not in DAG_MAY_IMPORT_LAZILY:
                bad.append(imp.where() + "  (inside a function dag/ may import only "
                           + ", ".join(DAG_MAY_IMPORT_LAZILY) + " of io)")
    assert not bad, "mpitiny/dag/ is the bottom layer:\n  " + "\n  ".join(bad)


# ---------------------------------------------------------------------------- circles

def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm (iterative): the components of more than one module, or of one
    module that imports itself."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in graph[node]:
                    components.append(sorted(component))
    return components


def _shortest_cycle(start: str, graph: dict[str, set[str]], within: set[str]) -> list[str]:
    """The shortest path start -> ... -> start inside one component (breadth first)."""
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for node in frontier:
            for child in sorted(graph[node] & within):
                if child == start:
                    path = [node]                   # back from node to start, then reversed
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return path[::-1] + [start]
                if child not in previous:
                    previous[child] = node
                    nxt.append(child)
        frontier = nxt
    raise AssertionError(f"no cycle through {start}")


def test_no_import_circles():
    imports = [imp for imp in all_imports() if not imp.type_only]
    graph: dict[str, set[str]] = {name: set() for name in package_files()}
    first: dict[tuple[str, str], Import] = {}
    for imp in imports:
        if imp.target in graph:
            graph[imp.source].add(imp.target)
            first.setdefault((imp.source, imp.target), imp)
    problems = []
    for component in _strongly_connected(graph):
        # Of the circles in the component, the shortest: the most direct to break.
        cycle = min((_shortest_cycle(m, graph, set(component)) for m in component), key=len)
        steps = [first[(a, b)].where() for a, b in zip(cycle, cycle[1:])]
        problems.append(" -> ".join(cycle) + "\n    " + "\n    ".join(steps)
                        + (f"\n    (one circle of several among these {len(component)} modules, "
                           f"which all reach each other: {', '.join(component)})"
                           if len(component) > len(cycle) - 1 else ""))
    assert not problems, (
        "import circles (lazy imports inside functions count too); break each one by moving "
        "what both sides need to a module that neither imports back:\n  "
        + "\n  ".join(problems))


def test_the_cycle_finder_finds_cycles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}}
    components = _strongly_connected(graph)
    assert components == [["a", "b", "c"], ["e"]]
    assert _shortest_cycle("a", graph, {"a", "b", "c"}) == ["a", "b", "c", "a"]
    assert _shortest_cycle("e", graph, {"e"}) == ["e", "e"]


# ---------------------------------------------------------------------------- without MPI

def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_dag_layer_imports_without_mpi4py():
    # sys.modules[name] = None makes ``import name`` raise ImportError, as if not installed.
    code = (
        "import sys\n"
        "sys.modules['mpi4py'] = None\n"
        "sys.modules['mpi4py.MPI'] = None\n"
        "import mpitiny.dag.model, mpitiny.dag.load, mpitiny.dag.wfcommons\n"
        "engine = sorted(m for m in sys.modules if m.startswith('mpitiny.engine'))\n"
        "assert not engine, 'importing mpitiny.dag loaded the engine: %s' % engine\n"
    )
    proc = _python(code)
    assert proc.returncode == 0, (
        "importing mpitiny.dag.model, mpitiny.dag.load and mpitiny.dag.wfcommons must work "
        f"without mpi4py (and without loading mpitiny.engine):\n{proc.stderr}")


def test_import_mpitiny_does_not_import_mpi4py():
    code = (
        "import sys\n"
        "import mpitiny\n"
        "print(sorted(m for m in sys.modules if m == 'mpi4py' or m.startswith('mpi4py.')))\n"
    )
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", (
        "`import mpitiny` must not import mpi4py (MPI is initialised on first use, by the "
        f"engine): it imported {proc.stdout.strip()}")


# ---------------------------------------------------------------------------- sizes

def _sizes(kinds: tuple[type, ...], limit: int) -> list[str]:
    over = []
    for path in package_files().values():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, kinds):
                assert node.end_lineno is not None
                lines = node.end_lineno - node.lineno + 1
                if lines > limit:
                    over.append((lines, f"{path.relative_to(ROOT)}:{node.lineno}: "
                                        f"{node.name} has {lines} lines"))
    return [text for _, text in sorted(over, reverse=True)]


def test_no_class_of_400_lines_or_more():
    over = _sizes((ast.ClassDef,), MAX_CLASS_LINES)
    assert not over, (f"classes must stay under {MAX_CLASS_LINES + 1} lines; split these "
                      "by what they do:\n  " + "\n  ".join(over))


def test_no_function_over_80_lines():
    over = _sizes((ast.FunctionDef, ast.AsyncFunctionDef), MAX_FUNCTION_LINES)
    assert not over, (f"functions (and methods) must stay within {MAX_FUNCTION_LINES} lines; "
                      "split these into named steps:\n  " + "\n  ".join(over))
