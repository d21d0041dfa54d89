#!/usr/bin/env python
"""Real workflow shapes (WfCommons instances in ``../shared/wfcommons``) on 8 ranks.

For each instance: S = ``--longest`` (2 s) / the largest ``runtimeInSeconds`` of the instance,
so the longest task sleeps ``--longest`` seconds; ``mpitiny import-wfcommons INSTANCE -o
dag.json --scale S``; ``mpiexec -n 8 python -m mpitiny run dag.json``. The makespan (first task
start to last task end, task table) is compared with

(a) an overhead-free greedy list schedule of the same DAG (the same scaled runtimes, read back
    from the imported dag.json) on 8 workers: event simulation; whenever a worker is free it
    starts a ready task, ties broken in task-id order (lexicographic);
(b) the lower bound max(critical path, total work / 8).

Because a list schedule's makespan can depend a lot on its tie-break order, the greedy schedule
is also simulated with ``--random-orders`` (100) seeded random tie-break orders; their min,
median and max are reported, and the makespan's ratio to that median.

Also checked: every task ran exactly once and no task started before all its parents ended
(``edge_violations``). To tell overhead from ordering: ``idle_rank_seconds_while_ready`` = the
rank-seconds during which a rank was idle while some task was ready and not started (and the
longest such episode); a makespan above the greedy schedule's with little of that is due to the
order in which ready tasks were picked, not to dispatch overhead. ``--instances`` picks a subset (file names or substrings);
``--max-seconds`` skips instances whose greedy makespan exceeds it (default 30 s: all 12
instances of ../shared/wfcommons, ~2.5 minutes here); ``--dry-run`` prints the plan only.
"""
from __future__ import annotations

import argparse
import heapq
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "wfcommons"


def max_runtime(instance_path: Path) -> float:
    """The largest runtimeInSeconds (or runtime) of any task in the instance."""
    with open(instance_path, encoding="utf-8-sig") as f:
        inst = json.load(f)
    wf = inst["workflow"]
    if "execution" in wf and "tasks" in wf.get("execution", {}):
        tasks = wf["execution"]["tasks"]
    else:
        tasks = wf.get("tasks") or wf.get("jobs") or []
    vals = [float(t.get("runtimeInSeconds", t.get("runtime", 0.0))) for t in tasks]
    return max(vals, default=0.0)


def load_graph(dag_path: str):
    with open(dag_path, encoding="utf-8") as f:
        dag = json.load(f)
    ids = [t["id"] for t in dag["tasks"]]
    secs = [float(t["args"][0]) for t in dag["tasks"]]
    pos = {t: k for k, t in enumerate(ids)}
    parents = [[pos[d] for d in t.get("deps", ())] for t in dag["tasks"]]
    return dag, ids, secs, parents


def children_and_waiting(parents):
    """Each task's children, and how many parents each task still waits for."""
    children = [[] for _ in parents]
    for k, ps in enumerate(parents):
        for p in ps:
            children[p].append(k)
    return children, [len(p) for p in parents]


def critical_path(secs, parents):
    n = len(secs)
    children, waiting = children_and_waiting(parents)
    finish = [0.0] * n
    order = [k for k in range(n) if not waiting[k]]
    for k in order:
        start = max((finish[p] for p in parents[k]), default=0.0)
        finish[k] = start + secs[k]
        for c in children[k]:
            waiting[c] -= 1
            if not waiting[c]:
                order.append(c)
    assert len(order) == n, "cycle"
    return max(finish, default=0.0)


def greedy_random_ties(secs, parents, workers, orders, seed=0):
    """Greedy makespans with ties broken in ``orders`` random task orders (seeded): how much
    the tie-break alone moves a list schedule of this DAG."""
    import random
    rng = random.Random(seed)
    out = []
    for _ in range(orders):
        keys = list(range(len(secs)))
        rng.shuffle(keys)
        out.append(greedy_schedule(keys, secs, parents, workers))
    return out


