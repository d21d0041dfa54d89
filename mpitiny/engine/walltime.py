"""Wall-time awareness: when the run must end, and whether a task can still finish before it.

**The end** (``run_end``) is the earliest of

- ``--time-limit SECONDS`` after the run started (``RunOptions.started``: when the rank's
  process started, for ``mpitiny run``; when ``mpitiny.run`` was called), and
- under Slurm (``SLURM_JOB_ID`` set; unless ``--no-job-end``), the job's end time less
  ``SLURM_RESERVE`` seconds, left to requeue the job before Slurm ends it: from
  ``SLURM_JOB_END_TIME`` where Slurm exports it, else from one ``squeue -j JOB -o %e`` on
  rank 0.

Every rank takes the earliest end the ranks found (``Control.agree_end``, one ``allgather``
when the engine starts), so they agree although they started a moment apart.

**Fitting** (``TimeLimit.fit``): tasks must have finished by ``stop_at``, the end less a
``margin`` for syncing the journals and writing the task tables (5 % of the time from the
start to the end, within ``MARGIN_MIN``..``MARGIN_MAX``). A task is expected to take its
declared ``"walltime"``, else the running average time of its family on this rank (of all
tasks this rank ran, for a plain task, as the chunk size does); while that is unknown it is
expected to fit (optimistic: a family's first task runs). A chunk runs the tasks that fit one
after another; the rest are held back. Before each task the runner makes one comparison,
``time.time() > start_by``, the latest start that still fits (``Control.start_by``; 0 without
a limit, when it makes none).

**The hard end** (``cut_at``, half way from ``stop_at`` to the end): a task still running
then overran what was expected of it; it is stopped (``Guard.stop_at``) and runs again when
the run resumes, so that the run ends when it said it would, Slurm or not.

What a held-back task does to the run is the loop's business (``Engine.run_group``): the run
stops everywhere with ``End.TIME_LIMIT`` (exit 75, resumable), the running tasks finish.
A task expected to take longer than the whole limit (``TimeLimit.budget``) is counted apart:
no run that long can run it.
"""
from __future__ import annotations

import math
import os
import subprocess
import time

import numpy as np

SLURM_RESERVE = 30.0      # seconds before a Slurm job's end by which the run has ended
MARGIN_FRACTION = 0.05    # of the time from the start to the end, kept for the journals and
MARGIN_MIN, MARGIN_MAX = 3.0, 10.0      # tables, within these bounds (seconds)
SQUEUE_SECONDS = 10.0     # how long rank 0 waits for squeue


def run_end(opts, query_slurm: bool = True, environ=None) -> tuple | None:
    """``(end, what)``: the time (``time.time()`` seconds) by which the run must have ended and
    where that comes from, or None without a time limit. ``query_slurm``: may run ``squeue``
    (rank 0 does; the other ranks take its answer)."""
    environ = os.environ if environ is None else environ
    ends = []
    if opts.time_limit:
        ends.append((opts.started + opts.time_limit, f"--time-limit {opts.time_limit:g} s"))
    job = environ.get("SLURM_JOB_ID")
    if opts.job_end and job:
        job_end = slurm_job_end(job, environ, query_slurm)
        if job_end is not None:
            ends.append((job_end - SLURM_RESERVE, f"Slurm job {job} ends at "
                         f"{time.strftime('%H:%M:%S', time.localtime(job_end))}, less "
                         f"{SLURM_RESERVE:g} s to requeue"))
    return min(ends) if ends else None


def slurm_job_end(job: str, environ, query: bool = True) -> float | None:
    """The Slurm job's end time: ``SLURM_JOB_END_TIME`` (exported by recent Slurm versions),
    else what ``squeue`` says (if ``query``); None if unknown (no end, or squeue failed)."""
    exported = environ.get("SLURM_JOB_END_TIME", "")
    if exported.isdigit() and int(exported) > 0:
        return float(exported)
    if not query:
        return None
    try:
        out = subprocess.run(["squeue", "-h", "-j", job, "-o", "%e"], capture_output=True,
                             text=True, timeout=SQUEUE_SECONDS, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_slurm_time(out.strip())


def parse_slurm_time(text: str) -> float | None:
    """``2026-12-06T03:37:06`` (Slurm's local time) as ``time.time()`` seconds; None for
    ``N/A``, ``Unknown`` and anything else that is not such a time."""
    try:
        return time.mktime(time.strptime(text, "%Y-%m-%dT%H:%M:%S"))
    except (ValueError, OverflowError):
        return None


class TimeLimit:
    """One rank's view of the run's end: when tasks must have finished, and how long each
    entry's tasks are declared to take (``walltime``; NaN: not declared)."""

    def __init__(self, end: float, what: str, started: float, dag) -> None:
        self.end = end
        self.what = what
        self.budget = end - started    # the longest a task can take in a run of this length
        margin = min(MARGIN_MAX, max(MARGIN_MIN, MARGIN_FRACTION * (end - started)))
        self.stop_at = end - margin
        self.cut_at = end - margin / 2
        self.declared = np.array([math.nan if g.options.walltime is None else g.options.walltime
                                  for g in dag.groups], dtype=np.float64)
        self.plain = np.array([g.size == 1 for g in dag.groups], dtype=bool)

    def expected(self, g: int, avg_group: float, avg_all: float) -> tuple:
        """``(seconds, declared)``: how long a task of entry ``g`` is expected to take, and
        whether that is its declared ``walltime``; 0 when unknown."""
        declared = float(self.declared[g])
        if declared == declared:
            return declared, True
        avg = avg_all if avg_group != avg_group and self.plain[g] else avg_group
        return (avg if avg == avg else 0.0), False

    def fit(self, n: int, per_task: float, now: float) -> int:
        """How many of ``n`` tasks of ``per_task`` seconds each, run one after another from
        ``now``, finish by ``stop_at``."""
        left = self.stop_at - now
        if left <= 0:
            return 0
        if per_task <= 0:
            return n
        return min(n, int(left / per_task))

    def describe(self) -> dict:
        """For ``summary.json``."""
        return {"end": self.end, "what": self.what, "tasks_end_by": self.stop_at}
