"""One rank's scheduling loop: claim, steal, report, back off (see ``mpitiny.engine``)."""
from __future__ import annotations

import bisect
import functools
import os
import random
import socket
import time

import numpy as np

from mpitiny import procstat, state
from mpitiny.dag.model import DAG
from mpitiny.engine.adding import Adding
from mpitiny.engine.commands import CommandRunner
from mpitiny.engine.control import (CONTROL_WORDS, DONE, REPORT_SECONDS, Control, RunWatch,
                                    chunk_done)
from mpitiny.engine.dataplane import DataPlane
from mpitiny.engine.guard import Guard, parse_fault
from mpitiny.engine.journaling import ChunkJournal
from mpitiny.engine.progress import Progress
from mpitiny.engine.ready import ReadyQueue
from mpitiny.engine.resume import Resume, standings
from mpitiny.engine.running import TaskRunner
from mpitiny.engine.types import Chunk, End, RunCounts, RunOptions
from mpitiny.errors import BadInput
from mpitiny.io import journal as jnl
from mpitiny.io.rundir import UPSTREAM_FAILED, RankFiles, Records, rank_file
from mpitiny.queue.layout import COUNT_MASK, POISON_BITS, RESERVED, Layout
from mpitiny.queue.release import Release
from mpitiny.queue.stealq import StealQueue, ask, give, random_other, region_size, withdraw

CHUNK_SECONDS = 0.005
BATCH_SECONDS = 0.02      # a batched family's chunk: one call, so its fixed cost is shared
MAX_CHUNK = 4096
SHARE_RANKS = 16           # a claim takes at most 1/min(P, this) of the queue
KEEP_MAX = 16              # released together, up to this many: the first runs next unqueued
QUEUE_SLOTS, INBOX_WORDS, RING_WORDS = 128, 1024, 1 << 16
SAMPLE_SECONDS = 1.0      # samples of each rank for the trace (procstat)
RESERVE_WATCH_SECONDS = 30e-6   # a rank that reserved a child watches it first this long


class Backoff:
    """How an idle rank waits between rounds. With a core for each rank here (``spin``) it
    does not sleep for its first ``SPIN_SECONDS`` of idleness, only yields the core (the task
    a DAG releases next is usually a few µs away, and a rank that sleeps takes 60-100 µs more
    to start it); after that, and from the start when there are more ranks than cores, no
    sleep for the first ``SPIN`` rounds, then sleeps doubling from 2 µs up to ``longest`` (an
    idle rank must not take a core that a busy rank needs). Only while it spins may its
    ``queue`` ask a busy rank for its next task (``stealq.ask``): an answer must not wait in
    the ``MAIL`` word of a rank that sleeps, where no thief takes it."""

    SPIN = 20
    SPIN_SECONDS = 0.002
    WATCH_SECONDS = 10e-6

    def __init__(self, longest: float, spin: bool = False, queue=None, engine=None) -> None:
        self.longest = longest
        self.rounds = 0
        self.spin_until = time.perf_counter() + self.SPIN_SECONDS if spin else 0.0
        self.queue = queue
        self.engine = engine         # whose reserved child it watches for (``reserve``)
        if queue is not None:
            queue.may_ask = spin

    def wait(self) -> None:
        self.rounds += 1
        if self.spin_until:
            now = time.perf_counter()
            if now < self.spin_until:
                if self.engine is not None and self.engine.reserved is not None:
                    watch_reserved(self.engine, now + self.WATCH_SECONDS)
                elif self.queue is not None and self.queue.awaits_answer():
                    self.watch_mail(now + self.WATCH_SECONDS)
                os.sched_yield()
                return
            self.spin_until, self.rounds = 0.0, 1
            if self.engine is not None and self.engine.reserved is not None:
                cancel_reserved(self.engine)
            if self.queue is not None:
                self.queue.may_ask = False
                withdraw(self.queue)
        if self.rounds > self.SPIN:
            time.sleep(min(self.longest, 1e-6 * (1 << min(self.rounds - self.SPIN, 10))))

    def watch_mail(self, until: float) -> None:
        """Watch this rank's own ``MAIL`` word (plain reads of local memory, no MPI call)
        until ``until`` or a task lands there: a rank whose request stands gets its answer
        in about a microsecond instead of at its next round's look, a round being a steal
        of several microseconds (it still steals every round: a request that landed late is
        not answered, and the task waits in the victim's queue)."""
        has_mail, clock = self.queue.has_mail, time.perf_counter
        while not has_mail() and clock() < until:
            pass