def greedy_schedule(ids, secs, parents, workers):
    """Overhead-free list schedule: whenever a worker is free it takes the ready task with the
    smallest id. Returns the makespan."""
    n = len(ids)
    children, waiting = children_and_waiting(parents)
    ready = [(ids[k], k) for k in range(n) if not waiting[k]]
    heapq.heapify(ready)
    running = []          # (finish time, task)
    free = workers
    now = 0.0
    done = 0
    while done < n:
        while free and ready:
            _, k = heapq.heappop(ready)
            heapq.heappush(running, (now + secs[k], k))
            free -= 1
        now, k = heapq.heappop(running)
        finished = [k]
        while running and running[0][0] == now:
            finished.append(heapq.heappop(running)[1])
        for k in finished:
            free += 1
            done += 1
            for c in children[k]:
                waiting[c] -= 1
                if not waiting[c]:
                    heapq.heappush(ready, (ids[c], c))
    return now


def check_run(table, dag_ids, parents, gid_of):
    """(tasks that ran != once, edge violations, worst violation in s, start, end)."""
    start = np.full(len(dag_ids), np.nan)
    end = np.full(len(dag_ids), np.nan)
    counts = np.zeros(len(dag_ids), dtype=int)
    for row in table:
        k = gid_of[int(row["gid"])]
        counts[k] += 1
        start[k], end[k] = row["start"], row["end"]
    bad_counts = int((counts != 1).sum())
    viol, worst = 0, 0.0
    for k, ps in enumerate(parents):
        for p in ps:
            if start[k] < end[p]:
                viol += 1
                worst = max(worst, end[p] - start[k])
    return bad_counts, viol, worst, start, end


