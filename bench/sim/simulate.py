"""The discrete-event loop: P ``SimRank`` s on one ``LocalMemory``, stepped in time order.

``Simulation(doc, nranks, costs)`` loads the dag.json document with mpitiny's own loader,
computes the real ``Layout`` for P ranks, gives every rank its words (the queue region with a
smaller ring and inbox than a real run's, so that 10,000 ranks fit in memory: ``ring``,
``inbox``), builds the ranks and queues the roots as ``Engine.start`` does (not charged: the
run's clock starts at the barrier after it). ``run()`` pops the rank with the earliest next
event, lets it act (``SimRank.act``), pushes its next event, until every rank has left;
ties go to a seeded random order. It returns a ``Result``: the makespan (the last rank's
leaving; also rank 0's, which is what ``summary.json``'s ``wall_seconds`` measures, and first
task start to last task end), the efficiency work / (P x makespan), how many times each task
ran (every one exactly once, or the simulation raises), and the hot spots of the ``Ledger``.

**A pool of cores** (``Costs.cores``, per node; only where a node has fewer cores than ranks
or other work takes some, ``Costs.pooled``: at 10,000 ranks with a core per rank there is
none). Then ``pools`` holds,
per node, when each of its cores is next free: a rank's event starts only when one is (else
the rank is pushed back to that time, first come first served), and the core stays busy for
the event's CPU part (``SimRank.cpu_end``: rounds, word operations, a chunk's bookkeeping,
releases, waking, and a CPU-bound task's whole length; a sleeping task and a ``Backoff``
sleep hold no core), stretched by ``1 + Costs.debt()`` for other work on the machine. A core
is held for a whole event (no time slices within it); ``Result.cpu`` and ``core_wait`` sum
the ranks' CPU and their waits for a core.

Events happen at the time a rank's step starts; the word operations of one step are applied
in that step (the step's clock advances by their costs, contention included). A step is one
round of the loop (a few µs) or a chunk's end, so the order of effects across ranks is
right to within one round.
"""
from __future__ import annotations

import heapq
import random
import time
from dataclasses import dataclass, field

import numpy as np

from mpitiny.dag.load import load_dag_text
from mpitiny.engine.control import CONTROL_WORDS
from mpitiny.engine.loop import QUEUE_SLOTS
from mpitiny.queue.layout import Layout
from mpitiny.queue.memory import LocalMemory
from mpitiny.queue.stealq import BOARD_WORDS, region_size

from . import workloads
from .costs import Costs
from .memory import Ledger
from .rank import SimRank


@dataclass
class Result:
    nranks: int
    tasks: int
    makespan: float               # the last rank left the run
    rank0_end: float              # rank 0 left (summary.json's wall_seconds)
    tasks_span: float             # first task start to last task end
    work: float                   # sum of task lengths
    efficiency: float             # work / (nranks * makespan)
    events: int
    real_seconds: float
    cpu: float = 0.0              # CPU time of all ranks (rounds, chunks, releases, spinning)
    core_wait: float = 0.0        # time ranks waited for a core (a node's pool), all ranks
    hot: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class Simulation:
    """One simulated run of the dag.json document ``doc`` on ``nranks`` ranks."""

    def __init__(self, doc: dict, nranks: int, costs: Costs, seed: int = 0,
                 ring: int = 2048, inbox: int = 64, durations: np.ndarray | None = None,
                 rank_class: type = SimRank, offsets: list | None = None,
                 warm: bool = True) -> None:
        self.doc, self.nranks, self.costs, self.seed = doc, nranks, costs, seed
        self.ring, self.inbox = ring, inbox
        self.dag = dag = load_dag_text(workloads.text(doc), source="<sim>", params={})
        lengths = workloads.task_lengths(doc)
        self.task_time = [lengths[g.name] for g in dag.groups]
        sleeps = workloads.task_sleeps(doc)
        self.task_sleeps = [sleeps[g.name] for g in dag.groups]
        self.durations = durations      # per task id: its run time (else its group's length)
        qwords = region_size(QUEUE_SLOTS, inbox, ring)
        self.layout = Layout(dag, nranks, CONTROL_WORDS + qwords)
        memory = LocalMemory(nranks, 0)
        for r in range(nranks):
            memory.words[r] = np.zeros(int(self.layout.nwords[r]), dtype=np.int64)
        board0 = CONTROL_WORDS + region_size(QUEUE_SLOTS, inbox, ring) - BOARD_WORDS
        self.ledger = Ledger(nranks, costs, (board0, board0 + BOARD_WORDS))
        self.runs = np.zeros(dag.total, dtype=np.int32)
        self.first_start, self.last_end, self.last_claim = float("inf"), 0.0, 0.0
        self.pools = None        # per node: when each of its cores is next free (a heap)
        if costs.pooled(nranks):
            self.pools = [[0.0] * costs.cores for _ in range(costs.node(nranks - 1) + 1)]
        self.ranks = [rank_class(self, r, memory) for r in range(nranks)]
        self.ledger.counting = False
        for rank in self.ranks:
            rank.ready.queue_roots()
            rank.mem.now = 0.0
        self.ledger.counting = True
        self.offsets = offsets or [0.0] * nranks     # when each rank leaves the start barrier
        if warm and costs.measure_release:
            warm_up(doc, costs)

    def ran(self, rank: int, first: int, idx: np.ndarray, now: float) -> None:
        """Rank ``rank`` starts instances ``idx`` of the group whose first id is ``first``."""
        self.runs[first + idx] += 1
        self.first_start = min(self.first_start, now)
        self.last_claim = max(self.last_claim, now)

    def run(self, max_events: int = 50_000_000) -> Result:
        t0 = time.perf_counter()
        rng = random.Random(self.seed)
        order = list(range(self.nranks))
        rng.shuffle(order)
        heap = [(float(self.offsets[r]), k, r) for k, r in enumerate(order)]
        heapq.heapify(heap)
        seq, events = self.nranks, 0
        ranks, pools, node = self.ranks, self.pools, self.costs.node
        debt = 1.0 + self.costs.debt()
        while heap:
            now, _, r = heapq.heappop(heap)
            rank = ranks[r]
            if pools is not None:
                pool = pools[node(r)]
                if pool[0] > now:             # every core of its node is busy: wait
                    if rank.waiting_since is None:
                        rank.waiting_since = now
                    seq += 1
                    heapq.heappush(heap, (pool[0], seq, r))
                    continue
                if rank.waiting_since is not None:
                    rank.core_wait += now - rank.waiting_since
                    rank.waiting_since = None
            nxt = rank.act(now)
            if pools is not None:
                heapq.heapreplace(pool, now + (rank.cpu_end - now) * debt)
            events += 1
            if nxt is not None:
                seq += 1
                heapq.heappush(heap, (nxt, seq, r))
            if events > max_events:
                raise RuntimeError(f"no end after {max_events} events")
        return self.result(events, time.perf_counter() - t0)

    def result(self, events: int, real: float) -> Result:
        bad = np.flatnonzero(self.runs != 1)
        if len(bad):
            raise AssertionError(f"{len(bad)} tasks ran {self.runs[bad[:5]].tolist()} times "
                                 f"(ids {bad[:5].tolist()})")
        ends = [rk.left_at for rk in self.ranks]
        makespan = max(ends)
        work = float(sum(self.task_time[g.index] * g.size for g in self.dag.groups))
        return Result(self.nranks, int(self.dag.total), makespan, ends[0],
                      self.last_end - self.first_start, work,
                      work / (self.nranks * makespan), events, real,
                      float(sum(rk.cpu_used for rk in self.ranks)),
                      float(sum(rk.core_wait for rk in self.ranks)), hot_spots(self))


