"""Word-addressed shared memory: one int64 array per rank, reached with atomic operations.

``RmaMemory`` is the real thing: words of an ``MPI.Win.Allocate`` window (a ``SharedWindow``,
which several memories share at their own offsets), one passive-target ``Lock_all`` epoch for
the whole run, every operation completed with ``Flush(target)``. That is
the combination measured to stay one-sided while the target rank runs a Python task (see
``shared/notes/mpi-facts.md``): a busy rank is never asked for anything.

``LocalMemory`` keeps the same words for P simulated ranks in one process, so that the queue
(``mpitiny.queue.stealq``) and the dependency logic (``mpitiny.queue.release``) can be driven by
unit tests without MPI.

Both offer the same operations, all on 64-bit signed words:

- ``fetch_add(rank, disp, value) -> old``        (``MPI_Fetch_and_op`` SUM)
- ``fetch_add_two(rank, disp, value, disp2, value2) -> (old, old2)`` (two, one flush)
- ``swap(rank, disp, value) -> old``             (``MPI_Fetch_and_op`` REPLACE)
- ``cas(rank, disp, expected, new) -> old``      (``MPI_Compare_and_swap``)
- ``add(rank, disp, value)``                     (``MPI_Accumulate`` SUM, no result)
- ``post(rank, disp, value)``                    (the same, not waited for: it completes by
  this rank's next ``get`` from that rank or within ``POSTED`` more posts)
- ``add_many(rank, disps, value)``               (one ``MPI_Accumulate`` each, one flush)
- ``fetch_add_block(rank, disp, values) -> old`` (``MPI_Get_accumulate`` SUM on a block)
- ``get(rank, disp, count) -> array``            (``MPI_Get``)
- ``put(rank, disp, values)``                    (``MPI_Put``)
- ``local``: this rank's own words as a numpy array (read freely; written only through the
  operations above when other ranks may touch the same words).
"""
from __future__ import annotations

import numpy as np

POSTED = 64     # posts whose buffers ``RmaMemory`` keeps before it flushes them all


class LocalMemory:
    """P ranks' windows in one process; ``view(rank)`` gives the memory as seen by one rank."""

    def __init__(self, nranks: int, nwords: int) -> None:
        self.words = [np.zeros(nwords, dtype=np.int64) for _ in range(nranks)]
        self.nranks = nranks

    def view(self, rank: int) -> "LocalView":
        return LocalView(self, rank)


class LocalView:
    """The operations of ``RmaMemory`` on a ``LocalMemory``, as performed by ``rank``."""

    def __init__(self, memory: LocalMemory, rank: int) -> None:
        self.memory = memory
        self.rank = rank
        self.nranks = memory.nranks
        self.local = memory.words[rank]

    def fetch_add(self, rank: int, disp: int, value: int) -> int:
        w = self.memory.words[rank]
        old = int(w[disp])
        w[disp] = _wrap(old + value)
        return old

    def fetch_add_two(self, rank: int, disp: int, value: int, disp2: int, value2: int) -> tuple:
        return self.fetch_add(rank, disp, value), self.fetch_add(rank, disp2, value2)

    def swap(self, rank: int, disp: int, value: int) -> int:
        w = self.memory.words[rank]
        old = int(w[disp])
        w[disp] = value
        return old

    def cas(self, rank: int, disp: int, expected: int, new: int) -> int:
        w = self.memory.words[rank]
        old = int(w[disp])
        if old == expected:
            w[disp] = new
        return old

    def add(self, rank: int, disp: int, value: int) -> None:
        w = self.memory.words[rank]
        w[disp] = _wrap(int(w[disp]) + value)

    def post(self, rank: int, disp: int, value: int) -> None:
        self.add(rank, disp, value)

    def add_many(self, rank: int, disps: list, value: int) -> None:
        for disp in disps:
            self.add(rank, disp, value)

    def fetch_add_block(self, rank: int, disp: int, values: np.ndarray) -> np.ndarray:
        w = self.memory.words[rank]
        old = w[disp:disp + len(values)].copy()
        w[disp:disp + len(values)] += values
        return old

    def get(self, rank: int, disp: int, count: int) -> np.ndarray:
        return self.memory.words[rank][disp:disp + count].copy()

    def put(self, rank: int, disp: int, values: np.ndarray) -> None:
        self.memory.words[rank][disp:disp + len(values)] = values

    def sync(self) -> None:
        pass


def _wrap(value: int) -> int:
    """Two's-complement wrap to int64, as the hardware does for MPI_SUM on int64."""
    value &= 0xFFFFFFFFFFFFFFFF
    return value - (1 << 64) if value >= (1 << 63) else value


