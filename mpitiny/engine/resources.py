"""What tasks use of their node: ``"cores"``, ``"mem"`` and ``"gpus"`` (dag.json).

A node's ranks are its slots: a rank runs one task at a time, so a node with R ranks never
runs more than R tasks. A task that runs threads on ``cores: c`` cores must take c slots:
while it runs, c - 1 other ranks of its node run nothing. Memory (``mem``) and GPUs (``gpus``)
are counted per node the same way. There is no central scheduler: the ranks of a node (those
on one host, ``node_names``) share one window of ``WORDS`` words, on the node's first rank,
and every rank claims what a chunk needs from it with atomics before running it, and gives
it back after:

- ``USED``: slots claimed. A chunk of one-core tasks claims its slot with one ``fetch_add``
  (and gives it back with one ``add``); if the slots were all claimed (old value >= R), it
  gives it back at once and waits. A chunk of c-core tasks first becomes the node's one
  *gatherer* (``GATHERER``: compare-and-swap from 0 to its rank + 1), adds c at once, and
  waits until ``USED`` <= R: the count then stays above R while others' tasks finish, so no
  rank of the node starts new work meanwhile (they pause) and the c-core task cannot starve;
  one gatherer at a time, so two of them never hold slots each waiting for the other's.
- ``MEM``: bytes claimed, a compare-and-swap loop that adds the chunk's ``mem`` if the sum
  stays within the node's memory, else waits.
- ``GPUS``: a bit mask of the node's GPUs in use; a chunk takes the lowest free ``gpus`` bits
  with compare-and-swap and its tasks see them in ``CUDA_VISIBLE_DEVICES`` and
  ``ROCR_VISIBLE_DEVICES`` (fn tasks: ``os.environ``, set around the chunk; commands: their
  environment). GPU k is the k-th entry of the rank's own ``CUDA_VISIBLE_DEVICES`` (what a
  batch system gave the job) if it has one, else k.

A function task of ``cores: c`` also gets c OpenBLAS threads while it holds its slots (the
ranks of ``mpitiny run`` start numpy with one, ``mpitiny.blas``); a command gets none of this
(its environment is the rank's own: what the user set, or nothing).

A chunk claims memory and GPUs first, then slots: a rank waits holding only what the chunk
needs, and the tasks that hold slots never wait, so every wait ends as running tasks end. A
claim is made once per chunk (the tasks of a chunk run one after another on this rank), never
per task; and only in runs of a DAG that declares resources (``node_resources`` returns None
otherwise: nothing is claimed, no window is made). A rank that waits runs nothing: its queue
stays open to thieves, so what it would have run next can run elsewhere meanwhile.

What can never fit is an error before anything runs: ``mem`` beyond a node's memory and
``gpus`` beyond ``--gpus-per-node`` when the DAG is loaded (``mpitiny.dag.entries``);
``cores`` beyond the ranks of the smallest node of the run once the ranks have the DAG
(``check_cores``: every rank raises the same ``BadInput``, before the run directory is
made). Ranks simulated in one process (``LocalWorld``) do not count resources.
"""
from __future__ import annotations

import collections
import contextlib
import os
import time
from typing import Callable, Iterator

from mpitiny import blas
from mpitiny.dag.limits import gpus_per_node, node_mem
from mpitiny.errors import BadInput

USED, MEM, GPUS, GATHERER = range(4)
WORDS = 4
GPU_KEYS = ("CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES")
WAIT_FIRST, WAIT_LONGEST = 20e-6, 2e-3       # seconds between looks while waiting


def declares_resources(dag) -> bool:
    """Whether some entry of ``dag`` says what it uses of a node."""
    return any(g.options.resources for g in dag.groups)


def node_names(comm) -> list:
    """Every rank's node, by name (collective): ranks on one host share its cores, memory and
    GPUs. By host name rather than MPI's ``COMM_TYPE_SHARED``: the two agree on a cluster,
    but MPICH's network path on one machine (``MPIR_CVAR_NOLOCAL=1``) makes every rank a
    shared-memory domain of its own while they all share its cores."""
    from mpi4py import MPI
    return comm.allgather(MPI.Get_processor_name())


def check_cores(comm, dag) -> None:
    """Raise the same ``BadInput`` on every rank (collective) if an entry of ``dag`` needs more
    ``cores`` than the smallest node of the run has ranks: it could never run."""
    if not any(g.options.cores for g in dag.groups):
        return
    smallest = min(collections.Counter(node_names(comm)).values())
    too_many = next((g for g in dag.groups if (g.options.cores or 1) > smallest), None)
    if too_many is not None:
        raise BadInput(f"{dag.source}: {too_many.where}: cores: {too_many.options.cores} is "
                       f"more than the ranks of a node ({smallest} on the smallest node of "
                       "this run), so the task can never run")


def node_resources(world, dag) -> NodeResources | None:
    """The resource claims of this rank (collective over the run's ranks), or None when the
    DAG declares no resources or the ranks are simulated in one process."""
    comm = getattr(world, "comm", None)
    if comm is None or not declares_resources(dag):
        return None
    names = node_names(comm)
    node = comm.Split(sorted(set(names)).index(names[comm.Get_rank()]), key=comm.Get_rank())
    return NodeResources(node, dag)


