"""Tasks of several ranks (``"ranks": k``; ``mpitiny.engine.gang``), on 1 to 4 MPI ranks.

Every run checks from the task table that every task ran exactly once, after its parents
(``check_run``), and from the results that each k-rank task ran on k distinct ranks that
all took part in its Allreduce (each rank checks the sum), its result being comm rank 0's
(the rank that recorded it). A member that raises fails the task once (one failure record,
one row), retries run the gang again, and a task wider than the run is one load error.
The load checks of ``ranks`` need no MPI.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mpirun import strip_mpi_banners
from mpitiny.dag.load import load_dag, load_dag_text
from mpitiny.engine.local import run_local
from mpitiny.errors import BadInput, DagError
from mpitiny.io.check import check_run
from mpitiny.io.rundir import DONE, FAILED, UPSTREAM_FAILED, read_results, read_tasks

TASKS = '''
import os
import time

import numpy as np


def wide(i, seconds, comm, fail_on=-1, fail_attempt="any"):
    """Allreduce checked on every rank; the world ranks of the gang (comm order) on rank 0."""
    from mpi4py import MPI
    k = comm.Get_size()
    mine = np.array([comm.Get_rank() + 1], dtype=np.int64)
    total = np.zeros(1, dtype=np.int64)
    comm.Allreduce(mine, total)
    assert int(total[0]) == k * (k + 1) // 2, (int(total[0]), k)
    ranks = comm.gather(MPI.COMM_WORLD.Get_rank(), root=0)
    time.sleep(seconds)
    if comm.Get_rank() == fail_on and fail_attempt in ("any", os.environ["MPITINY_ATTEMPT"]):
        raise ValueError(f"member {fail_on} of {i} fails")
    return {"i": i, "comm_rank": comm.Get_rank(), "size": k, "ranks": ranks}


def after(i, inputs, comm):
    (parent,) = inputs.values()
    seen = comm.bcast(parent["ranks"] if comm.Get_rank() == 0 else None, root=0)
    return {"i": i, "parent": parent["i"], "seen": seen, "size": comm.Get_size()}


def one(i, seconds):
    time.sleep(seconds)
    return i


def bad(i, comm):
    time.sleep(0.02)
    raise ValueError(f"bad {i}")
'''


def wide(name: str, n: int, k: int, seconds: float = 0.01, **options) -> dict:
    return {"id": name, "fn": "gtasks:wide", "args": ["{i}", seconds], "ranks": k,
            "foreach": {"i": {"range": [0, n]}}, **options}


def singles(name: str, n: int, seconds: float = 0.003) -> dict:
    return {"id": name, "fn": "gtasks:one", "args": ["{i}", seconds],
            "foreach": {"i": {"range": [0, n]}}}


def run_dag(python_module, tmp_path: Path, n: int, dag: dict, env: dict | None = None):
    (tmp_path / "gtasks.py").write_text(TASKS)
    path = tmp_path / "dag.json"
    path.write_text(json.dumps(dag))
    out = tmp_path / "run"
    proc = python_module(n, "mpitiny", "run", str(path), "--out", str(out), "--quiet",
                         timeout=120, cwd=str(tmp_path), env=env)
    return proc, path, out


def checked(path: Path, out: Path, tmp_path: Path, monkeypatch):
    """The loaded DAG, counts by status (every task once, after its parents), rows."""
    monkeypatch.chdir(tmp_path)
    loaded = load_dag(str(path))
    return loaded, check_run(loaded, str(out)), read_tasks(str(out))


def check_gangs(loaded, rows, results: dict, name: str, n: int, k: int) -> None:
    """Each of ``name[0..n)`` ran on k distinct ranks, recorded by its comm rank 0, and no
    other rank of its gang was running a task of its own when it started (a task done before
    a kill, row attempt 0, only the first: the run that recorded it is gone)."""
    first = int(loaded.base[loaded.by_name[name]])
    row_of = {int(g): row for g, row in zip(rows["gid"], rows)}
    for i in range(n):
        value = results[f"{name}[{i}]"]
        assert value["i"] == i and value["comm_rank"] == 0 and value["size"] == k, value
        assert len(set(value["ranks"])) == k, value
        row = row_of[first + i]
        if int(row["attempt"]) == 0:
            continue        # done before a kill: its row is the resumed run's (no gang then)
        assert value["ranks"][0] == int(row["rank"]), (value, row)
        for member in value["ranks"][1:]:
            theirs = rows[rows["rank"] == member]
            busy = (theirs["start"] < row["start"]) & (theirs["end"] > row["start"])
            assert not busy.any(), (value, theirs[busy])


@pytest.mark.mpi
@pytest.mark.parametrize("n", [2, 4])
def test_wide_tasks_run_once_on_their_ranks(python_module, tmp_path, monkeypatch, n):
    """2- and n-rank tasks among one-rank tasks, and children that read a wide parent's
    value through ``inputs`` and run on several ranks themselves."""
    dag = {"name": "gang", "tasks": [
        wide("w", 8, n), wide("pair", 6, 2), singles("s", 40),
        {"id": "c", "fn": "gtasks:after", "args": ["{i}"], "ranks": 2,
         "foreach": {"i": {"range": [0, 8]}}, "deps": ["w[{i}]"]}]}
    proc, path, out = run_dag(python_module, tmp_path, n, dag)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    loaded, counts, rows = checked(path, out, tmp_path, monkeypatch)
    assert counts.get("done") == loaded.total, counts
    results = read_results(str(out))
    check_gangs(loaded, rows, results, "w", 8, n)
    check_gangs(loaded, rows, results, "pair", 6, 2)
    for i in range(8):
        child = results[f"c[{i}]"]
        assert child["parent"] == i and child["size"] == 2
        assert child["seen"] == results[f"w[{i}]"]["ranks"]
    assert all(results[f"s[{i}]"] == i for i in range(40))


@pytest.mark.mpi
def test_many_competing_gangs_do_not_hang(python_module, tmp_path, monkeypatch):
    """2- and 3-rank tasks released together and by one another on 4 ranks, with
    one-rank tasks between them: every gang gathers (one gatherer at a time)."""
    dag = {"name": "compete", "tasks": [
        wide("two", 24, 2, 0.002), wide("three", 18, 3, 0.002),
        {**wide("then", 12, 3, 0.002), "deps": ["two[{i}]"]},
        {**wide("last", 6, 2, 0.0), "deps": ["three[{i}]"]},
        singles("s", 60, 0.001)]}
    proc, path, out = run_dag(python_module, tmp_path, 4, dag)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    loaded, counts, rows = checked(path, out, tmp_path, monkeypatch)
    assert counts.get("done") == loaded.total, counts
    results = read_results(str(out))
    for name, n, k in (("two", 24, 2), ("three", 18, 3), ("then", 12, 3), ("last", 6, 2)):
        check_gangs(loaded, rows, results, name, n, k)


@pytest.mark.mpi
def test_a_failing_member_fails_the_task_once(python_module, tmp_path, monkeypatch):
    """A member (comm rank 1) raises: the task fails once, recorded by its leader, with the
    member's error; its child is skipped. With ``retries`` the gang runs it again."""
    dag = {"name": "fails", "tasks": [
        {**wide("bad", 2, 3), "kwargs": {"fail_on": 1}},
        {**wide("child", 2, 2), "deps": ["bad[{i}]"]},
        {**wide("flaky", 3, 2), "kwargs": {"fail_on": 1, "fail_attempt": "1"}, "retries": 1},
        singles("s", 10)]}
    proc, path, out = run_dag(python_module, tmp_path, 3, dag)
    assert proc.returncode == 1, proc.stderr + proc.stdout
    loaded, counts, rows = checked(path, out, tmp_path, monkeypatch)
    assert counts.get("failed") == 2 and counts.get("upstream_failed") == 2, counts
    status = {loaded.task_id(int(g)): int(s) for g, s in zip(rows["gid"], rows["status"])}
    assert status["bad[0]"] == status["bad[1]"] == FAILED
    assert status["child[0]"] == UPSTREAM_FAILED
    failures = [json.loads(line) for f in sorted((out / "failures").glob("*.jsonl"))
                for line in f.read_text().splitlines()]
    assert sorted(f["id"] for f in failures) == ["bad[0]", "bad[1]"]
    for f in failures:
        assert "comm rank 1 of 3" in f["error"] and "member 1 of" in f["error"], f["error"]
    flaky = int(loaded.base[loaded.by_name["flaky"]])
    mine = rows[(rows["gid"] >= flaky) & (rows["gid"] < flaky + 3)]
    assert (mine["status"] == DONE).all() and (mine["attempt"] == 2).all()
    results = read_results(str(out))
    check_gangs(loaded, rows, results, "flaky", 3, 2)


