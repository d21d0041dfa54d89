"""Offsets in element-wise dependencies: ``"u[{t}-1,{i}+1]"``, ``{i}//2``, ``({i}+1)%{n}``.

- expressions: parsed into a small tree (never ``eval``), computed with numpy as Python
  computes them (hypothesis), refused with one message when they are not expressions, could
  overflow or divide by zero;
- items outside the parent: dropped, or an error under ``"strict_deps": true``;
- cycles among instances of families that wait on themselves or each other;
- Task Bench's stencil_1d, stencil_1d_periodic, nearest, tree and fft as families
  (``bench/_taskbench_graph.family_tasks``) have the listed form's dependency set;
- release, in one process (every task released once, after its parents, upstream failures
  passed on) and on 1, 2 and 4 ranks under ``mpiexec`` (``check_run``), with the children
  reading their parents' values; a failure skips exactly its descendants; a killed run
  resumes on another number of ranks with the same values;
- the instance-level cycle check agrees with a brute-force search on random small DAGs.
"""
import json
import random
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mpitiny.dag import expr
from mpitiny.dag.load import load_dag, load_dag_text
from mpitiny.errors import DagError
from mpitiny.io.check import check_run
from mpitiny.io.rundir import read_results
from mpitiny.queue.layout import Layout
from mpitiny.queue.memory import LocalMemory
from mpitiny.queue.release import Release

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from _taskbench_graph import FAMILY_PATTERNS, family_tasks, graph  # noqa: E402

OFFSET_PATTERNS = [p for p in FAMILY_PATTERNS if p != "trivial"]


def load(tasks, params=None):
    obj = {"name": "t", "tasks": tasks}
    if params:
        obj["params"] = params
    return load_dag_text(json.dumps(obj), "dag.json")


def bad(tasks, *fragments, params=None):
    with pytest.raises(DagError) as err:
        load(tasks, params)
    text = str(err.value.format() if hasattr(err.value, "format") else err.value)
    for fragment in fragments:
        assert fragment in text, text
    return text


def fam(id_, deps=(), **foreach):
    entry = {"id": id_, "cmd": "true",
             "foreach": {k: {"range": v} if isinstance(v, list) and len(v) <= 3
                         and all(isinstance(x, int) for x in v) else v
                         for k, v in foreach.items()}}
    if deps:
        entry["deps"] = list(deps)
    return entry


def parents(dag, g):
    """Per dep of group ``g``: the parent instance of every instance (-1: none)."""
    group = dag.groups[g]
    return [d.each.all_parents(group, dag.groups[d.parent]).tolist() for d in group.deps]


# ------------------------------------------------------------------------- expressions

def trees(depth=3):
    leaf = st.one_of(st.integers(-50, 50).map(lambda v: ("n", v)),
                     st.sampled_from(["i", "j"]).map(lambda v: ("v", v)))
    return st.recursive(leaf, lambda sub: st.tuples(st.sampled_from(["+", "-", "*", "//", "%"]),
                                                    sub, sub), max_leaves=8)


def reference(tree, env):
    """The tree on Python ints (None where it divides by zero)."""
    if tree[0] == "n":
        return tree[1]
    if tree[0] == "v":
        return env[tree[1]]
    a, b = reference(tree[1], env), reference(tree[2], env)
    if a is None or b is None:
        return None
    if tree[0] in ("//", "%") and b == 0:
        return None
    return {"+": a + b, "-": a - b, "*": a * b, "//": a // b if b else 0,
            "%": a % b if b else 0}[tree[0]]


def spell_raw(tree):
    """Fully parenthesised text of a tree, negative literals as ``(0-5)``."""
    if tree[0] == "n":
        return str(tree[1]) if tree[1] >= 0 else f"(0-{-tree[1]})"
    if tree[0] == "v":
        return "{%s}" % tree[1]
    return f"({spell_raw(tree[1])}{tree[0]}{spell_raw(tree[2])})"


