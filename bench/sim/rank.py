"""One simulated rank: the real engine loop (``mpitiny.engine.loop.Engine``) on a virtual clock.

``SimRank`` is an ``Engine`` whose constructor builds only what the scheduling path needs: the
real ``StealQueue``, ``ReadyQueue``, ``Release`` and ``Control`` on a ``SimMemory`` (so every
word operation they make is charged and counted), and the loop state ``Engine`` keeps
(``direct``, ``avg_task``, ``unreported``, the steal RNG with the engine's seed). The methods
that decide what runs where are the engine's own, inherited unchanged: ``find_work`` (inbox,
claim, ``chunk_size``, ``steal``, ``keep_lone``), ``take_direct`` and ``release_children``.
What ``SimRank`` replaces is what touches the outside world: running a chunk costs virtual
time instead of calling the task (``start`` / ``complete``), reporting finished tasks is
``Control.add_finished`` without the journal and samples, and ``Backoff`` is computed, not
slept (``backoff_delay``, the same rules: spin for ``SPIN_SECONDS`` with a core per rank, then
``SPIN`` rounds without sleeping, then sleeps doubling from 2 µs to ``max_sleep``).

``act(now)`` is one event of the rank: finish the running chunk if there is one (release its
children, report if ``REPORT_SECONDS`` passed), then one round of the loop. It returns the
time of the rank's next event, or None once it has left the run, and sets ``cpu_end``: when
the event's CPU work ended (what a pool of cores holds a core for, ``simulate``).

A chunk is one event (its whole run time) unless the rank shares cores (``by_task``: a pool,
or ``Costs.wake_cpu``): then its tasks go one by one (``run_tasks``): a CPU-bound task
(``mpitiny.tasks:spin``) runs on the event's core; a sleeping one (``mpitiny.tasks:sleep``,
``workloads.task_sleeps``) frees the core and the rank's next event is when its sleep ends,
plus ``wake_cpu`` (the kernel's switch back and cold caches) and ``task_cpu`` once a core is
free again. A ``Backoff`` sleep is a wake too.
"""
from __future__ import annotations

import random
import time

import numpy as np

from mpitiny.engine.adding import NoAdding
from mpitiny.engine.control import CONTROL_WORDS, REPORT_SECONDS, Control
from mpitiny.engine.loop import CHUNK_SECONDS, QUEUE_SLOTS, Backoff, Engine, _running_mean
from mpitiny.engine.ready import ReadyQueue
from mpitiny.engine.types import End
from mpitiny.queue.release import Release
from mpitiny.queue.stealq import StealQueue

from .memory import SimMemory

SPIN_SECONDS = getattr(Backoff, "SPIN_SECONDS", 0.0)   # engines before the spin: no spinning


class _Calm:
    """The engine's ``Guard`` as the loop reads it: no signal, no time limit."""

    stop_signal = 0
    time_up = False


