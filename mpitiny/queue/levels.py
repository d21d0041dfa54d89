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
  the last rank that queued some of them. A rank adds ``n`` just before ``n`` tasks of level
  ``L`` are published on it (released, put back) or pushed into another rank's inbox (their
  home: the hint then names that rank); one ``Accumulate`` and one swap of the hint. It
  subtracts them once it has claimed them to run: one ``Accumulate`` it does not wait for
  (``post``: the tasks start at once, whatever the board's rank is doing; the count drops
  when that rank's MPI completes it, at the latest by the claimer's next read of the board).
  Stealing, and taking runs out of an inbox, move tasks between queues and leave the count
  alone.
- **TOP** (one word of every rank's queue header): the highest priority the rank has
  published, kept by the owner (``StealQueue.advertise`` / ``refresh_top``).

Before a rank claims its own next chunk it reads the counts of the levels above its own best
(one ``Get`` of two words per level; none when its own best is the top level): if some are
positive it looks for the highest such level: at the hinted rank first, then through the
headers of up to ``SCAN`` ranks from a random start (one four-word ``Get`` each: a rank whose
TOP word has the level, or that is busy with entries in its inbox), stealing from the first
that holds work of that level (``StealQueue.steal(victim, min_prio, prio_of)``: about half of
a slot, else the inbox entries of such tasks, which a busy rank would not take out before its
task ends). If it finds none it looks again, for up to ``HUNT_SECONDS`` (5 ms,
``mpitiny.engine.ready``), while the board still says some wait; only then does it claim its
own lower work. So among ready tasks anywhere a higher priority starts first, within about one
chunk of the ranks' current work (a chunk is ~5 ms of a group's tasks, one task when they are
longer), and a rank busy with a long task is never asked anything.

The board promises too much, never too little: tasks are counted before anyone can see them
and stay counted while a thief carries them from one queue (or inbox) to its own, and until a
claimer's ``post`` lands. Those moments last microseconds on one node and milliseconds on a
network whose atomics need the target's progress (``docs/offnode.md``), which is what the
hunt covers. What is left: a rank that reads the board before a release counts its tasks
starts one lower chunk (the release itself, counting a child's gate down on its home rank,
takes a remote atomic), a hunt that times out while tasks are in a pending overflow list
(``StealQueue._defer``, not visible to thieves) or in the inbox of a rank that is not busy
(it takes them out itself between tasks). Tasks a rank keeps to run next unqueued (the
engine's ``direct``) are never counted; with several levels the engine keeps none.
"""
from __future__ import annotations

import random

from mpitiny.queue.stealq import (BOARD_WORDS, BUSY, INBOX_TAIL, INBOX_TAKEN, TOP, TOP_BIAS,
                                   StealQueue)

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
    def queued(self, prio: int, n: int, at: int | None = None) -> None:
        """``n`` tasks of priority ``prio`` are becoming ready here, or in rank ``at``'s inbox
        (called just before they are published there)."""
        lvl = self.level[prio]
        if lvl and n:
            disp = self.board0 + 2 * (lvl - 1)
            self.mem.add(BOARD_RANK, disp, n)
            self.mem.swap(BOARD_RANK, disp + 1, (self.rank if at is None else at) + 1)

    def claimed(self, prio: int, n: int) -> None:
        """``n`` queued tasks of priority ``prio`` were claimed here to run (posted: the
        claimed tasks start without waiting for the board, which may be on a busy rank)."""
        lvl = self.level[prio]
        if lvl and n:
            self.mem.post(BOARD_RANK, self.board0 + 2 * (lvl - 1), -n)

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
        """Ranks that may hold tasks of ``level``: the hinted one, then, among up to ``SCAN``
        others from a random start, those whose TOP word says so or that are busy with entries
        waiting in their inbox (of unknown priority until the thief reads them)."""
        if 0 <= hinted < self.nranks and hinted != self.rank:
            yield hinted
        want = self.floor[level] + TOP_BIAS
        start = self.rng.randrange(self.nranks)
        disp = self.queue.base + INBOX_TAIL
        for k in range(min(self.nranks, SCAN)):
            r = (start + k) % self.nranks
            if r == self.rank or r == hinted:
                continue
            head = self.mem.get(r, disp, TOP - INBOX_TAIL + 1)
            if int(head[TOP - INBOX_TAIL]) >= want or (
                    head[BUSY - INBOX_TAIL] and head[0] > head[INBOX_TAKEN - INBOX_TAIL]):
                yield r