@settings(max_examples=300, deadline=None)
@given(trees())
def test_expressions_compute_as_python_does(tree):
    variables = {"i": (-7, 7), "j": (0, 5)}
    text = spell_raw(tree)
    try:
        parsed = expr.parse(text, variables, {})
    except expr.ExprError as err:
        assert "by zero" in str(err)      # a constant part divides by zero
        return
    i, j = np.meshgrid(np.arange(-7, 8), np.arange(0, 6), indexing="ij")
    values = {"i": i.ravel().astype(np.int64), "j": j.ravel().astype(np.int64)}
    got = expr.evaluate(parsed, values, i.size)
    # spelled back (as messages show it) and parsed again: the same values
    again = expr.parse(expr.spell(parsed), variables, {})
    assert (expr.evaluate(again, values, i.size) == got).all(), expr.spell(parsed)
    zero = expr.zero_divisor(parsed, values, i.size)
    for k in range(i.size):
        want = reference(tree, {"i": int(values["i"][k]), "j": int(values["j"][k])})
        assert (want is None) == bool(zero[k]), text
        if want is not None:
            assert int(got[k]) == want, text


@pytest.mark.parametrize("text, want", [
    ("{i}-1", [-1, 0, 1, 2, 3]), ("{i}*2", [0, 2, 4, 6, 8]), ("{i}//2", [0, 0, 1, 1, 2]),
    ("({i}+1)%{n}", [1, 2, 3, 4, 0]), ("-{i}+4", [4, 3, 2, 1, 0]),
    ("2*{i}-{i}//2*3", [0, 2, 1, 3, 2]), ("{n}-1-{i}", [4, 3, 2, 1, 0]),
    (" ( {i} + 1 ) % 5 ", [1, 2, 3, 4, 0]),
])
def test_expression_values(text, want):
    tree = expr.parse(text, {"i": (0, 4)}, {"n": 5})
    assert expr.evaluate(tree, {"i": np.arange(5, dtype=np.int64)}, 5).tolist() == want


@pytest.mark.parametrize("text, fragment", [
    ("{i}-", "ends too early"), ("({i}+1", "'(' is not closed"), ("{i}+1)", "unexpected ')'"),
    ("{i}**2", "unexpected '*'"), ("{i}/2", "unexpected '/'"), ("{i}.real", "unexpected '.'"),
    ("__import__('os')", "unexpected '_'"), ("{i}+{k}", "{k} is neither"),
    ("{s}+1", "{s} is neither"), ("{i}*4611686018427387904", "out of range"),
    ("{i}*2305843009213693951", "could leave the range"), ("{i}//0", "// by zero"),
    ("{i}%({n}-5)", "% by zero"), ("{i}+{name}", "parameter name is not an integer"),
    ("(" * 40 + "{i}" + ")" * 40, "nests deeper"), ("{i}+" + "1+" * 120 + "1", "longer than"),
])
def test_bad_expressions_one_message(text, fragment):
    with pytest.raises(expr.ExprError, match=None) as err:
        expr.parse(text, {"i": (0, 4)}, {"n": 5, "name": "x"})
    assert fragment in str(err.value)


# ------------------------------------------------------------------- loading the maps

def test_stencil_maps_and_dropped_edges():
    d = load([fam("u", ["u[{t}-1,{i}-1]", "u[{t}-1,{i}]", "u[{t}-1,{i}+1]"],
                  t=[3], i=[3])])
    left, mid, right = parents(d, 0)
    assert mid == [-1, -1, -1, 0, 1, 2, 3, 4, 5]
    assert left == [-1, -1, -1, -1, 0, 1, -1, 3, 4]
    assert right == [-1, -1, -1, 1, 2, -1, 4, 5, -1]


def test_periodic_tree_and_literal_forms():
    d = load([fam("u", ["u[{t}-1,({i}+1)%{n}]", "u[{t}-1,({i}-1)%{n}]"], t=[2], i=[4]),
              fam("tr", ["u[1,{i}//2]"], i=[8]), {"id": "last", "cmd": "true",
                                                   "deps": ["u[{m}-1,{n}-1]"]}],
             params={"n": 4, "m": 2})
    assert parents(d, 0) == [[-1] * 4 + [1, 2, 3, 0], [-1] * 4 + [3, 0, 1, 2]]
    assert parents(d, 1) == [[4, 4, 5, 5, 6, 6, 7, 7]]
    assert d.groups[2].deps[0].each.items == (("lit", 1), ("lit", 3))   # folded: u[1,3]


