"""The engine's vocabulary: what travels between its parts, named.

- ``RunOptions``: how a run runs (the options of ``mpitiny run``).
- ``Chunk``: the unit of work, tasks a rank claimed (or stole) and runs together.
- ``End``: why a rank leaves its loop, the value of its DONE control word.
- ``Standing``: what a resumed run does with a task an earlier incarnation journaled.
- ``RunCounts``: the per-rank counts that go into ``summary.json``.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from enum import IntEnum
from typing import ClassVar, Union

import numpy as np


@dataclass
class RunOptions:
    """How ``mpitiny run`` runs a DAG (its command-line options; see ``mpitiny run --help``)."""

    result_mem: int = 256 << 20
    state_mem: int = 16 << 20
    mem_limit: int | None = None
    quiet: bool = False
    progress_interval: float | None = None
    trace: bool = False
    retries: int = 0                 # run-wide default of a task's "retries"
    timeout: float | None = None     # run-wide default of a task's "timeout" (seconds)
    max_fails: int | None = None     # end the run after this many failed tasks
    max_crashes: int = 3             # a task that crashed its rank this often fails
    journal: bool = True
    batch: bool = True               # call a family's batch form (``mpitiny.with_batch``)
    resume: str = "auto"             # "auto": if the journals are of this DAG and unfinished;
                                     # "yes": also after a complete run; "no": start over
    time_limit: float | None = None  # stop (resumably) within this many seconds of ``started``
    job_end: bool = True             # under Slurm, also stop before the job's end time
    started: float = field(default_factory=time.time)   # when the run started (this rank)


Tasks = Union[tuple, np.ndarray]
"""Task ids of a chunk: ``(lo, hi)``, a run of consecutive ids, or an array of ids."""


@dataclass
class Chunk:
    """Tasks a rank claimed from its queue (or stole, or was handed by a release) to run now.

    ``queued_at`` and ``stolen`` describe the queue slot they came from; they go into every
    task row of the chunk (the trace shows how long tasks waited and where they ran)."""

    tasks: Tasks
    queued_at: float
    stolen: bool = False

    def is_one(self) -> bool:
        """Whether the chunk is one task."""
        tasks = self.tasks
        return tasks[1] - tasks[0] == 1 if isinstance(tasks, tuple) else len(tasks) == 1


class End(IntEnum):
    """A rank's DONE control word: 0 while the run goes on, else why it ends (first one wins)."""

    RUNNING = 0
    ALL_FINISHED = 1
    SIGNAL = 2          # SIGTERM / SIGINT / SIGUSR1 on some rank: journals saved, resumable
    MAX_FAILS = 3       # --max-fails reached
    TIME_LIMIT = 4      # a task would not finish before the run's end: journals saved, resumable


STOP_NAMES = {End.SIGNAL: "signal", End.MAX_FAILS: "max-fails", End.TIME_LIMIT: "time-limit"}
"""``summary.json``'s "stopped" for the ends that are stops."""


class Standing(IntEnum):
    """What a resumed run does with a task, from the earlier incarnations' journals."""

    NORMAL = 0      # run it
    CACHED = 1      # done before: not run again; its kept value is reloaded for its children
    SUSPECT = 2     # was running when a rank died: run it alone in a child process
    DOOMED = 3      # crashed its rank --max-crashes times: failed without running


@dataclass
class RunCounts:
    """Per-rank counts of the ways tasks ran, summed over the ranks in ``summary.json`` (but
    ``NOT_SUMMED``: the run's end under a time limit, which every rank knows)."""

    cached: int = 0       # done in an earlier incarnation, not run again
    retried: int = 0      # attempts after a failed one
    isolated: int = 0     # attempts alone in a child process (suspects)
    crashed: int = 0      # of those, the ones whose child crashed
    batches: int = 0      # calls of a batch form
    batched: int = 0      # tasks run by them
    unbatched: int = 0    # batch calls that failed and ran one call per task instead
    held_back: int = 0    # tasks not started: they would not finish before the run's end
    held_back_declared: int = 0   # of those, the ones judged by their declared "walltime"
    held_back_too_long: int = 0   # of those, the ones expected to take longer than the limit
    cut_off: int = 0      # tasks stopped mid-way at the run's hard end (they overran)
    added: int = 0        # tasks added while the run went on (``mpitiny.submit``), or queued
                          # again from the journals (added before, not done)
    run_end: float = 0.0  # not a count: the run's end under a time limit (the same everywhere)
    run_end_what: str = ""        # and where it comes from

    NOT_SUMMED: ClassVar[tuple] = ("run_end", "run_end_what")

    def as_dict(self) -> dict:
        return asdict(self)
