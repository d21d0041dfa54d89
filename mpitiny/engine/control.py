"""The control words: how ranks end a run together with no coordinator.

The first ``CONTROL_WORDS`` words of every rank's window, before its queue:

- ``DONE`` (every rank): ``End.RUNNING`` (0) while the run goes on, else why this rank should
  leave its loop. Set by compare-and-swap from 0, so the first reason wins on each rank.
- ``FINISHED`` (rank 0's only): tasks finished run-wide. Every rank counts what it finished, in
  batches, when it runs out of work and at least every ``REPORT_SECONDS`` while busy; the rank
  whose add makes it equal to the number of tasks sets every rank's ``DONE``. Beyond
  ``TREE_RANKS`` ranks it sets rank 0's only, and each rank, as it leaves, sets those of its
  ``FANOUT`` children in a tree rooted at rank 0 (``pass_on_end``): once the run has finished
  every rank is idle, reading its own word, so the end reaches all P ranks in log_FANOUT(P)
  idle rounds instead of P round trips from one rank (47 ms at 10,000 simulated ranks,
  ``docs/scale.md``). Stops (a signal, ``--max-fails``, the time limit) still set every rank's
  word at once: a rank busy with a long task would hold up its subtree.
- ``SUBTREE`` (every rank but 0, beyond ``TREE_RANKS`` ranks): finished tasks on their way up
  to ``FINISHED``. A balanced run's ranks run out of work together, and P fetch-and-adds on one
  word are served one at a time (9.5 ms for the last at 10,000 simulated ranks between nodes,
  ``docs/scale.md``). So with many ranks the finishes are combined up a ``FANIN``-ary tree
  rooted at rank 0 (the parent of rank r > 0 is ``(r - 1) // FANIN``): a rank takes what its
  children left in its own ``SUBTREE`` word (an atomic swap with 0) and adds it, with what it
  finished itself, to its parent's ``SUBTREE`` word, or to ``FINISHED`` when its parent is
  rank 0 (``forward``), every time it reports: in every idle round, and after a chunk when
  ``REPORT_SECONDS`` have passed. No word takes adds from more than ``FANIN`` + 1 ranks, and at
  the end, every rank idle, a count climbs the log_FANIN(P) levels in as many idle rounds. A
  rank busy with a long task holds its subtree's counts meanwhile (which cannot end the run
  early or late: its own task is not finished), so every ``DRAIN_SECONDS`` each rank also
  drains its ancestors' words, nearest first, up to rank 0 (``drain_ancestors``): what
  ``FINISHED`` shows lags the finishes by at most about that much while some rank below a
  busy one reports. After a stop, counts left in ``SUBTREE`` words are not collected (the
  task tables, not ``FINISHED``, give the summary's counts).
- ``FAILED`` (rank 0's): of those, failed or upstream-failed (for the progress display).
- ``FAILED_TASKS`` (rank 0's): failed tasks (for ``--max-fails``).
- ``ADDED`` (rank 0's): tasks added while the run goes on (``mpitiny.submit``,
  ``mpitiny.engine.adding``), for the progress display and so that idle ranks know whether
  there are added tasks to steal.

Tasks that add tasks: the run's total is not fixed. A rank that adds n tasks first subtracts
n from ``FINISHED`` (``add_tasks``), and only then makes them stealable. So ``FINISHED`` is
(tasks finished) - (tasks added), and it equals the DAG's ``total`` only when every task,
added ones too, has finished: a task can be reported finished only once it was added, so the
finished added tasks never outnumber the counted additions, and an addition not yet counted
belongs to a parent that is still running, which is itself not yet counted finished. A child
that finishes (and is reported) before its parent therefore never completes the count early.
Additions go to rank 0 directly, and only finishes are combined: a finish reaches ``FINISHED``
through the tree some time after it happened, and can only make the count smaller than the
direct count would be, never reach the total before every counted task has finished.
A resumed run counts the added tasks it queues again (journaled added, not done) the same way,
on rank 0 as its engine is built (``count_recovered``), before any rank reports a finished
task.

Idle ranks read only their own ``DONE`` word. ``RunWatch`` is the narrow read-only view that
rank 0's progress display takes of these words and of the ranks' busy flags.

A time limit (``mpitiny.engine.walltime``) ends a run the same way: the ranks agree on the
run's end when their engines start (``agree_end``); a rank that would start a task
that cannot finish before it holds that task back (``in_time``, ``held_back``) and sets every
rank's ``DONE`` to ``End.TIME_LIMIT``: no rank claims another chunk, the tasks that are
running finish, the journals are synced and the run exits 75, to be resumed.
"""
from __future__ import annotations

import time

import numpy as np