class SimRank(Engine):
    """A rank of a ``Simulation`` (``sim``): the engine's scheduling code on virtual time."""

    def __init__(self, sim, rank: int, memory) -> None:   # Engine.__init__ is not called
        dag = sim.dag
        self.sim, self.costs = sim, sim.costs
        self.dag, self.rank, self.nranks = dag, rank, sim.nranks
        self.base, self.bases = dag.base, dag.base.tolist()
        self.placed = [bool(g.options.placed) for g in dag.groups]
        self.layout = sim.layout
        self.mem = SimMemory(memory, rank, sim.ledger)
        self.queue = StealQueue(self.mem, CONTROL_WORDS, QUEUE_SLOTS, sim.inbox, sim.ring)
        self.control = Control(self.mem, dag.total)
        self.ready = ReadyQueue(self.queue, dag, self.layout, rank, self.nranks)
        if self.ready.board is not None:          # READ_SECONDS in virtual time
            self.ready.board.clock = lambda: self.mem.now
        self.release = Release(self.layout, self.mem)
        self.layout.init_words(rank, self.mem.local)
        self.guard = _Calm()
        self.adding = NoAdding()     # no task adds tasks here
        self.chunk_seconds = np.full(len(dag.groups), CHUNK_SECONDS)
        self.spare_cores = self.costs.spin and SPIN_SECONDS > 0
        self.max_sleep = self.costs.max_sleep
        self.rng = random.Random(12345 + 7919 * rank)
        self.direct, self.direct_stolen = None, False
        self.lone = False            # the engine's early ask (release_children) is not modelled
        self.reserved = None         # nor its reservation of a child (loop.reserve)
        self.reserving = False       # nor the one in a count-down (took_reserved)
        self.avg_task = [float("nan")] * len(dag.groups)
        self.avg_all = float("nan")
        self.unreported = self.unreported_failed = 0
        self.steals = self.stolen_tasks = self.rounds = 0
        self.stopped = End.RUNNING
        self.running = None          # the chunk being run, as group segments
        self.bo_start, self.bo_rounds, self.bo_spinning = 0.0, 0, self.spare_cores  # Backoff
        self.reported_at = 0.0
        self.left_at: float | None = None
        self.busy = 0.0
        self.released = False        # whether this rank (a process) released anything yet
        # a chunk's tasks one event each: when the rank shares its node's cores (a pool), or
        # waking from a sleep costs CPU (``wake_cpu``)
        self.by_task = sim.pools is not None or self.costs.wake_cpu > 0
        self.todo, self.next_task = None, 0     # by_task: the running chunk's (length, sleeps)
        self.asleep = False          # the last event ended in a sleep (a task's or Backoff's)
        self.cpu_end = 0.0           # when the last event's CPU work ended
        self.cpu_used = 0.0          # CPU time of all events so far
        self.wakes = 0               # events that began with waking from a sleep
        self.core_wait = 0.0         # time spent waiting for a core (pooled)
        self.waiting_since: float | None = None

    # ------------------------------------------------------------------ one event
    def act(self, now: float) -> float | None:
        """One event at ``now``; returns the next one's time (None: the rank has left).
        ``cpu_end``: when this event's CPU work ended (its core is free from then on)."""
        nxt = self.step(now)
        self.cpu_used += (self.cpu_end - now) / self.costs.cpu_stretch
        return nxt

    def step(self, now: float) -> float | None:
        mem = self.mem
        mem.now = now
        if self.asleep:
            self.asleep = False
            self.wakes += 1
            mem.now += self.costs.wake_cpu * self.costs.cpu_stretch
            if self.todo is not None:          # a sleeping task of the chunk has returned
                self.task_returned()
        if self.running is not None:
            if self.todo is not None:
                nxt = self.run_tasks()
                if nxt is not None:
                    return nxt
            self.complete()
            if mem.now - self.reported_at > REPORT_SECONDS:
                self.report_finished()
            self.new_backoff()
            if self.ending():
                return self.leave_at()
            chunk = self.take_direct()
            if chunk is not None:
                return self.start(chunk)
        self.rounds += 1
        chunk = self.find_work()
        mem.now += self.costs.round_cpu * self.costs.cpu_stretch
        if chunk is not None:
            return self.start(chunk)
        self.report_finished()
        if self.ending():
            return self.leave_at()
        delay = self.backoff_delay()
        self.cpu_end = mem.now
        self.asleep = delay > 0
        return mem.now + delay

    def leave_at(self) -> None:
        if self.control.end() == End.ALL_FINISHED:     # as Engine.leave
            self.control.pass_on_end()
        self.report_finished()
        self.left_at = self.cpu_end = self.mem.now
        return None

    def new_backoff(self) -> None:
        """A fresh ``Backoff``, as ``Engine.next_chunk`` makes one for every chunk it looks for."""
        self.bo_start, self.bo_rounds, self.bo_spinning = self.mem.now, 0, self.spare_cores

    def backoff_delay(self) -> float:
        """How long ``Backoff.wait`` keeps this rank away after a round that found nothing:
        nothing while it spins (a core per rank, first ``SPIN_SECONDS``) and for ``SPIN``
        rounds after, then sleeps doubling from 2 µs to ``max_sleep``, each ``sleep_extra``
        longer than asked (Linux, measured here)."""
        self.bo_rounds += 1
        if self.bo_spinning:
            if self.mem.now < self.bo_start + SPIN_SECONDS:
                return 0.0
            self.bo_spinning, self.bo_rounds = False, 1
        if self.bo_rounds <= Backoff.SPIN:
            return 0.0
        want = min(self.max_sleep, 1e-6 * (1 << min(self.bo_rounds - Backoff.SPIN, 10)))
        return want + self.costs.sleep_extra

    # ------------------------------------------------------------------ running a chunk
    def start(self, chunk) -> float:
        """Start ``chunk``: its tasks as group segments. Its whole virtual run time in one
        event, or (``by_task``) its tasks one by one (``run_tasks``)."""
        segments = self.segments(chunk.tasks)
        sim, costs = self.sim, self.costs
        run = costs.chunk_cpu * costs.cpu_stretch + costs.wake_extra
        per_task = costs.task_extra + costs.task_cpu * costs.cpu_stretch
        todo, asleep = [], 0.0
        for g, idx in segments:
            n = len(idx)
            first = int(self.base[g])
            if sim.durations is None:
                lengths = np.full(n, sim.task_time[g])
            else:
                lengths = sim.durations[first + idx]
            run += float(lengths.sum()) + n * per_task
            if sim.task_sleeps[g]:
                asleep += float(lengths.sum()) + n * costs.task_extra
            if self.by_task:
                todo.extend((float(d), sim.task_sleeps[g]) for d in lengths)
            sim.ran(self.rank, first, idx, self.mem.now)
        self.running = (segments, run)
        self.busy += run
        if self.by_task:
            self.mem.now += costs.chunk_cpu * costs.cpu_stretch + costs.wake_extra
            self.todo, self.next_task = todo, 0
            return self.run_tasks()
        end = self.mem.now + run
        sim.last_end = max(sim.last_end, end)
        self.cpu_end = end - asleep           # the chunk's CPU, counted as if it came first
        return end

    def run_tasks(self) -> float | None:
        """``by_task``: the running chunk's tasks from ``next_task`` on. CPU-bound tasks run on
        this event's core, which is given up after them (the next event, at their end, waits
        for a core again: the kernel's time slice, coarsely); a sleeping task frees it: the
        next event is when the sleep ends (the rank then waits for a core to go on,
        ``task_returned``). None once the chunk has run (the caller completes it)."""
        costs, mem = self.costs, self.mem
        ran = False
        while self.next_task < len(self.todo):
            length, sleeps = self.todo[self.next_task]
            if sleeps and ran:
                break
            self.next_task += 1
            if sleeps:
                self.cpu_end, self.asleep = mem.now, True
                return mem.now + length + costs.task_extra
            mem.now += length + costs.task_extra
            self.task_returned()
            ran = True
        if ran:
            self.cpu_end = mem.now
            return mem.now
        self.todo = None
        return None

    def task_returned(self) -> None:
        """A task's function returned: the engine's share of one task, then its end time."""
        self.mem.now += self.costs.task_cpu * self.costs.cpu_stretch
        self.sim.last_end = max(self.sim.last_end, self.mem.now)

    def segments(self, tasks) -> list:
        """``[(group, instance indices)]`` of a chunk's task ids (as ``Engine.execute``)."""
        out = []
        if isinstance(tasks, tuple):
            lo, hi = tasks
            while lo < hi:
                g = int(np.searchsorted(self.base, lo, side="right")) - 1
                end = min(hi, int(self.base[g + 1]))
                first = int(self.base[g])
                out.append((g, np.arange(lo - first, end - first, dtype=np.int64)))
                lo = end
            return out
        tasks = np.asarray(tasks, dtype=np.int64)
        groups = np.searchsorted(self.base, tasks, side="right") - 1
        cuts = np.flatnonzero(np.diff(groups)) + 1
        for seg in np.split(np.arange(len(tasks)), cuts):
            g = int(groups[seg[0]])
            out.append((g, tasks[seg] - self.base[g]))
        return out

    def complete(self) -> None:
        """The running chunk has ended: learn its task time, count it, release its children."""
        segments, run = self.running
        self.running = None
        costs = self.costs
        for g, idx in segments:
            n = len(idx)
            per_task = self.sim.task_time[g] + costs.task_extra + costs.task_cpu
            self.avg_task[g] = _running_mean(self.avg_task[g], per_task, n)
            self.avg_all = _running_mean(self.avg_all, per_task, n)
            self.unreported += n
            if self.dag.children[g]:
                self.timed_release(g, idx)

    def timed_release(self, g: int, idx) -> None:
        """``release_children``, charged its own CPU time (or ``release_cpu``), and the first
        release's extra cost once."""
        costs = self.costs
        t0 = time.process_time()
        self.release_children(g, idx, [])
        cpu = time.process_time() - t0 if costs.measure_release else costs.release_cpu
        if not self.released:
            self.released = True
            cpu += costs.first_release
        self.mem.now += cpu * costs.cpu_stretch

    def skip(self, skipped: list) -> None:
        for _, idx in skipped:
            self.unreported += len(idx)
            self.unreported_failed += len(idx)

    def report_finished(self) -> None:
        """``Engine.report_finished`` without the journal and samples."""
        self.reported_at = self.mem.now
        n, failed = self.unreported, self.unreported_failed
        self.unreported = self.unreported_failed = 0
        self.control.add_finished(n, failed, self.mem.now)
