"""Resuming a run: what becomes of the tasks the earlier incarnations' journals name.

A run directory whose journals belong to the same DAG and whose last incarnation did not
complete is resumed (``mpitiny.engine.start``). Every task then has a ``Standing``:

- CACHED (journaled done): not run again, but it passes through the worker loop like any
  task, so the DAG's counts and the outputs come out as in an uninterrupted run, with any
  number of ranks: its kept value is reloaded for its children, its row has attempt 0.
- SUSPECT (was running when a rank died): a command runs as usual (it cannot take the rank
  down), and so does a task of several ``ranks`` (on its gang: a child process has no MPI);
  a function runs alone in a child process (``run_isolated``), again after each crash
  until it has crashed ``--max-crashes`` times. Under a time limit it starts only if it fits,
  as any task; a stop request or the run's hard end kills the child, and the task is
  journaled as stopped (not crashed): it stays a suspect for the next run.
- DOOMED (crashed that often already): failed without running.
- NORMAL: runs as usual.

The standing of every task is fixed when the run starts; nothing here changes it.
"""
from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

import numpy as np

from mpitiny import state
from mpitiny.engine.guard import StopRun, run_isolated
from mpitiny.engine.types import Chunk, Standing
from mpitiny.io import journal as jnl
from mpitiny.io.rundir import DONE, FAILED
from mpitiny.io.values import encode
from mpitiny.queue.state import RemoteState, serve

if TYPE_CHECKING:
    from mpitiny.engine.loop import Engine


def standings(resumed: jnl.Resumed, total: int, max_crashes: int) -> np.ndarray | None:
    """Each task's ``Standing`` from the journals; None if every task is NORMAL."""
    standing = np.zeros(total, dtype=np.int8)
    standing[resumed.crashes > 0] = Standing.SUSPECT
    standing[resumed.crashes >= max_crashes] = Standing.DOOMED
    standing[resumed.done] = Standing.CACHED
    return standing if standing.any() else None


