#!/usr/bin/env python
"""Multi-rank tasks (``"ranks": k``, ``mpitiny.engine.gang``): the bar of issue 22 point 1.

The DAG: ``--wide`` (20) tasks of ``"ranks": --k`` (3), each an Allreduce of its comm ranks
(every rank checks the sum, and comm rank 0 returns the world ranks of its gang) then
``--wide-seconds`` (0.2) of work, mixed with ``--singles`` (400) one-rank tasks of
``--single-seconds`` (0.02). Both families are roots, listed wide first. ``--kind sleep`` (the
default): the work is ``time.sleep``, so what is measured is the scheduling (this machine has 2
cores for 8 ranks); ``--kind spin``: busy-waiting, which on fewer cores than ranks measures the
cores as much as the gangs.

Each run, on ``--ranks`` (1,3,8) ranks and again under ``MPIR_CVAR_NOLOCAL=1`` (MPICH's network
path; ``--paths``): 1 rank (fewer than k) must be one load error (exit 2, one line, no run
directory); the others must finish with every task done exactly once after its parents
(``check_run``) and every wide task's value from comm rank 0 of k distinct ranks. Measured
from the task table: the rank-seconds used, sum over tasks of (end - start) x its ranks (a
wide task's row is its leader's: from the gang's start, after gathering, to its end), over the
run's rank-seconds, ranks x makespan (first task start to last task end): the bar is >= 0.8.
Also the ratio over the engine's whole loop time (``summary.json`` ``wall_seconds``), the
nominal work (tasks x ranks x their nominal seconds: a loaded machine's sleeps overrun) over
the run's rank-seconds, and the lower bound of the makespan (nominal work / ranks).
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402

TASKS = '''
import time

import numpy as np


def work(seconds, kind):
    if kind == "sleep":
        time.sleep(seconds)
    else:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass


def wide(i, seconds, kind, comm):
    from mpi4py import MPI
    k = comm.Get_size()
    mine = np.array([comm.Get_rank() + 1], dtype=np.int64)
    total = np.zeros(1, dtype=np.int64)
    comm.Allreduce(mine, total)
    if int(total[0]) != k * (k + 1) // 2:
        raise AssertionError(f"Allreduce gave {int(total[0])} on {k} ranks")
    ranks = comm.allgather(MPI.COMM_WORLD.Get_rank())
    work(seconds, kind)
    return {"i": i, "comm_rank": comm.Get_rank(), "ranks": ranks}


def one(i, seconds, kind):
    work(seconds, kind)
    return i
'''


def dag(a) -> dict:
    return {"name": "gang", "tasks": [
        {"id": "wide", "fn": "gang_tasks:wide", "args": ["{i}", a.wide_seconds, a.kind],
         "ranks": a.k, "foreach": {"i": {"range": [a.wide]}}},
        {"id": "one", "fn": "gang_tasks:one", "args": ["{i}", a.single_seconds, a.kind],
         "foreach": {"i": {"range": [a.singles]}}}]}


def load_error(n: int, path: str, run_dir: str, env: dict) -> dict:
    proc = C.run_mpi(n, ["-m", "mpitiny", "run", path, "--out", run_dir, "-q"], env=env,
                     timeout=120, check=False)
    lines = [x for x in proc["stderr"].strip().splitlines() if x.startswith("mpitiny")]
    ok = proc["rc"] == 2 and len(lines) == 1 and not os.path.exists(run_dir)
    return {"ranks": n, "exit_status": proc["rc"], "one_load_error": ok,
            "message": lines[0] if lines else proc["stderr"][-300:]}


def measured(n: int, path: str, run_dir: str, env: dict, a) -> dict:
    from mpitiny.dag.load import load_dag
    from mpitiny.io.check import check_run
    from mpitiny.io.rundir import read_results
    _, summary = C.run_mpitiny(n, path, run_dir, env=env, timeout=600)
    loaded = load_dag(path)
    counts = check_run(loaded, run_dir)
    rows = C.read_table(run_dir)
    results = read_results(run_dir)
    wide_values = [results[f"wide[{i}]"] for i in range(a.wide)]
    gangs_ok = all(v["i"] == i and v["comm_rank"] == 0 and len(set(v["ranks"])) == a.k
                   for i, v in enumerate(wide_values))
    singles_ok = all(results[f"one[{i}]"] == i for i in range(a.singles))
    k_of = np.array([g.options.ranks or 1 for g in loaded.groups])
    ranks = k_of[np.searchsorted(loaded.base, rows["gid"], side="right") - 1]
    used = float(((rows["end"] - rows["start"]) * ranks).sum())
    makespan = float(rows["end"].max() - rows["start"].min())
    work = a.wide * a.k * a.wide_seconds + a.singles * a.single_seconds
    return {"ranks": n, "exact": counts.get("done") == loaded.total and gangs_ok and singles_ok,
            "counts": counts, "makespan_s": round(makespan, 4),
            "engine_seconds": summary.get("wall_seconds"),
            "lower_bound_s": round(work / n, 4),
            "rank_seconds_used": round(used, 4),
            "used_over_run": round(used / (n * makespan), 4),
            "nominal_over_run": round(work / (n * makespan), 4),
            "used_over_engine_time": round(used / (n * float(summary["wall_seconds"])), 4)
            if summary.get("wall_seconds") else None}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ranks", default="1,3,8")
    p.add_argument("--paths", default="shm,nolocal",
                   help="comma-separated, of shm and nolocal (default: both)")
    p.add_argument("--wide", type=int, default=20)
    p.add_argument("--k", type=int, default=3)
    p.add_argument("--wide-seconds", type=float, default=0.2)
    p.add_argument("--singles", type=int, default=400)
    p.add_argument("--single-seconds", type=float, default=0.02)
    p.add_argument("--kind", choices=("sleep", "spin"), default="sleep")
    p.add_argument("--keep", help="work directory to keep")
    a = p.parse_args()
    if set(a.paths.split(",")) - {"shm", "nolocal"}:
        p.error(f"--paths: comma-separated, of shm and nolocal, not {a.paths!r}")
    work = C.workdir(a.keep, "mpitiny-gang-")
    with open(os.path.join(work, "gang_tasks.py"), "w", encoding="utf-8") as f:
        f.write(TASKS)
    path = C.write_dag(os.path.join(work, "dag.json"), dag(a))
    sys.path.insert(0, work)
    runs = []
    for where in a.paths.split(","):
        env = {"MPIR_CVAR_NOLOCAL": "1" if where == "nolocal" else None}
        for n in (int(x) for x in a.ranks.split(",")):
            run_dir = os.path.join(work, f"run-{where}-{n}")
            one = load_error(n, path, run_dir, env) if n < a.k else \
                measured(n, path, run_dir, env, a)
            runs.append({"path": where, **one})
            C.log(f"{where} {n} ranks: {one}")
    result = {"benchmark": "gang", "machine": C.machine(), "kind": a.kind, "k": a.k,
              "wide": a.wide, "wide_seconds": a.wide_seconds, "singles": a.singles,
              "single_seconds": a.single_seconds, "runs": runs}
    human = " | ".join(
        f"{r['path']} {r['ranks']}r: " + (f"load error ok={r['one_load_error']}"
                                           if "one_load_error" in r else
                                           f"exact={r['exact']} used/run={r['used_over_run']} "
                                           f"nominal/run={r['nominal_over_run']} "
                                           f"makespan={r['makespan_s']}s "
                                           f"(bound {r['lower_bound_s']}s)")
        for r in runs)
    C.emit(result, "gang: " + human)


if __name__ == "__main__":
    main()
