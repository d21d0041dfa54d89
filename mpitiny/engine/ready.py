"""Where ready tasks go: this rank's queue at their group's priority, or their home rank.

A task with a home (a ``rank`` hint, or a family over input splits: the rank that holds the
split's metadata) is pushed to that rank's inbox (``StealQueue.push_remote``; kept here when
the inbox is full); any other ready task goes to the queue of the rank that released it,
where idle ranks steal it from. Runs of consecutive ids travel as one slot.
"""
from __future__ import annotations

import numpy as np

from mpitiny.dag.model import DAG
from mpitiny.queue.layout import Layout
from mpitiny.queue.stealq import StealQueue


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

    def queue_roots(self) -> None:
        """Queue this rank's share of the root tasks: placed ones at their home, the others
        split so that each rank starts with the same mix of priorities and lengths."""
        runs: list = []
        for g in self.dag.groups:
            if not g.deps and g.size and g.options.placed:
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
                self.queue.push_range(a, b, prio)
                continue
            for gid in range(lo, hi):
                if turn % self.nranks == self.rank:
                    singles.setdefault(prio, []).append(gid)
                turn += 1
        for prio in sorted(singles):
            self.queue.push_ids(np.array(singles[prio], dtype=np.int64), prio)

    def queue_runs(self, runs: list, stolen: bool = False) -> None:
        """Queue runs ``(lo, hi)`` of task ids of one group each, at their group's priority."""
        for lo, hi in runs:
            prio = int(self.priority[int(np.searchsorted(self.base, lo, side="right")) - 1])
            if hi - lo == 1:
                self.queue.push_ids([lo], prio, stolen)
            else:
                self.queue.push_range(lo, hi, prio, stolen)

    def queue_ids(self, ids) -> None:
        """Queue individual task ids here, each at its group's priority."""
        if not len(ids):
            return
        ids = np.asarray(ids, dtype=np.int64)
        prios = self.priority[np.searchsorted(self.base, ids, side="right") - 1]
        for p in np.unique(prios)[::-1]:
            self.queue.push_ids(ids[prios == p], int(p))

    def queue_ready(self, g: int, idx: np.ndarray) -> None:
        """Queue released instances of group ``g``: at their home rank if they have one
        (its inbox; here if that is full), else here."""
        prio = int(self.priority[g])
        first = int(self.base[g])
        group = self.dag.groups[g]
        if group.options.placed:
            homes = self.homes(group, idx)
            cuts = np.flatnonzero((np.diff(homes) != 0) | (np.diff(idx) != 1)) + 1
            keep = []
            for run_idx, run_home in zip(np.split(idx, cuts), np.split(homes, cuts)):
                home = int(run_home[0])
                lo, hi = first + int(run_idx[0]), first + int(run_idx[-1]) + 1
                stop = lo if home == self.rank else self.queue.push_remote(home, lo, hi)
                if stop < hi:                     # home is here, or its inbox is full
                    keep.append(run_idx[stop - lo:])
            if not keep:
                return
            idx = np.concatenate(keep)
        if len(idx) > 1 and int(idx[-1]) - int(idx[0]) == len(idx) - 1 and np.all(np.diff(idx) == 1):
            self.queue.push_range(first + int(idx[0]), first + int(idx[-1]) + 1, prio)
        else:
            self.queue.push_ids(first + idx, prio)

    def homes(self, group, idx: np.ndarray) -> np.ndarray:
        """The rank each instance should run on: its ``rank`` hint modulo the rank count, or,
        for a family over the splits of a dataset, the split's home: the rank that holds the
        instance's metadata (the same block partition as task ownership)."""
        spec = group.options.rank
        if spec is None:
            return self.layout.owners(group.index, idx)[0]
        return group.index_values(spec, idx) % self.nranks