from mpitiny.engine.types import End, RunCounts
from mpitiny.engine.walltime import TimeLimit, run_end
from mpitiny.queue.stealq import BUSY

DONE = 0
FINISHED = 1
FAILED = 2
FAILED_TASKS = 3
ADDED = 4
SUBTREE = 5
CONTROL_WORDS = 6
REPORT_SECONDS = 0.25     # a busy rank adds its finished tasks to FINISHED at least this often
TREE_RANKS = 32           # with more ranks, the end of a finished run spreads down a tree
FANOUT = 8                # of this many children per rank
FANIN = 16                # and, with as many ranks, finishes are counted up a tree this wide
DRAIN_SECONDS = 0.25      # how often each rank also drains its ancestors' SUBTREE words


def chunk_done(engine, took: float) -> None:
    """What every rank does after a chunk of tasks ran, whoever ran it (the DAG's loop,
    added tasks, a served job's): count ``took`` seconds busy, open its queue to thieves
    again, add its finished tasks to ``FINISHED`` if ``REPORT_SECONDS`` went by, and tick
    the progress line."""
    engine.busy += took
    engine.queue.set_busy(False)
    if time.monotonic() - engine.reported_at > REPORT_SECONDS:
        engine.report_finished()
    if engine.progress is not None:
        engine.progress.tick(working=True)


