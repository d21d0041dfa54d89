"""Simulated word memories that charge virtual time: the real ``LocalView`` operations, each one
advancing the calling rank's clock by its cost and counted per target rank and word.

``SimMemory`` is ``mpitiny.queue.memory.LocalView`` (the same words, the same results) plus a
clock: an operation issued at the rank's ``now`` on target ``t`` waits for ``t``'s atomic unit
(``Ledger.free[t]``: operations on one rank's window are served one at a time, each occupying
it for the cost model's service time), and returns ``now + cost (+ wait)``. Events are
processed in time order, but one event's clock runs ahead while it works (a release of many
children): an operation that arrives earlier in virtual time than one already served at that
target is served on arrival and pushes the unit's next free time back by its service time,
instead of queueing behind an operation of its future. Gets do not
occupy the target (a read of a cache line or an RDMA read does not serialise others).

The ``Ledger`` keeps what the hot-spot report needs: operations per target rank (all, and
steal probes: the 261-word header gets of ``StealQueue.steal``), every operation on rank 0's
control words (``FINISHED``, ``FAILED``, ``DONE``) and on the priority board with its time,
atomic operations per target (all, and on the board's words: every group leader's board and
rank 0's summary, ``mpitiny.queue.levels``), board reads per target, and the longest wait
any operation had at each target.
"""
from __future__ import annotations

import numpy as np

from mpitiny.engine.control import FINISHED
from mpitiny.queue.memory import LocalView

from .costs import ATOMICS


class Ledger:
    """Operation counts and the targets' busy-until times of one simulation."""

    def __init__(self, nranks: int, costs, board: tuple) -> None:
        self.costs = costs
        self.free = np.zeros(nranks)          # when each target's atomic unit is next free
        self.last = np.zeros(nranks)          # the latest arrival it has served
        self.ops = np.zeros(nranks, dtype=np.int64)
        self.probes = np.zeros(nranks, dtype=np.int64)
        self.max_wait = np.zeros(nranks)
        self.atomics = np.zeros(nranks, dtype=np.int64)   # atomic operations per target
        self.board = board                    # (first, last+1) words of each rank's board
        self.board_atomics = np.zeros(nranks, dtype=np.int64)   # on those words, per target
        self.board_gets = np.zeros(nranks, dtype=np.int64)
        self.finished_times: list = []        # operations on rank 0's FINISHED word
        self.board_times: list = []
        self.probe_log: list = []             # (time, target) of steal probes
        self.done_cas = 0
        self.total = 0
        self.counting = True

    def op(self, kind: str, origin: int, target: int, disp: int, now: float) -> float:
        """Charge one operation; returns the origin's clock when it completes."""
        cost, service = self.costs.op(kind, origin, target)
        if not self.counting:
            return now + cost
        self.total += 1
        self.ops[target] += 1
        atomic = kind in ATOMICS
        if atomic:
            self.atomics[target] += 1
        if self.board[0] <= disp < self.board[1]:
            if atomic:
                self.board_atomics[target] += 1
            else:
                self.board_gets[target] += 1
            if target == 0:
                self.board_times.append(now)
        elif target == 0 and disp == FINISHED:
            self.finished_times.append(now)
        if disp == 0 and kind == "cas":
            self.done_cas += 1
        if kind == "get_block":
            self.probes[target] += 1
            self.probe_log.append((now, target))
        if not service:
            return now + cost
        arrive = now + 0.5 * cost
        if arrive < self.last[target]:
            # An event whose clock ran ahead (a long release) reserved the unit later in
            # virtual time: this earlier operation does not queue behind it; it is served on
            # arrival and delays what comes after by its service time.
            self.free[target] += service
            return now + cost
        self.last[target] = arrive
        start = max(arrive, self.free[target])
        wait = start - arrive
        if wait > self.max_wait[target]:
            self.max_wait[target] = wait
        self.free[target] = start + service
        return now + cost + wait


class SimMemory(LocalView):
    """``LocalView`` of one simulated rank whose operations cost virtual time (``now``)."""

    PROBE_WORDS = 200     # a get at least this long is a steal's look at a victim's header

    def __init__(self, memory, rank: int, ledger: Ledger) -> None:
        super().__init__(memory, rank)
        self.ledger = ledger
        self.now = 0.0

    def _charge(self, kind: str, target: int, disp: int) -> None:
        self.now = self.ledger.op(kind, self.rank, target, disp, self.now)

    def fetch_add(self, rank: int, disp: int, value: int) -> int:
        self._charge("fetch_add", rank, disp)
        return super().fetch_add(rank, disp, value)

    def swap(self, rank: int, disp: int, value: int) -> int:
        self._charge("swap", rank, disp)
        return super().swap(rank, disp, value)

    def cas(self, rank: int, disp: int, expected: int, new: int) -> int:
        self._charge("cas", rank, disp)
        return super().cas(rank, disp, expected, new)

    def add(self, rank: int, disp: int, value: int) -> None:
        self._charge("add", rank, disp)
        super().add(rank, disp, value)

    def add_many(self, rank: int, disps: list, value: int) -> None:
        if len(disps):
            self._charge("add_many", rank, int(disps[0]))
        w = self.memory.words[rank]
        for disp in disps:
            w[disp] += value

    def fetch_add_block(self, rank: int, disp: int, values: np.ndarray) -> np.ndarray:
        self._charge("fetch_add_block", rank, disp)
        return super().fetch_add_block(rank, disp, values)

    def get(self, rank: int, disp: int, count: int) -> np.ndarray:
        self._charge("get_block" if count >= self.PROBE_WORDS else "get", rank, disp)
        return super().get(rank, disp, count)

    def put(self, rank: int, disp: int, values: np.ndarray) -> None:
        self._charge("put", rank, disp)
        super().put(rank, disp, values)
