"""Where ready tasks go: this rank's queue at their group's priority, or their home rank.

A task with a home (a ``rank`` hint, or a family over input splits: the rank that holds the
split's metadata) is pushed to that rank's inbox (``StealQueue.push_remote``; kept here when
the inbox is full); any other ready task goes to the queue of the rank that released it,
where idle ranks steal it from. Runs of consecutive ids travel as one slot.

In a run whose DAG has more than one priority level (checked once, at start), ``board`` is the
run-wide ``PriorityBoard`` (``mpitiny.queue.levels``): every task that becomes ready here or
is pushed from here into another rank's inbox is counted on it at its level (runs taken out of
an inbox are not counted again) and every claim counted off (``claimed``), the queue's TOP word
is kept, and before claiming a chunk of its own the engine takes higher-priority work queued
on another rank, or waiting in a busy rank's inbox, if the board says there is some
(``steal_higher``). Beyond 64 ranks the board is tiered (groups of ranks count their own
tasks): what a thief steals from another group carries its count along (``carry_count``).
With a single level ``board`` is None and none of this costs anything.
"""
from __future__ import annotations

import os

import numpy as np

from mpitiny.dag.model import DAG
from mpitiny.queue.layout import Layout
from mpitiny.queue.levels import PriorityBoard
from mpitiny.queue.stealq import StealQueue

HUNT_SECONDS = 0.005   # how long the board's promise of higher work is looked for