class Resume:
    """Runs the instances of a resumed run that are not NORMAL, each kind its own way."""

    def __init__(self, engine: "Engine", resumed: jnl.Resumed, standing: np.ndarray) -> None:
        self.engine = engine
        self.resumed = resumed
        self.standing = standing

    def run(self, g: int, idx: np.ndarray, standing: np.ndarray, chunk: Chunk) -> None:
        """Instances ``idx`` of group ``g`` with their standings: cached, doomed, suspect,
        then the ordinary ones."""
        self.run_cached(g, idx[standing == Standing.CACHED], chunk)
        self.fail_doomed(g, idx[standing == Standing.DOOMED])
        for i in idx[standing == Standing.SUSPECT].tolist():
            self.run_suspect(g, i, chunk)
        normal = idx[standing == Standing.NORMAL]
        if len(normal):
            self.engine.run_group(g, normal, chunk, plain=True)

    def run_cached(self, g: int, idx: np.ndarray, chunk: Chunk) -> None:
        """Not run again; kept values reloaded for the children; rows say attempt 0."""
        if not len(idx):
            return
        e = self.engine
        group = e.dag.groups[g]
        first = int(e.base[g])
        if e.layout.has_locs[g]:
            damaged = []
            for i in idx.tolist():
                try:
                    kind, data = self.resumed.value(first + i)
                except (KeyError, OSError):
                    damaged.append(i)
                    continue
                e.data.store_encoded(group, i, first + i, kind, data, journal=False)
            if damaged:                      # the value is lost after all: run those again
                idx = np.setdiff1d(idx, damaged)
                e.run_group(g, np.array(damaged, dtype=np.int64), chunk, plain=True)
        now = time.time()
        e.records.add_run(first + idx, DONE, np.full(len(idx), now), np.full(len(idx), now),
                          attempt=0)
        e.counts.cached += len(idx)
        e.finish(g, idx, [], journal=False)

    def fail_doomed(self, g: int, idx: np.ndarray) -> None:
        """Instances that crashed their rank ``max_crashes`` times: failed without running."""
        if not len(idx):
            return
        e = self.engine
        group = e.dag.groups[g]
        first = int(e.base[g])
        now = time.time()
        for i in idx.tolist():
            crashes = int(self.resumed.crashes[first + i])
            e.runner.fail(first + i, group.instance_id(i), None, now,
                          f"crashed its rank in {crashes} earlier runs (killed by a signal, "
                          f"os._exit or a hang while it ran); not run again (--max-crashes "
                          f"{e.opts.max_crashes})", attempt=crashes + 1)
        e.records.add_run(first + idx, FAILED, np.full(len(idx), now), np.full(len(idx), now),
                          attempt=self.resumed.crashes[first + idx] + 1)
        e.finish(g, idx, list(range(len(idx))))

    def run_suspect(self, g: int, i: int, chunk: Chunk) -> None:
        """An instance that was running when a rank died: a command as usual, a function
        alone in a child process until it succeeds, fails or has crashed too often."""
        e = self.engine
        group = e.dag.groups[g]
        gid = int(e.base[g]) + i
        if group.kind != "fn" or group.options.ranks is not None:     # (ranks: on its gang)
            e.run_group(g, np.array([i], dtype=np.int64), chunk, plain=True)
            return
        if e.control.limit is not None and not len(
                e.control.in_time(g, [i], e.avg_task[g], e.avg_all)):
            e.control.not_run(e.journal, int(e.base[g]), np.array([i], dtype=np.int64),
                              bool(e.guard.stop_signal), e.counts)
            return
        keep = e.layout.has_locs[g]
        fetched = fetch_error = None
        if group.wants_inputs:          # read here, once: not by each child process (MPI)
            try:
                fetched = e.data.fetch_inputs(group, i)
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
        try:
            outcome, attempt, crashes = self.run_alone(gid, call, e.runner.timeout(group))
        except StopRun:
            e.control.not_run(e.journal, int(e.base[g]), np.array([i], dtype=np.int64),
                              bool(e.guard.stop_signal), e.counts)
            return
        t1 = time.time()
        failed = []
        if outcome[0] == "ok":
            self.keep_outcome(group, i, gid, outcome[1], outcome[2], attempt)
        else:
            failed = [0]
            text = outcome[1] if outcome[0] == "error" else (
                f"crashed {crashes} times (the last one alone in a child process: "
                f"{outcome[1]}); not run again (--max-crashes {e.opts.max_crashes})")
            e.runner.fail(gid, group.instance_id(i), None, t1, text, attempt=attempt)
        e.records.add_run(np.array([gid]), FAILED if failed else DONE, [t0], [t1],
                          attempt=attempt, queued=chunk.queued_at, stolen=chunk.stolen)
        e.finish(g, np.array([i], dtype=np.int64), failed)

    def keep_outcome(self, group, i: int, gid: int, kind: int, data: bytes,
                     attempt: int) -> None:
        """Keep what a task run alone returned, and journal its state updates with it."""
        e = self.engine
        unit = e.journal.on
        if unit:
            e.journal.begin_unit()
        if kind >= 0:
            e.data.store_encoded(group, i, gid, kind, data, attempt=attempt)
        log = e.data.state.take_log()
        if unit:
            if log is not None:
                e.journal.state(gid, log, attempt=attempt)
            e.journal.end_unit()

    def run_alone(self, gid: int, call, timeout: float | None) -> tuple:
        """Run ``call`` in a child process, again after each crash while fewer than
        ``max_crashes``; returns (outcome of ``run_isolated``, last attempt, crashes). The
        child's state operations are made here, for the task (``RemoteState``); those of an
        attempt that did not succeed are undone."""
        e = self.engine
        store = e.data.state
        crashes = int(self.resumed.crashes[gid])
        while True:
            attempt = crashes + 1
            os.environ["MPITINY_ATTEMPT"] = str(attempt)
            e.counts.isolated += 1
            e.journal.now[0] = store.task = gid
            if e.journal.on:
                e.journal.add(jnl.START, gid, gid + 1, attempt)
            e.guard.in_task = True         # a stop request or the hard end kills the child
            try:
                outcome = run_isolated(call, timeout, lambda request: serve(store, request),
                                       lambda request: state.use(RemoteState(request)))
            except StopRun:
                store.undo()
                raise
            finally:
                e.guard.in_task = False
                os.environ["MPITINY_ATTEMPT"] = "1"
                store.task = -1
            if outcome[0] != "ok":
                store.undo()
            if outcome[0] != "crash":
                return outcome, attempt, crashes
            if e.journal.on:
                e.journal.add(jnl.CRASHED, gid, gid + 1, attempt)
            crashes += 1
            e.counts.crashed += 1
            if crashes >= e.opts.max_crashes or e.guard.stop_signal:
                return outcome, attempt, crashes