class SharedWindow:
    """One ``Win.Allocate`` window of ``nbytes`` per rank that several memories share, each a
    slice at its own offset (``MpiWorld`` packs the run's windows into a few: each allocation
    is a collective costing milliseconds of spinning CPU per rank, see docs/startup.md). The
    run-long epoch is opened, closed and the window freed once, whichever slice asks first."""

    def __init__(self, comm, nbytes: int, unit: int) -> None:
        from mpi4py import MPI
        self.win = MPI.Win.Allocate(max(nbytes, 8), unit, comm=comm)
        self.memory = self.win.tomemory()    # an mpi4py buffer (see RmaMemory)
        self.started = self.freed = False

    def start(self) -> None:
        if not self.started:
            self.started = True
            self.win.Lock_all()

    def stop(self) -> None:
        if self.started:
            self.started = False
            self.win.Unlock_all()

    def free(self) -> None:
        if not self.freed:
            self.freed = True
            self.win.Free()


class RmaMemory:
    """``nwords`` int64 per rank at word ``base`` of a shared ``Win.Allocate`` window (its own
    one unless ``window`` is given), in one passive-target ``Lock_all`` epoch for the run."""

    def __init__(self, comm, nwords: int, window: SharedWindow | None = None,
                 base: int = 0) -> None:
        from mpi4py import MPI
        self.MPI = MPI
        self.comm = comm
        self.rank = comm.Get_rank()
        self.nranks = comm.Get_size()
        self.window = window or SharedWindow(comm, max(nwords, 1) * 8, 8)
        self.win = self.window.win
        self.base = base
        # tomemory() is an mpi4py buffer (buffer protocol), which numpy's stubs do not list.
        words = np.frombuffer(self.window.memory, dtype=np.int64)  # type: ignore[call-overload]
        self.local = words[base:base + nwords]
        self.local[:] = 0
        self._one = np.zeros(1, dtype=np.int64)
        self._two = np.zeros(1, dtype=np.int64)
        self._res = np.zeros(1, dtype=np.int64)
        self._int64 = MPI.INT64_T
        self._one_spec, self._two_spec, self._res_spec = (
            [self._one, self._int64], [self._two, self._int64], [self._res, self._int64])
        self._pair = np.zeros(4, dtype=np.int64)      # fetch_add_two: values, old values
        self._pair_specs = [[self._pair[k:k + 1], self._int64] for k in range(4)]
        self._sum = MPI.SUM
        self._replace = MPI.REPLACE
        self._posted: list = []    # origin buffers of posts not yet flushed
        self._posted_to: set = set()   # and their target ranks

    def start(self) -> None:
        """Open the run-long passive epoch; call after the owners initialised their words,
        then wait for every rank to have opened its own (``MpiWorld.open`` does)."""
        self.window.start()

    def stop(self) -> None:
        self.window.stop()
        self._posted.clear()
        self._posted_to.clear()

    def free(self) -> None:
        self.window.free()

    def fetch_add(self, rank: int, disp: int, value: int) -> int:
        self._one[0] = value
        self.win.Fetch_and_op(self._one_spec, self._res_spec, rank, self.base + disp, self._sum)
        self.win.Flush(rank)
        return int(self._res[0])

    def fetch_add_two(self, rank: int, disp: int, value: int, disp2: int, value2: int) -> tuple:
        """Two ``fetch_add`` on one rank, completed by one ``Flush``: the old values."""
        a, old_a, b, old_b = self._pair_specs
        pair = self._pair
        pair[0], pair[2] = value, value2
        self.win.Fetch_and_op(a, old_a, rank, self.base + disp, self._sum)
        self.win.Fetch_and_op(b, old_b, rank, self.base + disp2, self._sum)
        self.win.Flush(rank)
        return int(pair[1]), int(pair[3])

    def swap(self, rank: int, disp: int, value: int) -> int:
        self._one[0] = value
        self.win.Fetch_and_op(self._one_spec, self._res_spec, rank, self.base + disp,
                              self._replace)
        self.win.Flush(rank)
        return int(self._res[0])

    def cas(self, rank: int, disp: int, expected: int, new: int) -> int:
        self._one[0] = new
        self._two[0] = expected
        self.win.Compare_and_swap(self._one_spec, self._two_spec, self._res_spec, rank,
                                  self.base + disp)
        self.win.Flush(rank)
        return int(self._res[0])

    def add(self, rank: int, disp: int, value: int) -> None:
        self._one[0] = value
        self.win.Accumulate([self._one, self._int64], rank, (self.base + disp, 1, self._int64),
                            self._sum)
        self.win.Flush(rank)

    def post(self, rank: int, disp: int, value: int) -> None:
        """``add`` without waiting for it to complete (no ``Flush``): its buffer is kept until
        the next ``get`` from ``rank`` (which flushes first: MPI does not order a ``Get`` after
        an ``Accumulate``) or until ``POSTED`` posts wait."""
        if len(self._posted) >= POSTED:
            self._flush_posted()
        value_buf = np.full(1, value, dtype=np.int64)
        self._posted.append(value_buf)
        self._posted_to.add(rank)
        self.win.Accumulate([value_buf, self._int64], rank, (self.base + disp, 1, self._int64),
                            self._sum)

    def _flush_posted(self) -> None:
        self.win.Flush_all()
        self._posted.clear()
        self._posted_to.clear()

    def add_many(self, rank: int, disps: list, value: int) -> None:
        """``add(rank, d, value)`` for every ``d`` in ``disps``: one ``Accumulate`` over an
        indexed target datatype (a word named twice gets its adds summed first), one flush."""
        if not len(disps):
            return
        words, times = np.unique(np.asarray(disps, dtype=np.int64), return_counts=True)
        amounts = times * np.int64(value)
        target = self._int64.Create_indexed_block(1, (words + self.base).tolist())
        target.Commit()
        try:
            self.win.Accumulate([amounts, self._int64], rank, (0, 1, target), self._sum)
            self.win.Flush(rank)
        finally:
            target.Free()

    def fetch_add_block(self, rank: int, disp: int, values: np.ndarray) -> np.ndarray:
        values = np.ascontiguousarray(values, dtype=np.int64)
        old = np.empty_like(values)
        self.win.Get_accumulate([values, self._int64], [old, self._int64], rank,
                                (self.base + disp, len(values), self._int64), self._sum)
        self.win.Flush(rank)
        return old

    def get(self, rank: int, disp: int, count: int) -> np.ndarray:
        if self._posted and rank in self._posted_to:
            self._flush_posted()
        out = np.empty(count, dtype=np.int64)
        self.win.Get([out, self._int64], rank, (self.base + disp, count, self._int64))
        self.win.Flush(rank)
        return out

    def put(self, rank: int, disp: int, values: np.ndarray) -> None:
        values = np.ascontiguousarray(values, dtype=np.int64)
        self.win.Put([values, self._int64], rank, (self.base + disp, len(values), self._int64))
        self.win.Flush(rank)

    def sync(self) -> None:
        """Make this rank's local stores visible to RMA and remote updates visible locally."""
        self.win.Sync()


