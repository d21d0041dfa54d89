#!/usr/bin/env python
"""How long loading a DAG of 100,000 plain tasks listed one by one takes, per rank.

The DAG (``--tasks``, default 100,000; seed 1): task ``t{k}`` waits for 1-3 of the 50 tasks
before it; odd tasks are functions (``mpitiny.tasks:sleep``), even ones commands with a
parameter and an environment variable: a 7.6 MB ``dag.json``. This was a timed test
(``test_hundred_thousand_plain_tasks_load_fast``: CPU time < 2.0 s, which failed at 2.05 s on a
busy machine); the time is measured here, the loading's correctness stays in
``tests/test_dag_load.py``.

* ``in_process``: ``mpitiny.dag.load.load_dag`` in this process, ``--repeat`` times (the first
  one is reported apart: imports and cold caches): CPU seconds (``time.process_time``, what
  other processes on the machine do not count) and wall seconds, median and min.
* ``per_rank``: ``mpiexec -n RANKS python bench/load_speed.py --load-once dag.json``: every
  rank loads the same file at the same time, as ``mpitiny run`` does before its tasks start;
  each rank's CPU and wall seconds, and the slowest rank's. ``--ranks 0`` skips it.

The bar (the old test's): median CPU seconds of ``in_process`` under 2.0 (``"bar_ok"``).

    python bench/load_speed.py [--tasks 100000] [--repeat 5] [--ranks 2] [--workdir DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402

BAR_CPU_SECONDS = 2.0


def listed_dag(n: int, seed: int = 1) -> dict:
    """The DAG of the old test: ``n`` plain tasks, each waiting for 1-3 of the 50 before it."""
    import numpy as np
    rng = np.random.default_rng(seed)
    tasks = [{"id": "t0", "cmd": "echo {k}"}]
    for k in range(1, n):
        parents = rng.choice(np.arange(max(0, k - 50), k), size=min(k, int(rng.integers(1, 4))),
                             replace=False)
        task = {"id": f"t{k}", "deps": [f"t{p}" for p in parents]}
        task.update({"fn": "mpitiny.tasks:sleep", "args": [0.001]} if k % 2 else
                    {"cmd": "echo {k} ${HOME}"})
        tasks.append(task)
    return {"name": "big", "params": {"k": 1}, "tasks": tasks}


def load_once(path: str) -> dict:
    """Load ``path``; CPU and wall seconds, and what was loaded (tasks, dependency lists)."""
    from mpitiny.dag.load import load_dag
    cpu, wall = time.process_time(), time.perf_counter()
    dag = load_dag(path, {})
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {"cpu_seconds": round(cpu, 4), "wall_seconds": round(wall, 4), "tasks": dag.total,
            "deps": dag.dep_entries}


def rank_main(path: str) -> None:
    """``--load-once``: run by every rank under mpiexec; prints one JSON line."""
    rank = int(os.environ.get("PMI_RANK") or os.environ.get("OMPI_COMM_WORLD_RANK") or 0)
    print(json.dumps({"rank": rank, **load_once(path)}), flush=True)


def per_rank(path: str, ranks: int) -> dict:
    proc = C.run_mpi(ranks, [os.path.abspath(__file__), "--load-once", path], timeout=600)
    rows = sorted((json.loads(line) for line in proc["stdout"].splitlines()
                   if line.startswith("{")), key=lambda r: r["rank"])
    return {"ranks": ranks, "per_rank": rows,
            "max_cpu_seconds": max(r["cpu_seconds"] for r in rows),
            "max_wall_seconds": max(r["wall_seconds"] for r in rows),
            "mpiexec_wall_seconds": round(proc["wall"], 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--ranks", type=int, default=2, help="0: no per-rank run under mpiexec")
    ap.add_argument("--workdir")
    ap.add_argument("--load-once", metavar="DAG", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.load_once:
        return rank_main(a.load_once)
    C.machine()     # record the load and the mpitiny commit before running anything
    work = C.workdir(a.workdir, "bench-load-speed-")
    path = C.write_dag(os.path.join(work, "dag.json"), listed_dag(a.tasks))
    result = {"benchmark": "load_speed", "machine": C.machine(), "workdir": work,
              "tasks": a.tasks, "dag_json_bytes": os.path.getsize(path)}
    C.log(f"loading {a.tasks} listed tasks ({result['dag_json_bytes'] / 1e6:.1f} MB) "
          f"{a.repeat + 1} times in this process")
    first = load_once(path)
    runs = [load_once(path) for _ in range(a.repeat)]
    cpu = [r["cpu_seconds"] for r in runs] or [first["cpu_seconds"]]
    wall = [r["wall_seconds"] for r in runs] or [first["wall_seconds"]]
    result["in_process"] = {
        "first": first, "runs": runs, "loaded_tasks": first["tasks"], "deps": first["deps"],
        "cpu_seconds_median": round(statistics.median(cpu), 4), "cpu_seconds_min": min(cpu),
        "wall_seconds_median": round(statistics.median(wall), 4), "wall_seconds_min": min(wall),
        "bar_cpu_seconds": BAR_CPU_SECONDS,
        "bar_ok": statistics.median(cpu) < BAR_CPU_SECONDS}
    human = (f"{a.tasks} listed tasks: load {statistics.median(cpu):.2f} s CPU (median of "
             f"{len(cpu)}; bar < {BAR_CPU_SECONDS}), {statistics.median(wall):.2f} s wall")
    if a.ranks > 0:
        C.log(f"every rank of mpiexec -n {a.ranks} loading it at once")
        r = result["per_rank"] = per_rank(path, a.ranks)
        human += (f"; {a.ranks} ranks at once: slowest {r['max_cpu_seconds']:.2f} s CPU, "
                  f"{r['max_wall_seconds']:.2f} s wall")
    C.emit(result, "load_speed: " + human)


if __name__ == "__main__":
    main()
