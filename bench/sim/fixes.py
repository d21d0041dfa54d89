"""Prototypes of engine fixes for the hot spots the simulator finds (nothing under mpitiny/
changes: each is a ``SimRank`` subclass that overrides the engine method it would change).

- ``ShareRank``: ``Engine.chunk_size`` caps a claim at ``available // nranks`` tasks. With the
  roots dealt over P ranks, a rank's own queue holds its 1/P of the run, so at P >= 100 tasks
  per rank every claim is one task and pays a whole chunk's overhead (29 µs here) per task.
  The fix caps at ``available // min(nranks, SHARE_RANKS)``: a thief takes half of what it
  finds, so 1/16 of a queue left behind per claim is enough for the others to find work.
- ``TreeDoneRank``: ``Control.end_everywhere`` sets the ``DONE`` word of every rank, one
  flushed compare-and-swap after another, from the rank that finished the run: P round trips
  (10,000 x 4 µs = 40 ms between nodes) before the last rank can leave. The fix sets rank 0's
  only; a rank that leaves sets the ``DONE`` words of its ``FANOUT`` children in a tree rooted
  at rank 0 (ranks ``r*FANOUT+1 .. r*FANOUT+FANOUT``) before it leaves. When the run has
  finished no task is running anywhere, so every rank is in its idle loop reading its own
  word: the word reaches all P ranks in log_FANOUT(P) idle rounds.
- ``CombineRank``: every rank adds what it finished to rank 0's ``FINISHED`` word when it runs
  out of work, so when P ranks run out together (a balanced run's end) P fetch-and-adds queue
  at one word: 10,000 x 0.95 µs = 9.5 ms of waiting for the last of them. The fix combines the
  counts up a ``FANIN``-ary tree: a rank adds its count to its own ``SUBTREE`` word, and in
  each round forwards what its ``SUBTREE`` word gained since it last looked to its parent's
  (rank 0: to ``FINISHED``, as ``Control.add_finished``). At most ``FANIN`` + 1 ranks ever
  touch one word; at the end every rank is idle, so a count climbs the log_FANIN(P) levels in
  as many idle rounds. The prototype keeps ``SUBTREE`` in ``FAILED_TASKS`` (unused in these
  runs: no task fails); the engine would add a fifth control word.
- ``FixedRank``: all three.
"""
from __future__ import annotations

import numpy as np

from mpitiny.engine.control import DONE, FAILED, FAILED_TASKS, Control
from mpitiny.engine.loop import MAX_CHUNK
from mpitiny.engine.types import End

from .rank import SimRank

SHARE_RANKS = 16
FANOUT = 8
FANIN = 16
SUBTREE = FAILED_TASKS


class ShareRank(SimRank):
    """``chunk_size`` with the claim capped at a 1/min(P, 16) share of the queue."""

    def chunk_size(self, first: int, available: int) -> int:
        if available <= 1:
            return 1
        g = int(np.searchsorted(self.base, first, side="right")) - 1
        avg = float(self.avg_task[g])
        if avg != avg and self.dag.groups[g].size == 1:
            avg = self.avg_all
        if avg != avg:
            return 1
        share = max(1, available // min(self.nranks, SHARE_RANKS))
        return max(1, min(MAX_CHUNK, share, int(self.chunk_seconds[g] / max(avg, 1e-7))))


class RootOnlyControl(Control):
    """``end_everywhere`` that sets rank 0's DONE word only (the tree spreads it)."""

    def end_everywhere(self, why: End) -> None:
        self.mem.cas(0, DONE, 0, int(why))


class TreeDoneRank(SimRank):
    """Termination spread down a ``FANOUT``-ary tree by the leaving ranks."""

    def __init__(self, sim, rank: int, memory) -> None:
        super().__init__(sim, rank, memory)
        control = RootOnlyControl(self.mem, self.dag.total)
        self.control = control

    def leave_at(self) -> None:
        why = int(self.mem.local[DONE])
        for child in range(self.rank * FANOUT + 1, min(self.nranks, self.rank * FANOUT + FANOUT + 1)):
            self.mem.cas(child, DONE, 0, why)
        return super().leave_at()


class CombineRank(SimRank):
    """Finished-task counts combined up a ``FANIN``-ary tree on their way to ``FINISHED``."""

    def __init__(self, sim, rank: int, memory) -> None:
        super().__init__(sim, rank, memory)
        self.forwarded = 0                       # of this rank's SUBTREE word
        self.parent = (rank - 1) // FANIN if rank else -1

    def report_finished(self) -> None:
        self.reported_at = self.mem.now
        if self.unreported:
            n, failed = self.unreported, self.unreported_failed
            self.unreported = self.unreported_failed = 0
            if failed:
                self.mem.add(0, FAILED, failed)
            self.mem.add(self.rank, SUBTREE, n)
        total = int(self.mem.local[SUBTREE])
        delta = total - self.forwarded
        if delta <= 0:
            return
        self.forwarded = total
        if self.rank == 0:
            self.control.add_finished(delta, 0)
        else:
            self.mem.add(self.parent, SUBTREE, delta)


class FixedRank(CombineRank, TreeDoneRank, ShareRank):
    """All three fixes."""


VARIANTS = {"engine": SimRank, "share": ShareRank, "tree": TreeDoneRank,
            "combine": CombineRank, "fixed": FixedRank}
