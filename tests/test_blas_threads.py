"""numpy's OpenBLAS threads in the ranks of ``mpitiny run`` (``mpitiny.blas``): one per rank by
default, ``cores: c`` for a function task that holds c cores, and the user's choice when they
made one; commands never inherit the default. Runs on 1, 2 and 4 MPI ranks; every run checks
that every task ran exactly once, after its parents (``check_run``).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mpitiny import blas
from mpitiny.dag.load import load_dag
from mpitiny.io.check import check_run
from mpitiny.io.rundir import read_results

TASKS = '''
import os

from mpitiny import blas


def seen(i):
    import numpy as np
    a = np.ones((64, 64))
    (a @ a).sum()           # OpenBLAS at work in the task
    return [blas.current_threads(), os.environ.get("OPENBLAS_NUM_THREADS")]
'''
CMD = 'echo "${OPENBLAS_NUM_THREADS-unset}" > cmd-{i}.txt'


def blas_dag() -> dict:
    return {"name": "blas", "tasks": [
        {"id": "one", "fn": "btasks:seen", "args": ["{i}"], "foreach": {"i": {"range": [0, 6]}}},
        {"id": "two", "fn": "btasks:seen", "args": ["{i}"], "cores": 2,
         "foreach": {"i": {"range": [0, 3]}}, "deps": ["one"]},
        {"id": "cmd", "cmd": CMD, "foreach": {"i": {"range": [0, 3]}}},
        {"id": "last", "fn": "btasks:seen", "args": [9], "deps": ["two", "cmd"]}]}


def run_blas(python_module, tmp_path: Path, n: int, dag: dict, env: dict | None = None):
    (tmp_path / "btasks.py").write_text(TASKS)
    path = tmp_path / "dag.json"
    path.write_text(json.dumps(dag))
    out = tmp_path / "run"
    proc = python_module(n, "mpitiny", "run", str(path), "--out", str(out), "--quiet",
                         timeout=180, cwd=str(tmp_path), env=env)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    loaded = load_dag(str(path))
    counts = check_run(loaded, str(out))
    assert counts.get("done") == loaded.total, counts
    results = read_results(str(out))
    commands = sorted((tmp_path / f"cmd-{i}.txt").read_text().strip() for i in range(3))
    return results, commands


def threads_by_entry(results: dict) -> dict:
    by: dict = {}
    for key, value in results.items():
        by.setdefault(str(key).split("[")[0].split(":")[0], set()).add(tuple(value))
    return by


def openblas_loaded() -> bool:
    import numpy  # noqa: F401
    return blas.current_threads() is not None


needs_openblas = pytest.mark.skipif(not sys.platform.startswith("linux") or not openblas_loaded(),
                                    reason="numpy without OpenBLAS (or not Linux)")
NO_USER = {"OPENBLAS_NUM_THREADS": None, "GOTO_NUM_THREADS": None, "OMP_NUM_THREADS": None}


@needs_openblas
@pytest.mark.mpi
@pytest.mark.parametrize("n", [1, 2, 4])
def test_one_thread_per_rank_and_cores_threads_for_wide_tasks(python_module, tmp_path, n):
    """By default a rank's tasks run with one OpenBLAS thread, a ``cores: 2`` function task
    with two (and the next task with one again), none of them sees the variable in
    ``os.environ``, and commands do not inherit it."""
    if n == 1:
        dag = blas_dag()
        dag["tasks"][1]["cores"] = 1        # one rank: a node of one core
    else:
        dag = blas_dag()
    results, commands = run_blas(python_module, tmp_path, n, dag, env=NO_USER)
    by = threads_by_entry(results)
    assert by["one"] == {(1, None)}, by
    assert by["two"] == {(2 if n > 1 else 1, None)}, by
    assert by["last"] == {(1, None)}, by
    assert commands == ["unset"] * 3


@needs_openblas
@pytest.mark.mpi
def test_the_users_thread_count_wins(python_module, tmp_path):
    """``OPENBLAS_NUM_THREADS`` set by the user: every task has that many threads (``cores``
    changes nothing) and sees it in ``os.environ``, and commands inherit it."""
    results, commands = run_blas(python_module, tmp_path, 2, blas_dag(),
                                 env={**NO_USER, "OPENBLAS_NUM_THREADS": "1"})
    by = threads_by_entry(results)
    assert by == {"one": {(1, "1")}, "two": {(1, "1")}, "last": {(1, "1")}}, by
    assert commands == ["1"] * 3


@needs_openblas
def test_omp_num_threads_counts_as_the_users_choice():
    """``OMP_NUM_THREADS`` (which OpenBLAS reads too) keeps mpitiny's default off."""
    code = ("import sys; sys.orig_argv = ['python', '-m', 'mpitiny', 'run', 'x']\n"
            "import mpitiny, os\nfrom mpitiny import blas\n"
            "print(blas.current_threads(), os.environ.get('OPENBLAS_NUM_THREADS'))")
    env = {k: v for k, v in os.environ.items() if k not in NO_USER}
    mine = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, check=True).stdout.split()
    theirs = subprocess.run([sys.executable, "-c", code], env={**env, "OMP_NUM_THREADS": "2"},
                            capture_output=True, text=True, check=True).stdout.split()
    assert mine == ["1", "None"]
    assert theirs == [str(min(2, len(os.sched_getaffinity(0)))), "None"]


@pytest.mark.parametrize("argv, ranked", [
    (["python", "-m", "mpitiny", "run", "dag.json"], True),
    (["python", "-X", "importtime", "-m", "mpitiny", "serve", "d"], True),
    (["python", "-mmpitiny", "run", "d"], True),
    (["/venv/bin/python", "/venv/bin/mpitiny", "run", "d"], True),
    (["python", "-m", "mpitiny", "validate", "d"], False),
    (["python", "-m", "mpitiny.futures", "run"], False),
    (["python", "script.py", "run"], False),
    (["python", "-c", "import mpitiny"], False),
    (["python"], False),
])
def test_only_the_ranks_of_mpitiny_run_and_serve(argv, ranked):
    assert blas.ranked_command(argv) is ranked


def test_a_program_importing_mpitiny_keeps_its_blas_threads():
    """``import mpitiny`` in a user's program sets nothing (this very test process too)."""
    code = "import mpitiny, os\nprint(os.environ.get('OPENBLAS_NUM_THREADS'), mpitiny._blas._state)"
    env = {k: v for k, v in os.environ.items() if k not in NO_USER}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "None {'set': False, 'setter': None}"


def test_no_openblas_no_setter(tmp_path):
    maps = tmp_path / "maps"
    maps.write_text("7f0000000000-7f0000001000 r--p 00000000 08:01 1  /usr/lib/libc.so.6\n"
                    "7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0\n")
    assert blas.find_setter(str(maps)) is None
    assert blas.current_threads(str(maps)) is None
    with blas.threads(4):
        pass