class ReadyQueue:
    """This rank's ``StealQueue`` as the engine fills it, by task id and group."""

    def __init__(self, queue: StealQueue, dag: DAG, layout: Layout, rank: int,
                 nranks: int) -> None:
        self.queue = queue
        self.dag = dag
        self.base = dag.base
        self.layout = layout
        self.rank = rank
        self.nranks = nranks
        self.priority = np.array([g.priority for g in dag.groups], dtype=np.int64)
        levels = {g.priority for g in dag.groups if g.size}
        self.board = PriorityBoard(queue, self.priority.tolist()) if len(levels) > 1 else None
        self.announced = [max((int(self.priority[c]) for c, _ in dag.children[g.index]),
                              default=None) for g in dag.groups] if self.board else []

    def around_release(self, g: int, release, *args) -> None:
        """``release(*args)``: count down the children of group ``g``'s finished tasks and
        queue those that became ready. With a board, one task of the children's top priority
        is counted on it first and counted off after: from the moment the parents end until
        the ready children are counted, a rank about to claim lower work sees that higher
        work is on its way (and looks for it, ``steal_higher``) instead of starting a lower
        task ahead of it."""
        board = self.board
        prio = self.announced[g] if board is not None else None
        if board is None or prio is None:
            release(*args)
            return
        board.queued(prio, 1)
        try:
            release(*args)
        finally:
            board.unqueued(prio, 1, self.rank)

    def queue_roots(self) -> None:
        """Queue this rank's share of the root tasks: placed ones at their home, the others
        split so that each rank starts with the same mix of priorities and lengths."""
        runs: list = []
        for g in self.dag.groups:
            if g.deps and g.index in self.layout.count_vec:    # listed tasks with no deps
                self.queue_listed_roots(g, runs)
            elif not g.deps and g.size and g.options.placed:
                idx = np.arange(g.size, dtype=np.int64)
                mine = idx[self.homes(g, idx) == self.rank]
                cuts = np.flatnonzero(np.diff(mine) != 1) + 1
                for run in np.split(mine, cuts) if len(mine) else ():
                    self.queue_runs([(int(self.base[g.index] + run[0]),
                                      int(self.base[g.index] + run[-1]) + 1)])
            elif not g.deps and g.size:
                lo, hi = int(self.base[g.index]), int(self.base[g.index + 1])
                if runs and runs[-1][1] == lo and runs[-1][2] == g.priority:
                    runs[-1][1] = hi
                else:
                    runs.append([lo, hi, g.priority])
        self.share_roots(runs)

    def queue_listed_roots(self, g, runs: list) -> None:
        """The tasks of a listing (or group) with dependencies that wait for none: placed
        ones at their home, the others added to ``runs`` as runs of consecutive ids."""
        idx = self.layout.waiting_for_none(g.index)
        if not len(idx):
            return
        first = int(self.base[g.index])
        if g.options.placed:
            idx = idx[self.homes(g, idx) == self.rank]
        cuts = np.flatnonzero(np.diff(idx) != 1) + 1
        for run in np.split(idx, cuts) if len(idx) else ():
            lo, hi = first + int(run[0]), first + int(run[-1]) + 1
            if g.options.placed:
                self.queue_runs([(lo, hi)])
            else:
                runs.append([lo, hi, g.priority])

    def share_roots(self, runs: list) -> None:
        """Each rank takes an equal block of every long run of roots (a family) and every P-th
        task of the shorter ones, so that each starts with the same mix of priorities and
        lengths."""
        singles: dict = {}
        turn = 0
        for lo, hi, prio in runs:
            if hi - lo >= 64 * self.nranks:
                n = hi - lo
                a = lo + n * self.rank // self.nranks
                b = lo + n * (self.rank + 1) // self.nranks
                self._range(a, b, prio)
                continue
            for gid in range(lo, hi):
                if turn % self.nranks == self.rank:
                    singles.setdefault(prio, []).append(gid)
                turn += 1
        for prio in sorted(singles):
            self._ids(np.array(singles[prio], dtype=np.int64), prio)

    def queue_runs(self, runs: list, stolen: bool = False, count: bool = True) -> None:
        """Queue runs ``(lo, hi)`` of task ids of one group each, at their group's priority
        (placed roots, and, not ``count``-ed again, runs taken out of an inbox: here or,
        ``stolen``, another rank's)."""
        for lo, hi in runs:
            prio = self.prio_of(lo)
            if hi - lo == 1:
                self._ids([lo], prio, stolen, count)
            else:
                self._range(lo, hi, prio, stolen, count)

    def prio_of(self, gid: int) -> int:
        """The priority of task ``gid`` (its group's)."""
        return int(self.priority[int(np.searchsorted(self.base, gid, side="right")) - 1])

    def queue_ready(self, g: int, idx: np.ndarray) -> None:
        """Queue released instances of group ``g``: at their home rank if they have one
        (its inbox; here if that is full), else here."""
        prio = int(self.priority[g])
        first = int(self.base[g])
        group = self.dag.groups[g]
        if len(idx) == 1:                      # one task (a DAG's hand-off): plain integers
            self.queue_one(group, first + int(idx[0]), prio)
            return
        if group.options.placed:
            homes = self.homes(group, idx)
            cuts = np.flatnonzero((np.diff(homes) != 0) | (np.diff(idx) != 1)) + 1
            keep = []
            for run_idx, run_home in zip(np.split(idx, cuts), np.split(homes, cuts)):
                home = int(run_home[0])
                lo, hi = first + int(run_idx[0]), first + int(run_idx[-1]) + 1
                stop = lo if home == self.rank else self.push_home(home, lo, hi, prio)
                if stop < hi:                     # home is here, or its inbox is full
                    keep.append(run_idx[stop - lo:])
            if not keep:
                return
            idx = np.concatenate(keep)
        if len(idx) > 1 and int(idx[-1]) - int(idx[0]) == len(idx) - 1 and np.all(np.diff(idx) == 1):
            self._range(first + int(idx[0]), first + int(idx[-1]) + 1, prio)
        else:
            self._ids(first + idx, prio)

    def queue_one(self, group, gid: int, prio: int) -> None:
        """``queue_ready`` for one released task ``gid`` of ``group``: queued here as a run of
        one while nothing else is (a hand-off: a thief's steal of a run is one
        ``Compare_and_swap``, of ring positions three operations), else on the ring."""
        if group.options.placed:
            home = self.layout.home_of(group.index, gid - int(self.base[group.index]))
            if home != self.rank and self.push_home(home, gid, gid + 1, prio) > gid:
                return
        if self.queue.has_work():
            self._ids((gid,), prio)          # onto the ring: one slot for many such tasks
        else:
            self._range(gid, gid + 1, prio)  # a slot of its own: a thief takes it in one atomic

    def push_home(self, home: int, lo: int, hi: int, prio: int) -> int:
        """``StealQueue.push_remote`` to ``home``, counting the tasks on the board first (and
        off again those that found its inbox full: the caller queues them here)."""
        if self.board is not None:
            self.board.queued(prio, hi - lo, at=home)
        stop = self.queue.push_remote(home, lo, hi)
        if self.board is not None and stop < hi:
            self.board.unqueued(prio, hi - stop, home)
        return stop

    def homes(self, group, idx: np.ndarray) -> np.ndarray:
        """The rank each instance should run on: its ``rank`` hint modulo the rank count, or,
        for a family over the splits of a dataset, the split's home: the rank that holds the
        instance's metadata (the same block partition as task ownership)."""
        return self.layout.placed_on(group.index, idx)

    # ------------------------------------------------------------------ pushing, stealing
    def _range(self, lo: int, hi: int, prio: int, stolen: bool = False,
               count: bool = True) -> None:
        """Publish ``lo..hi-1``; with several levels count them first (unless ``count`` is
        False: stolen from a queue, so counted already) and advertise their priority."""
        if self.board is not None and count:
            self.board.queued(prio, hi - lo)
        self.queue.push_range(lo, hi, prio, stolen)
        if self.board is not None:
            self.queue.advertise(prio)

    def _ids(self, ids, prio: int, stolen: bool = False, count: bool = True) -> None:
        """``_range`` for a list of ids."""
        if self.board is not None and count:
            self.board.queued(prio, len(ids))
        self.queue.push_ids(ids, prio, stolen)
        if self.board is not None:
            self.queue.advertise(prio)

    def keep_stolen(self, got: tuple, hint: bool = False) -> int:
        """Queue here what ``StealQueue.steal`` took (so it can be stolen on); returns how
        many tasks. With ``hint``, name this rank on the board as holding more of them."""
        prio, work = got
        if self.board is not None and self.board.tiered:
            self.carry_count(got)
        if isinstance(work, tuple):
            n = work[1] - work[0]
            self._range(work[0], work[1], prio, stolen=True, count=False)
        elif prio is None:           # runs from a busy rank's inbox: counted when pushed there
            n = sum(hi - lo for lo, hi in work)
            self.queue_runs(work, stolen=True, count=False)
            prio = max(self.prio_of(lo) for lo, _ in work)
        else:
            n = len(work)
            self._ids(work, prio, stolen=True, count=False)
        if hint and n > 1 and prio is not None and self.board is not None:
            self.board.hint(prio)
        return n

    def carry_count(self, got: tuple) -> None:
        """Move the board's count of what ``StealQueue.steal`` took from its victim's group
        to this rank's (tiered board; nothing when both are in one group)."""
        board = self.board
        assert board is not None
        prio, work = got
        victim = self.queue.last_victim
        if isinstance(work, tuple):
            board.moved(prio, work[1] - work[0], victim)
        elif prio is None:
            for lo, hi in work:
                board.moved(self.prio_of(lo), hi - lo, victim)
        else:
            board.moved(prio, len(work), victim)

    def steal_higher(self) -> int:
        """With several levels: if the board says tasks of a higher level than this rank's best
        wait somewhere, steal some of the highest such level (from the hinted rank, else one
        whose TOP word has it) and queue them here; returns how many (0: none wanted or
        found). Tasks are counted before they are published, and stay counted while a thief
        carries them to its queue, so a count with nothing found is looked for again, for up
        to ``HUNT_SECONDS``, before this rank turns to its own lower work."""
        board = self.board
        assert board is not None
        give_up = 0.0
        while True:
            wanted = board.wanted(self.queue.top_prio())
            if wanted is None:
                return 0
            level, hinted = wanted
            for victim in board.victims(level, hinted):
                got = self.queue.steal(victim, board.floor[level], self.prio_of)
                if got is not None:
                    return self.keep_stolen(got, hint=True)
            now = board.clock()
            if give_up and now > give_up:
                return 0
            give_up = give_up or now + HUNT_SECONDS
            os.sched_yield()

    def claimed(self, tasks) -> None:
        """With several levels, after ``StealQueue.claim``: count the claimed tasks (if any)
        off the board, at their groups' priorities (as they were counted on, whatever the
        slot they came from said), and update this rank's TOP word."""
        board = self.board
        assert board is not None
        if isinstance(tasks, tuple):             # a run: of one priority (see _range's callers)
            g = int(np.searchsorted(self.base, tasks[0], side="right")) - 1
            board.claimed(int(self.priority[g]), tasks[1] - tasks[0])
        elif tasks is not None:
            prios = self.priority[np.searchsorted(self.base, tasks, side="right") - 1]
            for p, n in zip(*np.unique(prios, return_counts=True)):
                board.claimed(int(p), int(n))
        self.queue.refresh_top()
