"""The engine with its scale fixes taken out again, to measure what each one buys (``--variants``).

The simulator found three costs that grow with P (``docs/scale.md``); all three are fixed in
the engine now, so the ``engine`` variant is ``SimRank`` as it is. These subclasses put the old
code back, each overriding only what the fix changed:

- ``DirectCountRank`` (``direct``): every rank adds what it finished to rank 0's ``FINISHED``
  word itself (``Control.combining`` off), as before the combining tree: when a balanced run's
  P ranks run out of work together, P fetch-and-adds queue at one word (the engine from
  2026-12-06 morning, with the other two fixes).
- ``BeforeRank`` (``before``): none of the three. ``chunk_size`` caps a claim at
  ``available // nranks`` (every claim is one task once P >= the tasks per rank); the rank that
  completes the count sets every rank's ``DONE`` word, one round trip after another (no tree);
  and the count is direct (the engine at 3972e8a, as measured first).
- ``OneBoardRank`` (``oneboard``): the priority board on rank 0 only, as below ``GROUP_RANKS``
  ranks, at any rank count (the board before its tiers).
"""
from __future__ import annotations

import numpy as np

from mpitiny.engine.control import FINISHED, Control
from mpitiny.engine.loop import MAX_CHUNK
from mpitiny.engine.types import End

from .rank import SimRank


class DirectCountRank(SimRank):
    """Finishes added to ``FINISHED`` directly by every rank."""

    def __init__(self, sim, rank: int, memory) -> None:
        super().__init__(sim, rank, memory)
        self.control.combining = False


class SequentialEndControl(Control):
    """The count direct, and the end set on every rank by the one that completes it."""

    def __init__(self, mem, total: int) -> None:
        super().__init__(mem, total)
        self.combining = False

    def count(self, n: int) -> None:
        if self.mem.fetch_add(0, FINISHED, n) + n == self.total:
            self.end_everywhere(End.ALL_FINISHED)

    def pass_on_end(self) -> None:
        pass


class BeforeRank(SimRank):
    """None of the three fixes."""

    def __init__(self, sim, rank: int, memory) -> None:
        super().__init__(sim, rank, memory)
        self.control = SequentialEndControl(self.mem, self.dag.total)

    def chunk_size(self, first: int, available: int) -> int:
        if available <= 1:
            return 1
        g = int(np.searchsorted(self.base, first, side="right")) - 1
        avg = self.avg_task[g]
        if avg != avg and self.dag.groups[g].size == 1:
            avg = self.avg_all
        if avg != avg:
            return 1
        share = max(1, available // self.nranks)
        return max(1, min(MAX_CHUNK, share, int(self.chunk_seconds[g] / max(avg, 1e-7))))


class OneBoardRank(SimRank):
    """The priority board on one rank whatever the rank count (``mpitiny.queue.levels``
    without its tiers: every rank counts its level>0 tasks on rank 0 and reads them there)."""

    def __init__(self, sim, rank: int, memory) -> None:
        super().__init__(sim, rank, memory)
        board = self.ready.board
        if board is not None and getattr(board, "tiered", False):
            board.group_ranks, board.tiered = self.nranks, False
            board.leader = board.leader_of(rank)


VARIANTS = {"engine": SimRank, "direct": DirectCountRank, "before": BeforeRank,
            "oneboard": OneBoardRank}
