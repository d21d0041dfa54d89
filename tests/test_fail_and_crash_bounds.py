"""How far a failure or a crash reaches: ``--max-fails N`` starts no task once N have failed
(at most one more in flight per rank), and a rank killed mid-chunk makes only the task it was
running a suspect (the rest of its chunk runs again normally, not alone in child processes)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from mpitiny.engine.local import run_local
from mpitiny.engine.types import RunOptions

DAGS = Path(__file__).resolve().parent / "dags"
ENV = {"PYTHONPATH": str(DAGS)}


def failing_family(n: int) -> dict:
    return {"name": "many-fail", "tasks": [
        {"id": "f", "fn": "mpitiny.tasks:fail", "foreach": {"i": {"range": [0, n]}}}]}


@pytest.mark.parametrize("nranks", [1, 2, 4])
def test_max_fails_starts_no_task_past_the_limit_in_one_process(tmp_path, nranks):
    text = json.dumps(failing_family(500))
    status = run_local(text, nranks, str(tmp_path / "run"),
                       RunOptions(quiet=True, max_fails=3), seed=nranks)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert status == 1 and summary["stopped"] == "max-fails"
    # ranks take turns: the one that fails the third stops every rank before its next task
    assert summary["failed"] == 3, summary["failed"]


@pytest.mark.mpi
@pytest.mark.parametrize("nranks", [1, 2, 3])
def test_max_fails_stops_within_one_task_per_rank(python_module, tmp_path, nranks):
    dag = tmp_path / "dag.json"
    dag.write_text(json.dumps(failing_family(2000)))
    out = tmp_path / "run"
    proc = python_module(nranks, "mpitiny", "run", str(dag), "--out", str(out),
                         "--max-fails", "3", timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped"] == "max-fails"
    assert 3 <= summary["failed"] <= 3 + nranks - 1, summary["failed"]


def sleeper_family(n: int, seconds: float) -> dict:
    return {"name": "sleepers", "tasks": [
        {"id": "s", "fn": "mpitiny.tasks:sleep", "args": [seconds],
         "foreach": {"i": {"range": [0, n]}}}]}


@pytest.mark.mpi
def test_a_killed_rank_makes_only_its_running_task_a_suspect(python_module, tmp_path):
    """Tasks of 0.2 ms are claimed ~25 at a time (5 ms chunks): when rank 1 is killed, the
    job ends and every rank's chunk holds tasks it had not started; only the task each rank
    was running (at most one per rank) may run alone when resumed."""
    dag = tmp_path / "dag.json"
    dag.write_text(json.dumps(sleeper_family(2000, 0.0002)))
    out = tmp_path / "run"
    proc = python_module(2, "mpitiny", "run", str(dag), "--out", str(out), "-q", timeout=120,
                         env={**ENV, "MPITINY_FAULT": "rank=1:after=300:mode=kill"})
    assert proc.returncode != 0
    proc = python_module(2, "mpitiny", "run", str(dag), "--out", str(out), "-q", timeout=120,
                         env=ENV)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["done"] == 2000 and summary["cached"] > 0
    assert summary["isolated"] <= 2, f"{summary['isolated']} tasks ran alone after one kill"


def test_a_crash_in_one_process_leaves_at_most_the_running_task_suspect(tmp_path):
    text = json.dumps(sleeper_family(300, 0.0005))
    run = str(tmp_path / "run")
    with pytest.raises(RuntimeError, match="fault injected"):
        run_local(text, 2, run, fault="rank=0:after=5:mode=raise", seed=1)
    assert run_local(text, 3, run, seed=2) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["done"] == 300 and summary["isolated"] <= 1
    assert os.path.exists(os.path.join(run, "journal", "run-0001.rank-00000.now"))
