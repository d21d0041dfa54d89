#!/usr/bin/env python
"""The runtime's headline bars, measured:

(a) A 200,000-instance family of null tasks on ``mpiexec -n 2``: tasks/s for the WHOLE
    ``mpitiny run`` (wall clock of the mpiexec command, start-up and run directory included),
    and the same work through mpi4py.futures ``map(chunksize=1)`` with 2 workers, also the wall
    clock of its whole ``mpiexec -n 3 python -m mpi4py.futures`` command; the ratio.
    mpitiny is run before and after the futures run (interleaved); the median is reported.
(b) 100,000 independent null tasks listed one by one (no family) on 2 ranks, and the same
    tasks as one family (same run): tasks/s from the
    first task's start to the last task's end (task table), the engine's own wall time, the
    set-up time (``summary.setup_seconds``: from ``run_file`` entry, after Python and MPI start,
    to engine start, including loading the 100,000-entry dag.json) and the whole-process time.
    ``rest_seconds`` = whole process - setup - engine wall: interpreter start-up, imports,
    MPI_Init, writing the task tables and summary, MPI_Finalize.
(c) A 10^6-instance null family on 4 ranks, and the same 10^6 null tasks listed one by one
    (a 44 MB dag.json): peak RSS of each rank (each rank runs under ``_rss_wrap.py``, which
    reads ``getrusage(RUSAGE_CHILDREN).ru_maxrss``); the max over ranks in MB (10^6 bytes), and
    the set-up time (``summary.setup_seconds``). For reference, the same for a 1,000-instance
    family (the baseline of an MPI + mpitiny process).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402

RSS_WRAP = str(C.BENCH_DIR / "_rss_wrap.py")


def family(name, n):
    return {"name": name, "tasks": [{"id": "t", "fn": "mpitiny.tasks:null",
                                      "foreach": {"i": {"range": [n]}}}]}


def bar_a(work, n, ranks, futures_tasks):
    dag = C.write_dag(os.path.join(work, "a.json"), family("bar_a", n))
    runs = []

    def one(tag):
        proc, s = C.run_mpitiny(ranks, dag, os.path.join(work, f"a-run-{tag}"))
        assert s["done"] == n
        runs.append({"mpiexec_wall_seconds": proc["wall"], "tasks_per_second_whole_process": n / proc["wall"],
                     "engine_wall_seconds": s["wall_seconds"], "setup_seconds": s["setup_seconds"],
                     "rest_seconds": proc["wall"] - s["setup_seconds"] - s["wall_seconds"],
            "work_cpu_us_per_task": 1e6 * sum(r.get("work_cpu_seconds", 0) for r in s["per_rank"]) / n,
            "progress_looks_per_second": sum(r.get("progress_looks", 0) for r in s["per_rank"]) / len(s["per_rank"]) / s["wall_seconds"],
            "progress_polls_per_second": sum(r.get("progress_polls", 0) for r in s["per_rank"]) / len(s["per_rank"]) / s["wall_seconds"],
                     "tasks_per_second_engine": s["tasks_per_second"]})
        C.log(f"(a) mpitiny {n} tasks: whole process {proc['wall']:.3f} s")

    one("before")
    C.log(f"(a) mpi4py.futures map(chunksize=1) over {futures_tasks} tasks, {ranks} workers "
          f"(~{futures_tasks / 3000:.0f} s here)")
    fut = C.run_futures(ranks, [{"kind": "map", "n": futures_tasks, "chunksize": 1}], timeout=1800)
    ph = fut["phases"][0]
    fwall = fut["mpiexec_wall"]
    one("after")
    m = statistics.median(r["tasks_per_second_whole_process"] for r in runs)
    f = futures_tasks / fwall
    return {"tasks": n, "ranks": ranks, "mpitiny_runs": runs,
            "mpitiny_tasks_per_second_whole_process": m,
            "futures": {"tasks": futures_tasks, "workers": ranks, "mpiexec_ranks": ranks + 1,
                        "mpiexec_wall_seconds": fwall, "tasks_per_second_whole_process": f,
                        "map_seconds": ph["seconds"], "tasks_per_second_map_only": ph["tasks_per_second"]},
            "ratio_whole_process": m / f}


def bar_b(work, n, ranks):
    dag = {"name": "bar_b", "tasks": [{"id": f"t{i:06d}", "fn": "mpitiny.tasks:null"} for i in range(n)]}
    path = C.write_dag(os.path.join(work, "b.json"), dag)
    out = listed_run(path, os.path.join(work, "b-run"), n, ranks)
    # the same tasks as one family, same run: what listing them one by one costs
    fam = listed_run(C.write_dag(os.path.join(work, "b-family.json"), family("bar_b_family", n)),
                     os.path.join(work, "b-family-run"), n, ranks)
    out["family"] = fam
    out["ratio_listed_over_family_first_start_to_last_end"] = \
        out["tasks_per_second_first_start_to_last_end"] / fam["tasks_per_second_first_start_to_last_end"]
    return out


def listed_run(path, run_dir, n, ranks):
    proc, s = C.run_mpitiny(ranks, path, run_dir, timeout=900)
    assert s["done"] == n
    t = C.read_table(run_dir)
    span = float(t["end"].max() - t["start"].min())
    return {"tasks": n, "ranks": ranks, "dag_bytes": os.path.getsize(path),
            "first_start_to_last_end_seconds": span,
            "tasks_per_second_first_start_to_last_end": n / span,
            "engine_wall_seconds": s["wall_seconds"], "tasks_per_second_engine": s["tasks_per_second"],
            "setup_seconds": s["setup_seconds"], "mpiexec_wall_seconds": proc["wall"],
            "rest_seconds": proc["wall"] - s["setup_seconds"] - s["wall_seconds"],
            "work_cpu_us_per_task": 1e6 * sum(r.get("work_cpu_seconds", 0) for r in s["per_rank"]) / n,
            "progress_looks_per_second": sum(r.get("progress_looks", 0) for r in s["per_rank"]) / len(s["per_rank"]) / s["wall_seconds"],
            "progress_polls_per_second": sum(r.get("progress_polls", 0) for r in s["per_rank"]) / len(s["per_rank"]) / s["wall_seconds"],
            "tasks_per_second_whole_process": n / proc["wall"],
            "per_rank_done": [r["done"] for r in s["per_rank"]]}


def listed(name, n):
    return {"name": name, "tasks": [{"id": f"t{i:07d}", "fn": "mpitiny.tasks:null"} for i in range(n)]}


def rss_run(work, tag, n, ranks, shape=family):
    dag = C.write_dag(os.path.join(work, f"c-{tag}.json"), shape(f"bar_c_{tag}", n))
    out = os.path.join(work, f"c-rss-{tag}")
    os.makedirs(out, exist_ok=True)
    for old in glob.glob(os.path.join(out, "rss-*.json")):
        os.remove(old)
    proc, s = C.run_mpitiny(ranks, dag, os.path.join(work, f"c-run-{tag}"), timeout=900,
                            wrap=[C.PYTHON, RSS_WRAP, out, "--"])
    assert s["done"] == n
    per = sorted((json.load(open(p)) for p in glob.glob(os.path.join(out, "rss-*.json"))),
                 key=lambda r: r["rank"])
    mb = [r["maxrss_kib"] * 1024 / 1e6 for r in per]
    return {"tasks": n, "ranks": ranks, "peak_rss_mb_per_rank": [round(x, 1) for x in mb],
            "peak_rss_mb_max": round(max(mb), 1), "mpiexec_wall_seconds": proc["wall"],
            "engine_wall_seconds": s["wall_seconds"], "setup_seconds": s["setup_seconds"],
            "per_rank_done": [r["done"] for r in s["per_rank"]]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["a", "b", "c"], action="append", help="run only these bars")
    ap.add_argument("--a-tasks", type=int, default=200_000)
    ap.add_argument("--a-futures-tasks", type=int, default=None,
                    help="tasks for the futures peer (default: same as --a-tasks; ~3,000 tasks/s here)")
    ap.add_argument("--b-tasks", type=int, default=100_000)
    ap.add_argument("--c-tasks", type=int, default=1_000_000)
    ap.add_argument("--c-ranks", type=int, default=4)
    ap.add_argument("--workdir")
    a = ap.parse_args()
    C.machine()     # record the load and the mpitiny commit before running anything
    work = C.workdir(a.workdir, "bench-bars-")
    only = set(a.only or ["a", "b", "c"])
    result = {"benchmark": "bars", "machine": C.machine(), "workdir": work}
    human = []
    if "a" in only:
        r = result["a"] = bar_a(work, a.a_tasks, 2, a.a_futures_tasks or a.a_tasks)
        human.append(f"(a) {a.a_tasks} null family, 2 ranks, whole process: mpitiny "
                     f"{r['mpitiny_tasks_per_second_whole_process']:,.0f} tasks/s, futures map(1) "
                     f"{r['futures']['tasks_per_second_whole_process']:,.0f} tasks/s, ratio "
                     f"{r['ratio_whole_process']:,.0f}x")
    if "b" in only:
        C.log(f"(b) {a.b_tasks} plain null tasks on 2 ranks")
        r = result["b"] = bar_b(work, a.b_tasks, 2)
        human.append(f"(b) {a.b_tasks} plain tasks: {r['tasks_per_second_first_start_to_last_end']:,.0f} "
                     f"tasks/s first start->last end; setup {r['setup_seconds']:.2f} s; whole "
                     f"process {r['mpiexec_wall_seconds']:.2f} s; the same as a family "
                     f"{r['family']['tasks_per_second_first_start_to_last_end']:,.0f} tasks/s, "
                     f"setup {r['family']['setup_seconds']:.2f} s: listed/family "
                     f"{r['ratio_listed_over_family_first_start_to_last_end']:.2f}")
    if "c" in only:
        C.log(f"(c) {a.c_tasks} null family on {a.c_ranks} ranks, peak RSS")
        base = rss_run(work, "base", 1000, a.c_ranks)
        big = rss_run(work, "big", a.c_tasks, a.c_ranks)
        many = rss_run(work, "listed", a.c_tasks, a.c_ranks, shape=listed)
        result["c"] = {**big, "baseline_1000_tasks": base,
                       "increase_over_baseline_mb": round(big["peak_rss_mb_max"] - base["peak_rss_mb_max"], 1),
                       "listed": many}
        human.append(f"(c) {a.c_tasks} family on {a.c_ranks} ranks: peak RSS max {big['peak_rss_mb_max']} MB "
                     f"(per rank {big['peak_rss_mb_per_rank']}; 1,000-task baseline {base['peak_rss_mb_max']} MB); "
                     f"listed: peak RSS max {many['peak_rss_mb_max']} MB, setup {many['setup_seconds']:.2f} s")
    C.emit(result, "bars: " + " | ".join(human))


if __name__ == "__main__":
    main()
