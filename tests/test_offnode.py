"""Between nodes (MPICH's network path, ``MPIR_CVAR_NOLOCAL=1``), one-sided operations on a
rank complete only when it calls MPI: the progress thread makes them complete while the rank
runs a task, so an idle rank can take work queued on a busy one (``ProgressThread``).

The check is an order, not a duration: rank 0 runs a long task ``a`` (a command, or pure
Python holding the GIL) and holds 10 short tasks ``b`` in its queue; rank 1 must take and
finish every ``b`` before ``a`` ends. Without the thread (``MPITINY_PROGRESS=0``) rank 1's
steal waits for ``a`` to end, and the test fails. Placement is soft, so rank 1 first runs a
0.3 s task of its own (``warm``, as urgent as ``a``): by then rank 0 has claimed ``a``, which
rank 1 would otherwise be free to take.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from mpitiny.io.rundir import read_tasks

LONG = {"cmd": {"cmd": "sleep 3"}, "python": {"fn": "mpitiny.tasks:spin", "args": [3]}}


def busy_rank_dag(kind: str) -> dict:
    return {"name": f"busy-{kind}", "tasks": [
        {"id": "a", **LONG[kind], "rank": 0, "priority": 1},
        {"id": "b", "fn": "mpitiny.tasks:null", "foreach": {"i": {"range": [10]}}, "rank": 0},
        {"id": "warm", "fn": "mpitiny.tasks:sleep", "args": [0.3], "rank": 1, "priority": 1}]}


@pytest.mark.mpi
@pytest.mark.parametrize("kind", ["cmd", "python"])
def test_an_idle_rank_takes_work_from_a_busy_one_on_the_network_path(python_module, mpi_impl,
                                                                      tmp_path, kind):
    if mpi_impl != "mpich":
        pytest.skip("MPIR_CVAR_NOLOCAL is MPICH's")
    dag = tmp_path / "dag.json"
    dag.write_text(json.dumps(busy_rank_dag(kind)))
    out = tmp_path / "run"
    proc = python_module(2, "mpitiny", "run", str(dag), "--out", str(out), "-q", timeout=120,
                         env={"MPIR_CVAR_NOLOCAL": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = read_tasks(str(out))
    a = rows[rows["gid"] == 0][0]
    b = rows[(rows["gid"] > 0) & (rows["gid"] <= 10)]
    assert len(b) == 10
    assert int(a["rank"]) == 0
    assert np.all(b["rank"] == 1), "rank 1 did not take b from the busy rank 0"
    assert np.all(b["end"] < a["end"]), "rank 1's steal waited for rank 0's task to end"