class Control:
    """One rank's operations on the control words (``mem``: the rank's word memory)."""

    def __init__(self, mem, total: int) -> None:
        self.mem = mem
        self.total = total
        self.agreed = False                    # whether ``agree_end`` ran
        self.limit: TimeLimit | None = None    # the run's end, if it has one
        self.start_by = 0.0    # under a limit: start no task of the current group after this
        self.declared = False  # and its tasks' time is their declared walltime
        self.per_task = 0.0    # and what a task of it is expected to take
        self.combining = mem.nranks > TREE_RANKS      # finishes go up the FANIN tree
        self.drained_at: float | None = None           # when ancestors were last drained

    def ending(self) -> bool:
        """Whether this rank's DONE word holds a reason to leave."""
        return bool(self.mem.local[DONE])

    def end(self) -> End:
        """Why this rank should leave its loop (``End.RUNNING``: it should not)."""
        return End(int(self.mem.local[DONE]))

    def complete_without_failures(self) -> bool:
        """Whether the run ended with every task finished and none failed or upstream-failed
        (rank 0's ``FAILED``: each rank adds its failures before the finishes that may end
        the run, so it is final once the run has ended)."""
        return self.end() == End.ALL_FINISHED and not self.mem.get(0, FAILED, 1)[0]

    def add_finished(self, finished: int, failed: int, now: float) -> None:
        """Count tasks this rank finished (``failed`` of them failed or were skipped; both may
        be 0: with many ranks the tree's counts are still passed on); ``now``: the caller's
        clock, for ``DRAIN_SECONDS``. The rank whose add completes the count ends the run."""
        if failed:
            self.mem.add(0, FAILED, failed)
        if not self.combining:
            if finished:
                self.count(finished)
            return
        rank = self.mem.rank
        due = self.drained_at is not None and now - self.drained_at > DRAIN_SECONDS
        if self.drained_at is None or due:
            self.drained_at = now
        if rank and (due or self.mem.local[SUBTREE]):
            finished += self.mem.swap(rank, SUBTREE, 0)
        if finished:
            self.forward(rank, finished)
        if due:
            self.drain_ancestors()

    def forward(self, rank: int, n: int) -> None:
        """Pass ``n`` finishes of ``rank``'s subtree to its parent's word (many ranks)."""
        parent = (rank - 1) // FANIN if rank else 0
        if parent:
            self.mem.add(parent, SUBTREE, n)
        else:
            self.count(n)

    def drain_ancestors(self) -> None:
        """Move what waits in each ancestor's ``SUBTREE`` word up a level, nearest first (so
        one pass carries it to ``FINISHED``), for ancestors busy with long tasks."""
        a = (self.mem.rank - 1) // FANIN if self.mem.rank else 0
        while a:
            n = self.mem.swap(a, SUBTREE, 0)
            if n:
                self.forward(a, n)
            a = (a - 1) // FANIN

    def count(self, n: int) -> None:
        """Add ``n`` finishes to ``FINISHED``; if that completes the run, end it."""
        before = self.mem.fetch_add(0, FINISHED, n)
        if before + n == self.total:
            if self.mem.nranks > TREE_RANKS:
                self.mem.cas(0, DONE, 0, int(End.ALL_FINISHED))
            else:
                self.end_everywhere(End.ALL_FINISHED)

    def add_tasks(self, n: int) -> None:
        """Count ``n`` tasks added to the run (before they can be stolen: see above): -n to
        FINISHED and n to ADDED in one ``Get_accumulate`` over the words between them."""
        block = np.zeros(ADDED - FINISHED + 1, dtype=np.int64)
        block[0], block[-1] = -n, n
        self.mem.fetch_add_block(0, FINISHED, block)

    def count_recovered(self, n: int) -> None:
        """Rank 0, as its engine is built (before the run-long epoch opens, so with plain
        stores, and before any rank can report a finished task): count ``n`` added tasks a
        resumed run queues again."""
        assert self.mem.rank == 0
        self.mem.local[FINISHED] -= n
        self.mem.local[ADDED] += n

    def added_anywhere(self) -> int:
        """How many tasks have been added run-wide so far (one ``Get`` on rank 0)."""
        return int(self.mem.get(0, ADDED, 1)[0])

    def pass_on_end(self) -> None:
        """As this rank leaves a finished run: tell its children in the tree (many ranks)."""
        nranks = self.mem.nranks
        if nranks > TREE_RANKS:
            first = self.mem.rank * FANOUT + 1
            for child in range(first, min(nranks, first + FANOUT)):
                self.mem.cas(child, DONE, 0, int(End.ALL_FINISHED))

    def add_failed_tasks(self, n: int) -> int:
        """Count failed tasks for ``--max-fails``; returns the run-wide total."""
        return self.mem.fetch_add(0, FAILED_TASKS, n) + n

    def end_everywhere(self, why: End) -> None:
        """Set every rank's DONE word to ``why`` unless it already holds a reason."""
        for r in range(self.mem.nranks):
            self.mem.cas(r, DONE, 0, int(why))

    # ------------------------------------------------------------------ the time limit
    def agree_end(self, world, opts, dag, counts: RunCounts) -> None:
        """Collective (every rank, once, before its first chunk): the run's end, the earliest
        that any rank found (rank 0 asks Slurm), as this rank's ``limit``."""
        found = run_end(opts, query_slurm=world.rank == 0)
        ends = [end for end in world.allgather(found) if end is not None]
        self.agreed = True
        if ends:
            end, what = min(ends)
            self.limit = TimeLimit(end, what, opts.started, dag)
            counts.run_end, counts.run_end_what = end, what

    def in_time(self, g: int, instances, avg_group: float, avg_all: float):
        """Of ``instances`` of entry ``g``, about to run one after another, those that finish
        before the end (a leading part); sets ``start_by`` for the check before each task."""
        limit = self.limit
        assert limit is not None
        per_task, self.declared = limit.expected(g, avg_group, avg_all)
        self.start_by = limit.stop_at - per_task
        self.per_task = per_task
        fit = limit.fit(len(instances), per_task, time.time())
        return instances if fit == len(instances) else instances[:fit]

    def not_run(self, journal, first: int, instances, stopping: bool,
                counts: RunCounts) -> None:
        """Instances (of the group whose first id is ``first``) that were due but did not run:
        a stop, or held back by the time limit. Journal them as stopped; unless a stop request
        (``stopping``) explains it, the limit held them back and ends the run."""
        if journal.on:
            journal.stopped(first, instances)
        if self.limit is not None and not stopping:
            self.held_back(len(instances), counts)

    def held_back(self, n: int, counts: RunCounts) -> None:
        """``n`` tasks of a chunk were not started, and no stop request or ``--max-fails``
        stopped them: they would not finish in time. Count them and end the run everywhere
        (the tasks running now finish)."""
        if self.end() == End.MAX_FAILS:
            return
        counts.held_back += n
        if self.declared:
            counts.held_back_declared += n
        if self.limit is not None and self.per_task > self.limit.budget:
            counts.held_back_too_long += n      # no run this long can run them
        self.end_everywhere(End.TIME_LIMIT)


class RunWatch:
    """What the progress display reads: run-wide counts (on rank 0) and who is busy."""

    def __init__(self, mem, queue_base: int) -> None:
        self.mem = mem
        self.busy_word = queue_base + BUSY

    def finished(self) -> int:
        """Tasks finished run-wide (added ones too: FINISHED counts additions down)."""
        self.mem.sync()
        return int(self.mem.local[FINISHED]) + int(self.mem.local[ADDED])

    def added(self) -> int:
        return int(self.mem.local[ADDED])

    def failed(self) -> int:
        return int(self.mem.local[FAILED])

    def busy_others(self) -> int:
        """How many of the other ranks run a task now (one ``Get`` each)."""
        return sum(int(self.mem.get(r, self.busy_word, 1)[0])
                   for r in range(self.mem.nranks) if r != self.mem.rank)
