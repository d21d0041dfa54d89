"""Running the Python tasks of a chunk (one call per task, or one call of a batch form per
chunk), their retries and timeouts, and the failures they leave (commands: ``commands``).

``TaskRunner.run_fn(group, instances, chunk)`` (and ``CommandRunner.run_cmd``) run instances
of one group and return which of them failed and how many ran (fewer than all when a stop
request or ``--max-fails`` ended the chunk early); they write their task rows (``Records``),
their results (``RankFiles``) and the values other tasks read (``DataPlane``). They change
nothing of the scheduling: counting finished tasks and releasing children is the loop's
business (``Engine.finish``).

Batches: a family whose function has a batch form (``mpitiny.with_batch``) runs each chunk of
two or more instances with one call of it (``run_batch``): tiny tasks share the call's fixed
cost and a combiner can merge their outputs. The instances stay tasks, recorded one by one
(the call's time shared evenly), their kept values journaled as one unit; if the call fails,
the chunk runs again one call per task, so that a failure names the task that failed.

Resources: in a run of a DAG that declares ``cores``, ``mem`` or ``gpus``, a chunk runs once
what it uses of the node is claimed (``mpitiny.engine.resources``, around ``run_fn`` and
``run_cmd``); otherwise nothing is claimed. A group of ``"ranks"`` runs on its gangs
(``mpitiny.engine.gang``), never batched.

Attempts: attempt 1 is the ordinary call; ``retries`` more follow a failure (``retry_fn``),
each with ``MPITINY_ATTEMPT`` set; the attempt that made a kept value is journaled with it.
"""
from __future__ import annotations

import os
import sys
import time
import traceback

import numpy as np

from mpitiny.engine.control import Control
from mpitiny.engine.dataplane import DataPlane, TaskResultError
from mpitiny.engine.gang import make_gangs
from mpitiny.engine.guard import Guard, StopRun
from mpitiny.engine.journaling import ChunkJournal
from mpitiny.engine.resources import node_resources
from mpitiny.engine.types import Chunk, End, RunCounts, RunOptions
from mpitiny.io.rundir import DONE, FAILED, RankFiles, Records
from mpitiny.io.splits import bytes_read

PREFETCH_MIN_BYTES = 1 << 20   # smaller splits are read by their task, without a thread


