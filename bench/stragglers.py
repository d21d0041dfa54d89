#!/usr/bin/env python
"""Stragglers (Tiny Tasks paper, Fig. 3): 20 % of the ranks are 20x slower; cutting the same
total work into more, smaller tasks lets the runtime route work around them.

``--ranks`` ranks (default 10, so that 20 % is exactly 2 ranks); the slow ranks are the last
round(fraction * ranks) ranks (``--slow-ranks`` to choose). Total work = ranks x
``--work-per-rank`` (0.5 s) of sleep, cut into k x ranks equal tasks for k in ``--multipliers``
(1, 2, 5, 10, 20, 50, 100). Each task runs ``bench_tasks.straggler_sleep(seconds, slow, 20)``,
which sleeps ``seconds * 20`` when ``MPITINY_RANK`` (set by the runtime) is a slow rank.

Reported per k: makespan (first task start to last task end) / balanced ideal, where balanced
ideal = total work / total speed (a slow rank has speed 1/20). For reference also the ratio of
an overhead-free greedy schedule of the same indivisible tasks (each task, in turn, to the rank
that would finish it first, knowing which ranks are slow): the best any scheduler can do with
that granularity; a runtime that does not know the speeds cannot expect to reach it.
"""
from __future__ import annotations

import argparse
import heapq
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402


def greedy_makespan(ntasks, w, speeds):
    """Equal tasks of work w, each to the worker that would finish it first (optimal for equal
    tasks on uniform machines)."""
    heap = [(w / s, i, 0.0) for i, s in enumerate(speeds)]   # (finish if given next, worker, busy-until)
    heapq.heapify(heap)
    end = 0.0
    for _ in range(ntasks):
        fin, i, _busy = heapq.heappop(heap)
        end = max(end, fin)
        heapq.heappush(heap, (fin + w / speeds[i], i, fin))
    return end


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ranks", type=int, default=10)
    ap.add_argument("--slow-fraction", type=float, default=0.2)
    ap.add_argument("--slow-ranks", help="comma-separated ranks (default: the last ones)")
    ap.add_argument("--factor", type=float, default=20.0, help="how much slower a slow rank is")
    ap.add_argument("--work-per-rank", type=float, default=0.5, help="seconds of sleep per rank")
    ap.add_argument("--multipliers", default="1,2,5,10,20,50,100")
    ap.add_argument("--retry-seconds", type=float, default=600)
    ap.add_argument("--workdir")
    a = ap.parse_args()
    C.machine()     # record the load and the mpitiny commit before running anything
    work = C.workdir(a.workdir, "bench-stragglers-")
    n = a.ranks
    if a.slow_ranks:
        slow = sorted(int(x) for x in a.slow_ranks.split(","))
    else:
        k = max(1, round(a.slow_fraction * n))
        slow = list(range(n - k, n))
    speeds = [1 / a.factor if r in slow else 1.0 for r in range(n)]
    total = n * a.work_per_rank
    ideal = total / sum(speeds)
    rows = []
    for mult in [int(x) for x in a.multipliers.split(",")]:
        ntasks = mult * n
        w = total / ntasks
        dag = {"name": f"stragglers_{mult}", "tasks": [{
            "id": "w", "fn": "bench_tasks:straggler_sleep", "args": [w, slow, a.factor],
            "foreach": {"i": {"range": [ntasks]}}}]}
        path = C.write_dag(os.path.join(work, f"stragglers-{mult}.json"), dag)
        run_dir = os.path.join(work, f"stragglers-{mult}-run")
        proc, s = C.run_mpitiny(n, path, run_dir, timeout=900, retry_bad_input=a.retry_seconds)
        assert s["done"] == ntasks, s
        t = C.read_table(run_dir)
        makespan = float(t["end"].max() - t["start"].min())
        counts = np.bincount(t["rank"], minlength=n)
        g = greedy_makespan(ntasks, w, speeds)
        row = {"tasks_per_rank": mult, "tasks": ntasks, "task_seconds": w,
               "makespan_seconds": makespan, "ratio": makespan / ideal,
               "clairvoyant_greedy_ratio": g / ideal, "ratio_to_greedy": makespan / g,
               "tasks_on_slow_ranks": int(counts[slow].sum()), "tasks_per_rank_ran": counts.tolist(),
               "mpiexec_wall_seconds": proc["wall"]}
        rows.append(row)
        C.log(f"{mult:>4} tasks/rank: makespan {makespan:.3f} s, ratio {row['ratio']:.2f} "
              f"(clairvoyant greedy {row['clairvoyant_greedy_ratio']:.2f}); tasks on slow ranks {row['tasks_on_slow_ranks']}")
    result = {"benchmark": "stragglers", "ranks": n, "slow_ranks": slow, "factor": a.factor,
              "total_work_seconds": total, "balanced_ideal_seconds": ideal, "machine": C.machine(), "workdir": work,
              "rows": rows}
    C.emit(result, "stragglers (makespan / balanced ideal): "
                   + ", ".join(f"{r['tasks_per_rank']}x: {r['ratio']:.2f}" for r in rows))


if __name__ == "__main__":
    main()