def warm_up(doc: dict, costs: Costs) -> None:
    """Run one release of ``doc`` on a scratch simulation, so that this process's one-time
    costs (imports, first calls) are not charged to the first simulated rank that releases
    (``first_release`` charges each rank its own)."""
    scratch = Simulation(doc, 2, costs, warm=False)
    for g in scratch.dag.groups:
        if scratch.dag.children[g.index] and g.size:
            scratch.ranks[0].release_children(g.index, np.zeros(1, dtype=np.int64), [])
            return


def hot_spots(sim: Simulation) -> dict:
    """Operations on rank 0's words and steal probes per target, with their peak rates."""
    led = sim.ledger
    probes = np.array(led.probe_log) if led.probe_log else np.zeros((0, 2))
    tail = probes[probes[:, 0] >= sim.last_claim] if len(probes) else probes
    tail_per_target = np.bincount(tail[:, 1].astype(np.int64), minlength=sim.nranks) \
        if len(tail) else np.zeros(sim.nranks, dtype=np.int64)
    makespan = max(rk.left_at for rk in sim.ranks)
    tail_len = max(makespan - sim.last_claim, 1e-9)
    return {
        "ops_total": int(led.total),
        "ops_per_target_max": int(led.ops.max()), "ops_per_target_mean": float(led.ops.mean()),
        "ops_rank0": int(led.ops[0]),
        "ops_rank0_per_second": float(led.ops[0] / makespan),
        "finished_ops": len(led.finished_times),
        "finished_peak_per_second": peak_rate(led.finished_times),
        "board_ops": len(led.board_times), "board_peak_per_second": peak_rate(led.board_times),
        "atomics_hottest_rank": int(np.argmax(led.atomics)),
        "atomics_hottest": int(led.atomics.max()),
        "atomics_hottest_per_second": float(led.atomics.max() / makespan),
        "atomics_rank0_per_second": float(led.atomics[0] / makespan),
        "board_atomics_hottest": int(led.board_atomics.max()),
        "board_atomics_hottest_per_second": float(led.board_atomics.max() / makespan),
        "board_atomics_rank0": int(led.board_atomics[0]),
        "board_atomics_total": int(led.board_atomics.sum()),
        "board_gets_rank0": int(led.board_gets[0]),
        "board_gets_hottest_per_second": float(led.board_gets.max() / makespan),
        "done_cas": int(led.done_cas),
        "max_wait_rank0_us": float(led.max_wait[0] * 1e6),
        "max_wait_any_us": float(led.max_wait.max() * 1e6),
        "steal_probes": int(led.probes.sum()),
        "steal_probes_per_target_max": int(led.probes.max()),
        "tail_seconds": float(tail_len),
        "tail_probes": int(len(tail)),
        "tail_probes_per_target_max": int(tail_per_target.max()),
        "tail_probes_per_target_mean": float(tail_per_target.mean()),
        "tail_probes_per_second": float(len(tail) / tail_len),
        "steals": int(sum(rk.steals for rk in sim.ranks)),
    }


def peak_rate(times: list, window: float = 1e-3) -> float:
    """The most operations in any ``window`` seconds, per second."""
    if not times:
        return 0.0
    t = np.sort(np.asarray(times))
    ends = np.searchsorted(t, t + window, side="left")
    return float((ends - np.arange(len(t))).max() / window)


def simulate(kind: str, nranks: int, length: float, costs: Costs, tasks_per_rank: int = 100,
             seed: int = 0, **kw) -> Result:
    """Simulate workload ``kind`` with ``tasks_per_rank`` x P tasks of ``length`` seconds."""
    doc = workloads.make(kind, tasks_per_rank * nranks if kind == "independent"
                         else max(1, tasks_per_rank * nranks // 2), length)
    return Simulation(doc, nranks, costs, seed, **kw).run()