def test_families_waiting_on_each_other_in_a_ring():
    tasks = family_tasks("fft", 7, 8)
    for t in tasks:
        t["cmd"] = "true"
    d = load(tasks)
    assert [g.name for g in d.groups] == ["u0", "u1", "u2"]
    assert [[c for c, _ in d.children[g]] for g in range(3)] == [[1] * 3, [2] * 3, [0] * 3]


def test_strict_deps_makes_an_item_outside_an_error():
    stencil = ["u[{t}-1,{i}]"]
    assert load([fam("u", stencil, t=[3], i=[2])]).total == 6
    bad([{**fam("u", stencil, t=[3], i=[2]), "strict_deps": True}],
        "tasks[0] (id 'u'): deps: 'u[{t}-1,{i}]': u[0,0] would wait for u[-1,0], which does "
        "not exist", "(strict_deps)")
    bad([fam("a", i=[4]), {**fam("b", ["a[{i}+1]"], i=[4]), "strict_deps": True}],
        "b[3] would wait for a[4], which does not exist (i in range(0, 4)) (strict_deps)")
    bad([{**fam("u", stencil, t=[3], i=[2]), "strict_deps": "yes"}],
        "strict_deps: must be true or false, not 'yes'")


def test_plain_items_must_still_exist():
    bad([fam("a", i=[4]), fam("b", ["a[{i}]"], i=[5])],
        "b[4] would wait for a[4], which does not exist")


@pytest.mark.parametrize("deps, fragments", [
    (["u[{i}]"], ["deps: 'u[{i}]': a task cannot depend on itself"]),
    (["u[{i}//2]"], ["'u[{i}//2]': u[0] would wait for itself"]),
    (["u[{i}-1]", "u[{i}+1]"], ["dependency cycle: u[0] -> u[1] -> u[0]"]),
    (["u[({i}+1)%5]"], ["dependency cycle: u[0] -> u[1] -> u[2] -> u[3] -> u[4] -> u[0]"]),
    (["u"], ["deps: 'u': a task cannot depend on itself"]),
])
def test_cycles_within_a_family(deps, fragments):
    bad([fam("u", deps, i=[5])], *fragments)


def test_cycles_between_families_and_through_whole_dependencies():
    bad([fam("a", ["b[{i}+1]"], i=[5]), fam("b", ["a[{i}-1]"], i=[5])],
        "tasks[0] (id 'a'): deps: dependency cycle: a[0] -> b[1] -> a[0]")
    bad([fam("a", ["b[{i}-1]"], i=[5]), fam("b", ["c"], i=[5]),
         {"id": "c", "cmd": "true", "deps": ["a"]}], "dependency cycle: a -> b -> c -> a")
    bad([fam("w", ["w[{i}-1,{k}+1]", "w[{i}+1,{k}-1]"], i=[3], k=[3])],
        "dependency cycle: w[0,1] -> w[1,0] -> w[0,1]")


@pytest.mark.parametrize("deps", [
    ["u[{i}+1]"], ["u[{i}-1]", "u[{i}-2]"], ["u[{i}//2+5]"],
    ["u[{i}-1,{k}]", "u[{i},{k}+1]"],                 # a wavefront: Kahn's algorithm proves it
])
def test_acyclic_self_dependencies_load(deps):
    foreach = {"i": [6], "k": [4]} if "{k}" in deps[0] else {"i": [6]}
    assert load([fam("u", deps, **foreach)]).total == (24 if "{k}" in deps[0] else 6)


def test_bad_offset_items_one_message():
    base = [fam("a", i=[4]), fam("s", s=["x", "y"])]
    bad(base + [fam("b", ["a[{i}//({i}-2)]"], i=[4])],
        "tasks[2] (id 'b'): deps: 'a[{i}//({i}-2)]': b[2] divides by zero in {i}//({i}-2)")
    bad(base + [fam("b", ["a[{i}-]"], i=[4])],
        "item '{i}-' must be {variable} or a literal value, or an integer expression",
        "it ends too early")
    bad(base + [fam("b", ["s[{i}-1]"], i=[4])],
        "item '{i}-1' is an integer but variable s of 's' has no integer values")


# ------------------------------------------------------- Task Bench: families = listed

