#!/usr/bin/env python
"""Priorities across ranks: how long urgent tasks released on one busy rank wait.

The scenario (the bar of "Off the node", part 3): ``--ranks`` ranks (4) busy with 50 ms
priority-0 tasks (one family ``bg`` of 64 per rank, a block per rank); ``trigger``, placed on
rank 0 (``"rank": 0``), waits for rank 0's 4th ``bg`` task, then itself takes ``--offset`` ms
(so its end falls at a chosen moment of the other ranks' tasks, which all started together);
its 8 children ``urgent`` (priority 10, 50 ms each) are then released on rank 0.

``--case placed`` (``--case both`` runs both cases): the urgent tasks are placed on rank 1
(``"rank": 1``) while rank 1 runs one task of 2 s (``long``, released by its first ``bg``
task): released on rank 0, they are pushed into the inbox of a rank that will not look at it
for 2 s, and the other ranks must take them out of it.

Measured from the task records (``tasks.h5``): the release of a child is its parent's end, so
each urgent task's wait is its start - ``trigger``'s end. Per run: the longest and median wait
(ms), how many ``bg`` tasks started after the release while an urgent task had not started
yet (``p0_started_while_urgent_waited``), on which ranks the urgent tasks ran. The bar: every
wait <= 110 ms and no such ``bg`` start. With 4 ranks the last urgent tasks start in the
second round after the release (~100 ms), so the margin is what two hand-offs and two tasks'
overruns take: both are reported (``urgent_handoff_*``: end of a rank's previous task to the
start of its urgent one; ``task_overrun_*``: a 50 ms task's time beyond 50 ms).

``--kind sleep`` (the default): tasks sleep (``mpitiny.tasks:sleep``), so each takes 50 ms
even with more ranks than cores. ``--kind spin``: pure-Python busy-waiting
(``mpitiny.tasks:spin``): on a machine with fewer cores than ranks (this one: 4 ranks on 2
cores) a 50 ms spin takes ~100 ms of wall time, and so do the waits. ``--kind both`` runs
both. Offsets (``--offsets``, ms, default 0,10,25,40) and ``--repeat`` are interleaved; the
summary gives each variant's (kind and case) worst wait and total ``bg`` starts over all runs, and
per offset.
Use ``bench/ab.py --base TREE priorities.py`` to compare with another tree (copy this script
into it if it has none).

``--overhead`` measures instead what several levels cost where nothing is urgent (2 ranks,
``--repeat`` runs interleaved, medians): two root families of 100,000 null tasks each at
priorities 0 and 0 (``single``: one level, no board) vs 0 and 1 (``two``: every chunk reads the
board and counts its claim off), engine tasks/s from ``summary.json``; and a chain of 2,000
null tasks, all priority 0 vs alternating 0 / 1 (every link released, counted, claimed and
counted off: the per-chunk cost at its largest), engine seconds per link.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402

FN = {"sleep": "mpitiny.tasks:sleep", "spin": "mpitiny.tasks:spin"}
TASK = 0.05
URGENT = 8
AFTER = 3          # trigger waits for rank 0's (AFTER+1)-th bg task
LONG = 2.0         # --case placed: rank 1's long task


def scenario(kind: str, ranks: int, offset_ms: float, case: str = "released") -> dict:
    """The DAG: ``bg``, ``trigger``, ``urgent`` (task ids in this order), and for the placed
    case ``long`` after them, released by rank 1's first ``bg`` task (the first of its block)."""
    fn = FN[kind]
    tasks = [
        {"id": "bg", "fn": fn, "args": [TASK], "foreach": {"i": {"range": [0, 64 * ranks]}}},
        {"id": "trigger", "fn": fn, "args": [offset_ms / 1000], "rank": 0,
         "deps": [f"bg[{AFTER}]"]},
        {"id": "urgent", "fn": fn, "args": [TASK], "priority": 10,
         "foreach": {"i": {"range": [0, URGENT]}}, "deps": ["trigger"]}]
    if case == "placed":
        tasks[-1]["rank"] = 1
        tasks.append({"id": "long", "fn": fn, "args": [LONG], "rank": 1, "deps": ["bg[64]"]})
    return {"name": f"priorities-{kind}-{case}", "tasks": tasks}


