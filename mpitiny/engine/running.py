"""Running the tasks of a chunk: Python functions (one call per task, or one call of a batch
form per chunk), shell commands, their retries and timeouts, and the failures they leave.

``TaskRunner.run_fn`` / ``run_cmd`` (group, instances, chunk) run instances of one group and
return which of them failed and how many ran (fewer than all when a stop request interrupted the chunk); it
writes their task rows (``Records``), their results (``RankFiles``) and the values other
tasks read (``DataPlane``). It changes nothing of the scheduling: counting finished tasks and
releasing children is the loop's business (``Engine.finish``).

Batches: a family whose function has a batch form (``mpitiny.with_batch``) runs each chunk of
two or more instances with one call of it (``run_batch``): tiny tasks share the call's fixed
cost and a combiner can merge their outputs. The instances stay tasks, recorded one by one
(the call's time shared evenly), their kept values journaled as one unit; if the call fails,
the chunk runs again one call per task, so that a failure names the task that failed.

Attempts: attempt 1 is the ordinary call; ``retries`` more follow a failure (``retry_fn``),
each with ``MPITINY_ATTEMPT`` set; the attempt that made a kept value is journaled with it.
"""
from __future__ import annotations

import os
import sys
import time
import traceback

import numpy as np

from mpitiny.engine.dataplane import DataPlane, TaskResultError
from mpitiny.engine.guard import Guard, StopRun
from mpitiny.engine.journaling import ChunkJournal
from mpitiny.engine.types import Chunk, RunCounts, RunOptions
from mpitiny.io.rundir import DONE, FAILED, RankFiles, Records, read_log_tail
from mpitiny.io.splits import bytes_read

PREFETCH_MIN_BYTES = 1 << 20   # smaller splits are read by their task, without a thread