def family_edges(dag):
    """``(nodes, edges)`` of a family form: points ``(t, i)``, edges parent -> child."""
    nodes, edges = set(), set()
    for g in dag.groups:
        vals = [g.values(j) for j in range(g.size)]
        nodes.update((v["t"], v["i"]) for v in vals)
        for d in g.deps:
            pg = dag.groups[d.parent]
            p = d.each.all_parents(g, pg)
            for j in np.flatnonzero(p >= 0).tolist():
                pv = pg.values(int(p[j]))
                edges.add(((pv["t"], pv["i"]), (vals[j]["t"], vals[j]["i"])))
    return nodes, edges


def family_dag(pattern, steps, width, prefix="", kernel=None):
    tasks = family_tasks(pattern, steps, width)
    out = []
    for t in tasks:
        t = dict(t, **(kernel or {"cmd": "true"}), id=prefix + t["id"])
        if "deps" in t:
            t["deps"] = [prefix + d for d in t["deps"]]
        out.append(t)
    return out


@pytest.mark.parametrize("pattern", FAMILY_PATTERNS)
def test_family_form_has_the_listed_form_dependency_set(pattern):
    for steps in (1, 2, 3, 4, 7):
        for width in (1, 2, 3, 4, 5, 8, 9):
            nodes, edges = family_edges(load(family_dag(pattern, steps, width)))
            listed = graph(pattern, steps, width)
            assert nodes == {(t, p) for t, p, _ in listed}, (pattern, steps, width)
            assert edges == {((t - 1, q), (t, p)) for t, p, deps in listed for q in deps}, \
                (pattern, steps, width)


def test_stencil_1d_width_8_1000_steps_is_a_small_file():
    tasks = family_dag("stencil_1d", 1000, 8, kernel={"fn": "mpitiny.tasks:spin",
                                                      "args": [5e-05]})
    text = json.dumps({"name": "stencil_1d", "tasks": tasks}, separators=(",", ":"))
    assert len(text) < 400
    d = load_dag_text(text, "dag.json")
    assert d.total == 8000
    nodes, edges = family_edges(d)
    assert edges == {((t - 1, q), (t, p)) for t, p, deps in graph("stencil_1d", 1000, 8)
                     for q in deps}


# ------------------------------------------------------------ release in one process

def all_patterns_dag(steps, width, kernel=None):
    tasks = []
    for pattern in OFFSET_PATTERNS:
        tasks += family_dag(pattern, steps, width, prefix=f"{pattern}.", kernel=kernel)
    return tasks


def instance_parents(dag, g, i):
    group = dag.groups[g]
    for d in group.deps:
        parent = dag.groups[d.parent]
        if d.each is None:
            yield from (int(dag.base[d.parent]) + p for p in range(parent.size))
            continue
        p = int(d.each.parent_indices(group, parent, np.array([i]))[0])
        if p >= 0:
            yield int(dag.base[d.parent]) + p


def simulate(dag, nranks, rng, fail=()):
    """Ranks in one process: each finishes a random chunk of one group's ready instances."""
    layout = Layout(dag, nranks, 0)
    mem = LocalMemory(nranks, int(layout.nwords.max()))
    rel = []
    for r in range(nranks):
        layout.init_words(r, mem.words[r])
        rel.append(Release(layout, mem.view(r)))
    ready = [[] for _ in range(nranks)]
    for g in dag.groups:
        roots = range(g.size) if not g.deps else layout.waiting_for_none(g.index).tolist()
        for i in roots:
            ready[rng.randrange(nranks)].append((g.index, int(i)))
    finished = {}
    while any(ready):
        r = rng.choice([x for x in range(nranks) if ready[x]])
        g = rng.choice(ready[r])[0]
        chunk = [i for gg, i in ready[r] if gg == g][:rng.choice([1, 3, 50])]
        ready[r] = [x for x in ready[r] if not (x[0] == g and x[1] in chunk)]
        failed = np.array([int(dag.base[g]) + i in fail for i in chunk])
        for i, f in zip(chunk, failed):
            gid = int(dag.base[g]) + i
            assert gid not in finished, f"{dag.task_id(gid)} released twice"
            finished[gid] = (len(finished), "failed" if f else "done")
        new, skipped = rel[r].finish(g, np.array(chunk), failed if failed.any() else None)
        for cg, cidx in skipped:
            for ci in cidx.tolist():
                gid = int(dag.base[cg]) + ci
                assert gid not in finished, f"{dag.task_id(gid)} skipped twice"
                finished[gid] = (len(finished), "upstream_failed")
        for cg, cidx in new:
            ready[r].extend((cg, int(ci)) for ci in cidx)
    return finished