def measure(run_dir: str, ranks: int) -> dict:
    """The figures of one run, from its task records."""
    rows = C.read_table(run_dir)
    total = 64 * ranks
    bg = rows[rows["gid"] < total]
    trigger = rows[rows["gid"] == total][0]
    urgent = rows[(rows["gid"] > total) & (rows["gid"] <= total + URGENT)]
    long = rows[rows["gid"] == total + URGENT + 1]
    release = float(trigger["end"])
    waits = (urgent["start"] - release) * 1000
    last = float(urgent["start"].max())
    while_waiting = int(np.count_nonzero((bg["start"] > release) & (bg["start"] < last)))
    handoffs, overruns = handoff_and_overrun(rows, urgent, total)
    return {"max_wait_ms": round(float(waits.max()), 2),
            "urgent_handoff_median_ms": round(1e3 * float(np.median(handoffs)), 2),
            "urgent_handoff_max_ms": round(1e3 * float(np.max(handoffs)), 2),
            "task_overrun_median_ms": round(1e3 * float(np.median(overruns)), 2),
            "task_overrun_max_ms": round(1e3 * float(np.max(overruns)), 2),
            "median_wait_ms": round(float(np.median(waits)), 2),
            "waits_ms": sorted(round(float(w), 2) for w in waits),
            "p0_started_while_urgent_waited": while_waiting,
            "trigger_rank": int(trigger["rank"]),
            "urgent_ranks": sorted(int(r) for r in urgent["rank"]),
            "long_ran_over_release": bool(len(long) and long["start"][0] < release < long["end"][0]),
            "meets_bar": bool(waits.max() <= 110 and while_waiting == 0)}


def handoff_and_overrun(rows, urgent, total: int) -> tuple:
    """Per urgent task, the time from the end of the task its rank ran before it to its start
    (the engine's hand-off: finish, find it, claim or steal it, start it); per ``bg`` and urgent
    task, how much longer than ``TASK`` it took (a sleep's overshoot: this machine's load).
    Where a wait beyond 100 ms (two rounds of 50 ms tasks) comes from."""
    handoffs = []
    for u in urgent:
        before = rows[(rows["rank"] == u["rank"]) & (rows["end"] <= u["start"])]
        if len(before):
            handoffs.append(float(u["start"] - before["end"].max()))
    timed = rows[(rows["gid"] < total) | (rows["gid"] > total)]
    timed = timed[timed["gid"] <= total + URGENT]
    return handoffs or [0.0], (timed["end"] - timed["start"]) - TASK


def overhead_dags(levels: bool) -> dict:
    fams = {"name": "fams", "tasks": [
        {"id": f"f{k}", "fn": "mpitiny.tasks:null", "foreach": {"i": {"range": [0, 100_000]}},
         "priority": k if levels else 0} for k in range(2)]}
    links = [{"id": "c0", "fn": "mpitiny.tasks:null"}]
    links += [{"id": f"c{k}", "fn": "mpitiny.tasks:null", "deps": [f"c{k - 1}"],
               "priority": k % 2 if levels else 0} for k in range(1, 2000)]
    return {"fams": fams, "chain": {"name": "chain", "tasks": links}}