@pytest.mark.mpi
def test_a_command_holds_its_ranks(python_module, tmp_path, monkeypatch):
    """A command of ``"ranks": 2`` runs on its leader while the other rank of its gang runs
    nothing, and sees where its gang is (``MPITINY_GANG_*``)."""
    cmd = ("echo $MPITINY_GANG_SIZE $MPITINY_GANG_RANKS $MPITINY_GANG_HOSTS "
           "$MPITINY_GANG_NODELIST > gang-{i}.txt && sleep 0.05")
    dag = {"name": "cmd", "tasks": [
        {"id": "m", "cmd": cmd, "ranks": 2, "foreach": {"i": {"range": [0, 6]}}},
        singles("s", 40, 0.005)]}
    proc, path, out = run_dag(python_module, tmp_path, 3, dag)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    loaded, counts, rows = checked(path, out, tmp_path, monkeypatch)
    assert counts.get("done") == loaded.total, counts
    row_of = {int(g): row for g, row in zip(rows["gid"], rows)}
    for i in range(6):
        size, ranks, hosts, nodes = (tmp_path / f"gang-{i}.txt").read_text().split()
        members = [int(r) for r in ranks.split(",")]
        row = row_of[int(loaded.base[loaded.by_name["m"]]) + i]
        assert size == "2" and len(set(members)) == 2 and members[0] == int(row["rank"])
        assert len(hosts.split(",")) == 2 and nodes == hosts.split(",")[0]
        theirs = rows[rows["rank"] == members[1]]
        overlap = (theirs["start"] < row["end"]) & (theirs["end"] > row["start"])
        assert not overlap.any(), (i, theirs[overlap])


