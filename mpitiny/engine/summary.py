"""The end of a run: ``summary.json`` from every rank's figures, and the lines rank 0 prints."""
from __future__ import annotations

import os
import signal
import sys

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
    counts = {k: sum(s[k] for s in all_stats) for k in RunCounts().as_dict()}
    starts = [s["first_start"] for s in all_stats if s["first_start"] is not None]
    ends = [s["last_end"] for s in all_stats if s["last_end"] is not None]
    failures = [f for s in all_stats for f in s["failures"]]
    failures.sort(key=lambda f: f["time"])
    stop = max(s["stopped"] for s in all_stats)
    signals = sorted({s["stop_signal"] for s in all_stats if s["stop_signal"]})
    wall = t_end - t_start
    bad = totals["failed"] + totals["upstream_failed"]
    status = EXIT_RESUMABLE if stop == End.SIGNAL else EXIT_TASKS_FAILED if bad or stop \
        else EXIT_OK
    return {
        "name": dag.name, "dag": dag.source, "run_dir": os.path.abspath(run_dir),
        "params": dag.params, "ranks": len(all_stats),
        "hosts": sorted({s["host"] for s in all_stats}),
        "tasks": dag.total, **totals, "not_run": dag.total - sum(totals.values()),
        "split_reads": reads, "exit_status": status,
        "stopped": STOP_NAMES.get(stop),
        "stop_signals": [signal.Signals(x).name for x in signals],
        "incarnation": incarnation,
        "resumed": None if resumed is None else {
            "done_before": resumed.ndone, "crashed_before": int(np.count_nonzero(resumed.crashes)),
            "journal_records": resumed.records, "journal_records_ignored": resumed.torn},
        **counts,
        "wall_seconds": wall, "setup_seconds": t_start - t_launch,
        "tasks_per_second": dag.total / wall if wall > 0 else None,
        "first_task_start": min(starts) if starts else None,
        "last_task_end": max(ends) if ends else None,
        "per_rank": [{k: v for k, v in s.items() if k != "failures"} for s in all_stats],
        "failures_first": failures[:20],
        "groups": dag.group_table() if len(dag.groups) <= SUMMARY_GROUPS else
        f"{len(dag.groups)} entries: see tasks.h5, dataset groups",
    }


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
    elif summary.get("stopped") == "max-fails":
        print(f"mpitiny: stopped after {summary['failed']} failed tasks (--max-fails) with "
              f"{summary['not_run']} tasks not run")
    if summary["failures_first"]:
        first = summary["failures_first"][0]
        print(f"mpitiny: first failure:\n{first['error']}")
        print(f"mpitiny: every failure in full: {os.path.join(summary['run_dir'], 'failures')}/")
    print(f"mpitiny: run directory: {summary['run_dir']}")
    sys.stdout.flush()
