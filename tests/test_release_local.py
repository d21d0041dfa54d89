"""Dependency release driven by simulated ranks in one process (no MPI, no queue)."""
import random

import numpy as np
import pytest

from mpitiny.queue.layout import Layout
from mpitiny.dag.model import DAG, Dep, ElementMap, Group, TaskOptions, Var
from mpitiny.queue.release import Release
from mpitiny.queue.memory import LocalMemory, LocalView


def group(index, name, n=None, deps=(), vars_=None):
    if vars_ is None:
        vars_ = (Var("i", range(n)),) if n else ()
    g = Group(index=index, name=name, kind="fn", fn="m:f", vars=vars_, deps=list(deps))
    g.function, g.wants_inputs = None, False
    return g


def each(*items):
    return ElementMap(tuple(("var", x) if isinstance(x, str) else ("lit", x) for x in items))


def random_dag(rng, placed=False):
    """A random DAG; with ``placed``, some groups have a ``rank`` spec (a constant, or
    ``"{i}"``: their words then follow the placement, ``Layout.follow``)."""
    groups = []
    for k in range(rng.randint(1, 12)):
        shape = rng.random()
        if shape < 0.4:
            g = group(k, f"p{k}")
        elif shape < 0.8:
            g = group(k, f"f{k}", rng.choice([1, 3, 7, 20]))
        else:
            g = group(k, f"g{k}", vars_=(Var("i", range(rng.choice([2, 3]))), Var("j", ("a", "b"))))
        for parent in rng.sample(groups, min(len(groups), rng.randint(0, 3))):
            if (parent.is_family and g.is_family and parent.vars == g.vars
                    and rng.random() < 0.6):
                g.deps.append(Dep(parent.index, each(*[v.name for v in g.vars])))
            elif parent.is_family and rng.random() < 0.2:
                lits = tuple(("lit", v.values[rng.randrange(len(v))]) for v in parent.vars)
                g.deps.append(Dep(parent.index, ElementMap(lits)))
            else:
                g.deps.append(Dep(parent.index))
        options = TaskOptions()
        if placed and rng.random() < 0.5:
            options = TaskOptions(rank=rng.choice([0, 1, 5, "{i}"] if g.vars else [0, 1, 5]))
        groups.append(Group(index=k, name=g.name, kind="fn", fn="m:f", vars=g.vars, deps=g.deps,
                            options=options))
        groups[-1].function, groups[-1].wants_inputs = None, False
    return DAG("random", groups)


def simulate(dag, nranks, rng, fail_prob=0.0):
    """Run the DAG on simulated ranks; returns {gid: (order, status)}."""
    layouts = Layout(dag, nranks, 0)
    mem = LocalMemory(nranks, int(layouts.nwords.max()))
    releases = []
    for r in range(nranks):
        view = mem.view(r)
        layouts.init_words(r, view.local)
        releases.append(Release(layouts, view))
    ready = [[] for _ in range(nranks)]
    roots = [(g.index, i) for g in dag.groups if not g.deps for i in range(g.size)]
    for n, item in enumerate(roots):
        ready[n % nranks].append(item)
    finished = {}
    clock = 0
    while any(ready):
        r = rng.choice([x for x in range(nranks) if ready[x]])
        g, i = ready[r].pop(rng.randrange(len(ready[r])))
        gid = int(dag.base[g]) + i
        assert gid not in finished, f"{dag.task_id(gid)} released twice"
        failed = rng.random() < fail_prob
        clock += 1
        finished[gid] = (clock, "failed" if failed else "done")
        new, skipped = releases[r].finish(g, np.array([i]), np.array([failed]) if failed else None)
        for cg, cidx in skipped:
            for ci in cidx:
                cgid = int(dag.base[cg]) + int(ci)
                assert cgid not in finished
                clock += 1
                finished[cgid] = (clock, "upstream_failed")
        for cg, cidx in new:
            ready[r].extend((cg, int(ci)) for ci in cidx)
    return finished


def parents_of(dag, g, i):
    grp = dag.groups[g]
    for d in grp.deps:
        parent = dag.groups[d.parent]
        if d.each is None:
            for p in range(parent.size):
                yield int(dag.base[parent.index]) + p
        else:
            p = int(d.each.parent_indices(grp, parent, np.array([i]))[0])
            yield int(dag.base[parent.index]) + p


