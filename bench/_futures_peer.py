"""The mpi4py.futures side of the benchmarks (one master, the other ranks are workers):

    mpiexec -n W+1 python -m mpi4py.futures bench/_futures_peer.py MODE_JSON_PHASES

argv[1] is a JSON list of phases, run one after another in the same pool; prints one JSON
object ``{"workers": W, "phases": [...]}`` on stdout. Phases:

- ``{"kind": "submit", "n": N}``: submit N null tasks at once (t0 = just before the first
  submit); completion time of each from ``add_done_callback``; tasks/s = N / last completion;
  latencies = completion - t0.
- ``{"kind": "collect", "n": N, "how": "wait" | "result"}``: submit N null tasks at once
  and collect them as a user does, no callbacks: ``wait(fs)``, or
  ``[f.result() for f in fs]``; tasks/s = N / (when that returned - just before the first
  submit).
- ``{"kind": "map", "n": N, "chunksize": C}``: ``list(ex.map(null, range(N), chunksize=C))``.
- ``{"kind": "chain", "n": N}``: N null tasks, each submitted when the previous one completed;
  the task returns its (start, end, pid), so hand-offs are measured like mpitiny's.
- ``{"kind": "sleeps", "seconds": [...]}``: one sleeping task per entry, all submitted at once;
  each returns (start, end, pid).
"""
from __future__ import annotations

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from mpi4py.futures import MPIPoolExecutor, wait  # noqa: E402

import bench_tasks  # noqa: E402
from mpitiny.tasks import null  # noqa: E402


def phase_submit(ex, n):
    done = [0.0] * n
    clock = time.perf_counter

    def cb_for(k):
        def cb(_f):
            done[k] = clock()
        return cb

    t0 = clock()
    futs = []
    for k in range(n):
        f = ex.submit(null)
        f.add_done_callback(cb_for(k))
        futs.append(f)
    t_submitted = clock()
    wait(futs)
    # callbacks run before wait() returns for each future
    lat = [d - t0 for d in done]
    last = max(lat)
    return {"n": n, "submit_seconds": t_submitted - t0, "seconds": last,
            "tasks_per_second": n / last, "latencies": lat}


def phase_collect(ex, n, how):
    clock = time.perf_counter
    t0 = clock()
    futs = [ex.submit(null) for _ in range(n)]
    t_submitted = clock()
    if how == "wait":
        wait(futs)
        values = None
    else:
        values = [f.result() for f in futs]
    t1 = clock()
    assert (values or [f.result() for f in futs]) == [None] * n
    return {"n": n, "how": how, "submit_seconds": t_submitted - t0, "seconds": t1 - t0,
            "tasks_per_second": n / (t1 - t0)}


def phase_map(ex, n, chunksize):
    t0 = time.perf_counter()
    out = list(ex.map(bench_tasks.null, range(n), chunksize=chunksize))
    dt = time.perf_counter() - t0
    assert len(out) == n
    return {"n": n, "chunksize": chunksize, "seconds": dt, "tasks_per_second": n / dt}


def phase_chain(ex, n):
    rows = []
    t0 = time.perf_counter()
    for _ in range(n):
        rows.append(ex.submit(bench_tasks.timed_null).result())
    dt = time.perf_counter() - t0
    return {"n": n, "seconds": dt, "per_link_seconds": dt / n, "rows": rows}


def phase_sleeps(ex, seconds):
    t0 = time.time()
    futs = [ex.submit(bench_tasks.timed_sleep, s) for s in seconds]
    rows = [f.result() for f in futs]
    t1 = time.time()
    return {"n": len(seconds), "t_submit": t0, "t_all_done": t1, "rows": rows}


def run(executor_class) -> None:
    """The phases of ``sys.argv[1]`` (JSON) on a fresh ``executor_class()``, warmed up first;
    prints the figures as one JSON line."""
    phases = json.loads(sys.argv[1])
    with executor_class() as ex:
        workers = ex.num_workers
        for f in [ex.submit(null) for _ in range(4 * workers)]:   # warm up every worker
            f.result()
        out = bench_tasks.run_phases(ex, phases, {"submit": phase_submit, "map": phase_map,
                                                "chain": phase_chain, "sleeps": phase_sleeps,
                                                "collect": phase_collect})
    print(json.dumps({"workers": workers, "phases": out}))


def main():
    run(MPIPoolExecutor)


if __name__ == "__main__":
    main()