class NodeResources:
    """One rank's claims on its node's slots, memory and GPUs; see the module docstring."""

    def __init__(self, node, dag) -> None:
        from mpitiny.queue.memory import RmaMemory
        self.node = node
        self.here = node.Get_rank()
        self.slots = node.Get_size()
        self.node_mem = node_mem()[0]
        self.gpus = gpus_per_node()
        self.words = RmaMemory(node, WORDS if self.here == 0 else 0)
        self.needs = [(g.options.cores or 1, g.options.mem or 0, g.options.gpus or 0)
                      for g in dag.groups]
        given = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
        self.devices = given.split(",") if given else [str(k) for k in range(self.gpus)]
        self.waits = 0                  # claims that had to wait

    @property
    def windows(self) -> list:
        return [self]

    def start(self) -> None:
        self.words.start()

    def stop(self) -> None:
        self.words.stop()

    def free(self) -> None:
        self.words.free()
        self.node.Free()

    @contextlib.contextmanager
    def held(self, g: int, env: dict | None = None) -> Iterator[None]:
        """What a chunk of group ``g`` needs, claimed (waiting until it fits) while the body
        runs; its GPUs in ``os.environ`` and in ``env`` (a command's environment) meanwhile;
        a function task's (``env`` None) ``cores`` OpenBLAS threads (``mpitiny.blas``)."""
        cores, mem, gpus = self.needs[g]
        mask = 0
        if mem:
            self.add_within(MEM, mem, self.node_mem)
        try:
            if gpus:
                mask = self.take_gpus(gpus)
            self.take_slots(cores)
            try:
                with blas.threads(cores if env is None else 1):
                    if gpus:
                        with self.visible(mask, env):
                            yield
                    else:
                        yield
            finally:
                self.words.add(0, USED, -cores)
        finally:
            if mask:
                self.release_gpus(mask)
            if mem:
                self.words.add(0, MEM, -mem)

    def take_slots(self, cores: int) -> None:
        """Claim ``cores`` slots of the node (see the module docstring)."""
        words, slots = self.words, self.slots
        if cores == 1:
            while words.fetch_add(0, USED, 1) >= slots:
                words.add(0, USED, -1)
                self.wait_until(lambda: words.get(0, USED, 1)[0] < slots)
            return
        me = self.here + 1
        while words.cas(0, GATHERER, 0, me) != 0:
            self.wait_until(lambda: words.get(0, GATHERER, 1)[0] == 0)
        try:
            words.add(0, USED, cores)
            if words.get(0, USED, 1)[0] > slots:
                self.wait_until(lambda: words.get(0, USED, 1)[0] <= slots)
        finally:
            words.swap(0, GATHERER, 0)

    def add_within(self, word: int, amount: int, most: int) -> None:
        """Add ``amount`` to ``word`` once the sum stays within ``most`` (compare-and-swap)."""
        words = self.words
        while True:
            old = int(words.get(0, word, 1)[0])
            if old + amount > most:
                self.wait_until(lambda: words.get(0, word, 1)[0] + amount <= most)
                continue
            if words.cas(0, word, old, old + amount) == old:
                return

    def take_gpus(self, n: int) -> int:
        """The mask of ``n`` GPUs of the node, taken (the lowest free ones)."""
        words, most = self.words, self.gpus - n
        while True:
            used = int(words.get(0, GPUS, 1)[0])
            free = [k for k in range(self.gpus) if not used >> k & 1]
            if len(free) < n:
                self.wait_until(lambda: bin(int(words.get(0, GPUS, 1)[0])).count("1") <= most)
                continue
            mask = sum(1 << k for k in free[:n])
            if words.cas(0, GPUS, used, used | mask) == used:
                return mask

    def release_gpus(self, mask: int) -> None:
        words = self.words
        while True:
            used = int(words.get(0, GPUS, 1)[0])
            if words.cas(0, GPUS, used, used & ~mask) == used:
                return

    @contextlib.contextmanager
    def visible(self, mask: int, env: dict | None) -> Iterator[None]:
        """The GPUs of ``mask`` as the visible devices of the tasks run meanwhile."""
        devices = self.devices
        value = ",".join(devices[k] if k < len(devices) else str(k)
                         for k in range(self.gpus) if mask >> k & 1)
        places = [os.environ] if env is None else [os.environ, env]
        before = [{key: place.get(key) for key in GPU_KEYS} for place in places]
        for place in places:
            place.update(dict.fromkeys(GPU_KEYS, value))
        try:
            yield
        finally:
            for place, old in zip(places, before):
                for key, was in old.items():
                    if was is None:
                        place.pop(key, None)
                    else:
                        place[key] = was

    def wait_until(self, ready: Callable[[], bool]) -> None:
        """Sleep, doubling the naps, until ``ready()``: this rank runs nothing meanwhile."""
        self.waits += 1
        nap = WAIT_FIRST
        while not ready():
            time.sleep(nap)
            nap = min(2 * nap, WAIT_LONGEST)