def overhead(work: str, repeat: int) -> None:
    figures: dict = {(case, v): [] for case in ("fams", "chain") for v in ("single", "two")}
    for rep in range(repeat):
        for variant in ("single", "two") if rep % 2 == 0 else ("two", "single"):
            for case, dag in overhead_dags(variant == "two").items():
                path = C.write_dag(os.path.join(work, f"{case}-{variant}.json"), dag)
                _, summary = C.run_mpitiny(2, path, os.path.join(work, f"run-{case}-{variant}"))
                value = summary["tasks_per_second"] if case == "fams" else \
                    summary["wall_seconds"] / 2000 * 1e6
                figures[case, variant].append(value)
                C.log(f"{case} {variant}: {value:,.1f} "
                      f"{'tasks/s' if case == 'fams' else 'us per link'}")
    med = {f"{c}_{v}": statistics.median(x) for (c, v), x in figures.items()}
    result = {"benchmark": "priorities-overhead", "machine": C.machine(), "repeat": repeat,
              "fams_tasks_per_second": {"single": med["fams_single"], "two": med["fams_two"],
                                        "two_over_single": med["fams_two"] / med["fams_single"]},
              "chain_us_per_link": {"single": med["chain_single"], "two": med["chain_two"],
                                    "two_over_single": med["chain_two"] / med["chain_single"]},
              "runs": {f"{c}-{v}": x for (c, v), x in figures.items()}}
    C.emit(result, f"priorities overhead: families {med['fams_single']:,.0f} vs "
                   f"{med['fams_two']:,.0f} tasks/s (one level vs two); chain "
                   f"{med['chain_single']:.1f} vs {med['chain_two']:.1f} us per link")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ranks", type=int, default=4)
    ap.add_argument("--kind", choices=["sleep", "spin", "both"], default="sleep")
    ap.add_argument("--case", choices=["released", "placed", "both"], default="both")
    ap.add_argument("--offsets", default="0,10,25,40", help="ms, comma-separated")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--workdir")
    ap.add_argument("--overhead", action="store_true",
                    help="measure the cost of several levels instead (see above)")
    a = ap.parse_args()
    C.machine()
    work = C.workdir(a.workdir, "bench-priorities-")
    if a.overhead:
        overhead(work, max(a.repeat, 3))
        return
    kinds = ["sleep", "spin"] if a.kind == "both" else [a.kind]
    cases = ["released", "placed"] if a.case == "both" else [a.case]
    variants = [f"{k}-{c}" for k in kinds for c in cases]
    offsets = [float(x) for x in a.offsets.split(",")]
    runs: dict = {v: {str(o): [] for o in offsets} for v in variants}
    for rep in range(a.repeat):
        for variant in variants if rep % 2 == 0 else variants[::-1]:
            kind, case = variant.split("-")
            for off in offsets:
                dag = C.write_dag(os.path.join(work, f"{variant}-{off:g}.json"),
                                  scenario(kind, a.ranks, off, case))
                run_dir = os.path.join(work, f"run-{variant}-{off:g}")
                C.run_mpitiny(a.ranks, dag, run_dir, timeout=600)
                m = measure(run_dir, a.ranks)
                runs[variant][str(off)].append(m)
                C.log(f"{variant} offset {off:g} ms: max wait {m['max_wait_ms']} ms, "
                      f"p0 starts while urgent waited {m['p0_started_while_urgent_waited']}, "
                      f"urgent on ranks {m['urgent_ranks']}; hand-off to an urgent task "
                      f"median {m['urgent_handoff_median_ms']} ms, max "
                      f"{m['urgent_handoff_max_ms']} ms; 50 ms tasks overran by median "
                      f"{m['task_overrun_median_ms']} ms, max {m['task_overrun_max_ms']} ms")
    result: dict = {"benchmark": "priorities", "machine": C.machine(), "ranks": a.ranks,
                    "task_seconds": TASK, "urgent": URGENT, "repeat": a.repeat,
                    "mpir_cvar_nolocal": os.environ.get("MPIR_CVAR_NOLOCAL", ""), "kinds": {}}
    human = []
    for variant in variants:
        result["kinds"][variant], line = summarise(runs[variant])
        human.append(f"{variant}: {line}")
    C.emit(result, "priorities: " + " | ".join(human))


def summarise(by_offset: dict) -> tuple:
    """``(figures, one line)`` over every run of one variant."""
    every = [m for ms in by_offset.values() for m in ms]
    worst = max(m["max_wait_ms"] for m in every)
    p0 = sum(m["p0_started_while_urgent_waited"] for m in every)
    met = sum(m["meets_bar"] for m in every)
    figures = {"worst_wait_ms": worst,
               "median_of_max_wait_ms": statistics.median(m["max_wait_ms"] for m in every),
               "p0_started_while_urgent_waited_total": p0,
               "runs_meeting_bar": met, "runs": len(every), "by_offset": by_offset}
    return figures, (f"worst wait {worst:.1f} ms, {p0} priority-0 starts while an urgent "
                     f"task waited, {met}/{len(every)} runs meet the bar")


if __name__ == "__main__":
    main()