@pytest.mark.mpi
def test_a_stop_while_gangs_gather(python_module, tmp_path, monkeypatch):
    """``--max-fails 1`` ends the run while other gangs gather and hold reservations: it
    stops (exit 1, ``max-fails``) instead of hanging, no task recorded twice."""
    dag = {"name": "stop", "tasks": [
        {"id": "bad", "fn": "gtasks:bad", "args": ["{i}"], "ranks": 2,
         "foreach": {"i": {"range": [0, 3]}}},
        wide("w", 30, 3, 0.02), singles("s", 100, 0.01)]}
    (tmp_path / "gtasks.py").write_text(TASKS)
    path = tmp_path / "dag.json"
    path.write_text(json.dumps(dag))
    out = tmp_path / "run"
    proc = python_module(4, "mpitiny", "run", str(path), "--out", str(out), "--quiet",
                         "--max-fails", "1", timeout=120, cwd=str(tmp_path))
    assert proc.returncode == 1, proc.stderr + proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped"] == "max-fails" and summary["failed"] >= 1, summary
    gids = read_tasks(str(out))["gid"]
    assert len(np.unique(gids)) == len(gids)


@pytest.mark.mpi
@pytest.mark.parametrize("n", [1, 2])
def test_more_ranks_than_the_run_has(python_module, tmp_path, n):
    dag = {"name": "big", "tasks": [singles("ok", 4), wide("w", 2, n + 1)]}
    proc, _, out = run_dag(python_module, tmp_path, n, dag)
    assert proc.returncode == 2, proc.stderr + proc.stdout
    lines = strip_mpi_banners(proc.stderr).strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mpitiny: error: "), proc.stderr
    assert (f"tasks[1] (id 'w'): ranks: {n + 1} is more than the ranks of this run ({n}), "
            "so the task can never run") in lines[0]
    assert not out.exists()


