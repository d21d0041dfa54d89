"""Where an engine's ranks live: an MPI job (``MpiWorld``) or one process (``LocalWorld``).

A world gives a rank its number, the number of ranks, the word and byte memories the queue,
the metadata and the data plane live in (allocated in the same order on every rank), and the
few collective steps of a run's start and end. ``MpiWorld`` allocates ``Win.Allocate`` windows
(``mpitiny.queue.memory.RmaMemory`` / ``RmaBytes``) and opens one passive epoch on each for the
whole run. ``LocalWorld`` gives P simulated ranks in one process their views of shared numpy
arrays (``LocalMemory`` / ``LocalBytes``), so the whole engine runs without MPI, its ranks
stepped round-robin (``mpitiny.engine.local``).
"""
from __future__ import annotations

import os
import time

import numpy as np

from mpitiny.queue.memory import LocalBytes, LocalMemory, RmaBytes, RmaMemory, SharedWindow

POOL_BYTES = {"words": 8 << 20, "bytes": 32 << 20}   # per rank: a shared window's room


class MpiWorld:
    """One rank of an MPI job (``comm``, usually ``COMM_WORLD``)."""

    def __init__(self, comm) -> None:
        from mpi4py import MPI
        self.comm = comm
        self.rank = comm.Get_rank()
        self.nranks = comm.Get_size()
        node = comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)
        self.ranks_here = node.Get_size()       # ranks on this node, sharing its cores
        node.Free()
        self.pools: dict = {}        # kind -> (shared window, bytes used, bytes per rank)
        self.requests: list = []     # (kind, bytes) of every pooled memory, in order

    def words(self, n: int, same_everywhere: bool = True) -> RmaMemory:
        """``n`` words per rank (collective: every rank asks for the same memories in the same
        order). Memories of the same size on every rank share a few windows (``pooled``);
        one whose size differs between ranks (``same_everywhere=False``) has its own."""
        if not same_everywhere:
            sleep_until_barrier(self.comm)
            return RmaMemory(self.comm, n)
        window, base = self.pooled("words", n * 8, 8)
        return RmaMemory(self.comm, n, window, base // 8)

    def bytes(self, n: int) -> RmaBytes:
        """``n`` bytes per rank (collective, pooled as ``words``)."""
        window, base = self.pooled("bytes", n, 1)
        return RmaBytes(self.comm, n, window, base)

    def pooled(self, kind: str, nbytes: int, unit: int) -> tuple:
        """Room for ``nbytes`` per rank in the current shared window of ``kind``: (window,
        byte offset). A window allocation is a collective that spins inside MPI for
        milliseconds of CPU per rank (docs/startup.md), so memories are packed: a new window
        holds ``POOL_BYTES[kind]`` (or the request and that much more) and the next requests
        take its room until it is full. The ranks meet asleep before an allocation (MPI
        would wait for the last one spinning). Every rank asks in the same order for the same
        sizes, so a memory lies at the same offset everywhere (``open`` checks it)."""
        self.requests.append((kind, nbytes))
        nbytes = -(-nbytes // 8) * 8
        window, used, size = self.pools.get(kind, (None, 0, 0))
        if window is None or used + nbytes > size:
            room = POOL_BYTES[kind]
            size = room if nbytes <= room else nbytes + room
            sleep_until_barrier(self.comm)
            window, used = SharedWindow(self.comm, size, unit), 0
        self.pools[kind] = (window, used + nbytes, size)
        return window, used

    def open(self, windows: list) -> None:
        """Open the run-long passive epoch of every window, then wait for every rank to have
        opened its own (collective). Raises if the ranks asked for different pooled memories
        (a memory would lie at different offsets on different ranks)."""
        for window in windows:
            window.start()
        sleep_until_barrier(self.comm)
        if len(set(map(tuple, self.comm.allgather(self.requests)))) > 1:
            raise RuntimeError("mpitiny: the ranks asked for different pooled RMA memories; "
                               "a memory whose size differs between ranks needs "
                               "same_everywhere=False")

    def close(self, windows: list) -> None:
        """Close the run-long epochs. Not a meeting of the ranks: a gang's ``stop`` (one of
        ``windows``) waits for its leader's word, which the leader writes only after its own
        earlier windows' ``Unlock_all``; that may wait for this rank's MPI progress, which a
        rank asleep at a barrier ahead of it would not make (a hang, seen in
        ``test_a_stop_while_gangs_gather``)."""
        for window in windows:
            window.stop()

    def free(self, windows: list) -> None:
        """Free the windows (collective: the ranks meet asleep first, as in ``words``)."""
        sleep_until_barrier(self.comm)
        for window in windows:
            window.free()
        self.pools.clear()
        self.requests.clear()

    def barrier(self) -> None:
        """All ranks here (asleep while waiting: ``sleep_until_barrier``)."""
        sleep_until_barrier(self.comm)

    def allgather(self, value) -> list:
        """Every rank's ``value`` on every rank, once all have arrived (asleep till then)."""
        sleep_until_barrier(self.comm)
        return self.comm.allgather(value)

    def needs_progress(self) -> bool:
        """Whether a ``ProgressThread`` must serve this rank's windows while it runs tasks:
        when the ranks span nodes, or MPICH is told to use its network path on one
        (``MPIR_CVAR_NOLOCAL=1``); ``MPITINY_PROGRESS=1`` / ``0`` forces it on or off."""
        forced = os.environ.get("MPITINY_PROGRESS")
        if forced in ("0", "1"):
            return forced == "1"
        return self.ranks_here < self.nranks or os.environ.get("MPIR_CVAR_NOLOCAL") == "1"

    def progress_thread(self, moving) -> ProgressThread:
        """A started ``ProgressThread`` polling this rank's communicator whenever ``moving()``
        (the engine loop's round count and running task) stands still."""
        from mpi4py import MPI
        comm, any_source, any_tag = self.comm, MPI.ANY_SOURCE, MPI.ANY_TAG
        thread = ProgressThread(lambda: comm.Iprobe(any_source, any_tag), moving)
        thread.start()
        return thread

    def gather(self, value) -> list | None:
        """Every rank's ``value`` on rank 0 (None elsewhere), once all have arrived."""
        sleep_until_barrier(self.comm)
        return self.comm.gather(value, root=0)

    def bcast(self, value):
        """Rank 0's ``value`` on every rank, once all have arrived (rank 0 may have work of its
        own to do first, the summary, which the others await asleep)."""
        sleep_until_barrier(self.comm)
        return self.comm.bcast(value, root=0)

    def send(self, value, dest: int, tag: int) -> None:
        """``value`` to rank ``dest`` (asleep until it has been received, if it is too big to
        be buffered)."""
        sleep_until_done(self.comm.isend(value, dest=dest, tag=tag))

    def recv(self, source: int, tag: int):
        """What rank ``source`` sends with ``tag`` (asleep until it comes)."""
        while (message := self.comm.improbe(source, tag)) is None:
            time.sleep(WAIT_SLEEP)
        return message.recv()


WAIT_SLEEP = 0.001       # seconds between looks while waiting for rank 0
WAIT_FIRST = 50e-6       # the first nap: ranks that arrive together meet within ~0.1 ms


def sleep_until_barrier(comm) -> None:
    """Wait for every rank to reach a barrier without taking a core meanwhile. MPI's blocking
    calls spin: on an oversubscribed node that slows the rank being waited for, and everywhere
    it turns waiting (for rank 0 to load the DAG or write the summary, for the slowest rank to
    start) into CPU time. So every collective of start-up and finish waits here first, every
    rank alike (a non-blocking collective matches only its own kind), at most ``WAIT_SLEEP``
    late."""
    sleep_until_done(comm.Ibarrier())


def sleep_until_done(request, until: float | None = None) -> bool:
    """Wait for a non-blocking MPI ``request`` without taking a core (a blocking wait spins):
    naps from ``WAIT_FIRST`` doubling to ``WAIT_SLEEP``, so that the dozen meetings of a
    run's start and end, where the ranks mostly arrive together, do not each cost a whole
    ``WAIT_SLEEP`` (five more looks at most; then a look every ``WAIT_SLEEP``). With
    ``until`` (``time.monotonic``), gives up then; whether the request completed."""
    nap = WAIT_FIRST
    while not request.Test():
        if until is not None and time.monotonic() > until:
            return False
        time.sleep(nap)
        nap = min(2 * nap, WAIT_SLEEP)
    return True


class ProgressThread:
    """MPI progress for a rank while its main thread makes none, so that the other ranks'
    one-sided operations on its windows complete where the network does not do them itself.

    Between nodes without RMA atomics in hardware (TCP; MPICH's network path, which
    ``MPIR_CVAR_NOLOCAL=1`` uses on one machine), a passive-target operation completes only
    when the target rank calls MPI: a thief, or a rank counting down a child whose words live
    on a busy rank, would wait for that rank's task to end. The engine's loop calls MPI every
    round, so the thread only has to step in when one task lasts: it looks at ``moving()``
    (the loop's round count and the id of the task running) and, while that stands still,
    calls ``poll`` (an ``Iprobe``) every ``PERIOD``. A command lets it run at once (the rank
    waits in ``waitpid``, without the GIL), so do numpy and batch forms that release the GIL;
    pure Python yields the GIL every ``sys.getswitchinterval()``, set to ``PERIOD`` only while
    the thread polls. While rounds and tasks go by, the looks back off from ``LOOK`` to
    ``LOOK_MAX``: each look takes the GIL from the task, and a run of tiny tasks needs none
    (figures in docs/offnode.md). On one node the windows are shared memory and it is not
    started (``MpiWorld.needs_progress``)."""

    PERIOD = 0.0005
    LOOK = 0.001
    LOOK_MAX = 0.004

    def __init__(self, poll, moving) -> None:
        import threading
        self.poll = poll
        self.moving = moving
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="mpitiny-progress", daemon=True)
        self.switch = 0.0
        self.looks = self.polls = 0     # for the rank's figures (summary.json)

    def start(self) -> None:
        import sys
        self.switch = sys.getswitchinterval()
        self.thread.start()

    def stop(self) -> None:
        import sys
        self.stopping.set()
        self.thread.join()
        sys.setswitchinterval(self.switch)

    def _loop(self) -> None:
        import sys
        wait, moving, poll = self.stopping.wait, self.moving, self.poll
        seen, pause, polling = moving(), self.LOOK, False
        while not wait(pause):
            self.looks += 1
            now = moving()
            if now == seen:
                if not polling:
                    sys.setswitchinterval(self.PERIOD)
                    polling = True
                poll()
                self.polls += 1
                pause = self.PERIOD
            else:
                if polling:
                    sys.setswitchinterval(self.switch)
                    polling, pause = False, self.LOOK
                else:
                    pause = min(2 * pause, self.LOOK_MAX)
                seen = now


class LocalFabric:
    """The memories of P simulated ranks: the k-th allocation of every rank is one
    ``LocalMemory`` (or list of byte buffers), each rank's part sized by that rank."""

    def __init__(self, nranks: int) -> None:
        self.nranks = nranks
        self.words: list = []
        self.bytes: list = []

    def world(self, rank: int) -> "LocalWorld":
        return LocalWorld(self, rank)


class LocalWorld:
    """One simulated rank of a ``LocalFabric``: collectives are no-ops (the ranks are built
    one after another and stepped round-robin)."""

    def __init__(self, fabric: LocalFabric, rank: int) -> None:
        self.fabric = fabric
        self.rank = rank
        self.nranks = fabric.nranks
        self.ranks_here = fabric.nranks
        self._words = self._bytes = 0

    def words(self, n: int, same_everywhere: bool = True):
        k, self._words = self._words, self._words + 1
        if k == len(self.fabric.words):
            self.fabric.words.append(LocalMemory(self.nranks, 0))
        memory = self.fabric.words[k]
        memory.words[self.rank] = np.zeros(n, dtype=np.int64)
        return memory.view(self.rank)

    def bytes(self, n: int) -> LocalBytes:
        k, self._bytes = self._bytes, self._bytes + 1
        if k == len(self.fabric.bytes):
            self.fabric.bytes.append([np.zeros(0, np.uint8)] * self.nranks)
        buffers = self.fabric.bytes[k]
        buffers[self.rank] = np.zeros(n, dtype=np.uint8)
        return LocalBytes(buffers, self.rank)

    def open(self, windows: list) -> None:
        pass

    def close(self, windows: list) -> None:
        pass

    def free(self, windows: list) -> None:
        pass

    def needs_progress(self) -> bool:
        """Never: every rank's words are this process's memory."""
        return False

    def barrier(self) -> None:
        pass

    def allgather(self, value) -> list:
        return [value] * self.nranks