@pytest.mark.parametrize("seed", range(100))
def test_random_dags_every_task_once_after_parents(seed, monkeypatch):
    """Seeds 60-99 place some groups (``Layout.follow``); 90-99 with at most 2 instances
    placed one by one (larger spread families keep their blocks: ``FOLLOW_MAX``)."""
    if seed >= 90:
        monkeypatch.setattr("mpitiny.queue.layout.FOLLOW_MAX", 2)
    rng = random.Random(seed)
    dag = random_dag(rng, placed=seed >= 60)
    finished = simulate(dag, rng.choice([1, 2, 3, 8]), rng, fail_prob=rng.choice([0, 0, 0.1]))
    assert len(finished) == dag.total
    for g in dag.groups:
        for i in range(g.size):
            gid = int(dag.base[g.index]) + i
            when, status = finished[gid]
            parents = list(parents_of(dag, g.index, i))
            for p in parents:
                assert finished[p][0] < when, f"{dag.task_id(gid)} before parent {dag.task_id(p)}"
            any_bad = any(finished[p][1] != "done" for p in parents)
            assert (status == "upstream_failed") == any_bad, dag.task_id(gid)


def test_diamond_worked_example_from_the_docstring():
    a = group(0, "a")
    b = group(1, "b", deps=[Dep(0)])
    c = group(2, "c", deps=[Dep(0)])
    d = group(3, "d", deps=[Dep(1), Dep(2)])
    dag = DAG("diamond", [a, b, c, d])
    layout = Layout(dag, 2, 0)
    mem = LocalMemory(2, int(layout.nwords.max()))
    rel = []
    for r in range(2):
        layout.init_words(r, mem.words[r])
        rel.append(Release(layout, mem.view(r)))
    ready, skipped = rel[0].finish(0, np.array([0]))
    assert sorted(g for g, _ in ready) == [1, 2] and not skipped
    ready, _ = rel[0].finish(1, np.array([0]), np.array([True]))
    assert ready == []
    ready, skipped = rel[1].finish(2, np.array([0]))
    assert ready == [] and [(g, list(i)) for g, i in skipped] == [(3, [0])]


def test_family_gate_opens_whole_range_once():
    a = group(0, "a", 1000)
    b = group(1, "b", 500, deps=[Dep(0)])
    dag = DAG("fan", [a, b])
    layout = Layout(dag, 4, 0)
    mem = LocalMemory(4, int(layout.nwords.max()))
    for r in range(4):
        layout.init_words(r, mem.words[r])
    opened = []
    for r, chunk in enumerate(np.array_split(np.arange(1000), 4)):
        ready, _ = Release(layout, mem.view(r)).finish(0, chunk)
        opened += ready
    assert len(opened) == 1 and opened[0][0] == 1 and len(opened[0][1]) == 500


def test_elementwise_chunk_updates_blocks():
    a = group(0, "a", 10_000)
    b = group(1, "b", 10_000, deps=[Dep(0, each("i"))])
    dag = DAG("pairs", [a, b])
    layout = Layout(dag, 3, 0)
    mem = LocalMemory(3, int(layout.nwords.max()))
    for r in range(3):
        layout.init_words(r, mem.words[r])
    calls = []
    view = mem.view(0)
    original = view.fetch_add_block
    view.fetch_add_block = lambda rank, disp, values: \
        calls.append(len(values)) or original(rank, disp, values)
    ready, _ = Release(layout, view).finish(0, np.arange(2000, 6000))
    assert sorted(ready[0][1].tolist()) == list(range(2000, 6000))
    assert len(calls) <= 3     # one block update per owner rank, not one per task


class Targets(LocalView):
    """A ``LocalView`` that notes the target rank of every word operation."""

    def __init__(self, memory, rank):
        super().__init__(memory, rank)
        self.targets = []
        for name in ("fetch_add", "swap", "cas", "add", "fetch_add_block", "get"):
            setattr(self, name, self._noting(getattr(self, name)))

    def _noting(self, op):
        def noted(rank, *args):
            self.targets.append(rank)
            return op(rank, *args)
        return noted