class RmaBytes:
    """``nbytes`` per rank (task results that other ranks read one-sidedly) at byte ``base``
    of a shared ``Win.Allocate`` window (its own one unless ``window`` is given)."""

    def __init__(self, comm, nbytes: int, window: SharedWindow | None = None,
                 base: int = 0) -> None:
        from mpi4py import MPI
        self.MPI = MPI
        self.window = window or SharedWindow(comm, max(nbytes, 8), 1)
        self.win = self.window.win
        self.base = base
        memory = np.frombuffer(self.window.memory, dtype=np.uint8)  # type: ignore[call-overload]
        self.local = memory[base:base + nbytes]
        self.size = nbytes

    def start(self) -> None:
        self.window.start()

    def stop(self) -> None:
        self.window.stop()

    def free(self) -> None:
        self.window.free()

    def read(self, rank: int, offset: int, length: int) -> bytes:
        out = bytearray(length)
        self.win.Get([out, self.MPI.BYTE], rank, (self.base + offset, length, self.MPI.BYTE))
        self.win.Flush(rank)
        return bytes(out)

    def read_many(self, requests: list) -> list:
        """``read`` of every ``(rank, offset, length)``: all issued, then one flush per rank."""
        bufs = [bytearray(n) for _, _, n in requests]
        for (rank, offset, n), out in zip(requests, bufs):
            self.win.Get([out, self.MPI.BYTE], rank, (self.base + offset, n, self.MPI.BYTE))
        for rank in {r for r, _, _ in requests}:
            self.win.Flush(rank)
        return [bytes(out) for out in bufs]

    def write(self, rank: int, offset: int, data: bytes) -> None:
        self.win.Put([data, self.MPI.BYTE], rank, (self.base + offset, len(data), self.MPI.BYTE))
        self.win.Flush(rank)

    def sync(self) -> None:
        self.win.Sync()


class LocalBytes:
    """``RmaBytes`` for simulated ranks in one process."""

    def __init__(self, buffers: list, rank: int) -> None:
        self.buffers = buffers
        self.local = buffers[rank]
        self.size = len(self.local)

    def read(self, rank: int, offset: int, length: int) -> bytes:
        return bytes(self.buffers[rank][offset:offset + length])

    def read_many(self, requests: list) -> list:
        return [self.read(*r) for r in requests]

    def write(self, rank: int, offset: int, data: bytes) -> None:
        self.buffers[rank][offset:offset + len(data)] = np.frombuffer(data, np.uint8)

    def sync(self) -> None:
        pass
