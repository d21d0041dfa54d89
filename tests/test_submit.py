"""Tasks that add tasks (``mpitiny.submit``, issue 21 point 1): counts exact on 1, 2, 4 ranks,
deps on added tasks honoured, a rank killed (or the run stopped by a signal) and the run
resumed without losing or repeating an added task, and ``submit`` outside a run refused with
one clear error.

The tree is UTS's binomial tree (tests/dags/submit_tasks.py): its size is known by searching
it in this process, and the tasks' results sum to it only if every added task ran exactly once
(results are keyed by task id). Orders are checked from the task records, never durations.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import mpitiny
from mpitiny.engine.adding import SubmitError
from mpitiny.engine.local import SimulatedCrash, run_local
from mpitiny.io import journal as jnl
from mpitiny.io.added import ADDED_BIT, read_added_ids, task_text
from mpitiny.io.rundir import DONE, UPSTREAM_FAILED, read_results, read_tasks
from mpitiny.report import make_report

DAGS = Path(__file__).resolve().parent / "dags"
ENV = {"PYTHONPATH": str(DAGS)}
sys.path.insert(0, str(DAGS))
import submit_tasks  # noqa: E402

TREE = (42, 20, 0.124875, 8)          # seed, b0, q, m: 6213 nodes
PER_TASK, SPLIT = 40, 3


def tree_dag(log: str = "", delay: float = 0.0) -> dict:
    return {"name": "tree", "tasks": [{"id": "root", "fn": "submit_tasks:tree_root",
                                       "args": [*TREE, PER_TASK, SPLIT, log, delay]}]}


def write(tmp_path, dag: dict) -> Path:
    path = tmp_path / "dag.json"
    path.write_text(json.dumps(dag))
    return path


def run(python_module, n, dag_path, out, *extra, env=None):
    return python_module(n, "mpitiny", "run", str(dag_path), "--out", str(out), "-q", *extra,
                         timeout=180, cwd=str(dag_path.parent), env={**ENV, **(env or {})})


def forest_dag(seeds: list) -> dict:
    """A family of trees, one per seed: several DAG tasks add tasks (when resumed, those not
    done run again and add tasks before the rank first looks for added ones)."""
    return {"name": "forest", "tasks": [{
        "id": "tree", "fn": "submit_tasks:tree_root", "foreach": {"s": seeds},
        "args": ["{s}", *TREE[1:], PER_TASK, SPLIT]}]}


def check_tree(out, seeds=(TREE[0],)) -> dict:
    """The run's results sum to the trees' sizes, one per task; every added task's row is
    there once and started after it was added. Returns the results."""
    results = read_results(str(out))
    assert sum(results.values()) == sum(submit_tasks.tree_size(s, *TREE[1:]) for s in seeds)
    rows = read_tasks(str(out))
    added = rows[rows["gid"] >= ADDED_BIT]
    assert len(np.unique(rows["gid"])) == len(rows), "a task was recorded twice"
    assert (added["status"] == DONE).all()
    assert (added["start"] >= added["queued"]).all(), "an added task started before it was added"
    return results


# ---------------------------------------------------------------------- on simulated ranks
@pytest.mark.parametrize("nranks", [1, 3])
def test_tree_count_exact_on_simulated_ranks(tmp_path, nranks):
    assert run_local(json.dumps(tree_dag()), nranks, str(tmp_path / "run")) == 0
    results = check_tree(tmp_path / "run")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["tasks"] == summary["done"] == len(results) == summary["added"] + 1
    assert len(read_added_ids(str(tmp_path / "run"))) == summary["added"]
    text = make_report(str(tmp_path / "run"), plots=False)["text"]
    line = next(x for x in text.splitlines() if x.startswith("added grow "))
    assert int(line.split()[2]) == summary["added"]        # busy time per added function


@pytest.mark.parametrize("seed", range(6))
def test_simulated_crash_then_resume_tree(tmp_path, seed):
    """Ranks simulated in one process, stopped dead after a number of turns (journals as a
    kill leaves them), then resumed on another number of ranks: exact, nothing done twice.
    Odd seeds: a family of trees (DAG tasks left to run again add tasks when resumed)."""
    seeds = [TREE[0]] if seed % 2 == 0 else list(range(40, 52))
    text = json.dumps(tree_dag() if seed % 2 == 0 else forest_dag(seeds))
    out = tmp_path / "run"
    with pytest.raises(SimulatedCrash):
        run_local(text, 3, str(out), seed=seed, crash_after=(10 + 10 * seed, 6 + 3 * seed)[seed % 2])
    assert run_local(text, 1 + seed % 3, str(out), seed=seed) == 0
    check_tree(out, seeds)
    runs = done_keys_per_incarnation(out)
    assert len(runs) == 2 and not set(runs[0]) & set(runs[1])


def test_complete_run_with_added_tasks_runs_nothing(tmp_path):
    text, out = json.dumps(tree_dag()), tmp_path / "run"
    assert run_local(text, 2, str(out)) == 0
    before = (out / "summary.json").read_text()
    assert run_local(text, 2, str(out)) == 0
    assert (out / "summary.json").read_text() == before


@pytest.mark.parametrize("seed", range(3))
def test_deps_on_simulated_ranks(tmp_path, seed):
    dag = {"name": "deps", "tasks": [{"id": "root", "fn": "submit_tasks:deps_root",
                                      "args": [12, 0.0]}]}
    out = tmp_path / "run"
    assert run_local(json.dumps(dag), 3, str(out), seed=seed) == 0
    check_deps(out)


def test_bad_submits_are_refused_and_add_nothing(tmp_path):
    dag = {"name": "bad", "tasks": [{"id": "root", "fn": "submit_tasks:bad_submits"}]}
    out = tmp_path / "run"
    assert run_local(json.dumps(dag), 2, str(out)) == 0
    results = read_results(str(out))
    first, second, third = results.pop("root")
    assert "is not a function defined at the top level" in first
    assert "cannot be sent to other ranks" in second
    assert "deps must be ids that mpitiny.submit returned" in third
    assert list(results.values()) == [7]
    assert json.loads((out / "summary.json").read_text())["tasks"] == 2


def test_submit_outside_a_run_is_one_clear_error():
    with pytest.raises(SubmitError, match="called outside a running task"):
        mpitiny.submit(submit_tasks.joined, 1)
    with pytest.raises(SubmitError, match="called outside a running task"):
        mpitiny.submit_family(submit_tasks.joined, [1, 2])


# ---------------------------------------------------------------------- on MPI ranks
@pytest.mark.parametrize("n", [1, 2, 4])
def test_tree_count_exact(python_module, tmp_path, n):
    out = tmp_path / "run"
    proc = run(python_module, n, write(tmp_path, tree_dag()), out, "--trace")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = check_tree(out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["tasks"] == summary["done"] == len(results) == summary["added"] + 1
    progress = json.loads((out / "progress.json").read_text())
    assert progress["done"] == progress["total"] == summary["tasks"]
    events = json.loads((out / "trace.json").read_text())["traceEvents"]
    names = {e["name"] for e in events if e["ph"] == "X"}
    assert names == set(results), "the trace names every task by its id"


def order_of(out) -> dict:
    """``{task id: (start, end, status)}`` of every added task, from the task records."""
    rows = read_tasks(str(out))
    ids = read_added_ids(str(out))
    return {ids[int(r["gid"])]: (float(r["start"]), float(r["end"]), int(r["status"]))
            for r in rows if int(r["gid"]) >= ADDED_BIT}


@pytest.mark.parametrize("n", [1, 2, 4])
def test_deps_on_added_tasks(python_module, tmp_path, n):
    dag = {"name": "deps", "tasks": [{"id": "root", "fn": "submit_tasks:deps_root",
                                      "args": [12, 0.01]}]}
    out = tmp_path / "run"
    proc = run(python_module, n, write(tmp_path, dag), out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    check_deps(out)


def check_deps(out) -> None:
    """Every task of ``deps_root`` ran once, each after all its deps had ended."""
    graph: dict = {}
    for value in read_results(str(out)).values():
        if isinstance(value, dict):
            graph.update(value)
    ran = order_of(out)
    assert len(read_tasks(str(out))) == len(ran) + 1
    assert set(ran) == set(graph) | {d for deps in graph.values() for d in deps}
    assert len(ran) == 13 + 12 + 1 + 3 + 3
    for tid, deps in graph.items():
        for dep in deps:
            assert ran[tid][0] >= ran[dep][1], f"{tid} started before its dep {dep} ended"


def test_a_failed_dep_fails_its_dependents(python_module, tmp_path):
    dag = {"name": "faildep", "tasks": [{"id": "root", "fn": "submit_tasks:failed_dep_root"}]}
    out = tmp_path / "run"
    proc = run(python_module, 2, write(tmp_path, dag), out)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    ids = read_results(str(out))["root"]
    ran = order_of(out)
    assert ran[ids["bad"]][2] == 2 and ran[ids["fine"]][2] == DONE
    assert ran[ids["child"]][2] == ran[ids["grandchild"]][2] == UPSTREAM_FAILED
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["failed"], summary["upstream_failed"], summary["tasks"]) == (1, 2, 5)


def done_keys_per_incarnation(out) -> list:
    """For each incarnation, the keys of the added tasks its journals record as done."""
    by_run: dict = {}
    for path in jnl.journal_files(str(out)):
        rec, _ = jnl._valid_records(path)
        done = rec[(rec["kind"] == jnl.DONE) & (rec["length"] < 0) & (rec["lo"] >= ADDED_BIT)]
        run_no = int(os.path.basename(path)[4:8])
        by_run.setdefault(run_no, []).extend(done["lo"].tolist())
    return [by_run[k] for k in sorted(by_run)]


@pytest.mark.parametrize("first,second,after", [(2, 2, 15), (3, 1, 40), (4, 3, 8)])
def test_kill_one_rank_then_resume_tree(python_module, tmp_path, first, second, after):
    log = str(tmp_path / "ran.log")
    dag_path = write(tmp_path, tree_dag(log, delay=0.002))   # every rank gets some tasks
    out = tmp_path / "run"
    proc = run(python_module, first, dag_path, out,
               env={"MPITINY_FAULT": f"rank=1:after={after}:mode=kill"})
    assert proc.returncode != 0, "the injected kill -9 did not end the run"
    before = done_keys_per_incarnation(out)
    assert len(before) == 1 and before[0], "nothing was journaled done before the kill"
    proc = run(python_module, second, dag_path, out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    check_tree(out)
    runs = done_keys_per_incarnation(out)
    for keys in runs:
        assert len(keys) == len(set(keys)), "a task was journaled done twice in one run"
    again = set(runs[0]) & set(runs[1])
    assert not again, f"{len(again)} added tasks done before the kill ran again"
    now = set(read_results_current(out))
    assert not now & {task_text("grow", k) for k in runs[0]}
    lines = Path(log).read_text().splitlines()
    assert len(set(lines)) == len(read_results(str(out))) - 1   # every added task ran


def test_stop_signal_then_resume_tree(python_module, tmp_path):
    """A stop signal (as Slurm sends before the time limit) while added tasks run: the run
    ends resumable, every added task it ran is journaled done (finished tasks are journaled
    in groups, ``Adding.settle``: a stop settles them first) and none of them runs again;
    the resumed run's count is exact."""
    log = tmp_path / "ran.log"
    dag_path = write(tmp_path, tree_dag(str(log), delay=0.005))
    out = tmp_path / "run"
    stopper = threading.Thread(target=signal_launcher, args=(out, log, 30))
    stopper.start()
    proc = run(python_module, 2, dag_path, out)
    stopper.join()
    assert proc.returncode == 75, proc.stdout + proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped"] == "signal" and summary["done"] < summary["tasks"], summary
    ran_before = {int(r["gid"]) for r in read_tasks(str(out))
                  if int(r["gid"]) >= ADDED_BIT and int(r["status"]) == DONE}
    (journaled,) = done_keys_per_incarnation(out)
    assert ran_before and ran_before == set(journaled), "a task ran but was not journaled done"
    proc = run(python_module, 2, dag_path, out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    check_tree(out)
    first, second = done_keys_per_incarnation(out)
    assert not set(first) & set(second), "an added task done before the stop ran again"


def signal_launcher(out: Path, log: Path, lines: int) -> None:
    """Once ``lines`` added tasks have started, send SIGUSR1 to the mpiexec writing ``out``."""
    import psutil
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (log.exists()
                                               and log.read_text().count("\n") >= lines):
        time.sleep(0.005)
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if cmd and os.path.basename(cmd[0]) in ("mpiexec", "mpirun", "prterun", "mpiexec.hydra") \
                and str(out) in cmd:
            p.send_signal(signal.SIGUSR1)


def read_results_current(out) -> dict:
    """Results written by the last incarnation only (``results/``)."""
    values: dict = {}
    for name in os.listdir(out / "results"):
        with open(out / "results" / name, encoding="utf-8") as f:
            for line in f:
                rec = json.loads(line)
                values[rec["id"]] = rec.get("value")
    return values