@pytest.mark.parametrize("seed", range(12))
def test_release_every_task_once_after_its_parents(seed):
    rng = random.Random(seed)
    dag = load(all_patterns_dag(rng.choice([1, 4, 9]), rng.choice([1, 3, 8])))
    fail = set(rng.sample(range(dag.total), 2)) if seed % 3 == 0 else set()
    finished = simulate(dag, rng.choice([1, 2, 3, 4]), rng, fail)
    assert len(finished) == dag.total
    failed = sum(status == "failed" for _, status in finished.values())
    assert min(1, len(fail)) <= failed <= len(fail)   # one may be skipped: the other's child
    for g in dag.groups:
        for i in range(g.size):
            gid = int(dag.base[g.index]) + i
            when, status = finished[gid]
            ps = list(instance_parents(dag, g.index, i))
            for p in ps:
                assert finished[p][0] < when, f"{dag.task_id(gid)} before {dag.task_id(p)}"
            assert (status == "upstream_failed") == any(finished[p][1] != "done" for p in ps)


def test_first_step_and_edge_free_instances_start_as_roots():
    d = load([fam("u", ["u[{t}-1,{i}-1]", "u[{t}-1,{i}]"], t=[3], i=[2]),
              fam("e", ["u[{k}+10,0]"], k=[2])])
    layout = Layout(d, 2, 0)
    assert layout.waiting_for_none(0).tolist() == [0, 1]
    assert layout.count_vec[0].tolist() == [0, 0, 1, 2, 1, 2]
    assert layout.waiting_for_none(1).tolist() == [0, 1]


# -------------------------------------------------------------------- under mpiexec

CELL = ("def cell(t, i, inputs):\n"
        "    return 1 + sum(inputs.values())\n")


def expected_values(dag):
    """What ``cell`` returns for every instance: 1 + the sum of its parents' values."""
    out: dict = {}
    order = sorted(range(dag.total), key=lambda gid: dag.locate(gid)[0].values(
        dag.locate(gid)[1])["t"])
    for gid in order:
        group, i = dag.locate(gid)
        out[dag.task_id(gid)] = 1 + sum(out[dag.task_id(p)]
                                        for p in instance_parents(dag, group.index, i))
    return out


