"""Per-task resources (``"cores"``, ``"mem"``, ``"gpus"``; ``mpitiny.engine.resources``), on
1, 2 and 4 MPI ranks of this one node.

What a task holds is checked from the task table, never from durations: at every moment, the
cores of the tasks running (their start/end intervals) sum to at most the node's ranks, the
``mem`` of those running to at most ``--node-mem``, and at most ``--gpus-per-node`` GPU tasks
run, each seeing its own devices in ``CUDA_VISIBLE_DEVICES`` / ``ROCR_VISIBLE_DEVICES``
(fn tasks and commands). Every run also checks that every task ran exactly once, after its
parents (``check_run``). What can never fit (more cores than a node has ranks, more memory
than a node has, GPUs where there are none) is one error line, exit 2, nothing run.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mpirun import strip_mpi_banners
from mpitiny.dag.limits import parse_size
from mpitiny.dag.load import load_dag, load_dag_text
from mpitiny.io.check import check_run
from mpitiny.io.rundir import read_results, read_tasks

TASKS = '''
import os
import time


def work(i, seconds):
    time.sleep(seconds)
    return i


def devices(i, seconds):
    seen = (os.environ.get("CUDA_VISIBLE_DEVICES"), os.environ.get("ROCR_VISIBLE_DEVICES"))
    time.sleep(seconds)
    return list(seen)
'''


def family(name: str, n: int, seconds: float, fn: str = "rtasks:work", **options) -> dict:
    return {"id": name, "fn": fn, "args": ["{i}", seconds],
            "foreach": {"i": {"range": [0, n]}}, **options}


def run_dag(python_module, tmp_path: Path, n: int, dag: dict, *extra: str,
            env: dict | None = None):
    (tmp_path / "rtasks.py").write_text(TASKS)
    path = tmp_path / "dag.json"
    path.write_text(json.dumps(dag))
    out = tmp_path / "run"
    proc = python_module(n, "mpitiny", "run", str(path), "--out", str(out), "--quiet", *extra,
                         timeout=180, cwd=str(tmp_path), env=env)
    return proc, path, out


def run_checked(python_module, tmp_path: Path, n: int, dag: dict, *extra: str,
                env: dict | None = None):
    """Run ``dag`` on ``n`` ranks; check every task ran once after its parents; return the
    loaded DAG (with the same node options) and the task rows."""
    proc, path, out = run_dag(python_module, tmp_path, n, dag, *extra, env=env)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    with pytest.MonkeyPatch.context() as mp:
        for key, value in (env or {}).items():
            mp.setenv(key, value) if value is not None else mp.delenv(key, raising=False)
        loaded = load_dag(str(path))
    counts = check_run(loaded, str(out))
    assert counts.get("done") == loaded.total, counts
    return loaded, read_tasks(str(out)), out


def most_at_once(rows, weights: np.ndarray) -> int:
    """The largest sum of ``weights`` over tasks running at one moment (an end at the same
    time as a start counts first)."""
    events = sorted([(float(e), 0, -int(w)) for e, w in zip(rows["end"], weights)] +
                    [(float(s), 1, int(w)) for s, w in zip(rows["start"], weights)])
    held = most = 0
    for _, _, w in events:
        held += w
        most = max(most, held)
    return most


def per_row(loaded, rows, what) -> np.ndarray:
    """``what(group)`` of every task row."""
    g = np.searchsorted(loaded.base, rows["gid"], side="right") - 1
    return np.array([what(group) for group in loaded.groups], dtype=np.int64)[g]


@pytest.mark.mpi
@pytest.mark.parametrize("n", [2, 4])
def test_two_core_tasks_hold_two_slots(python_module, tmp_path, n):
    """The bar: ``"cores": 2`` tasks on 4 ranks never run more than 2 at once, and with the
    one-core tasks around them never more busy cores than ranks."""
    dag = {"name": "cores", "tasks": [family("two", 16, 0.03, cores=2),
                                      family("one", 60, 0.005),
                                      {**family("after", 8, 0.01, cores=2), "deps": ["one"]}]}
    loaded, rows, _ = run_checked(python_module, tmp_path, n, dag)
    cores = per_row(loaded, rows, lambda g: g.options.cores or 1)
    assert most_at_once(rows, cores) <= n
    assert most_at_once(rows[cores == 2], np.ones(int((cores == 2).sum()))) <= n // 2


@pytest.mark.mpi
def test_wide_tasks_of_several_sizes_compete(python_module, tmp_path):
    """Tasks of 3, 2 and 1 cores, some needing memory and GPUs too, released together and by
    one another on 4 ranks: all run (no two gatherers wait on each other), never more busy
    cores than ranks, never more memory or GPUs than the node has."""
    dag = {"name": "mixed", "tasks": [
        family("three", 8, 0.02, cores=3),
        family("two", 10, 0.02, cores=2, mem="1GB"),
        family("gpu", 10, 0.01, fn="rtasks:devices", gpus=1, mem="1GB"),
        {**family("then", 10, 0.01, cores=2, gpus=1), "deps": ["three[{i}]"],
         "foreach": {"i": {"range": [0, 8]}}},
        family("one", 40, 0.003)]}
    env = {"MPITINY_GPUS_PER_NODE": "1"}
    loaded, rows, _ = run_checked(python_module, tmp_path, 4, dag, "--node-mem", "2GB",
                                  env=env)
    assert most_at_once(rows, per_row(loaded, rows, lambda g: g.options.cores or 1)) <= 4
    mem = per_row(loaded, rows, lambda g: g.options.mem or 0)
    assert most_at_once(rows, mem) <= 2 * 10**9
    assert most_at_once(rows, per_row(loaded, rows, lambda g: g.options.gpus or 0)) <= 1


@pytest.mark.mpi
@pytest.mark.parametrize("n", [1, 4])
def test_memory_is_counted_per_node(python_module, tmp_path, n):
    """Tasks of 1 GB with ``--node-mem 3GB``: never more than three running at once; 1 rank
    runs a mixed DAG (cores 1, mem, deps) to the end."""
    dag = {"name": "mem", "tasks": [family("big", 12, 0.03, mem="1GB"),
                                    {**family("small", 12, 0.005, mem=1 << 20),
                                     "deps": ["big[{i}]"]}]}
    loaded, rows, _ = run_checked(python_module, tmp_path, n, dag, "--node-mem", "3GB",
                                  env={"MPITINY_NODE_MEM": None})
    mem = per_row(loaded, rows, lambda g: g.options.mem or 0)
    assert most_at_once(rows, mem) <= parse_size("3GB")
    assert most_at_once(rows[mem == 10**9], np.ones(int((mem == 10**9).sum()))) <= min(n, 3)


@pytest.mark.mpi
@pytest.mark.parametrize("n", [1, 4])
def test_gpus_are_given_in_the_environment(python_module, tmp_path, n):
    """``--gpus-per-node 2`` (here through MPITINY_GPUS_PER_NODE): one-GPU fn tasks each see
    one device, never the same one as a task running at the same time; a two-GPU command sees
    both; a task that declares none sees the environment it was started with."""
    dag = {"name": "gpus", "tasks": [
        family("one", 12, 0.02, fn="rtasks:devices", gpus=1),
        family("none", 4, 0.0, fn="rtasks:devices"),
        {"id": "both", "cmd": "echo seen=$CUDA_VISIBLE_DEVICES/$ROCR_VISIBLE_DEVICES > both.txt",
         "gpus": 2}]}
    env = {"MPITINY_GPUS_PER_NODE": "2", "CUDA_VISIBLE_DEVICES": None,
           "ROCR_VISIBLE_DEVICES": None}
    loaded, rows, out = run_checked(python_module, tmp_path, n, dag, env=env)
    results = read_results(str(out))
    for i in range(12):
        cuda, rocr = results[f"one[{i}]"]
        assert cuda == rocr and cuda in ("0", "1"), (i, cuda, rocr)
    assert all(results[f"none[{i}]"] == [None, None] for i in range(4))
    assert (tmp_path / "both.txt").read_text().strip() == "seen=0,1/0,1"
    one = loaded.base[loaded.by_name["one"]]
    mine = (rows["gid"] >= one) & (rows["gid"] < one + 12)
    gpu_rows = rows[mine]
    device = np.array([int(results[f"one[{int(g - one)}]"][0]) for g in gpu_rows["gid"]])
    for d in (0, 1):       # a device is never given to two tasks running at once
        on_d = gpu_rows[device == d]
        assert most_at_once(on_d, np.ones(len(on_d))) <= 1


@pytest.mark.mpi
def test_listed_tasks_carry_their_resources(python_module, tmp_path):
    """Listed (plain) tasks with ``cores`` keep them: on 2 ranks two of them never overlap."""
    tasks = [{"id": f"t{k}", "fn": "rtasks:work", "args": [k, 0.02], "cores": 2}
             for k in range(10)]
    tasks += [{"id": f"u{k}", "fn": "rtasks:work", "args": [k, 0.005]} for k in range(20)]
    loaded, rows, _ = run_checked(python_module, tmp_path, 2, {"name": "listed", "tasks": tasks})
    cores = per_row(loaded, rows, lambda g: g.options.cores or 1)
    assert int((cores == 2).sum()) == 10
    assert most_at_once(rows, cores) <= 2


def one_error(proc, out: Path) -> str:
    assert proc.returncode == 2, proc.stderr + proc.stdout
    lines = strip_mpi_banners(proc.stderr).strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mpitiny: error: "), proc.stderr
    assert not out.exists()
    return lines[0]


@pytest.mark.mpi
@pytest.mark.parametrize("n", [1, 2])
def test_more_cores_than_a_node_has_ranks(python_module, tmp_path, n):
    dag = {"name": "big", "tasks": [family("ok", 4, 0.0), family("wide", 4, 0.0, cores=n + 1)]}
    proc, _, out = run_dag(python_module, tmp_path, n, dag)
    line = one_error(proc, out)
    assert (f"tasks[1] (id 'wide'): cores: {n + 1} is more than the ranks of a node ({n} on "
            "the smallest node of this run)") in line


@pytest.mark.mpi
def test_memory_or_gpus_that_never_fit(python_module, tmp_path):
    dag = {"name": "big", "tasks": [family("huge", 4, 0.0, mem="20GB")]}
    proc, _, out = run_dag(python_module, tmp_path, 2, dag, env={"MPITINY_NODE_MEM": "16GiB"})
    assert "tasks[0] (id 'huge'): mem: '20GB' (18.6 GiB) is more than a node has (16.0 GiB" \
        in one_error(proc, out)
    dag = {"name": "gpu", "tasks": [{"id": "g", "cmd": "true", "gpus": 1}]}
    proc, _, out = run_dag(python_module, tmp_path, 2, dag, env={"MPITINY_GPUS_PER_NODE": None})
    assert "tasks[0] (id 'g'): gpus: 1 is more than a node has (0:" in one_error(proc, out)


def test_sizes_and_options():
    assert parse_size("20GB") == 20 * 10**9
    assert parse_size("1.5GiB") == 3 << 29
    assert parse_size(512) == 512
    assert parse_size("512") == 512
    for bad in ("20 gigs", "-1", -1, 1.5, True, "GB", None):
        assert parse_size(bad) is None, bad
    dag = load_dag_text(json.dumps({"name": "o", "tasks": [
        {"id": "a", "fn": "mpitiny.tasks:null", "cores": 3, "mem": "1MiB"},
        {"id": "b", "fn": "mpitiny.tasks:null"},
        {"id": "c", "fn": "mpitiny.tasks:null", "cores": 3, "mem": "1MiB"}]}))
    a, c = (dag.groups[dag.by_name[x]] for x in "ac")
    assert (a.options.cores, a.options.mem, a.options.gpus) == (3, 1 << 20, None)
    assert a.options is c.options and a.options.resources
    assert not dag.groups[dag.by_name["b"]].options.resources


def test_no_resources_no_window():
    """A DAG that declares no resources makes no window and claims nothing."""
    from mpitiny.engine.resources import node_resources

    class World:
        comm = None
    dag = load_dag_text(json.dumps({"name": "o", "tasks": [{"id": "a", "cmd": "true"}]}))
    assert node_resources(World(), dag) is None