class TaskRunner:
    """Runs tasks for one rank; see the module docstring."""

    def __init__(self, dag, opts: RunOptions, data: DataPlane, journal: ChunkJournal,
                 files: RankFiles, records: Records, guard: Guard, counts: RunCounts,
                 where: tuple, crashes: np.ndarray | None = None) -> None:
        self.dag = dag
        self.base = dag.base
        self.opts = opts
        self.data = data
        self.journal = journal
        self.files = files
        self.records = records
        self.guard = guard
        self.counts = counts
        self.rank, self.nranks, self.host = where
        self.crashes = crashes            # per gid, crashes in earlier incarnations
        self.keeps = data.layout.has_locs  # per group: its values are read by other tasks
        self.batch_family = np.array([self.batched(g) for g in dag.groups], dtype=bool)
        self.cmd_env: dict | None = None
        self._unbatched_families: set = set()

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
                and not self.timeout(group))

    # ------------------------------------------------------------------ functions
    def run_fn(self, group, instances, chunk: Chunk) -> tuple:
        """Call ``group.function`` for each instance in this process; returns (failed
        positions, how many ran)."""
        fn = group.function
        const = group.constant_call()
        first = int(self.base[group.index])
        keep = self.keeps[group.index]
        inputs = group.wants_inputs
        timeout = group.options.timeout
        if timeout is None:
            timeout = self.opts.timeout
        guard = self.guard
        ran = len(instances)
        clock = time.time
        splits = self.data.split_reader(group)
        starts: list = []
        ends: list = []
        failed: list = []
        attempts: dict = {}             # position -> attempt, of the positions retried
        read_sizes: list = []           # split bytes each task read (splits only)
        prefetched: dict = {}      # inputs a failed batch read: not read again (counted once)
        if len(instances) > 1 and self.batch_family[group.index]:
            done = self.run_batch(group, instances, chunk, splits is not None, prefetched)
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
                    fetched = prefetched.pop(i) if i in prefetched else \
                        self.data.fetch_inputs(group, i)
                    kwargs = dict(kwargs, inputs=fetched)
                if splits is not None:
                    read_before = bytes_read()
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
                if value is not None or keep:
                    self.data.store_result(group, i, first + i, value)
            except StopRun:
                exc = StopRun
            except (Exception, SystemExit, KeyboardInterrupt) as failure:
                guard.in_task = False
                exc = self.retry_fn(group, i, failure, k, attempts, fetched)
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
        self.record_ran(first, instances[:ran], failed, starts, ends, chunk, attempt,
                        read_sizes if splits is not None else 0)
        return failed, ran

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
                    if value is not None or keep:
                        self.data.store_result(group, i, int(self.base[group.index]) + i, value,
                                               attempt=attempt)
                    return None
                except StopRun:
                    return StopRun
                except (Exception, SystemExit, KeyboardInterrupt) as again:
                    exc = again
            return exc
        finally:
            os.environ["MPITINY_ATTEMPT"] = "1"

    def record_ran(self, first: int, run, failed: list, starts, ends, chunk: Chunk,
                   attempt=1, read_sizes=0) -> None:
        """Task rows for the instances ``run`` (of the group whose first task id is
        ``first``) that a chunk of this rank ran: done, or failed at positions ``failed``."""
        status = DONE
        if failed:
            status = np.full(len(run), DONE, dtype=np.int8)
            status[failed] = FAILED
        gids = np.arange(first + run.start, first + run.stop) \
            if isinstance(run, range) else first + np.asarray(run, dtype=np.int64)
        self.records.add_run(gids, status, starts, ends, attempt=attempt, queued=chunk.queued_at,
                             stolen=chunk.stolen, bytes_read=read_sizes)

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
        t0 = time.time()
        self.guard.in_task = True
        try:
            values = group.batch_function(calls)
        except StopRun:
            return [], 0
        except (Exception, SystemExit, KeyboardInterrupt) as exc:
            return self.unbatched(group, "".join(traceback.format_exception_only(exc)))
        finally:
            self.guard.in_task = False
        t1 = time.time()
        n = len(calls)
        if not isinstance(values, (list, tuple)) or len(values) != n:
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
        self.record_ran(int(self.base[group.index]), instances, failed, bounds[:-1].tolist(),
                        bounds[1:].tolist(), chunk, read_sizes=read_sizes)
        return failed, n

    def keep_batch_values(self, group, instances, values, t1: float) -> list:
        """Store a batch call's values (journaled as one unit); returns the positions whose
        value could not be kept (failed)."""
        first = int(self.base[group.index])
        keep = self.keeps[group.index]
        unit = keep and self.journal.on
        failed = []
        if unit:
            self.journal.begin_unit()
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

    # ------------------------------------------------------------------ commands
    def run_cmd(self, group, instances, chunk: Chunk) -> tuple:
        """Run each instance's shell command; stdout/stderr go to this rank's log files.
        Returns the failed positions and how many instances ran (see ``run_fn``)."""
        out_fd, err_fd = self.files.log_fds()
        if self.cmd_env is None:
            self.cmd_env = dict(os.environ)
        env = self.cmd_env
        timeout = self.timeout(group)
        retries = self.retries(group)
        first = int(self.base[group.index])
        failed: list = []
        for k, i in enumerate(instances):
            i = int(i)
            tid = group.instance_id(i)
            env["MPITINY_TASK_ID"] = tid
            crashes = 0 if self.crashes is None else int(self.crashes[first + i])
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
                self.counts.retried += 1
            out1, err1 = os.fstat(out_fd).st_size, os.fstat(err_fd).st_size
            status = DONE
            if error is not None:
                status = FAILED
                failed.append(k)
                tail = read_log_tail(self.files.err_path, err0, err1 - err0)
                self.fail(first + i, tid, None, t1, f"{error}; command: {group.command(i)}"
                          + (f"\nstderr (last part):\n{tail}" if tail else ""), attempt=attempt)
            self.records.add_one(first + i, status, t0, t1, attempt, (out0, out1 - out0),
                                 (err0, err1 - err0), chunk.queued_at, chunk.stolen)
        return failed, len(instances)

    # ------------------------------------------------------------------ failures
    def fail(self, gid: int, tid: str, exc, when: float, text: str | None = None,
             attempt: int = 1) -> None:
        """Record a failed task with its traceback (or ``text``), rank, host and attempt."""
        header = (f"### task {tid} failed on rank {self.rank} of {self.nranks} ({self.host}), "
                  f"attempt {attempt}")
        if text is None:
            if isinstance(exc, TaskResultError):
                text = str(exc)
            else:
                text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__.tb_next))
        self.files.failure({"id": tid, "gid": gid, "rank": self.rank, "host": self.host,
                            "attempt": attempt, "time": when, "error": f"{header}\n{text.rstrip()}"})
