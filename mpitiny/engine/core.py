"""The SPMD engine behind ``mpitiny run``: every rank is a worker, a queue and a metadata server.

Start-up (every rank, no master): load and check the same dag.json, compute the same
``Layout`` (who holds which gate and count words), allocate one RMA window each, write its own
initial words, open one passive ``Lock_all`` epoch for the whole run, and queue its share of the
root tasks (rank r takes the r-th of P equal slices of all root instances).

The worker loop (``Engine.work``): claim a chunk of this rank's own highest-priority ready
tasks; if there are none, steal about half of another rank's (random victims, one-sided); if
nothing is found, report finished tasks to the run-wide counter and back off. Running a chunk
records each task, then ``Release.finish`` counts the children down and queues those that
became ready on this rank.

Chunks: the owner claims as many tasks as fit in ``CHUNK_SECONDS`` (5 ms) at the running
average time of a task of the group it claims from (1 for long tasks, up to 4096 for null tasks;
for plain tasks, groups of one, the average over all tasks; 1 while a family is new to this
rank), and at most a 1/P share of the run it claims from (so two long reducers released
together are not taken by one rank), so per-task cost stays in the microseconds while
everything not yet claimed stays stealable.

Batches: a family whose function has a batch form (``mpitiny.with_batch``) runs each chunk of
two or more instances with one call of it (``run_batch``), and its chunks hold
``BATCH_SECONDS`` (20 ms) of work: tiny tasks share the call's fixed cost (a wordcount map of
100 KiB spends ~0.1 ms in numpy calls whatever its size), and a combiner can merge their
outputs. The instances stay tasks: claimed, stolen, recorded and released one by one; their
kept values are journaled as one unit. ``--no-batch`` calls the function once per task.

Termination without a coordinator: every rank adds the number of tasks it finished to one
counter word (on rank 0's window, by atomic add, in batches, when it runs out of work). The
rank whose add makes the counter equal to the number of tasks sets the *done* word of every
rank; idle ranks read only their own word.

Errors: a task that raises (or exits non-zero) is retried up to its ``retries``, then recorded
as failed with its traceback, host, rank and attempt; its descendants are reported
upstream-failed; the run goes on (``--max-fails N`` ends it after N failed tasks). Anything that
goes wrong inside the engine itself aborts the whole MPI job (``MPI_Abort``) after printing the
traceback once, so a run never hangs.

Reliability (``mpitiny.io.journal``, ``mpitiny.engine.guard``): every rank journals what it starts and
finishes (memory-mapped, synced every few seconds and at exit). A run directory whose journals
belong to the same DAG and whose last incarnation did not complete is *resumed*: journaled-done
tasks are not run again but pass through the worker loop as "cached" (their kept values are
reloaded for their children, their rows have attempt 0), so the DAG's counts and the outputs
come out exactly as in an uninterrupted run, with any number of ranks. Tasks that were running
when a rank died have *crashed*: they run alone in a child process and fail after
``max_crashes``. SIGTERM / SIGINT / SIGUSR1 stop the run: the rank interrupts its task, sets
every rank's done word to ``STOP_SIGNAL``, the journals are synced and the run exits with
``EXIT_RESUMABLE`` (75).
"""
from __future__ import annotations

import gc
import json
import signal
import os
import random
import socket
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass

import numpy as np

from mpitiny.queue.layout import LOC_WORDS, Layout
from mpitiny.dag.model import DAG
from mpitiny.queue.release import Release
from mpitiny.engine.guard import Guard, StopRun, announce_ready, parse_fault, run_isolated
from mpitiny.errors import (EXIT_INTERNAL, EXIT_OK, EXIT_RESUMABLE, EXIT_TASKS_FAILED, BadInput,
                            InternalError, MpitinyError)
from mpitiny.io import journal as jnl
from mpitiny.io import rundir
from mpitiny.io.commit import write_atomic
from mpitiny.io.rundir import DONE, FAILED, UPSTREAM_FAILED
from mpitiny.queue.store import ResultStore, encode
from mpitiny.api import BATCH_ATTR
from mpitiny.engine.progress import REPORT_SECONDS, Progress
from mpitiny.queue.memory import RmaBytes, RmaMemory
from mpitiny.queue.stealq import StealQueue, region_size
from mpitiny import state
from mpitiny.queue.state import StateStore

CTRL_DONE = 0        # this rank's end flag: ALL_FINISHED, STOP_SIGNAL or STOP_MAX_FAILS
CTRL_FINISHED = 1    # on rank 0: how many tasks have finished, run-wide
CTRL_FAILED = 2      # on rank 0: how many of them failed or were skipped (for progress)
CTRL_FAILED_TASKS = 3  # on rank 0: how many failed (for --max-fails)
CTRL_WORDS = 4
ALL_FINISHED, STOP_SIGNAL, STOP_MAX_FAILS = 1, 2, 3
NORMAL, CACHED, SUSPECT, DOOMED = 0, 1, 2, 3    # a task's standing in a resumed run
CHUNK_SECONDS = 0.005
BATCH_SECONDS = 0.02      # a batched family's chunk: one call, so its fixed cost is shared
MAX_CHUNK = 4096
QUEUE_SLOTS, INBOX_WORDS, RING_WORDS = 128, 1024, 1 << 16
STORE_OBJECTS = 1 << 16   # kept outputs per rank in its window at once (more go to disk)
RESULT_COPY_LIMIT = 64 << 10   # values other tasks read go to results/ only if JSON and small
SAMPLE_SECONDS = 1.0      # psutil samples of each rank for the trace
PREFETCH_MIN_BYTES = 1 << 20   # smaller splits are read by their task, without a thread
SUMMARY_GROUPS = 1000   # larger DAGs keep their gid -> id table in tasks.h5 only


@dataclass
class RunOptions:
    """How ``mpitiny run`` runs a DAG (its command-line options; see ``mpitiny run --help``)."""

    result_mem: int = 256 << 20
    state_mem: int = 16 << 20
    mem_limit: int | None = None
    quiet: bool = False
    progress_interval: float | None = None
    trace: bool = False
    retries: int = 0                 # run-wide default of a task's "retries"
    timeout: float | None = None     # run-wide default of a task's "timeout" (seconds)
    max_fails: int | None = None     # end the run after this many failed tasks
    max_crashes: int = 3             # a task that crashed its rank this often fails
    journal: bool = True
    batch: bool = True               # call a family's batch form (``mpitiny.with_batch``)
    resume: str = "auto"             # "auto": if the journals are of this DAG and unfinished;
                                     # "yes": also after a complete run; "no": start over


