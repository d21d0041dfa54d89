"""Listed plain tasks stored as families (``mpitiny.dag.listing``): loading and running.

Plain tasks of one shape (function and argument layout, or command; priority and options)
become one group whose ids, arguments and command lines are columns, whatever their order in
the file. Everything a run leaves must be as if they were groups of their own: ids, results,
failures, dependencies (``check_run``), ``show``, ``status``, the report.
"""
import json
import random

import numpy as np
import pytest

from mpitiny.dag.listing import LIST_MIN
from mpitiny.dag.load import load_dag, load_dag_text
from mpitiny.errors import DagError
from mpitiny.io.check import check_run
from mpitiny.io.rundir import DONE, describe_task, groups_of, read_results, read_tasks, task_id


def null(id_, deps=(), **kw):
    return {"id": id_, "fn": "mpitiny.tasks:null", "deps": list(deps), **kw}


def stencil(steps: int, width: int) -> list:
    """Task Bench's stencil_1d as listed tasks: (t, i) waits for (t-1, i-1..i+1)."""
    tasks = []
    for t in range(steps):
        for i in range(width):
            deps = [f"s{t - 1}_{j}" for j in (i - 1, i, i + 1) if t and 0 <= j < width]
            tasks.append({"id": f"s{t}_{i}", "fn": "mpitiny.tasks:spin", "args": [1e-5 * i],
                          "deps": deps})
    return tasks


def load(tasks, **top) -> object:
    return load_dag_text(json.dumps({"name": "l", "tasks": tasks, **top}))


# ------------------------------------------------------------------ loading

def test_same_shape_tasks_share_one_group_in_columns():
    tasks = [{"id": f"a{k}", "fn": "mpitiny.tasks:echo", "args": [k]} for k in range(50)]
    tasks += [{"id": f"c{k}", "cmd": f"echo {k}"} for k in range(40)]
    random.Random(1).shuffle(tasks)                 # whatever their order in the file
    d = load(tasks)
    assert len(d.groups) == 2 and d.total == 90 and d.entries == 90
    ids = [d.task_id(gid) for gid in range(d.total)]
    assert sorted(ids) == sorted(t["id"] for t in tasks)
    for gid, tid in enumerate(ids):
        g, i = d.locate(gid)
        if tid.startswith("a"):
            assert g.call_args(i) == ((int(tid[1:]),), {})
        else:
            assert g.command(i) == f"echo {tid[1:]}"


def test_few_tasks_of_a_shape_stay_groups_of_their_own():
    tasks = [null(f"t{k}") for k in range(LIST_MIN - 1)]
    assert len(load(tasks).groups) == LIST_MIN - 1


def test_shapes_differ_by_priority_and_rank():
    tasks = [null(f"t{k}", priority=k % 2, rank=k % 3) for k in range(6 * LIST_MIN)]
    d = load(tasks)
    assert len(d.groups) == 6
    for g in d.groups:
        assert len({(tasks[e]["priority"], tasks[e]["rank"]) for e in g.listing.entries}) == 1
        assert g.priority == tasks[g.listing.entries[0]]["priority"]


def test_edges_of_listed_tasks_are_every_dependency():
    tasks = stencil(20, 3)
    d = load(tasks)
    assert len(d.groups) == 1
    assert sorted(d.task_edges()) == sorted((p, t["id"]) for t in tasks for p in t["deps"])
    assert d.dep_entries == sum(len(t["deps"]) for t in tasks)


def test_listed_and_plain_and_family_mix():
    """A family waits for a plain task (which then stays a group of its own); listed tasks
    wait for plain groups and plain groups wait for listed tasks."""
    tasks = [null("setup"),
             {"id": "fam", "fn": "mpitiny.tasks:null", "foreach": {"i": {"range": [5]}},
              "deps": ["setup"]}]
    tasks += [null(f"x{k}", ["setup"] + ([f"x{k - 1}"] if k else [])) for k in range(40)]
    tasks += [{"id": "end", "cmd": "true", "deps": ["x39", "fam"]}]
    d = load(tasks)
    names = [g.name for g in d.groups]
    assert "setup" in names and "fam" in names and "end" in names
    assert d.total == 1 + 5 + 40 + 1
    expected = {("setup", "fam")} | {("setup", f"x{k}") for k in range(40)} | \
        {(f"x{k - 1}", f"x{k}") for k in range(1, 40)} | {("x39", "end"), ("fam", "end")}
    assert set(d.task_edges()) == expected


@pytest.mark.parametrize("columns", [True, False])
def test_a_cycle_among_listed_tasks_is_found(columns):
    tasks = [null(f"c{k}", [f"c{(k + 1) % 40}"]) for k in range(40)]
    if not columns:
        tasks.append({"id": "fam", "fn": "mpitiny.tasks:null", "foreach": {"i": [1]}})
    with pytest.raises(DagError) as err:
        load(tasks)
    assert "dependency cycle: c0 -> c1 -> c2" in str(err.value)
    assert err.value.where.endswith("tasks[0] (id 'c0')")


def test_parents_later_in_the_file_are_fine():
    tasks = [null(f"c{k}", [f"c{k + 1}"] if k < 39 else []) for k in range(40)]
    d = load(tasks)
    assert sorted(d.task_edges()) == sorted((f"c{k + 1}", f"c{k}") for k in range(39))


