"""The control words: how ranks end a run together with no coordinator.

The first ``CONTROL_WORDS`` words of every rank's window, before its queue:

- ``DONE`` (every rank): ``End.RUNNING`` (0) while the run goes on, else why this rank should
  leave its loop. Set by compare-and-swap from 0, so the first reason wins on each rank.
- ``FINISHED`` (rank 0's only): tasks finished run-wide. Every rank adds what it finished, in
  batches, when it runs out of work and at least every ``REPORT_SECONDS`` while busy; the rank
  whose add makes it equal to the number of tasks sets every rank's ``DONE``.
- ``FAILED`` (rank 0's): of those, failed or upstream-failed (for the progress display).
- ``FAILED_TASKS`` (rank 0's): failed tasks (for ``--max-fails``).

Idle ranks read only their own ``DONE`` word. ``RunWatch`` is the narrow read-only view that
rank 0's progress display takes of these words and of the ranks' busy flags.
"""
from __future__ import annotations

from mpitiny.engine.types import End
from mpitiny.queue.stealq import BUSY

DONE = 0
FINISHED = 1
FAILED = 2
FAILED_TASKS = 3
CONTROL_WORDS = 4
REPORT_SECONDS = 0.25     # a busy rank adds its finished tasks to FINISHED at least this often


class Control:
    """One rank's operations on the control words (``mem``: the rank's word memory)."""

    def __init__(self, mem, total: int) -> None:
        self.mem = mem
        self.total = total

    def ending(self) -> bool:
        """Whether this rank's DONE word holds a reason to leave."""
        return bool(self.mem.local[DONE])

    def end(self) -> End:
        """Why this rank should leave its loop (``End.RUNNING``: it should not)."""
        return End(int(self.mem.local[DONE]))

    def add_finished(self, finished: int, failed: int) -> None:
        """Count tasks this rank finished (``failed`` of them failed or were skipped); the
        rank that finishes the run tells every rank."""
        if failed:
            self.mem.add(0, FAILED, failed)
        before = self.mem.fetch_add(0, FINISHED, finished)
        if before + finished == self.total:
            self.end_everywhere(End.ALL_FINISHED)

    def add_failed_tasks(self, n: int) -> int:
        """Count failed tasks for ``--max-fails``; returns the run-wide total."""
        return self.mem.fetch_add(0, FAILED_TASKS, n) + n

    def end_everywhere(self, why: End) -> None:
        """Set every rank's DONE word to ``why`` unless it already holds a reason."""
        for r in range(self.mem.nranks):
            self.mem.cas(r, DONE, 0, int(why))


class RunWatch:
    """What the progress display reads: run-wide counts (on rank 0) and who is busy."""

    def __init__(self, mem, queue_base: int) -> None:
        self.mem = mem
        self.busy_word = queue_base + BUSY

    def finished(self) -> int:
        return int(self.mem.local[FINISHED])

    def failed(self) -> int:
        return int(self.mem.local[FAILED])

    def busy_others(self) -> int:
        """How many of the other ranks run a task now (one ``Get`` each)."""
        return sum(int(self.mem.get(r, self.busy_word, 1)[0])
                   for r in range(self.mem.nranks) if r != self.mem.rank)