@pytest.mark.mpi
@pytest.mark.parametrize("n", [1, 2, 4])
def test_task_bench_families_run_every_task_once_after_its_parents(python_module, tmp_path, n):
    (tmp_path / "cells.py").write_text(CELL)
    kernel = {"fn": "cells:cell", "args": ["{t}", "{i}"]}
    path = tmp_path / "dag.json"
    path.write_text(json.dumps({"name": "taskbench_families",
                                "tasks": all_patterns_dag(12, 8, kernel)}))
    out = tmp_path / "run"
    proc = python_module(n, "mpitiny", "run", str(path), "--out", str(out), timeout=180,
                         cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr + proc.stdout
    dag = load_dag(str(path))
    counts = check_run(dag, str(out))
    assert counts == {"done": dag.total, "upstream_failed": 0, "failed": 0}
    got = read_results(str(out))
    want = expected_values(dag)
    assert {k: got[k] for k in want} == want


@pytest.mark.mpi
@pytest.mark.parametrize("n", [1, 2, 4])
def test_a_failure_in_a_stencil_skips_exactly_its_descendants(python_module, tmp_path, n):
    (tmp_path / "cells.py").write_text(
        "def cell(t, i):\n    if (t, i) == (3, 2):\n        raise ValueError('boom')\n")
    tasks = family_dag("stencil_1d", 10, 6, kernel={"fn": "cells:cell", "args": ["{t}", "{i}"]})
    path = tmp_path / "dag.json"
    path.write_text(json.dumps({"name": "stencil_fail", "tasks": tasks}))
    out = tmp_path / "run"
    proc = python_module(n, "mpitiny", "run", str(path), "--out", str(out), timeout=180,
                         cwd=str(tmp_path))
    assert proc.returncode == 1, proc.stderr + proc.stdout
    counts = check_run(load_dag(str(path)), str(out))
    # u[3,2] fails; at step t > 3 the points within t - 3 of 2 (clipped to 0..5) are skipped
    skipped = sum(len(range(max(0, 2 - (t - 3)), min(5, 2 + (t - 3)) + 1)) for t in range(4, 10))
    assert counts == {"done": 60 - 1 - skipped, "failed": 1, "upstream_failed": skipped}


# ------------------------------------------- cycle checks against a brute-force search

def random_offset_dag(rng):
    """2 or 3 families over ``t``, ``i`` in ``range(3)`` with random offset dependencies on
    each other and on themselves; returns the tasks and, per family, its edges as
    ``(child instance, parent family, parent instance or None for all)``."""
    names = [f"f{k}" for k in range(rng.choice([1, 2, 3]))]
    tasks, edges = [], {}
    for name in names:
        deps, mine = [], []
        for _ in range(rng.choice([1, 1, 2, 3])):
            parent = rng.choice(names)
            if rng.random() < 0.1 and parent != name:
                deps.append(parent)
                mine.append(("all", parent, None))
                continue
            items = []
            for _ in ("t", "i"):
                var, off = rng.choice(["t", "i"]), rng.choice([-1, -1, 0, 1])
                items.append((var, off))
            text = ",".join("{%s}" % v if o == 0 else "{%s}%+d" % (v, o) for v, o in items)
            deps.append(f"{parent}[{text}]")
            mine.append(("each", parent, items))
        tasks.append({"id": name, "cmd": "true", "foreach": {"t": {"range": [3]},
                                                           "i": {"range": [3]}},
                      "deps": list(dict.fromkeys(deps))})
        edges[name] = mine
    return tasks, edges


def has_instance_cycle(edges) -> bool:
    nodes = [(f, t, i) for f in edges for t in range(3) for i in range(3)]
    parents = {n: set() for n in nodes}
    for f, deps in edges.items():
        for t in range(3):
            for i in range(3):
                env = {"t": t, "i": i}
                for kind, parent, items in deps:
                    if kind == "all":
                        parents[(f, t, i)].update((parent, a, b) for a in range(3)
                                                  for b in range(3))
                        continue
                    pt, pi = (env[v] + o for v, o in items)
                    if 0 <= pt < 3 and 0 <= pi < 3:
                        parents[(f, t, i)].add((parent, pt, pi))
    done: set = set()
    while True:
        free = [n for n in nodes if n not in done and parents[n] <= done]
        if not free:
            return len(done) < len(nodes)
        done.update(free)


@pytest.mark.parametrize("seed", range(300))
def test_cycle_check_agrees_with_a_brute_force_search(seed):
    rng = random.Random(seed)
    tasks, edges = random_offset_dag(rng)
    try:
        load(tasks)
    except DagError as err:
        text = str(err)
        if "same dependency" in text or "listed twice" in text:
            return                             # two spellings of one map: not this test
        assert "cycle" in text or "itself" in text, text
        assert has_instance_cycle(edges), text
        return
    assert not has_instance_cycle(edges), json.dumps(tasks)


@pytest.mark.mpi
def test_a_killed_stencil_run_resumes_on_other_ranks_with_the_same_values(python_module,
                                                                          tmp_path):
    (tmp_path / "cells.py").write_text(CELL)
    tasks = family_dag("stencil_1d", 40, 6, kernel={"fn": "cells:cell", "args": ["{t}", "{i}"]})
    path = tmp_path / "dag.json"
    path.write_text(json.dumps({"name": "stencil_resume", "tasks": tasks}))
    out = tmp_path / "run"
    args = ("mpitiny", "run", str(path), "--out", str(out), "-q")
    proc = python_module(2, *args, timeout=120, cwd=str(tmp_path),
                         env={"MPITINY_FAULT": "rank=1:after=40:mode=kill"})
    assert proc.returncode != 0, proc.stderr
    proc = python_module(3, *args, timeout=120, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr + proc.stdout
    dag = load_dag(str(path))
    assert check_run(dag, str(out)) == {"done": 240, "upstream_failed": 0, "failed": 0}
    got = read_results(str(out))
    assert {k: got[k] for k in expected_values(dag)} == expected_values(dag)