def idle_while_ready(start, end, ready, ranks):
    """Rank-seconds during which a rank was idle while some task was ready but not started
    (the runtime's dispatch overhead, as opposed to its choice of order), and the longest such
    episode in seconds."""
    times = np.unique(np.concatenate([start, end, ready]))
    waste = longest = cur = 0.0
    for a, b in zip(times[:-1], times[1:]):
        m = 0.5 * (a + b)
        waiting = int(((ready <= m) & (start > m)).sum())
        running = int(((start <= m) & (end > m)).sum())
        w = min(waiting, max(0, ranks - running))
        waste += w * (b - a)
        cur = cur + (b - a) if w > 0 else 0.0
        longest = max(longest, cur)
    return waste, longest


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--instances", nargs="*", help="instance file names or substrings (default: all)")
    ap.add_argument("--ranks", type=int, default=8)
    ap.add_argument("--longest", type=float, default=2.0, help="seconds the longest task sleeps")
    ap.add_argument("--max-seconds", type=float, default=30.0,
                    help="skip instances whose greedy makespan exceeds this (0: no limit)")
    ap.add_argument("--dir", default=str(SHARED), help="where the instances are")
    ap.add_argument("--dry-run", action="store_true")
    ap.add_argument("--random-orders", type=int, default=100,
                    help="also simulate the greedy schedule with this many random tie-break orders "
                         "(min/median/max reported: the spread due to tie-breaking alone)")
    ap.add_argument("--workdir")
    a = ap.parse_args()
    C.machine()     # record the load and the mpitiny commit before running anything
    work = C.workdir(a.workdir, "bench-wfcommons-")
    files = sorted(p for p in Path(a.dir).glob("*.json"))
    if a.instances:
        files = [p for p in files if any(s == p.name or s in p.name for s in a.instances)]
    rows = []
    for inst in files:
        mx = max_runtime(inst)
        if mx <= 0:
            rows.append({"instance": inst.name, "skipped": "no positive runtime"})
            continue
        scale = a.longest / mx
        dag_path = os.path.join(work, inst.stem + ".dag.json")
        imp = subprocess.run([C.PYTHON, "-m", "mpitiny", "import-wfcommons", str(inst), "-o", dag_path,
                              "--scale", repr(scale)], capture_output=True, text=True, env=C.bench_env())
        if imp.returncode != 0:
            rows.append({"instance": inst.name, "skipped": f"import failed: {imp.stderr.strip()}"})
            C.log(f"{inst.name}: import failed: {imp.stderr.strip()}")
            continue
        dag, ids, secs, parents = load_graph(dag_path)
        cp = critical_path(secs, parents)
        total = sum(secs)
        lb = max(cp, total / a.ranks)
        greedy = greedy_schedule(ids, secs, parents, a.ranks)
        row = {"instance": inst.name, "tasks": len(ids), "edges": sum(map(len, parents)),
               "scale": scale, "longest_seconds": max(secs), "total_work_seconds": total,
               "critical_path_seconds": cp, "lower_bound_seconds": lb, "greedy_seconds": greedy}
        if a.random_orders:
            rnd_ms = greedy_random_ties(secs, parents, a.ranks, a.random_orders)
            row["greedy_random_ties_seconds"] = {"min": min(rnd_ms), "median": float(np.median(rnd_ms)),
                                                 "max": max(rnd_ms), "orders": a.random_orders}
        if a.max_seconds and greedy > a.max_seconds:
            row["skipped"] = f"greedy makespan {greedy:.1f} s > --max-seconds {a.max_seconds:g}"
            C.log(f"{inst.name}: skipped ({row['skipped']})")
            rows.append(row)
            continue
        if a.dry_run:
            C.log(f"{inst.name}: {len(ids)} tasks, greedy {greedy:.3f} s, lower bound {lb:.3f} s")
            rows.append(row)
            continue
        run_dir = os.path.join(work, inst.stem + "-run")
        proc, s = C.run_mpitiny(a.ranks, dag_path, run_dir, timeout=max(120, 10 * greedy + 60))
        table = C.read_table(run_dir)
        from mpitiny.io.rundir import groups_of
        pos = {t: k for k, t in enumerate(ids)}
        gid_of = {g["first"]: pos[g["name"]] for g in groups_of(run_dir)}
        bad, viol, worst, st, en = check_run(table, ids, parents, gid_of)
        makespan = float(table["end"].max() - table["start"].min())
        ready = np.array([max((en[p] for p in parents[k]), default=np.nanmin(st)) for k in range(len(ids))])
        idle, idle_longest = idle_while_ready(st, en, ready, a.ranks)
        row.update({"makespan_seconds": makespan, "ratio_to_greedy": makespan / greedy,
                    "ratio_to_lower_bound": makespan / lb, "greedy_over_lower_bound": greedy / lb,
                    "ratio_to_greedy_random_ties_median":
                        makespan / row["greedy_random_ties_seconds"]["median"] if a.random_orders else None,
                    "done": s["done"], "tasks_not_run_exactly_once": bad, "edge_violations": viol,
                    "worst_edge_violation_seconds": worst,
                    "idle_rank_seconds_while_ready": idle, "longest_idle_while_ready_seconds": idle_longest,
                    "setup_seconds": s["setup_seconds"],
                    "mpiexec_wall_seconds": proc["wall"]})
        rows.append(row)
        C.log(f"{inst.name}: {len(ids)} tasks, makespan {makespan:.3f} s, greedy {greedy:.3f} s "
              f"(x{row['ratio_to_greedy']:.3f}), lower bound {lb:.3f} s (x{row['ratio_to_lower_bound']:.3f})"
              + f", idle-while-ready {idle * 1e3:.1f} rank-ms (longest {idle_longest * 1e3:.1f} ms)"
              + (f", {viol} EDGE VIOLATIONS" if viol else "") + (f", {bad} tasks not run once" if bad else ""))
    ran = [r for r in rows if "makespan_seconds" in r]
    result = {"benchmark": "wfcommons", "ranks": a.ranks, "longest_task_seconds": a.longest,
              "machine": C.machine(), "workdir": work, "instances": rows}
    if ran:
        result["max_ratio_to_greedy"] = max(r["ratio_to_greedy"] for r in ran)
        result["geomean_ratio_to_greedy"] = float(np.exp(np.mean([np.log(r["ratio_to_greedy"]) for r in ran])))
    lines = [f"{r['instance']}: {r['tasks']} tasks, makespan {r['makespan_seconds']:.2f} s, greedy "
             f"{r['greedy_seconds']:.2f} s, x{r['ratio_to_greedy']:.3f} greedy, x{r['ratio_to_lower_bound']:.3f} LB"
             + (f", greedy random ties {r['greedy_random_ties_seconds']['min']:.2f}-"
                f"{r['greedy_random_ties_seconds']['max']:.2f} s (median {r['greedy_random_ties_seconds']['median']:.2f})"
                if "greedy_random_ties_seconds" in r else "")
             for r in ran]
    C.emit(result, "wfcommons on %d ranks:\n  " % a.ranks + "\n  ".join(lines or ["(nothing run)"]))


if __name__ == "__main__":
    main()
