"""The multiprocessing.Pool side of the benchmarks: ``python _pool_peer.py W PHASES_JSON``.

Same phases as ``_futures_peer.py`` (submit = ``apply_async`` with a callback, map, chain,
sleeps) on ``multiprocessing.Pool(W)`` (fork); prints one JSON object on stdout.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_tasks  # noqa: E402
from mpitiny.tasks import null  # noqa: E402


def phase_submit(pool, n):
    done = [0.0] * n
    clock = time.perf_counter

    def cb_for(k):
        def cb(_r):
            done[k] = clock()
        return cb

    t0 = clock()
    res = [pool.apply_async(null, callback=cb_for(k)) for k in range(n)]
    t_submitted = clock()
    for r in res:
        r.get()
    lat = [d - t0 for d in done]
    last = max(lat)
    return {"n": n, "submit_seconds": t_submitted - t0, "seconds": last,
            "tasks_per_second": n / last, "latencies": lat}


def phase_map(pool, n, chunksize):
    t0 = time.perf_counter()
    out = pool.map(bench_tasks.null, range(n), chunksize=chunksize)
    dt = time.perf_counter() - t0
    assert len(out) == n
    return {"n": n, "chunksize": chunksize, "seconds": dt, "tasks_per_second": n / dt}


def phase_chain(pool, n):
    rows = []
    t0 = time.perf_counter()
    for _ in range(n):
        rows.append(pool.apply(bench_tasks.timed_null))
    dt = time.perf_counter() - t0
    return {"n": n, "seconds": dt, "per_link_seconds": dt / n, "rows": rows}


def phase_sleeps(pool, seconds):
    t0 = time.time()
    res = [pool.apply_async(bench_tasks.timed_sleep, (s,)) for s in seconds]
    rows = [r.get() for r in res]
    return {"n": len(seconds), "t_submit": t0, "t_all_done": time.time(), "rows": rows}


def main():
    workers = int(sys.argv[1])
    phases = json.loads(sys.argv[2])
    with mp.get_context("fork").Pool(workers) as pool:
        pool.map(bench_tasks.null, range(4 * workers), chunksize=1)      # warm up
        out = bench_tasks.run_phases(pool, phases, {"submit": phase_submit, "map": phase_map,
                                                "chain": phase_chain, "sleeps": phase_sleeps})
    print(json.dumps({"workers": workers, "phases": out}))


if __name__ == "__main__":
    main()
