"""The end of a run: ``summary.json`` from every rank's figures, and the lines rank 0 prints."""
from __future__ import annotations

import os
import signal
import sys
import time

import numpy as np

from mpitiny.dag.model import DAG
from mpitiny.engine.types import STOP_NAMES, End, RunCounts
from mpitiny.errors import EXIT_OK, EXIT_RESUMABLE, EXIT_TASKS_FAILED

SUMMARY_GROUPS = 1000   # larger DAGs keep their gid -> id table in tasks.h5 only


def make_summary(dag: DAG, run_dir: str, all_stats: list, t_launch: float, t_start: float,
                 t_end: float, incarnation: int = 1, resumed=None) -> dict:
    """``summary.json``: totals, times, per-rank figures, the first failures, exit status."""
    totals = {k: sum(s[k] for s in all_stats) for k in ("done", "failed", "upstream_failed")}
    reads = {k: sum(s[f"split_reads_{k}"] for s in all_stats) for k in ("local", "remote")}
    counts = {k: sum(s[k] for s in all_stats) for k in RunCounts().as_dict()
              if k not in RunCounts.NOT_SUMMED}
    starts = [s["first_start"] for s in all_stats if s["first_start"] is not None]
    ends = [s["last_end"] for s in all_stats if s["last_end"] is not None]
    failures = [f for s in all_stats for f in s["failures"]]
    failures.sort(key=lambda f: f["time"])
    stop = max((s["stopped"] for s in all_stats), key=STOP_ORDER.index)
    signals = sorted({s["stop_signal"] for s in all_stats if s["stop_signal"]})
    wall = t_end - t_start
    bad = totals["failed"] + totals["upstream_failed"]
    status = EXIT_RESUMABLE if stop in (End.SIGNAL, End.TIME_LIMIT) else \
        EXIT_TASKS_FAILED if bad or stop else EXIT_OK
    return {
        "name": dag.name, "dag": dag.source, "run_dir": os.path.abspath(run_dir),
        "params": dag.params, "ranks": len(all_stats),
        "hosts": sorted({s["host"] for s in all_stats}),
        "tasks": dag.total + counts["added"], **totals,
        "not_run": dag.total + counts["added"] - sum(totals.values()),
        "split_reads": reads, "exit_status": status,
        "stopped": STOP_NAMES.get(stop),
        "stop_signals": [signal.Signals(x).name for x in signals],
        "time_limit": time_limit(all_stats, counts),
        "incarnation": incarnation,
        "resumed": None if resumed is None else {
            "done_before": resumed.ndone, "crashed_before": int(np.count_nonzero(resumed.crashes)),
            "journal_records": resumed.records, "journal_records_ignored": resumed.torn,
            "added_done_before": len(resumed.added_done),
            "added_queued_again": len(resumed.added_pending())},
        **counts,
        "wall_seconds": wall, "setup_seconds": t_start - t_launch,
        "tasks_per_second": (dag.total + counts["added"]) / wall if wall > 0 else None,
        "first_task_start": min(starts) if starts else None,
        "last_task_end": max(ends) if ends else None,
        "per_rank": [{k: v for k, v in s.items() if k != "failures"} for s in all_stats],
        "failures_first": failures[:20],
        "groups": dag.group_table()
        if len(dag.groups) + dag.listed_tasks() <= SUMMARY_GROUPS else
        f"{dag.entries} entries: see tasks.h5, dataset groups",
    }


STOP_ORDER = (End.RUNNING, End.ALL_FINISHED, End.TIME_LIMIT, End.SIGNAL, End.MAX_FAILS)
"""Which end the summary names when the ranks saw several (the last one of them here)."""


def time_limit(all_stats: list, counts: dict) -> dict | None:
    """``summary.json``'s "time_limit": the run's end (``time.time()`` seconds and local time),
    where it came from, and how many tasks were held back (not started: they would not have
    finished in time), of them by a declared "walltime", and of them expected to take longer
    than the whole limit (from the start to the end); None without a time limit."""
    ends = [(s["run_end"], s["run_end_what"]) for s in all_stats if s.get("run_end")]
    if not ends:
        return None
    end, what = min(ends)
    return {"end": end, "end_local": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(end)),
            "from": what, "held_back": counts["held_back"],
            "held_back_declared": counts["held_back_declared"],
            "held_back_too_long": counts["held_back_too_long"],
            "cut_off": counts["cut_off"]}


def print_summary(summary: dict) -> None:
    """Rank 0's closing lines: totals, resumed or stopped, the first failure in full."""
    rate = summary["tasks_per_second"]
    line = (f"mpitiny: {summary['name']}: {summary['tasks']} tasks on {summary['ranks']} ranks in "
            f"{summary['wall_seconds']:.3f} s ({rate:,.0f} tasks/s): {summary['done']} done, "
            f"{summary['failed']} failed, {summary['upstream_failed']} upstream-failed"
            if rate else f"mpitiny: {summary['name']}: no tasks")
    print(line)
    if summary.get("cached"):
        print(f"mpitiny: resumed (run {summary['incarnation']}): {summary['cached']} tasks were "
              "done in earlier runs and not run again")
    if summary.get("stopped") == "signal":
        print(f"mpitiny: stopped by {', '.join(summary['stop_signals']) or 'a signal'} with "
              f"{summary['not_run']} tasks not run; the journals are saved: run the same "
              f"command again to resume (exit status {EXIT_RESUMABLE})")
    elif summary.get("stopped") == "time-limit":
        print(time_limit_line(summary))
    elif summary.get("stopped") == "max-fails":
        print(f"mpitiny: stopped after {summary['failed']} failed tasks (--max-fails) with "
              f"{summary['not_run']} tasks not run")
    if summary["failures_first"]:
        first = summary["failures_first"][0]
        print(f"mpitiny: first failure:\n{first['error']}")
        print(f"mpitiny: every failure in full: {os.path.join(summary['run_dir'], 'failures')}/")
    print(f"mpitiny: run directory: {summary['run_dir']}")
    sys.stdout.flush()


def time_limit_line(summary: dict) -> str:
    """Rank 0's line for a run stopped by its time limit: when the end is, what was held back
    and why, and how to go on."""
    limit = summary.get("time_limit") or {}
    held, declared = limit.get("held_back", 0), limit.get("held_back_declared", 0)
    why = []
    if declared:
        why.append(f"{declared} by their declared walltime")
    if held - declared:
        why.append(f"{held - declared} by the average time of their tasks here")
    too_long = limit.get("held_back_too_long", 0)
    return (f"mpitiny: stopped for the time limit (the run ends at "
            f"{limit.get('end_local', '?')[11:]}: {limit.get('from', '?')}) with "
            f"{summary['not_run']} tasks not run; {held} held back, as they would not finish "
            f"in time{' (' + ', '.join(why) + ')' if why else ''}"
            + (f", {too_long} of them expected to take longer than the whole limit: a run "
               "this long cannot run them" if too_long else "")
            + (f"; {cut} stopped mid-way at the end, as they overran (they run again)"
               if (cut := limit.get("cut_off", 0)) else "")
            + f"; the journals are saved: run the same command again to resume (exit status "
            f"{EXIT_RESUMABLE})")
