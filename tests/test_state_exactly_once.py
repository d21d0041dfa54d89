"""The shared state store's updates take effect once per task: retries, crashes, resumes.

In one process (``run_local``) and under MPI: a retried task's first attempt is undone; a run
killed mid-way and resumed on another number of ranks ends with the same store as a run that
was never interrupted; ``jobs/distinct_state.json`` killed and resumed writes the right words (it
failed with "26757 words inserted but 15556 in the store" before the store was journaled).
"""
from __future__ import annotations

import json
import os
import random
import shutil
import sys
from pathlib import Path

import pytest

from mpitiny.engine.local import run_local
from mpitiny.engine.types import RunOptions

DAGS = Path(__file__).resolve().parent / "dags"
JOBS = Path(__file__).resolve().parents[1] / "jobs"
ENV = {"PYTHONPATH": os.pathsep.join([str(DAGS), str(JOBS)])}
N = 40


def bump_dag(out: Path, n: int = N, marker: str = "", retries: int = 0) -> dict:
    return {"name": "bumps", "tasks": [
        {"id": "bump", "fn": "state_tasks:bump", "args": ["{i}", marker],
         "foreach": {"i": {"range": [n]}}, "retries": retries},
        {"id": "report", "fn": "state_tasks:report", "args": [str(out)], "deps": ["bump"]}]}


def check_report(path: Path, n: int = N) -> dict:
    got = json.loads(path.read_text())
    items = got["items"]
    assert items["total"] == sum(range(n)), items
    assert items["calls"] == n, f"{items['calls']} task effects for {n} tasks"
    assert sorted(k for k in items if k.startswith("w")) == [f"w{k}" for k in range(7)]
    assert got["claimed"] == 7, "put_if_absent answered True once per key among done tasks"
    return got


@pytest.fixture(autouse=True)
def dags_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(DAGS))


@pytest.mark.parametrize("nranks", [1, 2, 3])
def test_a_retried_task_s_first_attempt_is_undone(tmp_path, nranks):
    text = json.dumps(bump_dag(tmp_path / "report.json", marker="fail", retries=1))
    status = run_local(text, nranks, str(tmp_path / "run"), seed=nranks)
    assert status == 0
    check_report(tmp_path / "report.json")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["retried"] == len(range(0, N, 5))


@pytest.mark.parametrize("seed", range(6))
def test_a_crash_then_resume_on_other_ranks_applies_each_task_once(tmp_path, seed):
    rng = random.Random(seed)
    first, second = rng.choice([1, 2, 3, 4]), rng.choice([1, 2, 3])
    victim = rng.randrange(first)
    text = json.dumps(bump_dag(tmp_path / "report.json"))
    run = str(tmp_path / "run")
    after = rng.randrange(1, N // first)
    while True:     # the victim may run fewer than `after` tasks (chunks follow task times)
        shutil.rmtree(run, ignore_errors=True)
        try:
            run_local(text, first, run, seed=seed,
                      fault=f"rank={victim}:after={after}:mode=raise")
        except RuntimeError as exc:
            assert "fault injected" in str(exc)
            break
        assert after > 0, "the injected fault did not fire"
        after //= 2
    (tmp_path / "report.json").unlink(missing_ok=True)
    assert run_local(text, second, run, seed=seed + 100) == 0
    check_report(tmp_path / "report.json")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["cached"] > 0


@pytest.mark.mpi
def test_a_killed_state_task_runs_alone_and_its_updates_count_once(python_module, tmp_path):
    """A task running when its rank is killed runs alone in a child process when resumed; its
    state operations go to the rank (``RemoteState``) and are journaled as any task's."""
    dag = tmp_path / "dag.json"
    dag.write_text(json.dumps(bump_dag(tmp_path / "report.json", n=200)))
    run = tmp_path / "run"
    proc = python_module(2, "mpitiny", "run", str(dag), "--out", str(run), "-q", timeout=120,
                         env={**ENV, "MPITINY_FAULT": "rank=1:after=5:mode=kill"})
    assert proc.returncode != 0
    proc = python_module(3, "mpitiny", "run", str(dag), "--out", str(run), "-q", timeout=120,
                         env=ENV)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    check_report(tmp_path / "report.json", n=200)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["isolated"] >= 1 and summary["cached"] > 0


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    sys.path.insert(0, str(JOBS))
    import wordcount
    from mpitiny.io.ingestion import ingest
    d = tmp_path_factory.mktemp("corpus")
    wordcount.generate(str(d / "corpus.txt"), megabytes=2, seed=11)
    ingest([str(d / "corpus.txt")], str(d / "corpus.h5"), chunk="64KiB")
    words = sorted(set((d / "corpus.txt").read_bytes().split()))
    return d, b"".join(w + b"\n" for w in words)


def distinct(python_module, n, corpus_dir, out, run, env=None):
    return python_module(n, "mpitiny", "run", str(JOBS / "distinct_state.json"), "--out",
                         str(run), "-q", "--param", f"input={corpus_dir / 'corpus.h5'}",
                         "--param", f"output={out}", timeout=120, env={**ENV, **(env or {})})


@pytest.mark.mpi
@pytest.mark.parametrize("seed", range(3))
def test_distinct_killed_then_resumed_writes_every_word_once(python_module, tmp_path, corpus,
                                                             seed):
    corpus_dir, reference = corpus
    rng = random.Random(seed)
    first, second = rng.choice([2, 3]), rng.choice([1, 2, 3])
    out, run = tmp_path / "out", tmp_path / "run"
    proc = distinct(python_module, first, corpus_dir, out, run,
                    env={"MPITINY_FAULT": f"rank={rng.randrange(first)}:after="
                                          f"{rng.randrange(2, 8)}:mode=kill"})
    assert proc.returncode != 0, "the injected kill -9 did not end the run"
    proc = distinct(python_module, second, corpus_dir, out, run)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (out / "distinct.txt").read_bytes() == reference