@pytest.mark.parametrize("spec", [1, 3, "{i}"])
@pytest.mark.parametrize("nranks", [2, 4, 7])
def test_children_of_a_placed_parent_are_counted_down_in_its_ranks_window(spec, nranks):
    """``a`` is placed; ``b[i]`` waits for ``a[i]``, ``t`` for ``a[7]``, and with ``a`` on one
    rank, ``s[i]`` for ``a[i-1]`` and ``a[i+1]`` (a stencil: the edges have one parent) and
    ``c`` for all of ``a`` (a gate; spread by ``"{i}"``, a's instances run on several ranks,
    and so would their neighbours). Finishing ``a[i]`` on the rank it is placed on touches no
    other rank's words (with the words hashed over the ranks, as before ``Layout.follow``,
    most such releases would)."""
    n = 40
    a = group(0, "a", n)
    a = Group(index=0, name="a", kind="fn", fn="m:f", vars=a.vars, options=TaskOptions(rank=spec))
    a.function, a.wants_inputs = None, False
    stencil = [ElementMap((("expr", ("-", ("v", "i"), ("n", 1))),)),
               ElementMap((("expr", ("+", ("v", "i"), ("n", 1))),))]
    groups = [a, group(1, "b", n, deps=[Dep(0, each("i"))]), group(2, "t", deps=[Dep(0, each(7))])]
    if spec != "{i}":
        groups += [group(3, "s", n, deps=[Dep(0, m) for m in stencil]), group(4, "c", deps=[Dep(0)])]
    dag = DAG("placed", groups)
    layout = Layout(dag, nranks, 0)
    mem = LocalMemory(nranks, int(layout.nwords.max()))
    views = [Targets(mem, r) for r in range(nranks)]
    for r in range(nranks):
        layout.init_words(r, mem.words[r])
    releases = [Release(layout, v) for v in views]
    homes = layout.placed_on(0, np.arange(n))
    released = {}
    for i in range(n):
        r = int(homes[i])
        ready, skipped = releases[r].finish(0, np.array([i]))
        assert not skipped
        for g, idx in ready:
            for j in idx.tolist():
                assert (g, j) not in released
                released[g, j] = i
        assert set(views[r].targets) <= {r}, (i, r, views[r].targets)
        views[r].targets.clear()
    expected = [(1, j) for j in range(n)] + [(2, 0)]
    if spec != "{i}":
        expected += [(3, j) for j in range(n)] + [(4, 0)]
        assert released[4, 0] == n - 1
    assert sorted(released) == expected
    assert all(released[1, j] == j for j in range(n)) and released[2, 0] == 7


@pytest.mark.parametrize("nranks,seed", [(1, 0), (3, 1), (4, 2), (6, 3)])
def test_a_placed_dag_passes_its_values_exactly(tmp_path, nranks, seed):
    """Words that follow placement (``Layout.follow``), through the whole engine on simulated
    ranks: ``a[i]`` placed on rank ``i`` (its locations where it runs), ``b[i]`` placed on
    rank 1 reads ``a[i]`` (its counts where ``a[i]`` runs), ``c`` waits for all of ``b``
    (its gate on rank 1) and reads them; every task once, after its parents, values exact."""
    import json
    from mpitiny.dag.load import load_dag_text
    from mpitiny.engine.local import run_local
    from mpitiny.engine.types import RunOptions
    from mpitiny.io.check import check_run
    n = 12
    dag = {"name": "placed", "tasks": [
        {"id": "a", "fn": "mpitiny.tasks:echo", "args": ["{i}"], "rank": "{i}",
         "foreach": {"i": {"range": [0, n]}}},
        {"id": "b", "fn": "mpitiny.tasks:echo", "args": ["{i}"], "rank": 1,
         "foreach": {"i": {"range": [0, n]}}, "deps": ["a[{i}]"]},
        {"id": "c", "fn": "mpitiny.tasks:echo", "deps": ["b"]}]}
    text = json.dumps(dag)
    run = str(tmp_path / "run")
    assert run_local(text, nranks, run, RunOptions(quiet=True), seed=seed, max_turns=100_000) == 0
    check_run(load_dag_text(text, source="<test>"), run)
    results = {}
    for f in (tmp_path / "run" / "results").glob("*.jsonl"):
        for line in f.read_text().splitlines():
            r = json.loads(line)
            results[r["id"]] = r["value"]
    for i in range(n):
        a_i = {"value": i, "inputs": {}}        # echo takes ``inputs``: a root gets {}
        assert results[f"b[{i}]"] == {"value": i, "inputs": {f"a[{i}]": a_i}}
    assert results["c"]["inputs"] == {f"b[{i}]": results[f"b[{i}]"] for i in range(n)}