@pytest.mark.parametrize("bad,message", [
    ({"deps": ["nope"]}, "deps: unknown task 'nope'"),
    ({"deps": ["t3", "t3"]}, "deps: 't3' is listed twice"),
    ({"deps": ["t5"]}, "a task cannot depend on itself"),
    ({"deps": ["t3[1]"]}, "'t3' is a plain task, not a family"),
])
def test_messages_are_those_of_groups_of_their_own(bad, message):
    tasks = [null(f"t{k}") for k in range(50)]
    tasks[5].update(bad)
    with pytest.raises(DagError) as err:
        load(tasks)
    assert message in str(err.value) and err.value.where.endswith("tasks[5] (id 't5')")


def test_cli_counts_entries_not_groups(tmp_path):
    from click.testing import CliRunner

    from mpitiny.cli import cli
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"name": "l", "tasks": stencil(20, 2)}))
    out = CliRunner().invoke(cli, ["validate", str(path)]).output
    assert "ok: 40 tasks in 40 entries (0 families), 76 dependency entries" in out


# ------------------------------------------------------------------ running (MPI)

def run(python_module, n, tmp_path, tasks, *extra, expect=0):
    path = tmp_path / "dag.json"
    path.write_text(json.dumps({"name": "listed", "tasks": tasks}))
    out = tmp_path / "run"
    proc = python_module(n, "mpitiny", "run", str(path), "--out", str(out), *extra,
                         timeout=180, cwd=str(tmp_path))
    assert proc.returncode == expect, proc.stderr + proc.stdout
    return check_run(load_dag(str(path)), str(out)), out


@pytest.mark.mpi
@pytest.mark.parametrize("n", [1, 2, 4, 8])
def test_stencil_of_listed_tasks_runs_in_order(python_module, tmp_path, n):
    tasks = stencil(60, 4)
    counts, out = run(python_module, n, tmp_path, tasks)
    assert counts["done"] == 240
    groups = groups_of(str(out))
    rows = read_tasks(str(out))
    assert sorted(task_id(groups, int(g)) for g in rows["gid"]) == sorted(t["id"] for t in tasks)


@pytest.mark.mpi
@pytest.mark.parametrize("n", [2, 3])
def test_listed_failures_skip_their_descendants_only(python_module, tmp_path, n):
    tasks = stencil(30, 3)
    tasks[3 * 10 + 1] = {"id": "s10_1", "fn": "mpitiny.tasks:fail", "args": ["boom"],
                         "deps": tasks[31]["deps"]}
    counts, out = run(python_module, n, tmp_path, tasks, expect=1)
    assert counts["failed"] == 1
    assert counts["upstream_failed"] == 3 * (30 - 11)     # every later step waits for s10_1
    shown = describe_task(str(out), "s10_1")
    assert shown["status"] == "failed" and "boom" in shown["error"]


@pytest.mark.mpi
@pytest.mark.parametrize("n", [1, 2, 4])
def test_listed_tasks_read_their_parents_values(python_module, tmp_path, n):
    tasks = [{"id": f"v{k}", "fn": "mpitiny.tasks:echo", "args": [k]} for k in range(40)]
    tasks += [{"id": f"r{k}", "fn": "mpitiny.tasks:echo", "args": [-k],
               "deps": [f"v{k}", f"v{(k + 7) % 40}"]} for k in range(40)]
    counts, out = run(python_module, n, tmp_path, tasks)
    results = read_results(str(out))
    for k in range(40):
        j = (k + 7) % 40
        assert results[f"r{k}"] == {"value": -k, "inputs": {
            f"v{k}": {"value": k, "inputs": {}}, f"v{j}": {"value": j, "inputs": {}}}}


@pytest.mark.mpi
def test_listed_run_status_show_and_report(python_module, tmp_path):
    tasks = [{"id": f"w{k}", "cmd": f"echo out{k}", "deps": [f"w{k - 1}"] if k else []}
             for k in range(40)]
    _, out = run(python_module, 2, tmp_path, tasks)
    shown = describe_task(str(out), "w17")
    assert shown["status"] == "done" and "out17" in shown["stdout"]
    proc = python_module(1, "mpitiny", "status", str(out), timeout=60)
    assert "complete" in proc.stdout
    proc = python_module(1, "mpitiny", "report", str(out), timeout=120)
    assert proc.returncode == 0, proc.stderr
    trace = json.loads((out / "report" / "trace.json").read_text())
    names = {e["name"] for e in trace["traceEvents"] if e.get("ph") == "X"}
    assert {f"w{k}" for k in range(40)} <= names


@pytest.mark.mpi
def test_listed_run_resumes_after_a_kill(python_module, tmp_path):
    tasks = [{"id": f"k{k}", "fn": "mpitiny.tasks:sleep", "args": [0.002],
              "deps": [f"k{k - 2}"] if k > 1 else []} for k in range(300)]
    path = tmp_path / "dag.json"
    path.write_text(json.dumps({"name": "listed", "tasks": tasks}))
    out = tmp_path / "run"
    env = {"MPITINY_FAULT": "rank=1:after=50:mode=kill"}
    first = python_module(2, "mpitiny", "run", str(path), "--out", str(out), timeout=180,
                          cwd=str(tmp_path), env=env)
    assert first.returncode != 0
    again = python_module(2, "mpitiny", "run", str(path), "--out", str(out), timeout=180,
                          cwd=str(tmp_path))
    assert again.returncode == 0, again.stderr
    rows = read_tasks(str(out))
    done = rows[rows["status"] == DONE]
    assert len(np.unique(done["gid"])) == 300
