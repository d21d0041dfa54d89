#!/usr/bin/env python
"""Null-task throughput and latency CDF: mpitiny vs mpi4py.futures (vs multiprocessing.Pool).

* Throughput: 10,000 null tasks per rank/worker (``--tasks-per-rank``).
  - mpitiny: one family of N*10,000 ``mpitiny.tasks:null`` instances on ``mpiexec -n N``.
    tasks/s = tasks / ``summary.wall_seconds`` (engine start to termination, as the runtime
    reports it); also tasks / (last task end - first task start) from the task table, and
    tasks / whole ``mpiexec`` command.
  - MPIPoolExecutor with N workers (``mpiexec -n N+1 python -m mpi4py.futures``): ``submit``
    each task, completion time via ``add_done_callback``; tasks/s = tasks / (last completion -
    t0), t0 = just before the first submit (pool already started and warmed up).
    Also ``map(chunksize=1)`` and ``map(chunksize=100)`` over the same number of tasks.
  - multiprocessing.Pool(N): ``apply_async`` with a callback, and ``map`` (same chunk sizes).
* Latency CDF (Albatross, SC'21, VI.C): 1,000 tasks per rank (``--latency-tasks-per-rank``) all
  submitted at t0; a task's latency = its completion time - t0. For mpitiny every task is
  ready when the engine starts, t0 = the earliest task start in the task table (the engine
  records no separate start time; all tasks are queued before the start barrier), latency =
  task end - t0. Percentiles p10..p99 and max, in microseconds.

Systems are run interleaved, ``--repeat`` times (median reported, every repetition kept).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402


def null_family(name: str, n: int) -> dict:
    return {"name": name, "tasks": [{"id": "t", "fn": "mpitiny.tasks:null",
                                      "foreach": {"i": {"range": [n]}}}]}


def mpitiny_throughput(work, ranks, n, rep):
    dag = C.write_dag(os.path.join(work, "thr.json"), null_family("thr", n))
    run_dir = os.path.join(work, f"thr-run-{rep}")
    proc, s = C.run_mpitiny(ranks, dag, run_dir)
    assert s["done"] == n, s
    table = C.read_table(run_dir)
    span = float(table["end"].max() - table["start"].min())
    return {"tasks": n, "engine_wall_seconds": s["wall_seconds"],
            "tasks_per_second": n / s["wall_seconds"],
            "first_start_to_last_end_seconds": span,
            "tasks_per_second_first_start_to_last_end": n / span if span > 0 else None,
            "setup_seconds": s["setup_seconds"], "mpiexec_wall_seconds": proc["wall"],
            "tasks_per_second_whole_process": n / proc["wall"],
            "per_rank_done": [r["done"] for r in s["per_rank"]]}


def mpitiny_latency(work, ranks, n, rep):
    dag = C.write_dag(os.path.join(work, "lat.json"), null_family("lat", n))
    run_dir = os.path.join(work, f"lat-run-{rep}")
    proc, s = C.run_mpitiny(ranks, dag, run_dir)
    table = C.read_table(run_dir)
    t0 = float(table["start"].min())
    lat = table["end"] - t0
    return {"tasks": n, "t0": "earliest task start", "latency_us": C.percentiles(lat, scale=1e6, digits=1),
            "engine_wall_seconds": s["wall_seconds"]}


def peer_phases(n_thr, n_lat):
    return [{"kind": "submit", "n": n_thr},
            {"kind": "submit", "n": n_lat},
            {"kind": "map", "n": n_thr, "chunksize": 1},
            {"kind": "map", "n": n_thr, "chunksize": 100}]


def summarise_peer(out):
    thr, lat, m1, m100 = out["phases"]
    return {"submit": {"tasks": thr["n"], "tasks_per_second": thr["tasks_per_second"],
                       "seconds": thr["seconds"], "submit_loop_seconds": thr["submit_seconds"]},
            "latency_us": C.percentiles(lat["latencies"], scale=1e6, digits=1),
            "latency_tasks": lat["n"],
            "map_chunksize_1": {"tasks_per_second": m1["tasks_per_second"], "seconds": m1["seconds"]},
            "map_chunksize_100": {"tasks_per_second": m100["tasks_per_second"],
                                  "seconds": m100["seconds"]}}


def med(reps, *path):
    vals = []
    for r in reps:
        v = r
        for p in path:
            v = v[p]
        vals.append(v)
    return statistics.median(vals)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ranks", type=int, default=2, help="mpitiny ranks = futures/Pool workers")
    ap.add_argument("--tasks-per-rank", type=int, default=10_000)
    ap.add_argument("--latency-tasks-per-rank", type=int, default=1_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-pool", action="store_true", help="skip multiprocessing.Pool")
    ap.add_argument("--futures-backoff", help="set MPI4PY_FUTURES_BACKOFF (seconds; its default is 0.001)")
    ap.add_argument("--workdir", help="keep dag files and run directories here")
    a = ap.parse_args()
    C.machine()     # record the load and the mpitiny commit before running anything

    work = C.workdir(a.workdir, "bench-throughput-")
    n_thr = a.ranks * a.tasks_per_rank
    n_lat = a.ranks * a.latency_tasks_per_rank
    reps = {"mpitiny": [], "mpi4py_futures": [], "multiprocessing_pool": []}
    for rep in range(a.repeat):
        C.log(f"repetition {rep + 1}/{a.repeat}: mpitiny")
        m = mpitiny_throughput(work, a.ranks, n_thr, rep)
        m["latency"] = mpitiny_latency(work, a.ranks, n_lat, rep)
        reps["mpitiny"].append(m)
        C.log(f"  mpitiny {m['tasks_per_second']:,.0f} tasks/s; mpi4py.futures")
        f = C.run_futures(a.ranks, peer_phases(n_thr, n_lat),
                          env={"MPI4PY_FUTURES_BACKOFF": a.futures_backoff} if a.futures_backoff else None)
        reps["mpi4py_futures"].append(summarise_peer(f))
        C.log(f"  futures submit {reps['mpi4py_futures'][-1]['submit']['tasks_per_second']:,.0f} tasks/s")
        if not a.no_pool:
            p = C.run_pool(a.ranks, peer_phases(n_thr, n_lat))
            reps["multiprocessing_pool"].append(summarise_peer(p))

    mt = med(reps["mpitiny"], "tasks_per_second")
    ft = med(reps["mpi4py_futures"], "submit", "tasks_per_second")
    f1 = med(reps["mpi4py_futures"], "map_chunksize_1", "tasks_per_second")
    f100 = med(reps["mpi4py_futures"], "map_chunksize_100", "tasks_per_second")
    # latency: the repetition with the median p50
    def mid(lst, key):
        s = sorted(lst, key=key)
        return s[len(s) // 2]
    m_lat = mid(reps["mpitiny"], lambda r: r["latency"]["latency_us"]["p50"])["latency"]["latency_us"]
    f_lat = mid(reps["mpi4py_futures"], lambda r: r["latency_us"]["p50"])["latency_us"]
    result = {
        "benchmark": "throughput", "ranks": a.ranks, "tasks": n_thr, "latency_tasks": n_lat,
        "repeat": a.repeat, "machine": C.machine(), "workdir": work, "futures_backoff": a.futures_backoff,
        "median": {
            "mpitiny_tasks_per_second": mt,
            "mpitiny_tasks_per_second_first_start_to_last_end":
                med(reps["mpitiny"], "tasks_per_second_first_start_to_last_end"),
            "mpitiny_tasks_per_second_whole_process": med(reps["mpitiny"], "tasks_per_second_whole_process"),
            "futures_submit_tasks_per_second": ft,
            "futures_map_chunksize_1_tasks_per_second": f1,
            "futures_map_chunksize_100_tasks_per_second": f100,
            "ratio_mpitiny_over_futures_submit": C.ratio(mt, ft),
            "ratio_mpitiny_over_futures_map_1": C.ratio(mt, f1),
            "ratio_mpitiny_over_futures_map_100": C.ratio(mt, f100),
            "mpitiny_latency_us": m_lat, "futures_latency_us": f_lat,
        },
        "repetitions": reps,
    }
    if reps["multiprocessing_pool"]:
        pt = med(reps["multiprocessing_pool"], "submit", "tasks_per_second")
        result["median"].update({
            "pool_apply_async_tasks_per_second": pt,
            "pool_map_chunksize_1_tasks_per_second": med(reps["multiprocessing_pool"], "map_chunksize_1", "tasks_per_second"),
            "pool_map_chunksize_100_tasks_per_second": med(reps["multiprocessing_pool"], "map_chunksize_100", "tasks_per_second"),
            "ratio_mpitiny_over_pool_apply_async": C.ratio(mt, pt),
            "pool_latency_us": mid(reps["multiprocessing_pool"], lambda r: r["latency_us"]["p50"])["latency_us"],
        })
    C.emit(result, f"throughput, {a.ranks} ranks: mpitiny {mt:,.0f} tasks/s, futures submit "
                   f"{ft:,.0f} ({mt / ft:,.0f}x), map(1) {f1:,.0f}, map(100) {f100:,.0f}; "
                   f"latency p50 mpitiny {m_lat['p50']:,.0f} us, futures {f_lat['p50']:,.0f} us")


if __name__ == "__main__":
    main()
