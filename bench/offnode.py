#!/usr/bin/env python
"""Off the node: the cases where a busy rank must serve other ranks' one-sided operations,
on shared memory and on MPICH's network path (``MPIR_CVAR_NOLOCAL=1``, as between nodes),
with the progress thread (``mpitiny.engine.world.ProgressThread``) on and off, side by side.

Cases (2 ranks; ``--seconds`` S, default 3):

* ``cmds``: 4 ``sleep S`` commands placed on rank 0 (``"rank": 0``): rank 1 can only take
  them from rank 0's queue (late binding), one-sidedly, while rank 0 sleeps in a command;
* ``cmds8``: 8 ``sleep S/3`` commands placed on rank 0;
* ``release``: ``sleep 2S/3`` on rank 0; 20 50-ms Python tasks ``b`` on rank 1, each releasing a
  50-ms child ``c[i]`` whose count words are hashed over both ranks: rank 1 must count down
  words on the busy rank 0;
* ``spin``: as ``cmds`` with pure-Python busy-waiting tasks (the GIL is held: the progress
  thread gets it every switch interval).

Variants: ``shm`` (shared memory, no thread: what one node does), ``net`` (network path,
progress thread on: the default there), ``net-off`` (network path, ``MPITINY_PROGRESS=0``).
Reported per case and variant: the median makespan (``summary.json`` wall seconds, engine
start to end) over ``--repeat`` runs, interleaved, and the ratio to ``shm``; and the longest
time a rank sat idle while some task was ready (``idle_with_work``, from the task records: a
root is ready at the first task's start, ``c[i]`` at the end of ``b[i]``; a rank is idle from
the end of one of its tasks to the start of its next, or from the first start to its first);
for ``release``, the hand-off from ``b[i]``'s end to ``c[i]``'s start on one rank (median and
max over the runs: ``handoffs``).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402

VARIANTS = {"shm": {"MPIR_CVAR_NOLOCAL": "0", "MPITINY_PROGRESS": "0"},
            "net": {"MPIR_CVAR_NOLOCAL": "1"},
            "net-off": {"MPIR_CVAR_NOLOCAL": "1", "MPITINY_PROGRESS": "0"}}


def cases(seconds: float) -> dict:
    s = seconds
    return {
        "cmds": {"name": "cmds", "tasks": [
            {"id": "s", "cmd": f"sleep {s}", "foreach": {"i": {"range": [4]}}, "rank": 0}]},
        "cmds8": {"name": "cmds8", "tasks": [
            {"id": "s", "cmd": f"sleep {s / 3:.3f}", "foreach": {"i": {"range": [8]}},
             "rank": 0}]},
        "release": {"name": "release", "tasks": [
            {"id": "a", "cmd": f"sleep {2 * s / 3:.3f}", "rank": 0},
            {"id": "b", "fn": "mpitiny.tasks:spin", "args": [0.05],
             "foreach": {"i": {"range": [20]}}, "rank": 1},
            {"id": "c", "fn": "mpitiny.tasks:spin", "args": [0.05],
             "foreach": {"i": {"range": [20]}}, "deps": ["b[{i}]"]}]},
        "spin": {"name": "spin", "tasks": [
            {"id": "s", "fn": "mpitiny.tasks:spin", "args": [s],
             "foreach": {"i": {"range": [4]}}, "rank": 0}]},
    }


def idle_with_work(run_dir: str) -> float:
    """The longest time (s) a rank sat idle while some task was ready but not started."""
    from mpitiny.io.rundir import groups_of, read_tasks
    rows = read_tasks(run_dir)
    by_name = {g["name"]: g for g in groups_of(run_dir)}
    order = np.argsort(rows["gid"])
    start, end, rank = rows["start"][order], rows["end"][order], rows["rank"][order]
    t0 = float(start.min())
    ready = np.full(len(start), t0)
    if "c" in by_name:
        b, c = by_name["b"], by_name["c"]
        ready[c["first"]:c["first"] + c["size"]] = end[b["first"]:b["first"] + b["size"]]
    worst = 0.0
    for r in np.unique(rank):
        mine = np.flatnonzero(rank == r)
        mine = mine[np.argsort(start[mine])]
        gaps = [(t0, float(start[mine[0]]))] + [
            (float(end[a]), float(start[b])) for a, b in zip(mine[:-1], mine[1:])]
        for lo, hi in gaps:
            for j in range(len(start)):        # tasks waiting during the gap
                w0, w1 = max(lo, ready[j]), min(hi, start[j])
                worst = max(worst, w1 - w0)
    return worst


def handoffs(run_dir: str) -> list:
    """``release`` case: per ``i``, the time (s) from the end of ``b[i]`` to the start of its
    child ``c[i]`` where both ran on one rank (the release, counting ``c[i]``'s words down,
    and the claim: what the words' placement decides between nodes)."""
    from mpitiny.io.rundir import groups_of, read_tasks
    rows = read_tasks(run_dir)
    by_name = {g["name"]: g for g in groups_of(run_dir)}
    if "c" not in by_name:
        return []
    order = np.argsort(rows["gid"])
    start, end, rank = rows["start"][order], rows["end"][order], rows["rank"][order]
    b, c = by_name["b"], by_name["c"]
    out = []
    for i in range(c["size"]):
        pb, pc = b["first"] + i, c["first"] + i
        if rank[pb] == rank[pc]:
            out.append(float(start[pc] - end[pb]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--cases", default="cmds,cmds8,release,spin")
    ap.add_argument("--workdir")
    a = ap.parse_args()
    C.machine()
    work = C.workdir(a.workdir, "bench-offnode-")
    dags = {name: C.write_dag(os.path.join(work, f"{name}.json"), dag)
            for name, dag in cases(a.seconds).items() if name in a.cases.split(",")}
    walls: dict = {(c, v): [] for c in dags for v in VARIANTS}
    idles: dict = {(c, v): [] for c in dags for v in VARIANTS}
    gaps: dict = {(c, v): [] for c in dags for v in VARIANTS}
    for k in range(a.repeat):
        for case, dag in dags.items():
            order = list(VARIANTS) if k % 2 == 0 else list(reversed(VARIANTS))
            for variant in order:
                run_dir = os.path.join(work, f"{case}-{variant}")
                env = {**os.environ, **VARIANTS[variant]}
                _, summary = C.run_mpitiny(2, dag, run_dir, env=env, timeout=600)
                idle = idle_with_work(run_dir)
                walls[case, variant].append(summary["wall_seconds"])
                idles[case, variant].append(idle)
                gaps[case, variant] += handoffs(run_dir)
                C.log(f"{case} {variant}: {summary['wall_seconds']:.3f} s, longest idle with "
                      f"ready work {1e3 * idle:.1f} ms")
    table = {}
    human = []
    for case in dags:
        shm = statistics.median(walls[case, "shm"])
        row = {v: {"median_seconds": statistics.median(walls[case, v]),
                   "ratio_to_shm": statistics.median(walls[case, v]) / shm,
                   "max_idle_with_work_ms": 1e3 * max(idles[case, v]),
                   "runs": walls[case, v]} for v in VARIANTS}
        for v in VARIANTS:
            if gaps[case, v]:
                row[v]["handoff_median_ms"] = 1e3 * statistics.median(gaps[case, v])
                row[v]["handoff_max_ms"] = 1e3 * max(gaps[case, v])
        table[case] = row
        human.append(f"{case}: shm {shm:.2f} s, net {row['net']['median_seconds']:.2f} s "
                     f"({row['net']['ratio_to_shm']:.2f}x), net without progress "
                     f"{row['net-off']['median_seconds']:.2f} s "
                     f"({row['net-off']['ratio_to_shm']:.2f}x); longest idle with ready work: "
                     f"net {row['net']['max_idle_with_work_ms']:.0f} ms, net-off "
                     f"{row['net-off']['max_idle_with_work_ms']:.0f} ms"
                     + (f"; b->c hand-off on the network path median "
                        f"{row['net']['handoff_median_ms']:.2f} ms, max "
                        f"{row['net']['handoff_max_ms']:.2f} ms (shm median "
                        f"{row['shm']['handoff_median_ms']:.2f} ms)"
                        if "handoff_median_ms" in row["net"] else ""))
    C.emit({"benchmark": "offnode", "machine": C.machine(), "seconds": a.seconds,
            "repeat": a.repeat, "cases": table}, "offnode: " + " | ".join(human))


if __name__ == "__main__":
    main()
