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
- **The board** (the first ``2 * MAX_LEVELS`` of ``BOARD_WORDS`` in ``BOARD_RANK``'s queue
  region): for each counted level ``L``, the number of its tasks that are ready and not yet
  claimed to run anywhere, and a hint, a rank that queued some of them. A rank adds ``n`` just
  before ``n`` tasks of level ``L`` are published on it (released, put back) or pushed into
  another rank's inbox (their home: the hint then names that rank); one fetch-and-add, and
  a swap of the hint when the count was 0 or the tasks went to an inbox (otherwise the hint
  names a rank that queued some earlier, and thieves find the rest by the ranks' TOP words
  and the holders' own hints). It subtracts them once it has claimed them to run: one
  ``Accumulate`` it does not wait for (``post``: the tasks start at once, whatever the board's
  rank is doing; the count drops when that rank's MPI completes it, at the latest by the
  claimer's next read of the board). Stealing, and taking runs out of an inbox, move tasks
  between queues and leave the count alone.
- **Tiers, beyond ``GROUP_RANKS`` (64) ranks.** One board word that every rank counts on and
  reads is a hot spot at a thousand ranks (``bench/sim``: the target's atomic unit serialises
  the operations). So the ranks form groups of ``GROUP_RANKS`` consecutive ranks (about a
  node: the group's words are in its shared memory); each group's first rank (its leader)
  holds the board of the tasks queued in the group's queues and inboxes (counted, hinted and
  counted off as above, the decrement posted to the leader), and ``BOARD_RANK`` holds the
  **summary**: per level, how many groups are *listed* (and a hint, the last group listed).
  A group is listed while its hint word for the level is not 0: the rank whose count
  finds the hint word 0 when it swaps in its own (a count from 0 does) adds 1 to the summary
  and names the group, both completed before its tasks are published. A group is unlisted
  lazily, by a reader that finds it named with a count of 0 (``unlist``: it clears the hint
  word with a compare-and-swap, reads the count again and, if tasks came in meanwhile, puts
  the hint back, taking back a listing that another rank made in between; otherwise it posts
  -1 to the summary). So a group that holds tasks of a level is always listed, before anyone
  can see them: the summary promises too much, never too little, as the board. A thief that
  steals level-``L`` tasks from another group carries their count (``moved``: +n on its own
  group before publishing them, -n posted to the victim's). A rank reads its own group's
  board first (a node-local ``Get``) and the summary only when that shows nothing above its
  own best, then at most every ``READ_SECONDS`` (the cached summary answers in between: a rank
  may start one lower chunk up to 5 ms after a distant group's release, which bounds its
  reads of rank 0 at 200/s); it confirms a positive summary on the named group's board, else
  on up to ``SCAN`` other groups' (all of them up to 4,096 ranks) before it hunts there. The
  summary's atomics then count groups coming into work of a level after they were found
  empty, not tasks: ``python bench/sim/run.py board`` (figures in the report of issue 17).
- **TOP** (one word of every rank's queue header): the highest priority the rank has
  published, kept by the owner (``StealQueue.advertise`` / ``refresh_top``).

Before a rank claims its own next chunk it reads the counts of the levels above its own best
(one ``Get`` of two words per level; none when its own best is the top level): if some are
positive it looks for the highest such level: at the hinted rank first, then through the
headers of up to ``SCAN`` ranks of the hinted rank's group (all ranks below ``GROUP_RANKS``)
from a random start (one five-word ``Get`` each: a rank whose
TOP word has the level, or that is busy with entries in its inbox or ``MAIL`` word), stealing from the first
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
import time

from mpitiny.queue.stealq import (BOARD_WORDS, BUSY, INBOX_TAIL, INBOX_TAKEN, MAIL, TOP, TOP_BIAS,
                                   StealQueue)

MAX_LEVELS = BOARD_WORDS // 4     # counted levels: two words each (count, hint), twice
BOARD_RANK = 0
SCAN = 64                         # ranks whose TOP word one search reads at most
GROUP_RANKS = 64                  # ranks per group of the tiered board
READ_SECONDS = 0.005              # a rank reads the summary at most this often


def level_map(priorities) -> dict:
    """``{priority: level}`` for the distinct ``priorities``: 0 for the lowest, then one level
    per distinct value up to ``MAX_LEVELS`` (quantiles beyond)."""
    distinct = sorted(set(int(p) for p in priorities))
    top = len(distinct) - 1
    if top <= MAX_LEVELS:
        return {p: i for i, p in enumerate(distinct)}
    return {p: i * MAX_LEVELS // top for i, p in enumerate(distinct)}


class PriorityBoard:
    """One rank's view of the board, on the queue region of ``queue`` (its ``StealQueue``);
    ``group_ranks``: ranks per group (tiered beyond it); ``clock``: seconds, for
    ``READ_SECONDS`` (the simulator's is virtual)."""

    def __init__(self, queue: StealQueue, priorities, seed: int = 0,
                 group_ranks: int | None = None, clock=time.monotonic) -> None:
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
        self.summary0 = self.board0 + 2 * MAX_LEVELS
        self.group_ranks = group_ranks or GROUP_RANKS
        self.tiered = self.nranks > self.group_ranks
        self.leader = self.leader_of(self.rank)
        self.clock = clock
        self.summary: tuple = (-1.0, None)      # (when read, its words) for READ_SECONDS
        self.rng = random.Random(7 + 31 * self.rank + seed)

    def leader_of(self, rank: int) -> int:
        """The rank that holds the board ``rank`` counts on."""
        return rank // self.group_ranks * self.group_ranks if self.tiered else BOARD_RANK

    # ------------------------------------------------------------------ counting
    def queued(self, prio: int, n: int, at: int | None = None) -> None:
        """``n`` tasks of priority ``prio`` are becoming ready here, or in rank ``at``'s inbox
        (called just before they are published there)."""
        lvl = self.level[prio]
        if lvl and n:
            self._up(self.rank if at is None else at, lvl, n, at is not None)

    def claimed(self, prio: int, n: int) -> None:
        """``n`` queued tasks of priority ``prio`` were claimed here to run (posted: the
        claimed tasks start without waiting for the board, which may be on a busy rank)."""
        lvl = self.level[prio]
        if lvl and n:
            self._down(self.leader, lvl, n)

    def unqueued(self, prio: int, n: int, at: int) -> None:
        """``n`` tasks counted by ``queued(prio, n, at)`` were not published there after all
        (``at``'s inbox was full)."""
        lvl = self.level[prio]
        if lvl and n:
            self._down(self.leader_of(at), lvl, n)

    def moved(self, prio: int, n: int, victim: int) -> None:
        """``n`` tasks of priority ``prio`` stolen from ``victim`` are about to be published
        here: with tiers, their count moves from ``victim``'s group to this rank's."""
        lvl = self.level[prio]
        if lvl and n and self.leader_of(victim) != self.leader:
            self._up(self.rank, lvl, n, False)
            self._down(self.leader_of(victim), lvl, n)

    def _up(self, holder: int, lvl: int, n: int, name: bool) -> None:
        """Count ``n`` tasks of level ``lvl`` about to be published at rank ``holder``; with
        ``name``, or if the count was 0, the hint names ``holder``; with tiers, a hint that
        was 0 (the group unlisted) lists the group in the summary."""
        leader = self.leader_of(holder)
        disp = self.board0 + 2 * (lvl - 1)
        old = self.mem.fetch_add(leader, disp, n)
        if name or old <= 0:
            if self.mem.swap(leader, disp + 1, holder + 1) == 0 and self.tiered:
                self.list_group(leader, lvl)

    def list_group(self, leader: int, lvl: int) -> None:
        """Count ``leader``'s group in the summary of level ``lvl`` (completed: before the
        tasks that made it so are published) and name it."""
        disp = self.summary0 + 2 * (lvl - 1)
        self.mem.add(BOARD_RANK, disp, 1)
        self.mem.swap(BOARD_RANK, disp + 1, leader + 1)

    def _down(self, leader: int, lvl: int, n: int) -> None:
        self.mem.post(leader, self.board0 + 2 * (lvl - 1), -n)

    def unlist(self, leader: int, lvl: int, hint: int) -> None:
        """Take ``leader``'s group, seen with no tasks of level ``lvl`` and hint word ``hint``,
        out of the summary, unless tasks come in meanwhile: its hint word is cleared (a
        compare-and-swap: any rank that counts tasks there from now on lists it again), and
        the count read again; if it holds tasks after all, the hint is put back (and if
        another rank listed the group meanwhile, the extra listing is taken back)."""
        disp = self.board0 + 2 * (lvl - 1)
        if not hint or self.mem.cas(leader, disp + 1, hint, 0) != hint:
            return
        summary = self.summary0 + 2 * (lvl - 1)
        if self.mem.get(leader, disp, 1)[0] > 0 and self.mem.swap(leader, disp + 1, hint) == 0:
            return
        self.mem.post(BOARD_RANK, summary, -1)

    def hint(self, prio: int) -> None:
        """Name this rank as the one to look at for tasks of ``prio`` (it holds stolen ones
        beyond the chunk it runs next)."""
        lvl = self.level[prio]
        if lvl and self.mem.swap(self.leader, self.board0 + 2 * (lvl - 1) + 1,
                                 self.rank + 1) == 0 and self.tiered:
            self.list_group(self.leader, lvl)

    def counts(self) -> list:
        """The counts of this rank's board, level 1 up (for tests and reports)."""
        words = self.mem.get(self.leader, self.board0, 2 * self.top_level)
        return [int(c) for c in words[0::2]]

    def groups_with_work(self) -> list:
        """The summary: per level, 1 up, how many groups count tasks (tiered only)."""
        words = self.mem.get(BOARD_RANK, self.summary0, 2 * self.top_level)
        return [int(c) for c in words[0::2]]

    # ------------------------------------------------------------------ looking for work
    def wanted(self, own: int | None) -> tuple | None:
        """``(level, hinted rank or -1)`` of the highest level above priority ``own`` (None:
        this rank holds nothing) that has tasks waiting somewhere, or None: one ``Get`` of
        this rank's board; with tiers, if that shows none, the summary (``READ_SECONDS``)."""
        mine = 0 if own is None else self.level[own]
        if mine >= self.top_level:
            return None
        found = self._highest(self.leader, self.board0, mine)
        if found is not None or not self.tiered:
            return found
        return self._elsewhere(mine)

    def _highest(self, rank: int, disp0: int, mine: int) -> tuple | None:
        words = self.mem.get(rank, disp0 + 2 * mine, 2 * (self.top_level - mine))
        for k in range(len(words) // 2 - 1, -1, -1):
            if words[2 * k] > 0:
                return mine + 1 + k, int(words[2 * k + 1]) - 1
        return None

    def _elsewhere(self, mine: int) -> tuple | None:
        """The highest level above ``mine`` that the summary (read at most every
        ``READ_SECONDS``) counts groups for, confirmed on a group's board: the named group's,
        else (unlisted if it has none: ``unlist``) up to ``SCAN`` other groups' from a random
        start (all of them up to 64 groups: 4,096 ranks); a level found nowhere is not looked
        for again until the summary is read again."""
        now = self.clock()
        when, words = self.summary
        if words is None or now - when >= READ_SECONDS:
            words = self.mem.get(BOARD_RANK, self.summary0, 2 * self.top_level)
            self.summary = (now, words)
        for lvl in range(self.top_level, mine, -1):
            if words[2 * (lvl - 1)] <= 0:
                continue
            named = int(words[2 * lvl - 1]) - 1
            for leader in self.leaders(named):
                held = self.mem.get(leader, self.board0 + 2 * (lvl - 1), 2)
                if held[0] > 0:
                    return lvl, int(held[1]) - 1
                if leader == named:
                    self.unlist(leader, lvl, int(held[1]))
            words[2 * (lvl - 1)] = 0        # found no group: not looked for again till re-read
        return None

    def leaders(self, named: int):
        """The group leader ``named`` (if it is one and not this rank's), then up to ``SCAN``
        others from a random start, this rank's own group left out (read already)."""
        ngroups = -(-self.nranks // self.group_ranks)
        if 0 <= named < self.nranks and named != self.leader:
            yield named
        start = self.rng.randrange(ngroups)
        for k in range(min(ngroups, SCAN)):
            leader = (start + k) % ngroups * self.group_ranks
            if leader != named and leader != self.leader:
                yield leader

    def victims(self, level: int, hinted: int):
        """Ranks that may hold tasks of ``level``: the hinted one, then, among up to ``SCAN``
        others of its group (this rank's if none is hinted) from a random start, those whose
        TOP word says so or that are busy with entries waiting in their inbox (of unknown
        priority until the thief reads them)."""
        if 0 <= hinted < self.nranks and hinted != self.rank:
            yield hinted
        want = self.floor[level] + TOP_BIAS
        first = self.leader_of(hinted if 0 <= hinted < self.nranks else self.rank) \
            if self.tiered else 0
        size = min(self.nranks - first, self.group_ranks) if self.tiered else self.nranks
        start = self.rng.randrange(size)
        disp = self.queue.base + INBOX_TAIL
        for k in range(min(size, SCAN)):
            r = first + (start + k) % size
            if r == self.rank or r == hinted:
                continue
            head = self.mem.get(r, disp, MAIL - INBOX_TAIL + 1)
            if int(head[TOP - INBOX_TAIL]) >= want or head[BUSY - INBOX_TAIL] and (
                    head[0] > head[INBOX_TAKEN - INBOX_TAIL] or head[MAIL - INBOX_TAIL]):
                yield r