class Engine:
    """One rank's share of a run, on the word and byte memories its ``world`` allocates."""

    def __init__(self, world, dag: DAG, run_dir: str, opts: RunOptions | None = None,
                 fault: str | None = None, incarnation: int = 1,
                 resumed: jnl.Resumed | None = None) -> None:
        self.opts = opts = opts or RunOptions()
        self.world, self.dag, self.run_dir, self.incarnation = world, dag, run_dir, incarnation
        self.rank, self.nranks = world.rank, world.nranks
        self.rounds = 0         # rounds of the loop so far: the progress thread watches it
        self.host = socket.gethostname()
        self.base = dag.base
        self.bases = dag.base.tolist()     # the same, for lookups of one task
        self.placed = [bool(g.options.placed) for g in dag.groups]   # per group: has a home
        qwords = region_size(QUEUE_SLOTS, INBOX_WORDS, RING_WORDS)
        self.layout = Layout(dag, self.nranks, CONTROL_WORDS + qwords)
        self.mem = world.words(int(self.layout.nwords.max()))    # the same everywhere: pooled
        self.queue = StealQueue(self.mem, CONTROL_WORDS, QUEUE_SLOTS, INBOX_WORDS, RING_WORDS)
        self.control = Control(self.mem, dag.total)
        self.ready = ReadyQueue(self.queue, dag, self.layout, self.rank, self.nranks)
        self.release = Release(self.layout, self.mem)
        if self.ready.board is None:          # with several levels, the board counts pushes
            self.release.hand_off(self.rank, functools.partial(send_home, self),
                                  functools.partial(publish_one, self))
        self.layout.init_words(self.rank, self.mem.local)
        self.files = RankFiles(run_dir, self.rank)
        self.records = Records(self.rank, rank_file(run_dir, "tasks", self.rank, ".rows"))
        self.journal = ChunkJournal(self.files, self.layout.has_locs)
        self.data = DataPlane(world, dag, self.layout, self.mem, self.release, self.files,
                              self.journal, run_dir, opts)
        self.guard = Guard()
        self.counts = RunCounts()
        self.runner = TaskRunner(dag, opts, self.data, self.journal, self.files, self.records,
                                 self.guard, self.counts, self.control,
                                 (self.rank, self.nranks, self.host), world)
        self.commands = CommandRunner(self.runner, None if resumed is None else resumed.crashes)
        self.resumed = resumed
        self.adding = Adding(self)       # tasks added while the run goes on (mpitiny.submit)
        standing = None if resumed is None else standings(resumed, dag.total, opts.max_crashes)
        self.resume = None if resumed is None or standing is None else \
            Resume(self, resumed, standing)
        self.fault = parse_fault(fault, self.rank)
        self.chunk_seconds = np.where(self.runner.batch_family, BATCH_SECONDS, CHUNK_SECONDS)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        self.spare_cores = world.ranks_here <= (cores or 1)    # a core for each rank here
        self.max_sleep = 1e-4 if self.spare_cores else 1e-3
        self.rng = random.Random(12345 + 7919 * self.rank)
        self.progress: Progress | None = None     # rank 0's, set by the run
        # What the loop changes as the run goes on:
        self.direct: tuple | None = None   # a released task (lo, lo + 1) to run next, not queued
        self.direct_stolen = False              # and whether it came from another rank
        self.lone = False      # the chunk running is one task, with ``chain``: see release_children
        self.reserved: tuple | None = None     # (child, j, rank, word): see ``reserve``
        self.reserving = not world.needs_progress() and self.spare_cores and self.nranks > 1
        self.avg_task = [float("nan")] * len(dag.groups)   # seconds per task, by group
        self.avg_all = float("nan")                        # and over all groups
        self.unreported = self.unreported_failed = 0       # finished, not yet counted
        self.reported_at = self.synced_at = self.sampled_at = time.monotonic()
        self.journaled_at = time.perf_counter()    # when ``write_journal`` last ran
        self.stopped = End.RUNNING    # why this rank left the loop early
        self.busy = 0.0
        self.steals = self.stolen_tasks = 0
        self.split_reads = [0, 0]     # split tasks run on their home rank / elsewhere
        self.samples: list = []
        self.sampler = procstat.Sampler()

    # ------------------------------------------------------------------ start and finish
    def open_journal(self) -> None:
        """Create this rank's journal; if any rank cannot (a full or read-only run directory),
        every rank raises the same one-line error before a task runs."""
        error = None
        if self.opts.journal:
            try:
                self.journal.open(self.run_dir, self.incarnation, self.rank)
            except OSError as exc:
                error = (f"run directory {os.path.abspath(self.run_dir)}: cannot create the "
                         f"journal: {exc.strerror or exc} (rank {self.rank} on {self.host})")
        errors = [e for e in self.world.allgather(error) if e]
        if errors:
            raise BadInput(errors[0])

    def bind(self) -> None:
        """Make this rank the one its tasks see: the state store of ``mpitiny.state`` and the
        environment (``MPITINY_RANK``, ``MPITINY_RUN_DIR``) of fn tasks and their children."""
        state.use(self.data.state)
        os.environ["MPITINY_RANK"] = str(self.rank)
        os.environ["MPITINY_RUN_DIR"] = os.path.abspath(self.run_dir)
        os.environ["MPITINY_ATTEMPT"] = "1"

    def watch(self) -> RunWatch:
        return RunWatch(self.mem, self.queue.base)

    @property
    def windows(self) -> list:
        """Every RMA window of this run (metadata and queues, state store, kept outputs)."""
        return [*self.data.windows, *self.adding.windows, *self.runner.node_windows, self.mem]

    def start(self) -> None:
        """Open the RMA epochs; agree on the run's end (a collective); in a resumed run, put
        back the state updates of the tasks done before (this rank's keys); queue this rank's
        share of the root tasks."""
        self.world.open(self.windows)
        self.control.agree_end(self.world, self.opts, self.dag, self.counts)
        if self.control.limit is not None:
            self.guard.stop_at(self.control.limit.cut_at)
        if self.resumed is not None:
            self.data.state.replay(self.resumed.state_updates())
        self.ready.queue_roots()
        self.world.barrier()

    def stop(self) -> None:
        """Close the journal (made durable unless the run is complete and nothing failed),
        the store and the epochs (the windows stay until ``free``)."""
        self.journal.close(durable=not self.control.complete_without_failures())
        self.adding.close()
        state.use(None)
        self.data.close()
        self.world.close(self.windows)
        self.files.close()

    def free(self) -> None:
        self.world.free(self.windows)

    # ------------------------------------------------------------------ the worker loop
    def work(self) -> None:
        """Run chunks until every task of the DAG has finished on some rank (or a stop)."""
        while (chunk := self.next_chunk()) is not None:
            self.execute(chunk)

    def next_chunk(self) -> Chunk | None:
        """This rank's next chunk: its own, or stolen; None once the whole run is finished
        (or stopped: by a signal on some rank, by ``--max-fails`` or by the time limit)."""
        self.rounds += 1
        if self.ending():
            self.leave()
            return None
        gang = self.runner.gang      # tasks of several ranks: mpitiny.engine.gang
        chunk = self.take_direct() if gang is None else gang.next(self.take_direct)
        if chunk is not None:
            return chunk
        backoff = Backoff(self.max_sleep, self.spare_cores, self.queue, self)
        if gang is None:
            ask_first(self)
        if self.reserved is not None:     # before the first round's steals
            watch_reserved(self, time.perf_counter() + RESERVE_WATCH_SECONDS)
        while chunk is None:
            self.rounds += 1
            chunk = self.find_work() if gang is None else gang.next(self.find_work)
            if chunk is not None and self.reserved is not None:
                cancel_reserved(self)        # other work came first: hand the child back
            if chunk is None:
                if backoff.rounds or self.reserved is None:
                    idle_bookkeeping(self)
                if self.ending():
                    self.leave()
                    return None
                if self.progress is not None:
                    self.progress.tick()
                backoff.wait()
        return chunk

    def step(self) -> bool:
        """One round of the loop that never waits (for ranks simulated in one process):
        run a chunk if there is one; False once this rank has left the run."""
        if self.ending():
            self.leave()
            return False
        chunk = self.take_direct() or self.find_work()
        if chunk is not None and self.reserved is not None:
            cancel_reserved(self)
        if chunk is not None:
            self.execute(chunk, chain=False)
        else:
            self.report_finished()
        return True

    def ending(self) -> bool:
        return bool(self.mem.local[DONE]) or bool(self.guard.stop_signal) or self.guard.time_up

    def take_direct(self) -> Chunk | None:
        """The released (or stolen, or placed) task this rank kept to run next without
        queueing it, if any."""
        if self.direct is None:
            return None
        run, self.direct = self.direct, None
        return Chunk(run, time.time(), self.direct_stolen)

    def find_work(self) -> Chunk | None:
        """Claim from this rank's queue (after its inbox), else run added tasks, else steal. With
        several priority levels, first take higher work than its own from another rank if the
        run-wide board says some waits (``ReadyQueue.steal_higher``), and count claims off.
        A lone task taken from the inbox or stolen, with nothing queued here, runs at once
        (``keep_lone``): queueing it to claim it back costs three atomics."""
        if self.reserved is not None and (chunk := take_reserved(self)) is not None:
            return chunk
        ranked = self.ready.board is not None
        while True:
            runs = self.queue.take_inbox()
            if runs and not (len(runs) == 1 and keep_lone(self, runs[0], False)):
                self.ready.queue_runs(runs, count=False)
            if self.direct is not None:
                return self.take_direct()
            if ranked and (n := self.ready.steal_higher()):
                self.steals, self.stolen_tasks = self.steals + 1, self.stolen_tasks + n
            tasks = self.queue.claim(self.chunk_size)
            if ranked:
                self.ready.claimed(tasks)
            if tasks is not None:
                return Chunk(tasks, *self.queue.claimed_info)
            if not self.adding.work() and not steal_work(self) and not self.queue.has_mail():
                return None

    def leave(self) -> None:
        """Leave the loop: note why (all finished, or a stop, which this rank then spreads)
        and report what this rank finished."""
        if self.journal.pending_ends():
            write_journal(self)
        if self.reserved is not None:
            cancel_reserved(self)
        if self.guard.stop_signal and not self.stopped:
            self.request_stop(End.SIGNAL)
        elif self.guard.time_up and not self.stopped:
            self.request_stop(End.TIME_LIMIT)
        self.counts.cut_off = self.guard.cut_off
        end = self.control.end()
        if end != End.ALL_FINISHED:
            self.stopped = self.stopped or end
        else:
            self.control.pass_on_end()
        self.report_finished()

    def request_stop(self, why: End) -> None:
        """End the run early on every rank (unless it has just finished)."""
        self.stopped = why
        self.control.end_everywhere(why)

    def chunk_size(self, first: int, available: int) -> int:
        """``claim_size``; a method, which the simulator's ranks (bench/sim) override."""
        return claim_size(self, first, available)

    def report_finished(self) -> None:
        """Add this rank's newly finished tasks to the run-wide counter; sample the rank and
        sync the journal when they are due."""
        now = time.monotonic()
        if now - self.sampled_at > SAMPLE_SECONDS:
            self.sampled_at = now
            self.sample()
        self.reported_at = now
        if self.journal.on and now - self.synced_at > jnl.SYNC_SECONDS:
            self.synced_at = now
            self.journal.sync()
        n, failed = self.unreported, self.unreported_failed
        self.unreported = self.unreported_failed = 0
        self.control.add_finished(n, failed, now)

    # ------------------------------------------------------------------ a chunk's life
    def execute(self, chunk: Chunk, chain: bool = True) -> None:
        """Run a chunk: journal its start, run it group by group (each group's instances
        recorded and released as they finish), journal its end. Then, with ``chain``, as long
        as that kept a released task to run next and the loop has nothing to do first
        (``kept_next``), run that one the same way without leaving: a chain's or a stencil's
        next task starts without the round trip through ``chunk_done`` and ``next_chunk``
        (simulated ranks take turns a chunk at a time: ``step``). The ends of such kept tasks
        are journaled together, every ``CHUNK_SECONDS`` and when the chain stops, as a chunk
        of that many tasks would be, except when the rank reserved a child (``reserve``): it
        watches for that first, and journals once it finds no work at once
        (``idle_bookkeeping``). A crash makes the tasks not yet journaled run again."""
        self.queue.set_busy(True)
        t0 = time.perf_counter()
        while chunk is not None:
            if self.journal.on:
                self.journal.started(chunk.tasks)
            self.lone = chain and self.runner.gang is None and chunk.is_one()
            run_tasks(self, chunk)
            chunk = kept_next(self) if chain else None
            if self.journal.on and (not chain or chunk is None and self.reserved is None or
                                    time.perf_counter() - self.journaled_at > CHUNK_SECONDS):
                write_journal(self)           # before the loop's steps: see ask_first
        if self.journal.on:
            self.journal.between_tasks()
        if chain and self.direct is None and self.runner.gang is None:
            ask_first(self)                   # nothing kept: ask before the loop's bookkeeping
        chunk_done(self, time.perf_counter() - t0)

    def run_group(self, g: int, instances, chunk: Chunk, plain: bool = False) -> None:
        """Run instances of one group, learn their time, finish them: the injected fault first
        when it is due (as the next instance starts: the ``.now`` file names it, as a real crash
        inside it would); unless ``plain``, in a resumed run the instances that are not NORMAL
        their own way (``Resume``, which runs the rest ``plain``)."""
        if self.fault is not None:
            head = self.fault.take(len(instances))
            if head is not None:               # the fault is due within this chunk
                fault, self.fault = self.fault, None
                if head:
                    self.run_group(g, instances[:head], chunk, plain)
                fault.fire(self.journal, self.bases[g] + int(instances[head]))
        if self.resume is not None and not plain:
            idx = np.asarray(instances, dtype=np.int64)
            standing = self.resume.standing[self.bases[g] + idx]
            if standing.any():
                self.resume.run(g, idx, standing, chunk)
                return
        group = self.dag.groups[g]
        todo = instances if self.control.limit is None else \
            self.control.in_time(g, instances, self.avg_task[g], self.avg_all)
        t0 = time.perf_counter()
        failed, ran = (self.runner.run_fn if group.kind == "fn" else self.commands.run_cmd)(
            group, todo, chunk)
        if ran:
            per_task = (time.perf_counter() - t0) / ran
            self.avg_task[g] = _running_mean(self.avg_task[g], per_task, ran)
            self.avg_all = _running_mean(self.avg_all, per_task, ran)
        if ran < len(instances):             # stopped or held back: the rest did not run
            self.control.not_run(self.journal, self.bases[g], instances[ran:],
                                 bool(self.guard.stop_signal), self.counts)
            instances = instances[:ran]
        self.finish(g, instances, failed)

    def finish(self, g: int, instances, failed: list, journal: bool = True) -> None:
        """After instances of group ``g`` ran (or were cached or failed unrun): publish their
        kept results and release their children (a child's start on another rank waits for
        nothing else), then journal and count them."""
        n = len(instances)
        if not n:
            return
        self.data.publish_locations()
        if self.dag.children[g]:        # first: the rest is this rank's own bookkeeping
            self.ready.around_release(g, self.release_children, g, instances, failed)
        group = self.dag.groups[g]
        if journal and self.journal.on:
            self.journal.finished(g, self.bases[g], instances, failed)
        self.unreported += n
        self.unreported_failed += len(failed)
        if group.options.splits is not None:
            at_home = int(np.count_nonzero(self.ready.homes(group, np.asarray(instances)) == self.rank))
            self.split_reads[0] += at_home
            self.split_reads[1] += n - at_home

    def release_children(self, g: int, instances, failed: list) -> None:
        """Count the children of finished instances down; queue those that became ready,
        but keep the first one not placed on another rank to run next (``keep_first``) when
        the DAG has one priority level (with several, it is queued, so that the board is read
        before it runs), even if older tasks wait in the queue here: depth first, as a
        work-stealing runtime runs the child and leaves the rest to thieves (in a tree whose
        leaves pile up here, a chain that queued its next link behind them lost it to a thief
        one step in ten, and each such loss costs the critical path a steal). When the one
        task of a chunk (``lone``) released nothing and nothing else waits here, ask for work
        at once (``ask_first``): in a stencil the rank whose parent ends last releases both children
        a few µs later, and a request that reaches it after that finds the task published
        (a steal, 20-25 µs later than an answer), not given."""
        keep = self.direct is None and self.ready.board is None
        if len(instances) == 1 and not failed:       # a DAG's hand-off
            early = self.lone and keep and self.reserving and self.reserved is None
            ready, skipped = self.release.finish_one(g, int(instances[0]), keep, early)
            idle = not ready and self.lone and keep and not self.queue.has_work()
            if self.release.reserved is not None:
                took_reserved(self, idle)
            if idle:
                self.journal.now[0] = -1          # the task has ended: not what a crash hits
                if self.reserved is None and not reserve(self):
                    ask_first(self)
        else:
            ready, skipped = release_all(self.release, g, instances, failed)
        if skipped:
            record_skipped(self, skipped)
        if not ready:
            return
        if self.direct is not None:
            self.ready.queue_runs([self.direct])
            self.direct = None
        elif keep:
            ready = keep_first(self, ready)
        for cg, cidx in ready:
            self.ready.queue_ready(cg, cidx)

    # ------------------------------------------------------------------ statistics
    def sample(self) -> None:
        """One sample of this rank (CPU %, RSS, I/O bytes) for the trace."""
        self.samples.append(self.sampler.sample())

    def stats(self) -> dict:
        """This rank's figures for ``summary.json``."""
        return rank_stats(self)


