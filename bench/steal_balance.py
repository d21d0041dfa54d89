#!/usr/bin/env python
"""Load balance by stealing when every task starts on one rank.

mpitiny: one family of 400 (``--tasks``) sleeping tasks of mixed lengths, uniform in
[1 ms, 20 ms) (``--min-ms``/``--max-ms``) drawn from a seeded generator (``--seed``;
``bench_tasks.mixed_duration``), all with ``"rank": 0``, on 8 ranks (``--ranks``). Reported:
makespan (first task start to last task end, task table) / (total sleep / ranks), where total
sleep is the nominal sum of the drawn durations; also the ratio against the measured busy time
(sum of end - start, which includes sleep overshoot) / ranks; the number of tasks each rank ran
and the steals each made.

Peers on the same durations: MPIPoolExecutor with 8 workers (``mpiexec -n 9 python -m
mpi4py.futures``, all tasks submitted at once; makespan from the timestamps the tasks return)
and multiprocessing.Pool(8) (``apply_async``).

Repeated ``--repeat`` times, interleaved; the median ratio is reported with every repetition.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
from collections import Counter

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402
import bench_tasks  # noqa: E402


def mpitiny_run(work, a, durations, rep):
    dag = {"name": "steal_balance", "tasks": [{
        "id": "s", "fn": "bench_tasks:mixed_sleep", "args": ["{i}", a.seed, a.min_ms / 1e3, a.max_ms / 1e3],
        "foreach": {"i": {"range": [a.tasks]}}, "rank": 0}]}
    path = C.write_dag(os.path.join(work, "steal.json"), dag)
    run_dir = os.path.join(work, f"steal-run-{rep}")
    proc, s = C.run_mpitiny(a.ranks, path, run_dir, timeout=600, retry_bad_input=a.retry_seconds)
    assert s["done"] == a.tasks, s
    t = C.read_table(run_dir)
    makespan = float(t["end"].max() - t["start"].min())
    busy = float((t["end"] - t["start"]).sum())
    ideal = sum(durations) / a.ranks
    counts = np.bincount(t["rank"], minlength=a.ranks)
    return {"makespan_seconds": makespan, "ideal_seconds": ideal, "ratio": makespan / ideal,
            "ratio_to_measured_busy": makespan / (busy / a.ranks),
            "tasks_per_rank": counts.tolist(),
            "steals_per_rank": [r.get("steals") for r in s["per_rank"]],
            "stolen_tasks_per_rank": [r.get("stolen_tasks") for r in s["per_rank"]],
            "engine_wall_seconds": s["wall_seconds"], "mpiexec_wall_seconds": proc["wall"]}


def peer_result(out, durations, ranks):
    ph = out["phases"][0]
    rows = np.array([(r[0], r[1]) for r in ph["rows"]])
    pids = Counter(r[2] for r in ph["rows"])
    makespan = float(rows[:, 1].max() - rows[:, 0].min())
    ideal = sum(durations) / ranks
    busy = float((rows[:, 1] - rows[:, 0]).sum())
    return {"makespan_seconds": makespan, "ideal_seconds": ideal, "ratio": makespan / ideal,
            "ratio_to_measured_busy": makespan / (busy / ranks),
            "submit_to_all_done_seconds": ph["t_all_done"] - ph["t_submit"],
            "tasks_per_worker": sorted(pids.values(), reverse=True)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ranks", type=int, default=8)
    ap.add_argument("--tasks", type=int, default=400)
    ap.add_argument("--min-ms", type=float, default=1.0)
    ap.add_argument("--max-ms", type=float, default=20.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-pool", action="store_true")
    ap.add_argument("--no-futures", action="store_true")
    ap.add_argument("--retry-seconds", type=float, default=600,
                    help="if mpitiny rejects the dag (exit 2), retry this long")
    ap.add_argument("--workdir")
    a = ap.parse_args()
    C.machine()     # record the load and the mpitiny commit before running anything
    work = C.workdir(a.workdir, "bench-steal-")
    durations = [bench_tasks.mixed_duration(i, a.seed, a.min_ms / 1e3, a.max_ms / 1e3) for i in range(a.tasks)]
    reps = {"mpitiny": [], "mpi4py_futures": [], "multiprocessing_pool": []}
    for rep in range(a.repeat):
        C.log(f"repetition {rep + 1}/{a.repeat}")
        reps["mpitiny"].append(mpitiny_run(work, a, durations, rep))
        C.log(f"  mpitiny ratio {reps['mpitiny'][-1]['ratio']:.3f}")
        phases = [{"kind": "sleeps", "seconds": durations}]
        if not a.no_futures:
            reps["mpi4py_futures"].append(peer_result(C.run_futures(a.ranks, phases), durations, a.ranks))
            C.log(f"  futures ratio {reps['mpi4py_futures'][-1]['ratio']:.3f}")
        if not a.no_pool:
            reps["multiprocessing_pool"].append(peer_result(C.run_pool(a.ranks, phases), durations, a.ranks))
    med = {k: statistics.median(r["ratio"] for r in v) for k, v in reps.items() if v}
    result = {"benchmark": "steal_balance", "ranks": a.ranks, "tasks": a.tasks,
              "durations_ms": {"min": a.min_ms, "max": a.max_ms, "seed": a.seed,
                               "total_seconds": sum(durations), "mean_ms": 1e3 * sum(durations) / a.tasks},
              "ideal_seconds": sum(durations) / a.ranks, "machine": C.machine(), "workdir": work,
              "median_ratio": med, "repetitions": reps}
    C.emit(result, f"steal balance, {a.tasks} tasks all on rank 0, {a.ranks} ranks: makespan/ideal "
                   + ", ".join(f"{k} {v:.3f}" for k, v in med.items())
                   + f"; mpitiny tasks per rank (rep 1) {reps['mpitiny'][0]['tasks_per_rank']}")


if __name__ == "__main__":
    main()