class TaskRunner:
    """Runs tasks for one rank; see the module docstring."""

    def __init__(self, dag, opts: RunOptions, data: DataPlane, journal: ChunkJournal,
                 files: RankFiles, records: Records, guard: Guard, counts: RunCounts,
                 control: Control, where: tuple, world=None) -> None:
        self.dag = dag
        self.base = dag.base
        self.opts = opts
        self.data = data
        self.journal = journal
        self.files = files
        self.records = records
        self.guard = guard
        self.counts = counts
        self.control = control
        self.rank, self.nranks, self.host = where
        self.keeps = data.layout.has_locs  # per group: its values are read by other tasks
        self.batch_family = np.array([self.batched(g) for g in dag.groups], dtype=bool)
        self.call_plans: list = [None] * len(dag.groups)     # per group: ``call_plan``
        self._unbatched_families: set = set()
        # A DAG that declares resources: what a chunk uses of the node, claimed around it.
        self.node = None if world is None else node_resources(world, dag)
        # A DAG with "ranks": its tasks' gangs (mpitiny.engine.gang; the loop's ``next`` hook).
        self.gang = make_gangs(self, world, dag)

    @property
    def node_windows(self) -> list:
        """The windows of the node's resource counters and of the gangs, if the run has them."""
        return ([] if self.node is None else self.node.windows) + \
            ([] if self.gang is None else self.gang.windows)

    def timeout(self, group) -> float | None:
        t = group.options.timeout
        return self.opts.timeout if t is None else t

    def retries(self, group) -> int:
        r = group.options.retries
        return self.opts.retries if r is None else r

    def batched(self, group) -> bool:
        """Whether this run calls ``group``'s batch form (``mpitiny.with_batch``) for its
        chunks: not under ``--no-batch``, nor with a time limit per task."""
        return (self.opts.batch and group.kind == "fn" and group.batch_function is not None
                and not self.timeout(group) and group.options.ranks is None)

    # ------------------------------------------------------------------ functions
    def run_fn(self, group, instances, chunk: Chunk) -> tuple:
        """Call ``group.function`` for the instances in this process (one call of its batch
        form for them all, where it has one); returns (failed positions, how many ran). In a
        run that counts resources, once what they use of the node is free (``resources``)."""
        if self.node is not None:
            with self.node.held(group.index):
                return self.call_all(group, instances, chunk)
        return self.call_all(group, instances, chunk)

    def call_all(self, group, instances, chunk: Chunk) -> tuple:
        """``run_fn`` once its resources are held (a group of ``ranks``: on its gangs)."""
        if group.options.ranks is not None:
            assert self.gang is not None
            return self.gang.run.lead(group, instances, chunk)
        splits = self.data.split_reader(group)
        prefetched: dict = {}      # inputs a failed batch read: not read again (counted once)
        if len(instances) > 1 and self.batch_family[group.index]:
            done = self.run_batch(group, instances, chunk, splits is not None, prefetched)
            if done is not None:
                return done
        return self.call_each(group, instances, chunk, splits, prefetched)

    def call_each(self, group, instances, chunk: Chunk, splits, prefetched: dict) -> tuple:
        """``run_fn``, one call per instance (a task's state updates logged under its id,
        what it prints located in the rank's ``fn`` logs)."""
        fn, const, inputs, keep, first, timeout = self.call_plans[group.index] or \
            self.call_plan(group)
        guard, state, now = self.guard, self.data.state, self.journal.now
        max_fails, ran, clock = self.opts.max_fails, len(instances), time.time
        start_by = self.control.start_by      # a time limit: start no task after this (else 0)
        watch = max_fails or start_by
        starts: list = []
        ends: list = []
        failed: list = []
        attempts: dict = {}             # position -> attempt, of the positions retried
        read_sizes: list = []           # split bytes each task read (splits only)
        printed: dict = {}              # position -> its (out, err) spans in the fn logs
        fn_out, fn_err = self.files.fn_out, self.files.fn_err
        out_at, err_at = fn_out.size, fn_err.size
        upcoming = None if splits is None else prefetching(group, splits, instances)
        for k, i in enumerate(instances):
            i = int(i)
            if watch and (max_fails and self.control.ending() or start_by and clock() > start_by):
                ran = k                  # --max-fails reached, or too late: start no more
                break
            if upcoming is not None:
                following = next(upcoming, None)
                if following is not None:
                    splits.prefetch(int(following))      # read while this task computes
            exc = None
            fetched = None
            try:
                args, kwargs = const if const is not None else group.call_args(i)
                if inputs:
                    fetched = prefetched.pop(i) if i in prefetched else \
                        self.data.fetch_inputs(group, i)
                    kwargs = dict(kwargs, inputs=fetched)
                if splits is not None:
                    read_before = bytes_read()
                now[0] = state.task = first + i
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
                    read_sizes.append(bytes_read() - read_before)
                if state.ops is not None:
                    self.commit(group, i, value, keep)
                elif value is not None or keep:
                    self.data.store_result(group, i, first + i, value)
            except StopRun:
                exc = StopRun
                state.undo()
            except (Exception, SystemExit, KeyboardInterrupt) as failure:
                guard.in_task = False
                exc, t1 = self.after_failure(group, i, k, failure, fetched, attempts, starts,
                                             read_sizes if splits is not None else None, failed)
            if exc is StopRun:                    # instances k and after did not run
                guard.in_task = False
                del starts[k:]
                del read_sizes[k:]
                ran = k
                break
            ends.append(t1)
            if fn_out.size != out_at or fn_err.size != err_at:
                printed[k] = ((out_at, fn_out.size - out_at), (err_at, fn_err.size - err_at))
                out_at, err_at = fn_out.size, fn_err.size
            if exc is not None and max_fails and self.control.ending():
                ran = k + 1
                break
        state.task = -1
        if ran:
            self.record_ran(first, instances[:ran], failed, starts, ends, chunk,
                            _attempt_column(attempts, ran), read_sizes if splits is not None else 0,
                            printed)
        return failed, ran

    def call_plan(self, group) -> tuple:
        """What ``call_each`` needs of ``group`` for every call, found once: ``(function,
        constant (args, kwargs) or None, whether it reads inputs, whether its values are
        kept, its first task id, its time limit)``."""
        plan = self.call_plans[group.index] = (
            group.function, group.constant_call(), group.wants_inputs,
            bool(self.keeps[group.index]), int(self.base[group.index]), self.timeout(group))
        return plan

    def after_failure(self, group, i: int, k: int, failure: BaseException, fetched,
                      attempts: dict, starts: list, read_sizes: list | None,
                      failed: list) -> tuple:
        """Instance ``i`` (position ``k``) raised: its state updates are undone, it is retried
        if it may be, and recorded as failed if it still fails. Returns (None, ``StopRun`` or
        the last exception; the time it ended)."""
        self.data.state.undo()
        exc = self.retry_fn(group, i, failure, k, attempts, fetched)
        t1 = 0.0
        if exc is not StopRun:
            t1 = time.time()
            if len(starts) == k:
                starts.append(t1)
            if read_sizes is not None and len(read_sizes) == k:
                read_sizes.append(0)
            if exc is not None:
                failed.append(k)
                self.fail(int(self.base[group.index]) + i, group.instance_id(i), exc, t1,
                          attempt=attempts.get(k, 1))
        return exc, t1

    def commit(self, group, i: int, value, keep: bool, attempt: int = 1) -> None:
        """A task that updated the shared state store succeeded: keep its value and journal
        its updates with it, as one unit (a resumed run has both or neither); if the value
        cannot be kept, the task fails and its updates are undone."""
        gid = int(self.base[group.index]) + i
        state = self.data.state
        unit = self.journal.on
        if unit:
            self.journal.begin_unit()
        try:
            if value is not None or keep:
                self.data.store_result(group, i, gid, value, attempt=attempt)
        except BaseException:
            state.undo()
            raise
        finally:
            log = state.take_log()
            if unit:
                if log is not None:
                    self.journal.state(gid, log, attempt=attempt)
                self.journal.end_unit()

    def retry_fn(self, group, i: int, exc: BaseException, k: int, attempts: dict,
                 fetched: dict | None = None):
        """Run a failed instance (at position ``k`` of its chunk) again, up to its ``retries``
        more times (``MPITINY_ATTEMPT`` set), noting each attempt in ``attempts``; returns None
        once an attempt succeeds, the last exception, or ``StopRun``.

        ``fetched``: the inputs the failed attempt read. They are passed again, not read again:
        each read counts the parents' values down, and a second count would free a value
        before its other readers have read it."""
        keep = self.keeps[group.index]
        timeout = self.timeout(group)
        retries = self.retries(group)
        try:
            for attempt in range(2, retries + 2):
                attempts[k] = attempt
                self.counts.retried += 1
                os.environ["MPITINY_ATTEMPT"] = str(attempt)
                try:
                    args, kwargs = group.call_args(i)
                    if group.wants_inputs:
                        if fetched is None:
                            fetched = self.data.fetch_inputs(group, i)
                        kwargs = dict(kwargs, inputs=fetched)
                    value = self.guard.call(group.function, args, kwargs, timeout)
                    if self.data.state.ops is not None:
                        self.commit(group, i, value, keep, attempt)
                    elif value is not None or keep:
                        self.data.store_result(group, i, int(self.base[group.index]) + i, value,
                                               attempt=attempt)
                    return None
                except StopRun:
                    self.data.state.undo()
                    return StopRun
                except (Exception, SystemExit, KeyboardInterrupt) as again:
                    self.data.state.undo()
                    exc = again
            return exc
        finally:
            os.environ["MPITINY_ATTEMPT"] = "1"

    def record_ran(self, first: int, run, failed: list, starts, ends, chunk: Chunk,
                   attempt=1, read_sizes=0, printed: dict | None = None) -> None:
        """Task rows for the instances ``run`` (of the group whose first task id is
        ``first``) that a chunk of this rank ran: done, or failed at positions ``failed``;
        ``printed``: position -> ((offset, length) in fn.out, the same in fn.err), of those
        that printed (a position -1: every one of them)."""
        if len(run) == 1 and not failed and type(attempt) is int and not read_sizes \
                and not printed:                # one task that succeeded (a DAG's hand-off)
            self.records.hold(first + int(run[0]), starts[0], ends[0], attempt, chunk.queued_at,
                              chunk.stolen)
            return
        status = DONE
        if failed:
            status = np.full(len(run), DONE, dtype=np.int8)
            status[failed] = FAILED
        if isinstance(run, range):
            gids = np.arange(first + run.start, first + run.stop)
        elif len(run) == 1:                     # one task (a DAG's hand-off)
            gids = (first + int(run[0]),)
        else:
            gids = first + np.asarray(run, dtype=np.int64)
        out = err = None
        if printed:
            spans = np.zeros((len(run), 4), dtype=np.int64)
            for k, (o, e) in printed.items():
                spans[k if k >= 0 else slice(None)] = (*o, *e)
            out, err = (spans[:, 0], spans[:, 1]), (spans[:, 2], spans[:, 3])
        self.records.add_run(gids, status, starts, ends, attempt=attempt, queued=chunk.queued_at,
                             stolen=chunk.stolen, bytes_read=read_sizes, out=out, err=err)

    # ------------------------------------------------------------------ batch forms
    def run_batch(self, group, instances, chunk: Chunk, reads_splits: bool, prefetched: dict):
        """``run_fn`` for a chunk of a batched family: one call of its batch form for all of
        the chunk's instances. None if the call raised (or returned a wrong number of values,
        or an instance's inputs could not be read): the chunk then runs one call per instance,
        with the inputs already read, which are left in ``prefetched`` (reading them again
        would count their values down twice)."""
        const = group.constant_call()
        calls = [const if const is not None else group.call_args(int(i)) for i in instances]
        if group.wants_inputs:
            for i in instances:
                try:
                    prefetched[int(i)] = self.data.fetch_inputs(group, int(i))
                except Exception:
                    return None               # that instance fails on its own, one by one
            calls = [(args, dict(kwargs, inputs=prefetched[int(i)]))
                     for (args, kwargs), i in zip(calls, instances)]
        read_before = bytes_read() if reads_splits else 0
        n = len(calls)
        state, now = self.data.state, self.journal.now
        now[0] = state.task = int(self.base[group.index]) + int(instances[0])
        now[1] = n
        fn_out, fn_err = self.files.fn_out, self.files.fn_err
        out_at, err_at = fn_out.size, fn_err.size
        t0 = time.time()
        self.guard.in_task = True
        try:
            values = group.batch_function(calls)
        except StopRun:
            state.undo()
            return [], 0
        except (Exception, SystemExit, KeyboardInterrupt) as exc:
            state.undo()
            return self.unbatched(group, "".join(traceback.format_exception_only(exc)))
        finally:
            self.guard.in_task = False
            now[1] = 1
            state.task = -1
        t1 = time.time()
        if not isinstance(values, (list, tuple)) or len(values) != n:
            state.undo()
            got = f"{len(values)} values" if isinstance(values, (list, tuple)) else \
                type(values).__name__
            return self.unbatched(group, f"it returned {got} for {n} calls\n")
        failed = self.keep_batch_values(group, instances, values, t1)
        self.counts.batches += 1
        self.counts.batched += n
        bounds = np.linspace(t0, t1, n + 1)
        read_sizes: int | np.ndarray = 0
        if reads_splits:
            total = bytes_read() - read_before
            read_sizes = np.full(n, total // n, dtype=np.int64)
            read_sizes[-1] += total - int(read_sizes.sum())
        printed = {-1: ((out_at, fn_out.size - out_at), (err_at, fn_err.size - err_at))} \
            if fn_out.size != out_at or fn_err.size != err_at else None
        self.record_ran(int(self.base[group.index]), instances, failed, bounds[:-1].tolist(),
                        bounds[1:].tolist(), chunk, read_sizes=read_sizes, printed=printed)
        return failed, n

    def keep_batch_values(self, group, instances, values, t1: float) -> list:
        """Store a batch call's values and its state updates (journaled as one unit: the
        updates with the first task, the others done with it); returns the positions whose
        value could not be kept (failed)."""
        first = int(self.base[group.index])
        keep = self.keeps[group.index]
        log = self.data.state.take_log()
        unit = (keep or log is not None) and self.journal.on
        failed = []
        if unit:
            self.journal.begin_unit()
        if unit and log is not None:
            others = () if keep else first + np.asarray(instances[1:], dtype=np.int64)
            self.journal.state(first + int(instances[0]), log, others)
        for k, (i, value) in enumerate(zip(instances, values)):
            i = int(i)
            if value is not None or keep:
                try:
                    self.data.store_result(group, i, first + i, value)
                except Exception as exc:
                    failed.append(k)
                    self.fail(first + i, group.instance_id(i), exc, t1)
        if unit:
            self.journal.end_unit()
        return failed

    def unbatched(self, group, why: str) -> None:
        """A batch call failed: count it, say why in the rank's log (once per family)."""
        self.counts.unbatched += 1
        if group.index not in self._unbatched_families:
            self._unbatched_families.add(group.index)
            print(f"mpitiny: the batch form of {group.name} failed on rank {self.rank}, so its "
                  f"chunks run one call per task (reported once): {why}", end="", file=sys.stderr)
        return None

    # ------------------------------------------------------------------ failures
    def fail(self, gid: int, tid: str, exc, when: float, text: str | None = None,
             attempt: int = 1) -> None:
        """Record a failed task with its traceback (or ``text``), rank, host and attempt; the
        one that makes ``--max-fails`` failures run-wide ends the run."""
        header = (f"### task {tid} failed on rank {self.rank} of {self.nranks} ({self.host}), "
                  f"attempt {attempt}")
        if text is None:
            if isinstance(exc, TaskResultError):
                text = str(exc)
            else:
                text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__.tb_next))
        self.files.failure({"id": tid, "gid": gid, "rank": self.rank, "host": self.host,
                            "attempt": attempt, "time": when, "error": f"{header}\n{text.rstrip()}"})
        max_fails = self.opts.max_fails
        if max_fails and self.control.add_failed_tasks(1) >= max_fails:
            self.control.end_everywhere(End.MAX_FAILS)


def _attempt_column(attempts: dict, ran: int):
    """The attempt of each of ``ran`` task rows: 1, or per position where some were retried."""
    if not attempts:
        return 1
    column = np.ones(ran, dtype=np.int16)
    column[list(attempts)] = list(attempts.values())
    return column


def prefetching(group, splits, instances):
    """When splits are worth reading in the background while a task computes (the task
    reads its own first split itself: a thread's hand-off costs more than reading a small
    split), an iterator that gives, for each instance but the last, the split the next
    one reads, or None when that is the same split (pieces of one split, in a family with
    more variables than ``split``); else None."""
    if splits is None or splits.chunk_bytes < PREFETCH_MIN_BYTES:
        return None
    if len(group.vars) == 1:                 # instance i reads split i
        upcoming = iter(instances)
        next(upcoming, None)
        return upcoming
    spec = "{%s}" % group.options.split_var
    reads = [group.index_value(spec, int(i)) for i in instances]
    return iter([b if b != a else None for a, b in zip(reads, reads[1:])])