def rank_stats(e: "Engine") -> dict:
    """A rank's figures for ``summary.json``."""
    counts = e.records.counts()
    counts.update(e.counts.as_dict(), stopped=int(e.stopped), stop_signal=e.guard.stop_signal)
    first, last = e.records.first_start, e.records.last_end
    return dict(rank=e.rank, host=e.host, **counts, rows=len(e.records),
                steals=e.steals, stolen_tasks=e.stolen_tasks,
                busy_seconds=round(e.busy, 6),
                split_reads_local=e.split_reads[0], split_reads_remote=e.split_reads[1],
                **e.data.stats(),
                first_start=first if np.isfinite(first) else None,
                last_end=last if np.isfinite(last) else None,
                failures=e.files.failures_seen)


def claim_size(e: "Engine", first: int, available: int) -> int:
    """How many of ``available`` queued tasks to claim when task ``first`` comes next:
    ``CHUNK_SECONDS`` of work (``BATCH_SECONDS`` for a batched family) at the average
    task time of its group, or, for a plain task (a group of one), of all tasks this rank
    ran; 1 while that is unknown (a family's first tasks, say two long reducers released
    together, are not claimed by one rank); and never more than a 1/min(P, 16) share of
    ``available``, so idle ranks find some to steal (a thief takes half of what it finds,
    so a 1/16 share left behind is enough; a 1/P share would make every claim one task
    at thousands of ranks: ``docs/scale.md``)."""
    sharers = min(e.nranks, SHARE_RANKS)
    if available <= sharers:                         # a share of one task: no lookup
        return 1
    g = int(np.searchsorted(e.base, first, side="right")) - 1
    avg = e.avg_task[g]
    if avg != avg and e.dag.groups[g].size == 1:
        avg = e.avg_all
    if avg != avg:                                   # NaN: none has run here yet
        return 1
    share = max(1, available // sharers)
    return max(1, min(MAX_CHUNK, share, int(e.chunk_seconds[g] / max(avg, 1e-7))))


def steal_work(e: "Engine") -> bool:
    """Try a few random victims; queue what was taken on this rank (so it can be stolen on)."""
    if e.nranks == 1:
        return False
    for _ in range(min(e.nranks - 1, 4)):
        victim = random_other(e.rng, e.rank, e.nranks)
        got = e.queue.steal(victim)
        if got is None:
            continue
        e.steals += 1
        lone = lone_run(got)
        if lone is not None and keep_lone(e, lone, True):
            e.stolen_tasks += 1
        else:
            e.stolen_tasks += e.ready.keep_stolen(got)
        return True
    return False


def run_tasks(e: "Engine", chunk: Chunk) -> None:
    """``Engine.execute``'s run of one chunk's tasks, group by group."""
    tasks = chunk.tasks
    if isinstance(tasks, tuple):
        lo, hi = tasks
        if hi - lo == 1:                  # one task (a DAG's hand-off, kept or stolen)
            g = bisect.bisect_right(e.bases, lo) - 1
            e.run_group(g, (lo - e.bases[g],), chunk)
            return
        while lo < hi:
            g = bisect.bisect_right(e.bases, lo) - 1
            end = min(hi, e.bases[g + 1])
            first = e.bases[g]
            e.run_group(g, range(lo - first, end - first), chunk)
            lo = end
    elif len(tasks) == 1:                 # one task (a DAG's hand-off)
        gid = int(tasks[0])
        g = bisect.bisect_right(e.bases, gid) - 1
        e.run_group(g, (gid - e.bases[g],), chunk)
    else:
        groups = np.searchsorted(e.base, tasks, side="right") - 1
        cuts = np.flatnonzero(np.diff(groups)) + 1
        for seg in np.split(np.arange(len(tasks)), cuts):
            g = int(groups[seg[0]])
            e.run_group(g, tasks[seg] - e.base[g], chunk)


def kept_next(e: "Engine") -> Chunk | None:
    """The task the chunk just run kept to run next (``direct``), to run at once, unless the
    loop must look first: the run ends or stops, finished tasks are due to be reported, or
    tasks of several ranks are gathered (``gang``)."""
    if e.direct is None or e.runner.gang is not None or e.ending() \
            or time.monotonic() - e.reported_at > REPORT_SECONDS:
        return None
    if e.progress is not None:
        e.progress.tick(working=True)
    e.rounds += 1
    return e.take_direct()


def record_skipped(e: "Engine", skipped: list) -> None:
    """Record upstream-failed instances (their children were already released by Release)."""
    now = time.time()
    for g, idx in skipped:
        gids = e.base[g] + idx
        e.records.add_run(gids, UPSTREAM_FAILED, np.full(len(gids), now), np.full(len(gids), now))
        e.unreported += len(gids)
        e.unreported_failed += len(gids)


def send_home(e: "Engine", home: int, g: int, i: int) -> bool:
    """Hand released instance ``i`` of group ``g`` to its home rank's inbox (``Release``
    calls it the moment the instance is ready); False if the inbox is full."""
    gid = e.bases[g] + i
    return e.queue.push_remote(home, gid, gid + 1) > gid


def publish_one(e: "Engine", g: int, i: int) -> None:
    """Give released instance ``i`` of group ``g`` to the idle rank that asked for a task,
    else queue it here for thieves (``Release`` calls it the moment the instance is ready,
    while this rank keeps a sibling to run next). Queued on the ring: singles published one
    after another share its one slot, so a thief takes half of them in one steal, and a
    scan of the slots (``has_work``) stays short."""
    gid = e.bases[g] + i
    if not give(e.queue, gid):
        e.queue.push_ids((gid,), e.ready.priority[g])


def ask_first(e: "Engine") -> None:
    """Ask a rank for its next released task (``stealq.ask``) the moment nothing is left
    here, before the first steal: a steal reads the victim's queue before it asks, which
    lands the request after the victim has published the task it could have given. The rank
    asked is the one that answered the last request, else a random one. Only with one
    priority level: ``give`` answers from the hand-off's ``publish`` hook."""
    q = e.queue
    q.may_ask = e.spare_cores            # as the Backoff of the idle time to come will
    if e.nranks > 1 and q.may_ask and (q.asked < 0 or q.answered) and e.ready.board is None \
            and e.reserved is None and not q.has_mail() and not q.has_work():
        ask(q, q.asked if q.asked >= 0 else random_other(e.rng, e.rank, e.nranks))


def write_journal(e: "Engine") -> None:
    """Journal the ends of the tasks run since it last did (``ChunkJournal.chunk_done``)."""
    e.journal.chunk_done()
    e.journaled_at = time.perf_counter()


def idle_bookkeeping(e: "Engine") -> None:
    """What an idle rank does once it found no work: journal the ends of the tasks it ran, if
    it has not yet (``write_journal``), and report them. Not in its first round when it
    reserved a child (``reserve``): it watches for that first."""
    if e.journal.pending_ends():
        write_journal(e)
    e.report_finished()


def reserve(e: "Engine") -> bool:
    """Reserve a child that the lone task just ended counted down but did not release (its
    count still above zero: it waits for a task running elsewhere), to run it here as soon
    as that task ends, instead of asking a rank for a task (``ask_first``); whether it did.

    In a stencil at width 2 both tasks of a step wait for both of the step before, so the
    rank whose parent ends first has nothing to run. Asked, the rank whose parent ends last
    would put one child in this rank's ``MAIL`` word (an atomic each side, and this rank's
    next look after it). Reserved, that rank leaves the child alone (``Release``: a count
    word that reaches zero with the ``RESERVED`` mark is neither ready nor upstream-failed
    there) and this rank, watching the word, sees it reach zero and runs the child. Only
    with a core for each rank (it watches while it spins), one priority level and no gangs
    (checked by the caller: ``keep``, ``lone``), a child placed nowhere, and when the ranks
    share one node's memory: on the network path a count-down on this rank's words waits
    for its MPI calls, which a rank watching a word with plain reads does not make (there
    it asks, as before). One compare-and-swap: it fails if the count moved since (the child
    may be ready already)."""
    if not e.reserving:      # spare cores, several ranks, one node's memory
        return False
    layout = e.layout
    for child, j, count in e.release.waiting:
        if e.placed[child]:
            continue
        rank, pos = layout.owner(child, j)
        word = int(layout.count_words(child, rank, pos))
        if e.mem.cas(rank, word, count, count | RESERVED) == count:
            e.reserved = (child, j, rank, word)
            return True
    return False


def took_reserved(e: "Engine", idle: bool) -> None:
    """Take over the child that the lone task's count-down reserved (``Release.finish_one``
    with ``reserve``: in a stencil at width 2, the rank whose task ends first): the
    reservation of ``reserve`` without its window, in which the other parent's count-down
    could land first. Handed back at once unless the rank is ``idle`` (the count-down
    released nothing here and no work waits here)."""
    assert e.release.reserved is not None
    e.reserved, e.release.reserved = e.release.reserved, None
    if not idle:
        cancel_reserved(e)


def reserved_word(e: "Engine") -> int:
    """The reserved child's count word as it is now."""
    assert e.reserved is not None
    _, _, rank, word = e.reserved
    return int(e.mem.local[word]) if rank == e.rank else int(e.mem.get(rank, word, 1)[0])


def take_reserved(e: "Engine") -> Chunk | None:
    """The reserved child as a chunk to run, once its count is zero (and the reservation
    is over); None while it waits, or if a parent failed (then recorded upstream-failed
    here and its own children released, as its releaser would have)."""
    word = reserved_word(e)
    if word & COUNT_MASK:
        return None
    return reserved_ready(e, word)


def reserved_ready(e: "Engine", word: int) -> Chunk | None:
    """End the reservation of a child whose count reached zero (``word``); the child as a
    chunk to run, or None if it is upstream-failed (recorded, its children released)."""
    assert e.reserved is not None
    child, j, _, _ = e.reserved
    e.reserved = None
    if word & POISON_BITS:
        bad = np.array([j], dtype=np.int64)
        ready, skipped = e.release.finish(child, bad, np.ones(1, dtype=bool))
        record_skipped(e, [(child, bad), *skipped])
        for cg, cidx in ready:
            e.ready.queue_ready(cg, cidx)
        return None
    gid = e.bases[child] + j
    return Chunk((gid, gid + 1), time.time(), False)


def cancel_reserved(e: "Engine") -> None:
    """Take the reservation back (this rank found other work, stops spinning or leaves):
    clear the mark unless the count reached zero meanwhile; then the child is this rank's
    to release, and it is queued here as any released task."""
    assert e.reserved is not None
    _, _, rank, at = e.reserved
    word = reserved_word(e)
    while word & COUNT_MASK:
        old = e.mem.cas(rank, at, word, word & ~RESERVED)
        if old == word:
            e.reserved = None
            return
        word = old
    chunk = reserved_ready(e, word)
    if chunk is not None:
        e.ready.queue_runs([chunk.tasks])


def watch_reserved(e: "Engine", until: float) -> None:
    """``Backoff.watch_mail`` for a reserved child: watch its count word until it reaches
    zero (or ``until``)."""
    clock = time.perf_counter
    while reserved_word(e) & COUNT_MASK and clock() < until:
        pass


def keep_lone(e: "Engine", run: tuple, stolen: bool) -> bool:
    """Keep the run ``(lo, hi)`` for rank ``e`` to run next (its ``direct``) if it is one task,
    the DAG has one priority level and nothing else waits there; returns whether it did."""
    lo, hi = run
    if hi - lo != 1 or e.ready.board is not None or e.direct is not None or e.queue.has_work():
        return False
    e.direct, e.direct_stolen = run, stolen
    return True


def keep_first(e: "Engine", ready: list) -> list:
    """Keep the first task of ``ready`` (``[(group, instances)]``, released by rank ``e``)
    that is not placed elsewhere (its group has no ``rank``, or its home is ``e``) as ``e``'s
    direct, to run next without queueing it (a claim would cost an atomic, and race the
    thieves taking the others: a thief taking a task placed here while its sibling placed on
    the thief waits in the thief's ``MAIL`` serialises the two); returns the rest. Not when
    more than ``KEEP_MAX`` tasks were released: those are claimed in chunks."""
    if len(ready) == 1:
        cg, cidx = ready[0]
        if len(cidx) == 1 and not e.placed[cg]:       # a chain's or a stencil's next task
            gid = e.bases[cg] + int(cidx[0])
            e.direct, e.direct_stolen = (gid, gid + 1), False
            return []
    released = len(ready[0][1]) if len(ready) == 1 else sum(len(cidx) for _, cidx in ready)
    if released > KEEP_MAX:
        return ready
    for k, (cg, cidx) in enumerate(ready):
        if not e.placed[cg]:
            at = 0
        else:
            ids = cidx.tolist()
            at = next((p for p, j in enumerate(ids) if e.layout.home_of(cg, j) == e.rank), -1)
        if at >= 0:
            gid = e.bases[cg] + int(cidx[at])
            e.direct, e.direct_stolen = (gid, gid + 1), False
            if len(cidx) == 1:
                rest = []
            elif at == 0:
                rest = [(cg, cidx[1:])]
            else:
                rest = [(cg, np.array(ids[:at] + ids[at + 1:], dtype=np.int64))]
            return ready[:k] + rest + ready[k + 1:]
    return ready


def lone_run(got: tuple) -> tuple | None:
    """The run ``(lo, hi)`` of what ``StealQueue.steal`` took if it is a single run."""
    prio, work = got
    if isinstance(work, tuple):
        return work
    if prio is None:
        return work[0] if len(work) == 1 else None
    return (int(work[0]), int(work[0]) + 1) if len(work) == 1 else None


def release_all(release: Release, g: int, instances, failed: list) -> tuple:
    """``Release.finish`` for instances of group ``g`` (``failed``: the positions that
    failed); returns its ``(ready, skipped)``."""
    idx = np.asarray(instances, dtype=np.int64) if not isinstance(instances, range) \
        else np.arange(instances.start, instances.stop, dtype=np.int64)
    mask = None
    if failed:
        mask = np.zeros(len(idx), dtype=bool)
        mask[failed] = True
    return release.finish(g, idx, mask)


def _running_mean(avg: float, per_task: float, ran: int) -> float:
    """The next average task time: a chunk of 8 or more replaces it, a smaller one (noisier)
    moves it halfway; NaN (nothing timed yet) is replaced."""
    return per_task if ran >= 8 or avg != avg else 0.5 * (avg + per_task)
