"""The simulator's cost model: what each word operation, loop round, chunk and task costs.

Every figure is either measured on this machine or taken from a published source; the source
is named beside it (docs/scale.md has the full table).

One node (``node``), measured here with ``bench/sim/probe.py`` (``mpiexec -n 2``, MPICH 5.0.2,
``Win.Allocate`` + ``Lock_all``, 2,000 repetitions, medians, through mpi4py so the Python call
is included as the engine pays it; ``bench/results/sim_probe.json``): fetch_add 1.24 µs,
compare-and-swap 1.52, swap 1.27, accumulate 1.19, get of 1 word 1.16, get of a steal's
261-word header 1.24, put 1.11. ``shared/notes/mpi-facts.md`` gives 2-3 µs for a
``Fetch_and_op`` + ``Flush`` at n=2 and 3-27 µs with 7 thieves on one counter (n=8): the
contention that ``SERVICE_NODE`` (one operation at a time per target word's cache line, 0.3 µs
each, an assumption within that range) reproduces.

A network (``ib``), from published figures, added to the software cost measured here:

- a flushed RMA accumulate between two InfiniBand (mlx5) nodes takes ~2.5 µs with MVAPICH
  2.3.1 and Open MPI 3.1 (openib), 10 µs through Open MPI 4.0 + UCX 1.6 software atomics
  (open-mpi/ompi#6868, 2019): ``WIRE_ATOMIC`` = 2.5 µs, and the ``ib-sw`` preset uses 10 µs;
- an RDMA read of 64 B completes in ~2.0 µs, a pipelined atomic add costs ~0.95 µs of issue
  (openucx/ucx#6439, 2021): ``WIRE_GET`` = 2.0 µs; ``SERVICE_NET`` = 0.95 µs is the target's
  time per atomic (a NIC's atomic unit serialises operations on one address);
- Aries and Slingshot-class networks are in the same range (osu_latency 1.15-1.6 µs one way on
  Piz Daint's Aries, reframe-hpc/reframe#1232): the ``ib`` preset stands for them.

Engine CPU time per round, chunk and task (``round_cpu``, ``chunk_cpu``, ``task_cpu``),
measured here with ``bench/sim/calibrate.py`` (the real ``Engine.work`` on one ``LocalWorld``
rank, journal on, CPU time of the process, runs of 20,000 and 40,000 ``spin(0)`` tasks), at
commit 3972e8a: 0.89-0.91 µs per task in chunks of the engine's size, 21.5-21.9 µs per task
when every chunk is one task (``chunk_size`` forced to 1; the tree of 2026-12-06 06:10 took
29-32 µs). ``task_cpu`` = 0.9 µs; the one-task chunk's 21.9 µs is split as round 5 + chunk
14.5 + task 0.9 + one compare-and-swap 1.5 (the split is an assumption, the sum is
measured). A release (``Engine.release_children``: ``Release.finish``
and queueing what became ready) is charged the CPU time the real code takes in the simulator
(``measure_release``: ``time.process_time`` around the call, the simulated word operations
included); it depends on the engine's version (85 µs median for one task at commit 3972e8a,
10.5 µs in the tree of 2026-12-06 06:40). The first release in a process costs more (module
and cache set-up: 9.7-15.8 ms CPU at 3972e8a, 73 µs later): ``first_release``, measured in a
fresh process (``calibrate.first_release_cpu``) and charged once per rank, since every rank
is a process.

Sharing cores (``cores``, per node, None by default: a core per rank, as on a cluster and in
every scale run): where a node has fewer cores than ranks (``pooled``) the simulation keeps a
pool of them (``simulate.py``). ``wake_cpu`` is the CPU a rank spends each time it wakes from
a sleep beyond the hot-cache figures above (0 in the presets; the validation takes it from
``wake.WAKE_MODEL``, fitted once on stored runs), ``background`` the cores other work takes
meanwhile (measured: ``debt``).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

US = 1e-6

# Origin-side cost of one blocking operation + Flush on one node (s), measured here.
NODE_OPS = {"fetch_add": 1.24 * US, "cas": 1.52 * US, "swap": 1.27 * US, "add": 1.19 * US,
            "add_many": 1.19 * US, "fetch_add_block": 1.24 * US, "get": 1.16 * US,
            "get_block": 1.24 * US, "put": 1.11 * US}
SERVICE_NODE = 0.3 * US      # a target word's cache line: one atomic at a time
WIRE_ATOMIC = 2.5 * US       # ompi#6868: flushed accumulate between IB nodes (MVAPICH, openib)
WIRE_ATOMIC_SW = 10.0 * US   # ompi#6868: the same through UCX software atomics
WIRE_GET = 2.0 * US          # ucx#6439: RDMA read round trip, 64 B
SERVICE_NET = 0.95 * US      # ucx#6439: one atomic's issue time; the target NIC's per-op time
ATOMICS = ("fetch_add", "cas", "swap", "add", "add_many", "fetch_add_block")


@dataclass
class Costs:
    """Per-operation and per-step costs (seconds) of one simulated machine."""

    name: str = "node"
    ranks_per_node: int = 1 << 30          # all ranks on one node unless set
    node_ops: dict = field(default_factory=lambda: dict(NODE_OPS))
    wire_atomic: float = 0.0               # added to an operation on another node
    wire_get: float = 0.0
    service_node: float = SERVICE_NODE     # target occupancy per atomic, same node
    service_net: float = SERVICE_NET       # target occupancy per atomic, other node
    round_cpu: float = 5.0 * US            # one round of find_work, beyond its word operations
    chunk_cpu: float = 14.5 * US           # a chunk's journaling, recording, bookkeeping
    task_cpu: float = 0.9 * US             # the engine's share of one task in a long chunk
    release_cpu: float = 8.0 * US          # one release beyond its operations (if not measured)
    measure_release: bool = True           # charge the real release code's own CPU time
    first_release: float = 0.0             # once per rank: the first release's extra CPU
    task_extra: float = 0.0                # added to every task (a sleep's overshoot)
    sleep_extra: float = 28.0 * US         # time.sleep(d) lasts d + this (measured here)
    max_sleep: float = 1e-4                # Backoff's longest sleep (1e-3 when oversubscribed)
    spin: bool = True                      # a core for each rank: Backoff spins 2 ms first
    cpu_stretch: float = 1.0               # CPU costs x this (ranks sharing cores)
    wake_extra: float = 0.0                # added to each chunk: waiting for a core on waking
    cores: int | None = None               # cores per node, shared by its ranks (None: one each)
    wake_cpu: float = 0.0                  # CPU a rank spends on waking from a sleep (modelled)
    background: float = 0.0                # cores other work takes on the node (pooled)

    def node(self, rank: int) -> int:
        return rank // self.ranks_per_node

    def debt(self) -> float:
        """Pooled: how long a core stays busy with other work after each second a rank held
        it: ``background / (cores - background)``, so the ranks get ``cores - background``
        cores when they want them all, and a rank that wakes is served at once (as Linux
        prefers a woken process) when a core is free of ranks."""
        if not self.background or self.cores is None:
            return 0.0
        return self.background / max(self.cores - self.background, 0.1 * self.cores)

    def pooled(self, nranks: int) -> bool:
        """Whether the ranks of a node share its ``cores``: fewer cores than ranks on it, or
        other work takes some (``background``)."""
        return self.cores is not None and (self.cores < min(self.ranks_per_node, nranks)
                                           or self.background > 0)

    def op(self, kind: str, origin: int, target: int) -> tuple:
        """``(origin's cost, target's occupancy)`` of one operation ``kind``."""
        base = self.node_ops[kind] * self.cpu_stretch
        if self.node(origin) == self.node(target):
            return base, (self.service_node if kind in ATOMICS else 0.0)
        wire = self.wire_atomic if kind in ATOMICS or kind == "put" else self.wire_get
        return base + wire, (self.service_net if kind in ATOMICS else 0.0)


def preset(name: str, ranks_per_node: int = 64, **changes) -> Costs:
    """``node`` (every rank on one node, measured here), ``ib`` (nodes of ``ranks_per_node``
    on an InfiniBand-class network with hardware atomics), ``ib-sw`` (software atomics)."""
    if name == "node":
        costs = Costs(name="node")
    elif name == "ib":
        costs = Costs(name="ib", ranks_per_node=ranks_per_node, wire_atomic=WIRE_ATOMIC,
                      wire_get=WIRE_GET)
    elif name == "ib-sw":
        costs = Costs(name="ib-sw", ranks_per_node=ranks_per_node, wire_atomic=WIRE_ATOMIC_SW,
                      wire_get=WIRE_GET)
    else:
        raise ValueError(f"unknown cost preset {name!r} (node, ib, ib-sw)")
    return replace(costs, **changes)