class Engine:
    """One rank's share of a run."""

    def __init__(self, comm, dag: DAG, run_dir: str, opts: RunOptions | None = None,
                 fault: str | None = None, incarnation: int = 1,
                 resumed: "jnl.Resumed | None" = None) -> None:
        opts = opts or RunOptions()
        self.opts = opts
        result_mem, state_mem, mem_limit = opts.result_mem, opts.state_mem, opts.mem_limit
        self.comm = comm
        self.rank = comm.Get_rank()
        self.nranks = comm.Get_size()
        self.dag = dag
        self.run_dir = run_dir
        self.host = socket.gethostname()
        node = comm.Split_type(_shared_type(), key=self.rank)
        self.ranks_here = node.Get_size()
        node.Free()
        qwords = region_size(QUEUE_SLOTS, INBOX_WORDS, RING_WORDS)
        self.layout = Layout(dag, self.nranks, CTRL_WORDS + qwords)
        self.mem = RmaMemory(comm, int(self.layout.nwords[self.rank]))
        self.queue = StealQueue(self.mem, CTRL_WORDS, QUEUE_SLOTS, INBOX_WORDS, RING_WORDS)
        self.release = Release(self.layout, self.mem)
        self.layout.init_words(self.rank, self.mem.local)
        self.needs_heap = bool(self.layout.has_locs.any())
        self.heap = RmaBytes(comm, result_mem) if self.needs_heap else None
        self.store = None
        if self.needs_heap:
            self.object_counts = RmaMemory(comm, ResultStore.words(STORE_OBJECTS))
            import psutil
            rss_limit = int(0.8 * psutil.virtual_memory().total / self.ranks_here)
            self.store = ResultStore(self.rank, self.heap, self.object_counts, STORE_OBJECTS,
                                     os.path.join(run_dir, "spill"), mem_limit, rss_limit)
        slots = 1 << max(10, (state_mem // 256).bit_length() - 1)
        self.state_mem = RmaMemory(comm, StateStore.words(slots))
        self.state_heap = RmaBytes(comm, state_mem)
        state.use(StateStore(self.state_mem, 0, slots, self.state_heap))
        self.pending_locs: list = []
        self._readers: dict = {}
        self._split_readers: dict = {}    # group -> its Splits (opened once per run)
        self.files = rundir.RankFiles(run_dir, self.rank)
        self.records = rundir.Records(self.rank, rundir.rank_file(run_dir, "tasks", self.rank, ".rows"))
        self.base = dag.base
        self.priority = np.array([g.priority for g in dag.groups], dtype=np.int64)
        self.avg_task = np.full(len(dag.groups), np.nan)   # seconds per task, by group
        self.batch_family = np.array([self.batched(g) for g in dag.groups], dtype=bool)
        self.chunk_seconds = np.where(self.batch_family, BATCH_SECONDS, CHUNK_SECONDS)
        self.avg_all = float("nan")                        # and over all groups
        self.unreported = 0
        self.unreported_failed = 0
        self.reported_at = time.monotonic()
        self.progress = None          # rank 0's Progress, set by _run
        self.batch_info = (0.0, False)  # (queued at, stolen?) of the batch being run
        import psutil
        self.process = psutil.Process()
        self.process.cpu_percent(None)
        self.samples: list = []
        self.sampled_at = time.monotonic()
        self.steals = 0
        self.stolen_tasks = 0
        self.split_reads = [0, 0]    # split tasks run on their home rank / elsewhere
        self.busy = 0.0
        self.rng = random.Random(12345 + 7919 * self.rank)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        self.max_sleep = 1e-4 if self.ranks_here <= (cores or 1) else 1e-3
        os.environ["MPITINY_RANK"] = str(self.rank)          # for fn tasks and their children
        os.environ["MPITINY_RUN_DIR"] = os.path.abspath(run_dir)
        os.environ["MPITINY_ATTEMPT"] = "1"
        self.attempt = 1        # of the fn task running now (MPITINY_ATTEMPT)
        self.cmd_env = None
        self.direct = None      # one released task this rank runs next without queueing it
        self.fault = parse_fault(fault, self.rank)
        self.incarnation = incarnation
        self.journal = None     # opened by open_journal, on every rank together
        self.synced_at = time.monotonic()
        self.journal_pending: list = []     # (group, first gid, instances, failed) of this chunk
        self.resumed = resumed
        self.standing = None    # per gid NORMAL / CACHED / SUSPECT / DOOMED, when resuming
        if resumed is not None:
            standing = np.zeros(dag.total, dtype=np.int8)
            standing[resumed.crashes > 0] = SUSPECT
            standing[resumed.crashes >= opts.max_crashes] = DOOMED
            standing[resumed.done] = CACHED
            self.standing = standing if standing.any() else None
        self.guard = Guard()
        self.stopped = 0        # why this rank left the worker loop early (STOP_*), else 0
        self.counts = {"cached": 0, "retried": 0, "isolated": 0, "crashed": 0,
                       "batches": 0, "batched": 0, "unbatched": 0}
        self._unbatched_families: set = set()
        _short_timer_slack()

    # ------------------------------------------------------------------ start and finish
    def open_journal(self) -> None:
        """Create this rank's journal; if any rank cannot (a full or read-only run directory),
        every rank raises the same one-line error before a task runs."""
        error = None
        if self.opts.journal:
            try:
                self.journal = jnl.Journal(self.run_dir, self.incarnation, self.rank)
            except OSError as exc:
                error = (f"run directory {os.path.abspath(self.run_dir)}: cannot create the "
                         f"journal: {exc.strerror or exc} (rank {self.rank} on {self.host})")
        errors = [e for e in self.comm.allgather(error) if e]
        if errors:
            raise BadInput(errors[0])

    @property
    def windows(self) -> list:
        """Every RMA window of this run (metadata and queues, state store, kept outputs)."""
        kept = [self.heap, self.object_counts] if self.heap is not None else []
        return [self.state_heap, self.state_mem, *kept, self.mem]

    def start(self) -> None:
        """Open the RMA epochs, then queue this rank's slice of the root tasks."""
        for window in self.windows:
            window.start()
        runs = []
        for g in self.dag.groups:
            if not g.deps and g.size and self.placed(g):
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
        # Each rank takes an equal block of every long run (a family) and every P-th task of
        # the shorter ones, so that each starts with the same mix of priorities and lengths.
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
        self.comm.Barrier()

    def stop(self) -> None:
        if self.journal is not None:
            self.files.flush()
            self.journal.close()
        state.use(None)
        if self.store is not None:
            self.store.close()
        for window in self.windows:
            window.stop()
        self.files.close()

    def free(self) -> None:
        for window in self.windows:
            window.free()

    # ------------------------------------------------------------------ the worker loop
    def work(self) -> None:
        """Run tasks until every task of the DAG has finished on some rank.

        Meanwhile Python's ``sys.stdout``/``sys.stderr`` (what ``fn`` tasks print) go to
        ``logs/rank-R.fn.out``/``.fn.err``, so that tasks never flood the terminal.
        """
        saved = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = self.files.python_streams()
        try:
            while (work := self.next_work()) is not None:
                self.execute(work)
        finally:
            sys.stdout, sys.stderr = saved

    def next_work(self):
        """This rank's next chunk: its own, or stolen; None once the whole run is finished
        (or stopped: by a signal on some rank, or by ``--max-fails``)."""
        if self.mem.local[CTRL_DONE] or self.guard.stop_signal:
            return self.leave()
        if self.direct is not None:
            work, self.direct = self.direct, None
            self.batch_info = (time.time(), False)
            return work
        idle_rounds = 0
        while True:
            self.queue_runs(self.queue.take_inbox())
            work = self.queue.claim(self.chunk_size)
            if work is not None:
                self.batch_info = self.queue.claimed_info
                return work
            if self.steal():
                continue
            self.report_finished()
            if self.mem.local[CTRL_DONE] or self.guard.stop_signal:
                return self.leave()
            if self.progress is not None:
                self.progress.tick()
            idle_rounds += 1
            if idle_rounds > 20:
                time.sleep(min(self.max_sleep, 1e-6 * (1 << min(idle_rounds - 20, 10))))

    def leave(self) -> None:
        """Why the loop ends: all finished, or a stop (which this rank then spreads)."""
        if self.guard.stop_signal and not self.stopped:
            self.request_stop(STOP_SIGNAL)
        done = int(self.mem.local[CTRL_DONE])
        if done != ALL_FINISHED:
            self.stopped = self.stopped or done
        self.report_finished()
        return None

    def request_stop(self, why: int) -> None:
        """End the run early on every rank (unless it has just finished): one CAS per rank."""
        self.stopped = why
        for r in range(self.nranks):
            self.mem.cas(r, CTRL_DONE, 0, why)

    def batched(self, group) -> bool:
        """Whether this run calls ``group``'s batch form (``mpitiny.with_batch``) for its
        chunks: not under ``--no-batch``, nor with a time limit per task."""
        return (self.opts.batch and group.kind == "fn"
                and getattr(group.function, BATCH_ATTR, None) is not None
                and not group.options.get("timeout", self.opts.timeout))

    def chunk_size(self, first: int, available: int) -> int:
        """How many of ``available`` queued tasks to claim when task ``first`` comes next:
        ``CHUNK_SECONDS`` of work (``BATCH_SECONDS`` for a batched family) at the average
        task time of its group, or, for a plain task
        (a group of one), of all tasks this rank ran; 1 while that is unknown (a family's
        first tasks, say two long reducers released together, are not claimed by one rank);
        and never more than a 1/P share of ``available``, so idle ranks find some to steal."""
        if available <= self.nranks:                     # a share of one task: no lookup
            return 1
        g = int(np.searchsorted(self.base, first, side="right")) - 1
        avg = float(self.avg_task[g])
        if avg != avg and self.dag.groups[g].size == 1:
            avg = self.avg_all
        if avg != avg:                                   # NaN: none has run here yet
            return 1
        share = max(1, available // self.nranks)
        return max(1, min(MAX_CHUNK, share, int(self.chunk_seconds[g] / max(avg, 1e-7))))

    def steal(self) -> bool:
        """Try a few random victims; queue what was taken on this rank (so it can be stolen on)."""
        if self.nranks == 1:
            return False
        for _ in range(min(self.nranks - 1, 4)):
            victim = self.rng.randrange(self.nranks - 1)
            victim += victim >= self.rank
            got = self.queue.steal(victim)
            if got is None:
                continue
            prio, work = got
            self.steals += 1
            if isinstance(work, tuple):
                self.stolen_tasks += work[1] - work[0]
                self.queue.push_range(work[0], work[1], prio, stolen=True)
            elif prio is None:
                self.stolen_tasks += sum(hi - lo for lo, hi in work)
                self.queue_runs(work, stolen=True)
            else:
                self.stolen_tasks += len(work)
                self.queue.push_ids(work, prio, stolen=True)
            return True
        return False

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

    def report_finished(self) -> None:
        """Add this rank's newly finished tasks to the run-wide counter; maybe end the run."""
        now = time.monotonic()
        if now - self.sampled_at > SAMPLE_SECONDS:
            self.sampled_at = now
            self.sample()
        self.reported_at = now
        if self.journal is not None and now - self.synced_at > jnl.SYNC_SECONDS:
            self.sync_journal()
        if not self.unreported:
            return
        n, self.unreported = self.unreported, 0
        if self.unreported_failed:
            self.mem.add(0, CTRL_FAILED, self.unreported_failed)
            self.unreported_failed = 0
        before = self.mem.fetch_add(0, CTRL_FINISHED, n)
        if before + n == self.dag.total:
            for r in range(self.nranks):
                self.mem.cas(r, CTRL_DONE, 0, ALL_FINISHED)

    def sync_journal(self) -> None:
        """Results and failures to the OS, then the journal (and kept values) to disk."""
        self.synced_at = time.monotonic()
        self.files.flush()
        self.journal.sync()

    # ------------------------------------------------------------------ running tasks
    def execute(self, work) -> None:
        self.queue.set_busy(True)
        if self.journal is not None:
            self.journal_runs(jnl.START, 0, range(*work) if isinstance(work, tuple) else work)
        t0 = time.perf_counter()
        if isinstance(work, tuple):
            lo, hi = work
            while lo < hi:
                g = int(np.searchsorted(self.base, lo, side="right")) - 1
                end = min(hi, int(self.base[g + 1]))
                first = int(self.base[g])
                self.run_group(g, range(lo - first, end - first))
                lo = end
        else:
            groups = np.searchsorted(self.base, work, side="right") - 1
            cuts = np.flatnonzero(np.diff(groups)) + 1
            for seg in np.split(np.arange(len(work)), cuts):
                g = int(groups[seg[0]])
                self.run_group(g, work[seg] - self.base[g])
        if self.journal is not None:
            self.journal_finished()
        dt = time.perf_counter() - t0
        self.queue.set_busy(False)
        self.busy += dt
        if time.monotonic() - self.reported_at > REPORT_SECONDS:
            self.report_finished()
        if self.progress is not None:
            self.progress.tick(working=True)

    def run_group(self, g: int, instances) -> None:
        """Run instances of one group, record and journal them, release their children."""
        group = self.dag.groups[g]
        n = len(instances)
        if self.fault is not None:
            head = self.fault.take(n)
            if head is not None:               # the fault is due within this chunk
                fault, self.fault = self.fault, None
                if head:
                    self.run_group(g, instances[:head])
                fault.fire()
        first = int(self.base[g])
        if self.standing is not None:
            standing = self.standing[first + np.asarray(instances)]
            if standing.any():
                self.run_special(g, np.asarray(instances, dtype=np.int64), standing)
                return
        t0 = time.perf_counter()
        failed, ran = (self.run_fn if group.kind == "fn" else self.run_cmd)(group, instances)
        if ran:
            per_task = (time.perf_counter() - t0) / ran
            self.avg_task[g] = _running_mean(float(self.avg_task[g]), per_task, ran)
            self.avg_all = _running_mean(self.avg_all, per_task, ran)
        if ran < n:                                  # stopped: the rest did not run
            if self.journal is not None:
                self.journal_runs(jnl.STOPPED, first, instances[ran:])
            instances = instances[:ran]
        self.finish_run(g, instances, failed)

    def finish_run(self, g: int, instances, failed: list, journal: bool = True) -> None:
        """After instances of group ``g`` ran (or were cached or failed unrun): journal them,
        count them, publish their kept results and release their children."""
        n = len(instances)
        if not n:
            return
        group = self.dag.groups[g]
        first = int(self.base[g])
        if journal and self.journal is not None:
            self.journal_pending.append((g, first, instances, failed))
        self.unreported += n
        self.unreported_failed += len(failed)
        if failed and self.opts.max_fails:
            total = self.mem.fetch_add(0, CTRL_FAILED_TASKS, len(failed)) + len(failed)
            if total >= self.opts.max_fails:
                self.request_stop(STOP_MAX_FAILS)
        if "splits" in group.options:
            at_home = int(np.count_nonzero(self.homes(group, np.asarray(instances)) == self.rank))
            self.split_reads[0] += at_home
            self.split_reads[1] += n - at_home
        self.publish_locations()
        if self.dag.children[g]:
            idx = np.asarray(instances, dtype=np.int64) if not isinstance(instances, range) \
                else np.arange(instances.start, instances.stop, dtype=np.int64)
            mask = None
            if failed:
                mask = np.zeros(n, dtype=bool)
                mask[failed] = True
            ready, skipped = self.release.finish(g, idx, mask)
            self.skip(skipped)
            if (len(ready) == 1 and len(ready[0][1]) == 1 and self.direct is None
                    and not self.placed(self.dag.groups[ready[0][0]])
                    and not self.queue.has_work()):
                self.direct = self.base[ready[0][0]] + ready[0][1]
                return
            if self.direct is not None:
                self.queue_ids(self.direct)
                self.direct = None
            for cg, cidx in ready:
                self.queue_ready(cg, cidx)

    def journal_finished(self) -> None:
        """DONE / FAILED records of the chunk just run, after its results and kept values
        reached the OS (so a record never names what a crash could still lose)."""
        pending, self.journal_pending = self.journal_pending, []
        self.files.flush_results()
        self.journal.write_values()
        singles = []
        for g, first, instances, failed in pending:
            consumed = self.layout.has_locs[g]       # their DONE records came with the values
            if not failed and len(instances) == 1:
                if not consumed:
                    singles.append(first + int(instances[0]))
                continue
            ok = None
            if failed:
                ok = np.ones(len(instances), dtype=bool)
                ok[failed] = False
                self.journal_runs(jnl.FAILED, first, instances, ~ok)
            if not consumed:
                self.journal_runs(jnl.DONE, first, instances, ok)
        if singles:
            self.journal_runs(jnl.DONE, 0, singles)

    def journal_runs(self, kind: int, first: int, instances, mask=None) -> None:
        """Journal records for instances (a range: one record; else one per contiguous run
        or per task)."""
        if mask is None:
            if isinstance(instances, range):
                if len(instances):
                    self.journal.add(kind, first + instances.start, first + instances.stop)
                return
            if len(instances) == 1:
                gid = first + int(instances[0])
                self.journal.add(kind, gid, gid + 1)
                return
        gids = first + np.asarray(instances, dtype=np.int64)
        if mask is not None:
            gids = gids[mask]
        if len(gids) and int(gids[-1]) - int(gids[0]) == len(gids) - 1 and \
                (len(gids) < 3 or np.all(np.diff(gids) == 1)):
            self.journal.add(kind, int(gids[0]), int(gids[-1]) + 1)
        else:
            self.journal.add_ids(kind, gids)

    def run_fn(self, group, instances) -> tuple:
        """Call ``group.function`` for each instance in this process.

        Returns the positions that failed and how many instances ran (fewer than all when a
        stop request interrupted the chunk)."""
        fn = group.function
        const = group.constant_call()
        first = int(self.base[group.index])
        keep = self.layout.has_locs[group.index]
        inputs = group.wants_inputs
        timeout = group.options.get("timeout", self.opts.timeout)
        retries = group.options.get("retries", self.opts.retries)
        guard = self.guard
        starts, ends, failed = [], [], []
        attempts: dict = {}
        ran = len(instances)
        clock = time.time
        splits = self.split_reader(group)
        read_sizes = [] if splits is not None else 0
        prefetched: dict = {}      # inputs a failed batch read: not read again (counted once)
        if len(instances) > 1 and self.batch_family[group.index]:
            done = self.run_batch(group, instances, getattr(fn, BATCH_ATTR), splits is not None,
                                  prefetched)
            if done is not None:
                return done
        # Read the next split in the background while a task computes; the task reads its
        # own first split itself (a thread's hand-off costs more than reading a small split).
        prefetch = splits is not None and splits.chunk_bytes >= PREFETCH_MIN_BYTES
        upcoming = iter(instances)
        if prefetch:
            next(upcoming, None)
        for k, i in enumerate(instances):
            i = int(i)
            if prefetch:
                following = next(upcoming, None)
                if following is not None:
                    splits.prefetch(int(following))      # read while task i computes
            exc = None
            fetched = None
            try:
                args, kwargs = const if const is not None else group.call_args(i)
                if inputs:
                    fetched = prefetched.pop(i) if i in prefetched else self.fetch_inputs(group, i)
                    kwargs = dict(kwargs, inputs=fetched)
                if splits is not None:
                    read_before = split_bytes()
                t0 = clock()
                starts.append(t0)
                if timeout:
                    value = guard.call(fn, args, kwargs, timeout)
                else:
                    guard.in_task = True
                    value = fn(*args, **kwargs)
                    guard.in_task = False
                t1 = clock()
                if splits is not None:
                    read_sizes.append(split_bytes() - read_before)
                if value is not None or keep:
                    self.store_result(group, i, first + i, value)
            except StopRun:
                exc = StopRun
            except (Exception, SystemExit, KeyboardInterrupt) as failure:
                guard.in_task = False
                exc = self.retry_fn(group, i, failure, retries, timeout, attempts, k, fetched) \
                    if retries else failure
                if exc is not StopRun:
                    t1 = clock()
                    if len(starts) == k:
                        starts.append(t1)
                    if splits is not None and len(read_sizes) == k:
                        read_sizes.append(0)
                    if exc is not None:
                        failed.append(k)
                        self.fail(first + i, group.instance_id(i), exc, t1,
                                  attempt=attempts.get(k, 1))
            if exc is StopRun:                    # instances k and after did not run
                guard.in_task = False
                del starts[k:]
                if splits is not None:
                    del read_sizes[k:]
                ran = k
                break
            ends.append(t1)
        if not ran:
            return failed, 0
        attempt = 1
        if attempts:
            attempt = np.ones(ran, dtype=np.int16)
            attempt[list(attempts)] = list(attempts.values())
        self.record_ran(first, instances[:ran], failed, starts, ends, attempt, read_sizes)
        return failed, ran

    def record_ran(self, first: int, run, failed: list, starts, ends, attempt=1,
                   bytes_read=0) -> None:
        """Task rows for the instances ``run`` (of the group whose first task id is
        ``first``) that a chunk of this rank ran: done, or failed at positions ``failed``."""
        status = DONE
        if failed:
            status = np.full(len(run), DONE, dtype=np.int8)
            status[failed] = FAILED
        gids = np.arange(first + run.start, first + run.stop) \
            if isinstance(run, range) else first + np.asarray(run, dtype=np.int64)
        queued, stolen = self.batch_info
        self.records.add_run(gids, status, starts, ends, attempt=attempt, queued=queued,
                             stolen=stolen, bytes_read=bytes_read)

    def run_batch(self, group, instances, many, reads_splits: bool, prefetched: dict):
        """``run_fn`` for a chunk of a family whose function has a batch form
        (``mpitiny.with_batch``): one call of ``many`` for all of the chunk's instances, its
        wall time shared evenly among them in the task records, their values journaled as one
        unit. None if ``many`` raised (or returned a wrong number of values, or an instance's
        inputs could not be read): the chunk then runs one call per instance, so that a
        failure is reported for the task that failed, with the inputs already read, which are
        left in ``prefetched`` (reading them again would count their values down twice)."""
        first = int(self.base[group.index])
        keep = self.layout.has_locs[group.index]
        const = group.constant_call()
        guard = self.guard
        calls = [const if const is not None else group.call_args(int(i)) for i in instances]
        if group.wants_inputs:
            for i in instances:
                try:
                    prefetched[int(i)] = self.fetch_inputs(group, int(i))
                except Exception:
                    return None               # that instance fails on its own, one by one
            calls = [(args, dict(kwargs, inputs=prefetched[int(i)]))
                     for (args, kwargs), i in zip(calls, instances)]
        read_before = split_bytes() if reads_splits else 0
        t0 = time.time()
        guard.in_task = True
        try:
            values = many(calls)
        except StopRun:
            return [], 0
        except (Exception, SystemExit, KeyboardInterrupt) as exc:
            return self.unbatched(group, "".join(traceback.format_exception_only(exc)))
        finally:
            guard.in_task = False
        t1 = time.time()
        n = len(calls)
        if not isinstance(values, (list, tuple)) or len(values) != n:
            got = f"{len(values)} values" if isinstance(values, (list, tuple)) else \
                type(values).__name__
            return self.unbatched(group, f"it returned {got} for {n} calls\n")
        failed = []
        if keep and self.journal is not None:
            self.journal.begin_unit()
        for k, (i, value) in enumerate(zip(instances, values)):
            i = int(i)
            if value is not None or keep:
                try:
                    self.store_result(group, i, first + i, value)
                except Exception as exc:
                    failed.append(k)
                    self.fail(first + i, group.instance_id(i), exc, t1)
        if keep and self.journal is not None:
            self.journal.end_unit()
        self.counts["batches"] += 1
        self.counts["batched"] += n
        bounds = np.linspace(t0, t1, n + 1)
        read_sizes = 0
        if reads_splits:
            total = split_bytes() - read_before
            read_sizes = np.full(n, total // n, dtype=np.int64)
            read_sizes[-1] += total - int(read_sizes.sum())
        self.record_ran(first, instances, failed, bounds[:-1].tolist(), bounds[1:].tolist(),
                        bytes_read=read_sizes)
        return failed, n

    def unbatched(self, group, why: str) -> None:
        """A batch call failed: count it, say why in the rank's log (once per family)."""
        self.counts["unbatched"] += 1
        if group.index not in self._unbatched_families:
            self._unbatched_families.add(group.index)
            print(f"mpitiny: the batch form of {group.name} failed on rank {self.rank}, so its "
                  f"chunks run one call per task (reported once): {why}", end="", file=sys.stderr)
        return None

    def retry_fn(self, group, i: int, exc, retries: int, timeout, attempts: dict, k: int,
                 fetched: dict | None = None):
        """Run a failed instance again, up to ``retries`` more times (``MPITINY_ATTEMPT`` set);
        returns None once an attempt succeeds, the last exception, or ``StopRun``.

        ``fetched``: the inputs the failed attempt read. They are passed again, not read again:
        each read counts the parents' values down, and a second count would free a value
        before its other readers have read it."""
        keep = self.layout.has_locs[group.index]
        try:
            for attempt in range(2, retries + 2):
                attempts[k] = attempt
                self.counts["retried"] += 1
                self.attempt = attempt
                os.environ["MPITINY_ATTEMPT"] = str(attempt)
                try:
                    args, kwargs = group.call_args(i)
                    if group.wants_inputs:
                        if fetched is None:
                            fetched = self.fetch_inputs(group, i)
                        kwargs = dict(kwargs, inputs=fetched)
                    value = self.guard.call(group.function, args, kwargs, timeout)
                    if value is not None or keep:
                        self.store_result(group, i, int(self.base[group.index]) + i, value)
                    return None
                except StopRun:
                    return StopRun
                except (Exception, SystemExit, KeyboardInterrupt) as again:
                    exc = again
            return exc
        finally:
            self.attempt = 1
            os.environ["MPITINY_ATTEMPT"] = "1"

    # ------------------------------------------------------------------ resumed runs
    def run_special(self, g: int, idx: np.ndarray, standing: np.ndarray) -> None:
        """A chunk of a resumed run holding cached, suspect or doomed instances: each kind
        its own way, in that order, then the ordinary ones."""
        self.run_cached(g, idx[standing == CACHED])
        self.fail_doomed(g, idx[standing == DOOMED])
        for i in idx[standing == SUSPECT].tolist():
            self.run_suspect(g, i)
        normal = idx[standing == NORMAL]
        if len(normal):
            self.run_as_usual(g, normal)

    def run_as_usual(self, g: int, idx: np.ndarray) -> None:
        """``run_group`` for instances of a resumed run that need no special handling."""
        saved, self.standing = self.standing, None
        try:
            self.run_group(g, idx)
        finally:
            self.standing = saved

    def run_cached(self, g: int, idx: np.ndarray) -> None:
        """Instances an earlier incarnation finished: not run again; their kept values are
        reloaded for their children; their rows say attempt 0."""
        if not len(idx):
            return
        group = self.dag.groups[g]
        first = int(self.base[g])
        if self.layout.has_locs[g]:
            damaged = []
            for i in idx.tolist():
                try:
                    kind, data = self.resumed.value(first + i)
                except (KeyError, OSError):
                    damaged.append(i)
                    continue
                self.store_encoded(group, i, first + i, kind, data, journal=False)
            if damaged:                      # the value is lost after all: run those again
                idx = np.setdiff1d(idx, damaged)
                self.run_as_usual(g, np.array(damaged, dtype=np.int64))
        now = time.time()
        self.records.add_run(first + idx, DONE, np.full(len(idx), now), np.full(len(idx), now),
                             attempt=0)
        self.counts["cached"] += len(idx)
        self.finish_run(g, idx, [], journal=False)

    def fail_doomed(self, g: int, idx: np.ndarray) -> None:
        """Instances that crashed their rank ``max_crashes`` times: failed without running."""
        if not len(idx):
            return
        group = self.dag.groups[g]
        first = int(self.base[g])
        now = time.time()
        for i in idx.tolist():
            crashes = int(self.resumed.crashes[first + i])
            self.fail(first + i, group.instance_id(i), None, now,
                      f"crashed its rank in {crashes} earlier runs (killed by a signal, "
                      f"os._exit or a hang while it ran); not run again (--max-crashes "
                      f"{self.opts.max_crashes})", attempt=crashes + 1)
        self.records.add_run(first + idx, FAILED, np.full(len(idx), now), np.full(len(idx), now),
                             attempt=self.resumed.crashes[first + idx] + 1)
        self.finish_run(g, idx, list(range(len(idx))))

    def run_suspect(self, g: int, i: int) -> None:
        """An instance that was running when a rank died: a command runs as usual (it cannot
        take the rank down); a function runs alone in a child process, again after each crash
        until it has crashed ``max_crashes`` times."""
        group = self.dag.groups[g]
        gid = int(self.base[g]) + i
        if group.kind != "fn":
            self.run_as_usual(g, np.array([i], dtype=np.int64))
            return
        crashes = int(self.resumed.crashes[gid])
        timeout = group.options.get("timeout", self.opts.timeout)
        keep = self.layout.has_locs[g]
        fetched = fetch_error = None
        if group.wants_inputs:          # read here, once: not by each child process (MPI)
            try:
                fetched = self.fetch_inputs(group, i)
            except Exception as exc:
                fetch_error = exc

        def call() -> tuple:
            if fetch_error is not None:
                raise fetch_error
            args, kwargs = group.call_args(i)
            if fetched is not None:
                kwargs = dict(kwargs, inputs=fetched)
            value = group.function(*args, **kwargs)
            return encode(value) if value is not None or keep else (-1, b"")

        t0 = time.time()
        while True:
            attempt = crashes + 1
            os.environ["MPITINY_ATTEMPT"] = str(attempt)
            self.counts["isolated"] += 1
            if self.journal is not None:
                self.journal.add(jnl.START, gid, gid + 1, attempt)
            try:
                outcome = run_isolated(call, timeout)
            finally:
                os.environ["MPITINY_ATTEMPT"] = "1"
            if outcome[0] != "crash":
                break
            if self.journal is not None:
                self.journal.add(jnl.CRASHED, gid, gid + 1, attempt)
            crashes += 1
            self.counts["crashed"] += 1
            if crashes >= self.opts.max_crashes or self.guard.stop_signal:
                break
        t1 = time.time()
        failed = []
        if outcome[0] == "ok":
            kind, data = outcome[1], outcome[2]
            if kind >= 0:
                self.attempt = attempt
                self.store_encoded(group, i, gid, kind, data)
                self.attempt = 1
        else:
            failed = [0]
            text = outcome[1] if outcome[0] == "error" else (
                f"crashed {crashes} times (the last one alone in a child process: "
                f"{outcome[1]}); not run again (--max-crashes {self.opts.max_crashes})")
            self.fail(gid, group.instance_id(i), None, t1, text, attempt=attempt)
        self.records.add_run(np.array([gid]), FAILED if failed else DONE, [t0], [t1],
                             attempt=attempt, queued=self.batch_info[0], stolen=self.batch_info[1])
        self.finish_run(g, np.array([i], dtype=np.int64), failed)

    def sample(self) -> None:
        """One psutil sample of this rank (CPU %, RSS, I/O bytes) for the trace."""
        try:
            io = self.process.io_counters()
            read, written = io.read_bytes, io.write_bytes
        except (AttributeError, OSError):
            read = written = 0
        self.samples.append((time.time(), self.process.cpu_percent(None),
                             self.process.memory_info().rss, read, written))

    def split_reader(self, group):
        """The split reader of a family over one dataset's splits (for prefetching), or None."""
        where = group.options.get("splits")
        if where is None or len(group.vars) != 1:
            return None
        reader = self._split_readers.get(group.index, False)
        if reader is False:
            from mpitiny.io.h5data import open_splits
            try:
                reader = open_splits(where[0], where[1])
            except MpitinyError:
                reader = None    # the task itself will report the problem when it reads
            self._split_readers[group.index] = reader
        return reader

    def store_result(self, group, i: int, gid: int, value) -> None:
        """Keep a return value for the tasks that read it, if any; write it to the run's
        results unless it is intermediate data (read by other tasks, and bytes, an array or
        JSON over ``RESULT_COPY_LIMIT``): those live in the store / spill files only."""
        try:
            kind, data = encode(value)
        except (TypeError, ValueError) as exc:
            raise TaskResultError(
                f"return value of type {type(value).__name__} cannot be kept ({exc}); return "
                "JSON values, bytes or numpy arrays") from None
        self.store_encoded(group, i, gid, kind, data, value is None)

    def store_encoded(self, group, i: int, gid: int, kind: int, data: bytes,
                      is_none: bool = False, journal: bool = True) -> None:
        """``store_result`` after encoding; a value other tasks read is also journaled."""
        consumed = self.layout.has_locs[group.index]
        if not is_none and (not consumed or (kind == 0 and len(data) <= RESULT_COPY_LIMIT)):
            self.files.result(group.instance_id(i), kind, data)
        if consumed:
            if journal and self.journal is not None:
                self.journal.add_value(gid, kind, data, self.attempt)
            loc, length, oid = self.store.keep_encoded(kind, data, self.readers(group.index, i))
            owner, word = self.layout.loc_word(group.index, i)
            self.pending_locs.append((owner, word, loc, length, oid))

    def readers(self, g: int, i: int) -> int:
        """How many child instances will read instance ``i`` of group ``g`` (``inputs``)."""
        fixed = self._readers.get(g)
        general, literal = self.release.split_children(g)
        if fixed is None:
            fixed, varying = 0, []
            for c, dep in general:
                child = self.dag.groups[c]
                if not child.wants_inputs:
                    continue
                if dep.each is None:
                    fixed += child.size
                elif dep.each.is_identity(child, self.dag.groups[g]):
                    fixed += 1
                else:
                    varying.append((c, dep))
            self._readers[g] = fixed = (fixed, varying)
        count, varying = fixed
        for c, dep in varying:
            count += len(self.release.children_of(c, dep, g, np.array([i], dtype=np.int64)))
        for c, dep in literal.get(i, ()):
            if self.dag.groups[c].wants_inputs:
                count += self.dag.groups[c].size
        return count

    def publish_locations(self) -> None:
        """Write the locations of this chunk's kept results at their owners, one ``Put`` per
        run of neighbouring words (before the children are released, so they find them)."""
        if not self.pending_locs:
            return
        self.heap.sync()
        self.object_counts.sync()
        locs = sorted(self.pending_locs)
        self.pending_locs = []
        start = 0
        for k in range(1, len(locs) + 1):
            if k == len(locs) or locs[k][0] != locs[start][0] or \
                    locs[k][1] != locs[k - 1][1] + LOC_WORDS:
                owner, word = locs[start][0], locs[start][1]
                self.mem.put(owner, word, np.array([v for loc in locs[start:k] for v in loc[2:]],
                                                   dtype=np.int64))
                start = k

    def fetch_inputs(self, group, i: int) -> dict:
        """``{parent task id: parent return value}`` for instance ``i`` (one-sided reads;
        many parents' locations and values are read in batches, ``parent_locations``)."""
        out = {}
        part = group.options.get("part")
        if part is not None:
            part = int(group.index_values(part, [i])[0])
        for dep in group.deps:
            parent = self.dag.groups[dep.parent]
            if dep.each is None:
                pidx = range(parent.size)
            elif dep.each.is_identity(group, parent):
                pidx = (i,)
            else:
                pidx = dep.each.parent_indices(group, parent, np.array([i], dtype=np.int64))
            if parent.kind == "cmd":        # shell tasks return nothing: their value is None
                out.update((parent.instance_id(int(p)), None) for p in pidx)
                continue
            pidx = [int(p) for p in pidx]
            locs = self.parent_locations(parent.index, pidx)
            names = parent.instance_ids(pidx)
            for name, (_, length, _) in zip(names, locs):
                if length <= 0:
                    raise RuntimeError(f"result of {name} not found")
            out.update(zip(names, self.store.fetch_many(locs, part, names)))
        return out

    def parent_locations(self, g: int, pidx: list) -> list:
        """The location words ``(loc, length, oid)`` of instances ``pidx`` of group ``g``:
        one ``Get`` per owner rank over the span of their words when that span is dense
        (a whole family: each owner holds a contiguous block), else one per instance."""
        if len(pidx) < 4:
            return [tuple(int(w) for w in self.mem.get(*self.layout.loc_word(g, p), LOC_WORDS))
                    for p in pidx]
        lay = self.layout
        ranks, pos = lay.owners(g, np.asarray(pidx, dtype=np.int64))
        base = np.asarray(lay.loc_base[g], dtype=np.int64)
        words = lay.locs0[ranks] + LOC_WORDS * (base[ranks] + pos)
        locs = np.empty((len(pidx), LOC_WORDS), dtype=np.int64)
        for r in np.unique(ranks).tolist():
            at = np.flatnonzero(ranks == r)
            w = words[at]
            lo, hi = int(w.min()), int(w.max()) + LOC_WORDS
            if hi - lo <= 4 * LOC_WORDS * len(at):
                span = self.mem.get(r, lo, hi - lo)
                locs[at] = span[(w - lo)[:, None] + np.arange(LOC_WORDS)]
            else:
                for k, word in zip(at.tolist(), w.tolist()):
                    locs[k] = self.mem.get(r, word, LOC_WORDS)
        return [tuple(row) for row in locs.tolist()]

    def run_cmd(self, group, instances) -> tuple:
        """Run each instance's shell command; stdout/stderr go to this rank's log files.
        Returns the failed positions and how many instances ran (see ``run_fn``)."""
        out_fd, err_fd = self.files.log_fds()
        if self.cmd_env is None:
            self.cmd_env = dict(os.environ)
        env = self.cmd_env
        timeout = group.options.get("timeout", self.opts.timeout)
        retries = group.options.get("retries", self.opts.retries)
        first = int(self.base[group.index])
        failed = []
        for k, i in enumerate(instances):
            i = int(i)
            tid = group.instance_id(i)
            env["MPITINY_TASK_ID"] = tid
            crashes = 0 if self.resumed is None else int(self.resumed.crashes[first + i])
            for attempt in range(crashes + 1, crashes + retries + 2):
                header = f"### task {tid} (rank {self.rank}, attempt {attempt})\n".encode()
                os.write(out_fd, header)
                os.write(err_fd, header)
                out0, err0 = os.fstat(out_fd).st_size, os.fstat(err_fd).st_size
                env["MPITINY_ATTEMPT"] = str(attempt)
                t0 = time.time()
                try:
                    error = self.guard.run_command(group.command(i), env, out_fd, err_fd, timeout)
                except StopRun:
                    return failed, k
                t1 = time.time()
                if error is None or attempt > crashes + retries:
                    break
                self.counts["retried"] += 1
            out1, err1 = os.fstat(out_fd).st_size, os.fstat(err_fd).st_size
            status = DONE
            if error is not None:
                status = FAILED
                failed.append(k)
                tail = _read_tail(self.files.err_path, err0, err1 - err0)
                self.fail(first + i, tid, None, t1, f"{error}; command: {group.command(i)}"
                          + (f"\nstderr (last part):\n{tail}" if tail else ""), attempt=attempt)
            self.records.add_one(first + i, status, t0, t1, attempt, (out0, out1 - out0),
                                 (err0, err1 - err0), *self.batch_info)
        return failed, len(instances)

    def fail(self, gid: int, tid: str, exc, when: float, text: str | None = None,
             attempt: int = 1) -> None:
        header = (f"### task {tid} failed on rank {self.rank} of {self.nranks} ({self.host}), "
                  f"attempt {attempt}")
        if text is None:
            if isinstance(exc, TaskResultError):
                text = str(exc)
            else:
                text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__.tb_next))
        self.files.failure({"id": tid, "gid": gid, "rank": self.rank, "host": self.host,
                            "attempt": attempt, "time": when, "error": f"{header}\n{text.rstrip()}"})

    def skip(self, skipped: list) -> None:
        """Record upstream-failed instances (their children were already released by Release)."""
        now = time.time()
        for g, idx in skipped:
            gids = self.base[g] + idx
            self.records.add_run(gids, UPSTREAM_FAILED, np.full(len(gids), now), np.full(len(gids), now))
            self.unreported += len(gids)
            self.unreported_failed += len(gids)

    @staticmethod
    def placed(group) -> bool:
        """Whether the group's instances have a home rank (a ``rank`` hint, or split data)."""
        return group.options.get("rank") is not None or "splits" in group.options

    def homes(self, group, idx: np.ndarray) -> np.ndarray:
        """The rank each instance should run on: its ``rank`` hint modulo the rank count, or,
        for a family over the splits of a dataset, the split's home: the rank that holds the
        instance's metadata (the same block partition as task ownership)."""
        spec = group.options.get("rank")
        if spec is None:
            return self.layout.owners(group.index, idx)[0]
        return group.index_values(spec, idx) % self.nranks

    def queue_ready(self, g: int, idx: np.ndarray) -> None:
        prio = int(self.priority[g])
        first = int(self.base[g])
        group = self.dag.groups[g]
        if self.placed(group):
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

    # ------------------------------------------------------------------ statistics
    def stats(self) -> dict:
        counts = self.records.counts()
        counts.update(self.counts, stopped=self.stopped, stop_signal=self.guard.stop_signal)
        first, last = self.records.first_start, self.records.last_end
        return dict(rank=self.rank, host=self.host, **counts, rows=len(self.records),
                    steals=self.steals, stolen_tasks=self.stolen_tasks,
                    busy_seconds=round(self.busy, 6),
                    split_reads_local=self.split_reads[0], split_reads_remote=self.split_reads[1],
                    outputs_in_window=self.store.kept if self.store else 0,
                    outputs_spilled=self.store.spilled if self.store else 0,
                    first_start=first if np.isfinite(first) else None,
                    last_end=last if np.isfinite(last) else None,
                    failures=self.files.failures_seen)


class TaskResultError(Exception):
    """A task ran but its return value cannot be kept (reported as the task's failure)."""


def _running_mean(avg: float, per_task: float, ran: int) -> float:
    """The next average task time: a chunk of 8 or more replaces it, a smaller one (noisier)
    moves it halfway; NaN (nothing timed yet) is replaced."""
    return per_task if ran >= 8 or avg != avg else 0.5 * (avg + per_task)


def split_bytes() -> int:
    from mpitiny.io import h5data
    return h5data.BYTES_READ[0]


def _short_timer_slack() -> None:
    """Let the idle loop's sleeps of a few microseconds last microseconds, not 50 µs (Linux)."""
    try:
        import ctypes
        ctypes.CDLL(None).prctl(29, 1000, 0, 0, 0)    # PR_SET_TIMERSLACK, 1 µs
    except (OSError, AttributeError):
        pass


def _shared_type():
    from mpi4py import MPI
    return MPI.COMM_TYPE_SHARED


def _read_tail(path: str, offset: int, length: int, limit: int = 4000) -> str:
    if length <= 0:
        return ""
    start = offset + max(0, length - limit)
    with open(path, "rb") as f:
        f.seek(start)
        return f.read(offset + length - start).decode("utf-8", "replace").rstrip()


# ---------------------------------------------------------------------- the run as a whole
def default_run_dir(dag: DAG) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in dag.name) or "run"
    return os.path.join("mpitiny-runs", safe)


def load_everywhere(comm, path: str | None, params: dict, text: str | None = None) -> DAG:
    """Every rank loads the DAG (from ``path``, or from ``text`` built by the Python API);
    if any rank fails, every rank raises the same error."""
    from mpitiny.dag.load import load_dag, load_dag_text
    error = None
    dag = None
    try:
        dag = load_dag(path, params) if text is None else \
            load_dag_text(text, source=path or "<python DAG>", params=params)
    except MpitinyError as exc:
        error = exc
    except Exception as exc:                     # a bug: still tell every rank, then abort
        error = InternalError(f"loading {path} failed: {type(exc).__name__}: {exc}\n"
                              f"{traceback.format_exc()}")
    errors = comm.allgather(None if error is None else (error.exit_code, error.format()))
    for r, e in enumerate(errors):
        if e is not None:
            if error is not None:
                raise error
            code, text = e
            err = BadInput(f"{text} (on rank {r})")
            err.exit_code = code
            raise err
    return dag


MALLOC_TRIM_BYTES = 1 << 30       # glibc M_TRIM_THRESHOLD: keep up to 1 GiB of freed heap
MALLOC_MMAP_BYTES = 256 << 20     # glibc M_MMAP_THRESHOLD: smaller blocks come from the heap


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory for the next task instead of giving it back to the OS.

    By default glibc returns freed heap to the OS as soon as 128 KiB-32 MiB lies free at its
    top, and serves large blocks with fresh ``mmap``s, so a rank that runs thousands of numpy
    tasks page-faults on nearly every allocation: wordcount over 1 GB in 100 KiB splits took
    4.6 M minor page faults and 1.16 ms per map task, and 0.38 M and 0.68 ms with these two
    settings (whole run 7.5 s -> 5.1 s; at 8 MiB splits 5.1 s -> 3.8 s, peak RSS 282 -> 291 MB).
    The price: a rank's RSS stays near its peak until it exits. Not done if the user set
    ``MALLOC_TRIM_THRESHOLD_`` / ``MALLOC_MMAP_THRESHOLD_`` or ``MPITINY_MALLOC=default``, nor
    where libc is not glibc. Returns whether it changed anything."""
    if os.environ.get("MPITINY_MALLOC") == "default" or \
            "MALLOC_TRIM_THRESHOLD_" in os.environ or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    import ctypes
    import ctypes.util
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_trim_threshold, MALLOC_TRIM_BYTES)) and \
        bool(mallopt(m_mmap_threshold, MALLOC_MMAP_BYTES))


def run_file(path: str | None, params: dict, out_dir: str | None = None,
             dag_text: str | None = None, **options) -> int:
    """``mpitiny run``: returns the exit status (0 all done, 1 some failed, 75 stopped).

    ``options`` are ``RunOptions`` fields (``quiet``, ``retries``, ``resume``, ...)."""
    from mpitiny.engine import guard as _guard
    handlers = _guard.install_early()
    keep_freed_memory()
    try:
        return _run_file(path, params, out_dir, dag_text, RunOptions(**options))
    finally:
        _guard.restore(handlers)


def _run_file(path: str | None, params: dict, out_dir: str | None, dag_text: str | None,
              opts: RunOptions) -> int:
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    t_launch = time.time()
    dag = load_everywhere(comm, path, params, dag_text)
    run_dir = out_dir or default_run_dir(dag)
    rank = comm.Get_rank()
    setup = None
    if rank == 0:
        announce_ready()
        try:
            setup = prepare_run_dir(run_dir, dag, path, params, dag_text, opts, comm.Get_size())
        except BadInput as exc:
            setup = exc.format()
        except OSError as exc:
            setup = f"cannot prepare run directory {run_dir}: {exc.strerror or exc}"
    setup = comm.bcast(setup, root=0)
    if isinstance(setup, str):
        raise BadInput(setup)
    incarnation, resuming = setup
    try:
        resumed = jnl.read_journals(run_dir, dag.total) if resuming else None
        return _run(comm, dag, run_dir, opts, t_launch, incarnation, resumed)
    except BadInput:
        raise
    except BaseException as exc:
        if _is_disk_full(exc):
            sys.stderr.write(f"mpitiny: error: run directory {os.path.abspath(run_dir)}: "
                             f"{exc.strerror} (rank {rank} of {comm.Get_size()} on "
                             f"{socket.gethostname()}, writing {exc.filename or 'a file'}); "
                             "free space and run the same command again to resume\n")
        else:
            sys.stderr.write(f"mpitiny: internal error on rank {rank} of {comm.Get_size()} "
                             f"({socket.gethostname()}); aborting the job\n{traceback.format_exc()}")
        sys.stderr.flush()
        comm.Abort(EXIT_INTERNAL)
        os._exit(EXIT_INTERNAL)


def _is_disk_full(exc: BaseException) -> bool:
    import errno
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS,
                                                      errno.EACCES)


def prepare_run_dir(run_dir: str, dag: DAG, path: str | None, params: dict,
                    dag_text: str | None, opts: RunOptions, nranks: int) -> tuple:
    """On rank 0: start the run directory afresh, or resume it. Returns (incarnation, resuming).

    Resumed when its journals belong to the same DAG (hash of the dag.json bytes and the
    parameters) and the last incarnation did not complete (``opts.resume == "auto"``), or
    whenever they belong to the same DAG (``"yes"``); ``"no"`` always starts afresh."""
    if dag_text is not None:
        text = dag_text.encode() if isinstance(dag_text, str) else dag_text
    else:
        with open(path, "rb") as f:
            text = f.read()
    digest = jnl.dag_hash(text, params)
    info = jnl.read_run_info(run_dir) if opts.journal else None
    resuming = False
    if info is not None and opts.resume != "no":
        same = info.get("dag_hash") == digest
        if opts.resume == "yes" and not same:
            raise BadInput(f"--resume: the journals in {run_dir} belong to another DAG or other "
                           f"parameters ({info.get('dag')}); use --fresh to start over")
        resuming = same and (opts.resume == "yes" or not info.get("complete"))
    if resuming:
        incarnation = int(info["incarnation"]) + 1
        rundir.prepare_resume(run_dir, incarnation - 1)
    else:
        incarnation = 1
        rundir.prepare(run_dir)
    if opts.journal:
        jnl.write_run_info(run_dir, {"dag_hash": digest, "dag": dag.source, "name": dag.name,
                                     "tasks": dag.total, "incarnation": incarnation,
                                     "ranks": nranks,
                                     "started": time.time(), "complete": False})
    return incarnation, resuming


def _run(comm, dag: DAG, run_dir: str, opts: RunOptions, t_launch: float,
         incarnation: int = 1, resumed: "jnl.Resumed | None" = None) -> int:
    rank = comm.Get_rank()
    engine = Engine(comm, dag, run_dir, opts, os.environ.get("MPITINY_FAULT"), incarnation,
                    resumed)
    engine.open_journal()
    if rank == 0:
        engine.progress = Progress(engine, sys.stderr, opts.progress_interval, opts.quiet)
    engine.guard.install(engine.files.fault_log())
    try:
        gc.collect()
        gc.freeze()     # the task table lives for the whole run: keep the collector off it
        engine.start()
        t_start = time.time()
        engine.work()
        t_end = time.time()
        if engine.progress is not None:
            engine.progress.tick(final=True)
        engine.stop()
        engine.sample()
        rundir.write_rank_table(run_dir, rank, engine.records, engine.samples)
        stats = engine.stats()
        all_stats = comm.gather(stats, root=0)
        comm.Barrier()
        engine.free()
    finally:
        engine.guard.uninstall()
    if rank != 0:
        return EXIT_OK
    summary = make_summary(dag, run_dir, all_stats, t_launch, t_start, t_end, incarnation,
                           resumed)
    rundir.write_virtual_table(run_dir, [s["rows"] for s in all_stats], dag)
    if opts.trace:
        from mpitiny.report import write_run_trace
        write_run_trace(run_dir, len(all_stats))
    write_atomic(os.path.join(run_dir, "summary.json"),
                 json.dumps(summary, indent=1).encode())
    if opts.journal:
        info = jnl.read_run_info(run_dir) or {}
        info.update(complete=not summary["stopped"], ended=time.time())
        jnl.write_run_info(run_dir, info)
    if not opts.quiet:
        print_summary(summary)
    return summary["exit_status"]


STOP_REASONS = {STOP_SIGNAL: "signal", STOP_MAX_FAILS: "max-fails"}


def make_summary(dag: DAG, run_dir: str, all_stats: list, t_launch: float, t_start: float,
                 t_end: float, incarnation: int = 1, resumed=None) -> dict:
    totals = {k: sum(s[k] for s in all_stats) for k in ("done", "failed", "upstream_failed")}
    reads = {k: sum(s[f"split_reads_{k}"] for s in all_stats) for k in ("local", "remote")}
    counts = {k: sum(s[k] for s in all_stats)
              for k in ("cached", "retried", "isolated", "crashed", "batches", "batched",
                        "unbatched")}
    starts = [s["first_start"] for s in all_stats if s["first_start"] is not None]
    ends = [s["last_end"] for s in all_stats if s["last_end"] is not None]
    failures = [f for s in all_stats for f in s["failures"]]
    failures.sort(key=lambda f: f["time"])
    stop = max(s["stopped"] for s in all_stats)
    signals = sorted({s["stop_signal"] for s in all_stats if s["stop_signal"]})
    wall = t_end - t_start
    bad = totals["failed"] + totals["upstream_failed"]
    status = EXIT_RESUMABLE if stop == STOP_SIGNAL else EXIT_TASKS_FAILED if bad or stop \
        else EXIT_OK
    return {
        "name": dag.name, "dag": dag.source, "run_dir": os.path.abspath(run_dir),
        "params": dag.params, "ranks": len(all_stats),
        "hosts": sorted({s["host"] for s in all_stats}),
        "tasks": dag.total, **totals, "not_run": dag.total - sum(totals.values()),
        "split_reads": reads, "exit_status": status,
        "stopped": STOP_REASONS.get(stop), "stop_signals": [signal.Signals(x).name for x in signals],
        "incarnation": incarnation,
        "resumed": None if resumed is None else {
            "done_before": resumed.ndone, "crashed_before": int(np.count_nonzero(resumed.crashes)),
            "journal_records": resumed.records, "journal_records_ignored": resumed.torn},
        **counts,
        "wall_seconds": wall, "setup_seconds": t_start - t_launch,
        "tasks_per_second": dag.total / wall if wall > 0 else None,
        "first_task_start": min(starts) if starts else None,
        "last_task_end": max(ends) if ends else None,
        "per_rank": [{k: v for k, v in s.items() if k != "failures"} for s in all_stats],
        "failures_first": failures[:20],
        "groups": group_table(dag) if len(dag.groups) <= SUMMARY_GROUPS else
        f"{len(dag.groups)} entries: see tasks.h5, dataset groups",
    }


def group_table(dag: DAG) -> list:
    """What maps a task row's gid back to its id: name, first gid, size, foreach variables."""
    return [{"name": g.name, "first": int(dag.base[g.index]), "size": g.size, "kind": g.kind,
             "priority": g.priority,
             "vars": [[v.name, {"range": [v.values.start, v.values.stop, v.values.step]}
                       if isinstance(v.values, range) else {"values": list(v.values)}]
                      for v in g.vars]}
            for g in dag.groups]


def print_summary(summary: dict) -> None:
    rate = summary["tasks_per_second"]
    line = (f"mpitiny: {summary['name']}: {summary['tasks']} tasks on {summary['ranks']} ranks in "
            f"{summary['wall_seconds']:.3f} s ({rate:,.0f} tasks/s): {summary['done']} done, "
            f"{summary['failed']} failed, {summary['upstream_failed']} upstream-failed"
            if rate else f"mpitiny: {summary['name']}: no tasks")
    print(line)
    if summary.get("cached"):
        print(f"mpitiny: resumed (run {summary['incarnation']}): {summary['cached']} tasks were "
              "done in earlier runs and not run again")
    if summary.get("stopped") == "signal":
        print(f"mpitiny: stopped by {', '.join(summary['stop_signals']) or 'a signal'} with "
              f"{summary['not_run']} tasks not run; the journals are saved: run the same "
              f"command again to resume (exit status {EXIT_RESUMABLE})")
    elif summary.get("stopped") == "max-fails":
        print(f"mpitiny: stopped after {summary['failed']} failed tasks (--max-fails) with "
              f"{summary['not_run']} tasks not run")
    if summary["failures_first"]:
        first = summary["failures_first"][0]
        print(f"mpitiny: first failure:\n{first['error']}")
        print(f"mpitiny: every failure in full: {os.path.join(summary['run_dir'], 'failures')}/")
    print(f"mpitiny: run directory: {summary['run_dir']}")
    sys.stdout.flush()