@pytest.mark.mpi
def test_a_killed_run_resumes(python_module, tmp_path, monkeypatch):
    """A rank killed mid-run (the job ends): the same command resumes it, every task done
    once across both runs, the wide ones on their gangs."""
    dag = {"name": "resume", "tasks": [wide("w", 12, 2, 0.01), singles("s", 40, 0.005),
                                       {**wide("c", 12, 3, 0.0), "deps": ["w[{i}]"]}]}
    first, path, out = run_dag(python_module, tmp_path, 3, dag,
                               env={"MPITINY_FAULT": "rank=1:after=12:mode=kill"})
    assert first.returncode != 0
    again, _, _ = run_dag(python_module, tmp_path, 3, dag)
    assert again.returncode == 0, again.stderr + again.stdout
    loaded, counts, rows = checked(path, out, tmp_path, monkeypatch)
    assert counts.get("done") == loaded.total, counts
    assert (rows["attempt"] == 0).any()           # some were done before the kill
    results = read_results(str(out))
    check_gangs(loaded, rows, results, "c", 12, 3)
    first_c = int(loaded.base[loaded.by_name["c"]])
    c_rows = rows[(rows["gid"] >= first_c) & (rows["gid"] < first_c + 12)]
    assert (c_rows["attempt"] >= 1).any(), "every 3-rank task was done before the kill"
    for i in range(12):
        assert len(set(results[f"w[{i}]"]["ranks"])) == 2


# ---------------------------------------------------------------------------- no MPI

def load_error(tmp_path: Path, task: dict) -> str:
    (tmp_path / "gtasks.py").write_text(TASKS)
    text = json.dumps({"name": "x", "tasks": [task]})
    with pytest.raises(DagError) as info:
        load_dag_text(text, source="dag.json", base_dir=str(tmp_path))
    return str(info.value)


@pytest.mark.parametrize("task, message", [
    ({"id": "a", "fn": "gtasks:one", "args": [1, 0], "ranks": 2},
     "ranks: gtasks:one has no parameter named 'comm'"),
    ({"id": "a", "fn": "gtasks:wide", "args": [1, 0], "kwargs": {"comm": 1}, "ranks": 2},
     "kwargs: 'comm' is set by mpitiny"),
    ({"id": "a", "fn": "gtasks:wide", "args": [1, 0], "ranks": 0},
     "ranks: must be an integer from 1 to 1048576, not 0"),
    ({"id": "a", "fn": "gtasks:wide", "args": [1, 0], "ranks": 2, "timeout": 5},
     "ranks: a function on several ranks cannot have a timeout"),
    ({"id": "a", "fn": "gtasks:wide", "args": [1, 0], "ranks": 2, "cores": 2},
     "ranks: a task of several ranks cannot declare cores, mem or gpus"),
])
def test_bad_ranks_are_load_errors(tmp_path, task, message):
    assert message in load_error(tmp_path, task)


def test_simulated_ranks_refuse_wide_tasks_and_run_one_rank_tasks(tmp_path, monkeypatch):
    """``LocalWorld`` (one process): ``ranks`` > 1 is one clear error; ``ranks: 1`` runs
    with ``MPI.COMM_SELF``."""
    (tmp_path / "ltasks.py").write_text("def size(i, comm):\n    return [i, comm.Get_size()]\n")
    monkeypatch.chdir(tmp_path)

    def dag(k: int) -> str:
        return json.dumps({"name": "w", "tasks": [
            {"id": "a", "fn": "ltasks:size", "args": ["{i}"], "ranks": k,
             "foreach": {"i": {"range": [0, 4]}}}]})
    with pytest.raises(BadInput) as info:
        run_local(dag(2), 2, str(tmp_path / "w"))
    assert "ranks: 2: ranks simulated in one process run tasks of one rank only" in \
        str(info.value)
    assert run_local(dag(1), 2, str(tmp_path / "one")) == 0
    results = read_results(str(tmp_path / "one"))
    assert all(results[f"a[{i}]"] == [i, 1] for i in range(4))
