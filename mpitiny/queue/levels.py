"""Priorities across ranks: a run-wide board of how many ready tasks wait at each level.

A rank's own queue hands out its highest priority first (``StealQueue``), but on its own it
knows nothing of the other ranks: an urgent task released on a busy rank would wait there
while the others ran low-priority work of their own. In a run whose DAG has several priority
levels, this board makes a rank prefer higher-priority work queued anywhere, without a central
queue and with O(1) remote words per chunk whatever the rank count.

What is where
-------------
- **Levels.** Every rank maps the DAG's distinct priorities to levels the same way: level 0
  is the lowest, one level per distinct priority above it, up to ``MAX_LEVELS`` (with more
  distinct priorities, neighbours share a level: quantiles of the distinct values). Level 0
  is not counted: nobody needs to look for the lowest work on another rank (idle ranks steal
  it as before).
- **The board** (``BOARD_WORDS`` of ``BOARD_RANK``'s queue region): for each counted level
  ``L``, the number of its tasks that are ready and not yet claimed to run anywhere, and a hint,
  the last rank that queued some of them. A rank adds ``n`` when ``n`` tasks of level ``L``
  become ready on it (released, put back, arrived from an inbox; one ``Accumulate`` and one
  swap of the hint) and subtracts them when it claims them to run (one ``Accumulate``).
  Stealing moves tasks between queues and leaves the count alone.
- **TOP** (one word of every rank's queue header): the highest priority the rank has
  published, kept by the owner (``StealQueue.advertise`` / ``refresh_top``).

Before a rank claims its own next chunk it reads the counts of the levels above its own best
(one ``Get`` of two words per level; none when its own best is the top level): if some are
positive it looks for the highest such level: at the hinted rank first, then through the TOP
words of up to ``SCAN`` ranks from a random start (one-word ``Get`` each), stealing from the
first that holds work of that level (``StealQueue.steal(victim, min_prio)``, about half of
a slot). Only if that fails does it claim its own lower work. So among ready tasks anywhere a
higher priority starts first, within about one chunk of the ranks' current work (a chunk is
~5 ms of a group's tasks, one task when they are longer), and a rank busy with a long task
is never asked anything.

The counts are exact up to the moments between a push and its ``Accumulate``: a rank that reads
the board just before a release may start one lower chunk. Tasks in an inbox are counted when
they are taken out of it (by the owner or a late-binding thief), tasks a rank keeps to run
next unqueued (the engine's ``direct``) never.
"""
from __future__ import annotations

import random

from mpitiny.queue.stealq import BOARD_WORDS, TOP, TOP_BIAS, StealQueue

MAX_LEVELS = BOARD_WORDS // 2     # counted levels: two words each (count, hint)
BOARD_RANK = 0
SCAN = 64                         # ranks whose TOP word one search reads at most


def level_map(priorities) -> dict:
    """``{priority: level}`` for the distinct ``priorities``: 0 for the lowest, then one level
    per distinct value up to ``MAX_LEVELS`` (quantiles beyond)."""
    distinct = sorted(set(int(p) for p in priorities))
    top = len(distinct) - 1
    if top <= MAX_LEVELS:
        return {p: i for i, p in enumerate(distinct)}
    return {p: i * MAX_LEVELS // top for i, p in enumerate(distinct)}


class PriorityBoard:
    """One rank's view of the board, on the queue region of ``queue`` (its ``StealQueue``)."""

    def __init__(self, queue: StealQueue, priorities, seed: int = 0) -> None:
        self.queue = queue
        self.mem = queue.mem
        self.rank = queue.rank
        self.nranks = self.mem.nranks
        self.level = level_map(priorities)
        self.top_level = max(self.level.values())
        # floor[L]: the lowest priority of level L (a thief wants slots of at least that).
        self.floor = [0] * (self.top_level + 1)
        for prio, lvl in sorted(self.level.items(), reverse=True):
            self.floor[lvl] = prio
        self.board0 = queue.board0
        self.rng = random.Random(7 + 31 * self.rank + seed)

    # ------------------------------------------------------------------ counting
    def queued(self, prio: int, n: int) -> None:
        """``n`` tasks of priority ``prio`` became ready here (after they were published)."""
        lvl = self.level[prio]
        if lvl and n:
            disp = self.board0 + 2 * (lvl - 1)
            self.mem.add(BOARD_RANK, disp, n)
            self.mem.swap(BOARD_RANK, disp + 1, self.rank + 1)

    def claimed(self, prio: int, n: int) -> None:
        """``n`` queued tasks of priority ``prio`` were claimed here to run."""
        lvl = self.level[prio]
        if lvl and n:
            self.mem.add(BOARD_RANK, self.board0 + 2 * (lvl - 1), -n)

    def hint(self, prio: int) -> None:
        """Name this rank as the one to look at for tasks of ``prio`` (it holds stolen ones
        beyond the chunk it runs next)."""
        lvl = self.level[prio]
        if lvl:
            self.mem.swap(BOARD_RANK, self.board0 + 2 * (lvl - 1) + 1, self.rank + 1)

    def counts(self) -> list:
        """The board's counts, level 1 up (for tests and reports)."""
        words = self.mem.get(BOARD_RANK, self.board0, 2 * self.top_level)
        return [int(c) for c in words[0::2]]

    # ------------------------------------------------------------------ looking for work
    def wanted(self, own: int | None) -> tuple | None:
        """``(level, hinted rank or -1)`` of the highest level above priority ``own`` (None:
        this rank holds nothing) that has tasks waiting somewhere, or None. One ``Get``."""
        mine = 0 if own is None else self.level[own]
        if mine >= self.top_level:
            return None
        words = self.mem.get(BOARD_RANK, self.board0 + 2 * mine,
                             2 * (self.top_level - mine))
        for k in range(len(words) // 2 - 1, -1, -1):
            if words[2 * k] > 0:
                return mine + 1 + k, int(words[2 * k + 1]) - 1
        return None

    def victims(self, level: int, hinted: int):
        """Ranks that may hold tasks of ``level``: the hinted one, then those whose TOP word
        says so among up to ``SCAN`` others from a random start."""
        if 0 <= hinted < self.nranks and hinted != self.rank:
            yield hinted
        want = self.floor[level] + TOP_BIAS
        start = self.rng.randrange(self.nranks)
        disp = self.queue.base + TOP
        for k in range(min(self.nranks, SCAN)):
            r = (start + k) % self.nranks
            if r != self.rank and r != hinted and int(self.mem.get(r, disp, 1)[0]) >= want:
                yield r
