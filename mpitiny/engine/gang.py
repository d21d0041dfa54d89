"""Multi-rank tasks (``"ranks": k``): gang scheduling by reservation.

A task of k ranks runs its function on k ranks at once; the function's parameter ``comm``
receives an mpi4py communicator of those k ranks, and the task's result is what comm rank 0
returns. There is no central rank: the rank that claimed the task (its *leader*, comm rank
0) reserves k - 1 others, through one small window of ``WORDS`` + 2 k words per rank, made
only when the DAG has an entry of k > 1:

- ``GANG`` (the word on rank ``HOST`` only): 0, or the one *gatherer*: ``(leader + 1) <<
  NEED_BITS | need``, the members it still needs. A leader becomes the gatherer with one
  compare-and-swap from 0, so one gang gathers at a time: two gangs never hold members each
  waiting for the other's, and since k never exceeds the run's ranks, every gathering ends.
- ``SLOTS`` (k - 1 words on the leader): a rank *joins* by taking one of the need (a
  compare-and-swap of ``GANG`` to ``need - 1``, or to 0 when it takes the last one, which
  frees ``GANG`` for the next gang at once); that gives it slot ``need - 1``, where it puts
  its rank + 1. The gang is complete when the leader sees its k - 1 slots filled.
- ``MAIL`` (on each rank): the task id, k, the k ranks (leader first), then ``READY`` set:
  the leader writes it to each member when it starts the task; ``TASK_CANCELLED`` as the task
  id sends a member home (the leader did not run the task: a stop, the time limit).

Reserved ranks keep working. A rank looks at ``GANG`` each round of its loop, before it takes
new work (``Gangs.next``), and joins while a gatherer needs members; having joined, it goes on
running chunks (one at a time) and looks at its ``MAIL`` each round, and runs its part of the
task as soon as it is there. A rank that claims k-rank tasks keeps them (``pending``: claimed,
not stealable) and becomes the gatherer of the first when ``GANG`` is free; meanwhile, and
while it gathers, it runs its other work, and when its slots are full it starts the task at
its next round. So no rank sits idle because a gang is not complete: a gang starts one chunk
after its last member joined (what its ranks were running when it became complete). A rank
holds one reservation at a time: it either gathers or is reserved, never both. Whatever ends
a rank's loop first (a stop, ``--max-fails``), its reservation is settled as the loop ends
(``stop``): a gatherer sends its members home, a member waits for its leader's word.

Every rank then calls ``Comm.Create_group`` on a duplicate of the run's communicator made
once when the run starts (``Create_group`` is collective over the k ranks only, and a rank is
in one gang at a time, so gangs forming at once never wait on each other), and runs the
function (``GangRunner``); the communicator is freed after the task.

One task, many ranks, one record: every rank calls the function (``MPITINY_ATTEMPT`` set);
then comm rank 0 gathers the others' failures, and the task failed if any rank raised (the
first failure, naming the rank, is the task's error). The leader alone records it: its task
row, result, failure, journal records, state updates, as for any task; a failed attempt runs
again on the same ranks while ``retries`` allow (all ranks decide together: the leader
broadcasts whether to). The leader reads the parents' values (``inputs``) once and sends them
to the members. A member's own return value and its ``mpitiny.state`` updates are not kept.

A command of k ranks (``GangRunner.command``, for ``CommandRunner.run_cmd``) runs once, on
the leader, as any command (recorded, retried, stopped and timed out the same way), with
where its gang is in its environment (``gang_env``: for ``srun --overlap`` or ``mpiexec``),
while the other k - 1 ranks wait asleep in an ``Ibarrier`` until it ends: their cores are the
program's.

The cost where no entry has ``ranks`` > 1: none (no window, no look). Otherwise a ``Get`` of
``GANG`` per round of every rank; a k-rank task costs its gathering (two atomics per member,
k puts of its mail), a ``Create_group`` and a ``Comm_free``, and a broadcast, a gather and a
broadcast per attempt.

Limits, checked when the run starts (``check_ranks``, every rank alike, before the run
directory is made): k at most the run's ranks; no ``ranks`` > 1 in a DAG that declares
``cores``, ``mem`` or ``gpus`` (a rank paused for a node's slots could never join). Ranks
simulated in one process (``LocalWorld``) run only ``ranks: 1`` (with ``MPI.COMM_SELF``).
A function is not interrupted by a stop request or a ``--timeout`` while it runs on several
ranks (a rank leaving a collective would leave the others waiting in it forever): the run
stops after the task ends, and ``timeout`` on such an entry is a load error. A member that
raises while the others wait for it in a collective hangs the task, as in any MPI program.
"""
from __future__ import annotations

import os
import socket
import time
import traceback
from typing import Any

import numpy as np

from mpitiny.engine.types import Chunk
from mpitiny.errors import BadInput

HOST = 0                       # the rank whose window holds GANG
GANG, READY, WORDS = 0, 1, 2   # then MAIL (2 + most words) and SLOTS (most - 1 words)
NEED_BITS = 20
NEED_MASK = (1 << NEED_BITS) - 1
TASK_CANCELLED = -1
CREATE_TAG = 2271
WAIT_FIRST, WAIT_LONGEST = 20e-6, 1e-3     # seconds between looks while waiting


def widest(dag) -> int:
    """The most ranks an entry of ``dag`` runs on (0 when none says ``ranks``)."""
    return max((g.options.ranks or 0 for g in dag.groups), default=0)


def check_ranks(nranks: int, dag) -> None:
    """Raise ``BadInput`` if a task needs more ranks than the run has, or if the DAG mixes
    multi-rank tasks with node resources (the same on every rank: no communication)."""
    most = widest(dag)
    if most <= 1:
        return
    wide = next(g for g in dag.groups if (g.options.ranks or 0) == most)
    if most > nranks:
        raise BadInput(f"{dag.source}: {wide.where}: ranks: {most} is more than the ranks of "
                       f"this run ({nranks}), so the task can never run")
    claims = next((g for g in dag.groups if g.options.resources), None)
    if claims is not None:
        raise BadInput(f"{dag.source}: {wide.where}: ranks: tasks of several ranks cannot run "
                       f"in a DAG that declares cores, mem or gpus ({claims.where} does)")


def make_gangs(runner, world, dag) -> Gangs | None:
    """The multi-rank machinery of a rank (collective over the run's ranks when the DAG has
    an entry of ``ranks`` > 1), or None when no entry says ``ranks``."""
    most = widest(dag)
    if not most:
        return None
    comm = getattr(world, "comm", None)
    if comm is None and most > 1:
        wide = next(g for g in dag.groups if (g.options.ranks or 0) > 1)
        raise BadInput(f"{dag.source}: {wide.where}: ranks: {wide.options.ranks}: ranks "
                       "simulated in one process run tasks of one rank only (run it under "
                       "mpiexec)")
    return Gangs(runner, comm if most > 1 else None, dag, most)


def gang_env(ranks: list, hosts: list) -> dict:
    """What a command of several ranks finds in its environment: ``MPITINY_GANG_SIZE``,
    ``MPITINY_GANG_RANKS`` (the world ranks, comma-separated, its own first),
    ``MPITINY_GANG_HOSTS`` (their hosts, one per rank) and ``MPITINY_GANG_NODELIST`` (each host
    once, in order: for ``srun --nodelist``)."""
    return {"MPITINY_GANG_SIZE": str(len(ranks)),
            "MPITINY_GANG_RANKS": ",".join(map(str, ranks)),
            "MPITINY_GANG_HOSTS": ",".join(hosts),
            "MPITINY_GANG_NODELIST": ",".join(dict.fromkeys(hosts))}


def _one(value: int) -> np.ndarray:
    return np.array([value], dtype=np.int64)


class Gangs:
    """One rank's reservations for multi-rank tasks: gathering, joining, starting; see the
    module docstring. ``GangRunner`` runs the tasks."""

    def __init__(self, runner, comm, dag, most: int) -> None:
        from mpi4py import MPI
        self.MPI = MPI
        self.dag = dag
        self.bases = dag.base.tolist()
        self.wide = np.array([(g.options.ranks or 1) > 1 for g in dag.groups], dtype=bool)
        self.run = GangRunner(self, runner)
        self.pending: list = []     # (gid, queued_at, stolen) of wide tasks claimed here
        self.gathering: tuple | None = None    # the pending task whose gang this rank gathers
        self.claimed = -1           # its gang complete: the task handed to the loop to run
        self.reserved = -1          # the leader whose gang this rank joined (waits for MAIL)
        self.comm: Any = None
        self.words: Any = None
        if comm is None:            # ranks: 1 only
            return
        from mpitiny.queue.memory import RmaMemory
        self.comm = comm.Dup()
        self.group = self.comm.Get_group()
        self.rank = self.comm.Get_rank()
        self.mail, self.slots = WORDS, WORDS + 2 + most
        self.words = RmaMemory(self.comm, self.slots + most - 1)

    @property
    def windows(self) -> list:
        return [] if self.words is None else [self]

    def start(self) -> None:
        if self.words is not None:
            self.words.start()

    def stop(self) -> None:
        """As the loop ends: settle this rank's reservation (a gatherer sends its members
        home; a member waits for its leader's word, and runs the task if it has started)."""
        if self.words is None:
            return
        self.abandon()
        if self.gathering is not None:
            self.cancel(self.ranks_of(self.gathering[0]))
            self.gathering = None
        if self.reserved >= 0:
            self.wait(self.mail_ready)
            self.take_mail()
        self.words.stop()

    def free(self) -> None:
        if self.words is not None:
            self.words.free()
            self.group.Free()
            self.comm.Free()

    # ------------------------------------------------------------------ the loop's hook
    def next(self, take) -> Chunk | None:
        """The loop's next chunk: a wide task whose gang is complete, else ``take()``'s with
        its wide tasks kept back (``pending``). Before it, this rank runs its part of a gang
        it joined once that gang has started, joins a gang that needs members, or starts
        gathering the gang of its first pending task."""
        if self.words is None:
            return take()
        self.abandon()
        self.take_mail()
        if self.reserved < 0 and self.gathering is None:
            self.serve()
        chunk = self.gathered()
        if chunk is not None:
            return chunk
        chunk = take()
        return None if chunk is None else self.sift(chunk)

    def sift(self, chunk: Chunk) -> Chunk | None:
        """``chunk`` itself when it has no wide task; else its other tasks as a chunk (None
        if it has none), the wide ones added to ``pending``."""
        tasks = chunk.tasks
        if isinstance(tasks, tuple):
            lo, hi = tasks
            g0 = int(np.searchsorted(self.bases, lo, side="right")) - 1
            g1 = int(np.searchsorted(self.bases, hi - 1, side="right"))
            if not self.wide[g0:g1].any():
                return chunk
            tasks = np.arange(lo, hi, dtype=np.int64)
        else:
            tasks = np.asarray(tasks, dtype=np.int64)
        wide = self.wide[np.searchsorted(self.bases, tasks, side="right") - 1]
        if not wide.any():
            return chunk
        self.pending.extend((int(t), chunk.queued_at, chunk.stolen) for t in tasks[wide])
        rest = tasks[~wide]
        return Chunk(rest, chunk.queued_at, chunk.stolen) if len(rest) else None

    def gathered(self) -> Chunk | None:
        """The task this rank gathers for, as a chunk of its own, once its gang is complete;
        else None (and the gathering of the first pending task begins if it can)."""
        if self.gathering is not None:
            gid, queued_at, stolen = self.gathering
            k = self.ranks_of(gid)
            if not self.words.get(self.rank, self.slots, k - 1).all():
                return None
            self.gathering, self.claimed = None, gid
            return Chunk(np.array([gid], dtype=np.int64), queued_at, stolen)
        if self.pending and self.reserved < 0 and not self.words.get(HOST, GANG, 1)[0] \
                and self.try_gather(self.pending[0][0]):
            self.gathering = self.pending.pop(0)
        return None

    def try_gather(self, gid: int) -> bool:
        """Become the gatherer of task ``gid``'s gang (one compare-and-swap)."""
        k = self.ranks_of(gid)
        self.words.put(self.rank, self.slots, np.zeros(k - 1, dtype=np.int64))
        return self.words.cas(HOST, GANG, 0, (self.rank + 1) << NEED_BITS | (k - 1)) == 0

    def abandon(self) -> None:
        """The loop did not run the task whose complete gang this rank had (the time limit
        held it back, a resumed run had it done): send the members home."""
        if self.claimed >= 0:
            k = self.ranks_of(self.claimed)
            self.claimed = -1
            self.cancel(k)

    def ranks_of(self, gid: int) -> int:
        g = int(np.searchsorted(self.bases, gid, side="right")) - 1
        return int(self.dag.groups[g].options.ranks or 1)

    # ------------------------------------------------------------------ joining
    def serve(self) -> None:
        """Join the gang being gathered if it needs members (a reservation: this rank goes
        on working until the gang starts)."""
        words = self.words
        while True:
            g = int(words.get(HOST, GANG, 1)[0])
            need = g & NEED_MASK
            leader = (g >> NEED_BITS) - 1
            if not need or leader == self.rank:
                return
            if words.cas(HOST, GANG, g, g - 1 if need > 1 else 0) == g:
                words.put(leader, self.slots + need - 1, _one(self.rank + 1))
                self.reserved = leader
                return

    def mail_ready(self) -> bool:
        return bool(self.words.get(self.rank, READY, 1)[0])

    def take_mail(self) -> None:
        """If this rank's leader has started the task, run this rank's part of it now."""
        if self.reserved < 0 or not self.mail_ready():
            return
        self.reserved = -1
        mail = self.words.get(self.rank, self.mail, self.slots - self.mail)
        self.words.put(self.rank, READY, _one(0))
        gid, k = int(mail[0]), int(mail[1])
        if gid == TASK_CANCELLED:
            return
        comm = self.create(mail[2:2 + k].tolist())
        try:
            self.run.member(gid, comm)
        finally:
            comm.Free()

    # ------------------------------------------------------------------ starting
    def gather(self, gid: int, k: int, stopping):
        """The communicator of task ``gid``'s k ranks, this rank first (the members told);
        None if ``stopping()`` came first (the members that had joined are sent home)."""
        if k == 1:
            return self.MPI.COMM_SELF
        if self.claimed != gid:         # not gathered in ``next``: gather now, waiting
            self.abandon()
            if self.gathering is not None:      # for another task: that one waits
                self.cancel(self.ranks_of(self.gathering[0]))
                self.pending.insert(0, self.gathering)
                self.gathering = None
            while True:
                if self.reserved >= 0:
                    self.take_mail()
                elif self.try_gather(gid):
                    break
                else:
                    self.serve()
                if stopping():
                    return None
                time.sleep(WAIT_FIRST)
            if self.wait(lambda: self.words.get(self.rank, self.slots, k - 1).all(), stopping):
                self.cancel(k)
                return None
        self.claimed = -1
        ranks = [self.rank, *self.joined_ranks(k, k - 1)]
        self.send(ranks[1:], np.array([gid, k, *ranks], dtype=np.int64))
        return self.create(ranks)

    def joined_ranks(self, k: int, joined: int) -> list:
        """The ranks in the last ``joined`` of the gang's k - 1 slots, once all are there."""
        lo, n = self.slots + k - 1 - joined, joined
        if not n:
            return []
        self.wait(lambda: bool(self.words.get(self.rank, lo, n).all()))
        return (self.words.get(self.rank, lo, n) - 1).tolist()

    def cancel(self, k: int) -> None:
        """Stop gathering (or drop a complete gang): free ``GANG`` if it is still this
        rank's, send the members that joined home."""
        words, mine = self.words, self.rank + 1
        while True:
            g = int(words.get(HOST, GANG, 1)[0])
            if g >> NEED_BITS != mine:          # complete: the last member freed GANG
                joined = k - 1
                break
            if words.cas(HOST, GANG, g, 0) == g:
                joined = k - 1 - (g & NEED_MASK)
                break
        self.send(self.joined_ranks(k, joined), np.array([TASK_CANCELLED, 0], dtype=np.int64))

    def send(self, ranks: list, mail: np.ndarray) -> None:
        for r in ranks:
            self.words.put(r, self.mail, mail)
            self.words.put(r, READY, _one(1))

    def create(self, ranks: list):
        """The communicator of ``ranks`` (collective over them only)."""
        group = self.group.Incl(ranks)
        try:
            return self.comm.Create_group(group, CREATE_TAG)
        finally:
            group.Free()

    def wait(self, ready, give_up=None) -> bool:
        """Sleep, doubling the naps, until ``ready()``; True if ``give_up()`` came first."""
        nap = WAIT_FIRST
        while not ready():
            if give_up is not None and give_up():
                return True
            time.sleep(nap)
            nap = min(2 * nap, WAIT_LONGEST)
        return False


class GangRunner:
    """Runs multi-rank tasks: the leader's part (``lead``, for ``TaskRunner.run_fn``, which
    records them) and a member's (``member``)."""

    def __init__(self, gangs: Gangs, runner) -> None:
        self.gangs = gangs
        self.runner = runner
        self.bases = gangs.bases

    def stopping(self) -> bool:
        """Whether this rank should start nothing more (a stop, ``--max-fails``, the end)."""
        guard = self.runner.guard
        return bool(self.runner.control.ending() or guard.stop_signal or guard.time_up)

    def member(self, gid: int, comm) -> None:
        """Run task ``gid`` as a member: each attempt, the function, then what became of it
        to comm rank 0, which says whether to run it again."""
        g = int(np.searchsorted(self.bases, gid, side="right")) - 1
        group, i = self.gangs.dag.groups[g], gid - self.bases[g]
        if group.kind == "cmd":
            self.where(comm)
            self.until_done(comm)
            return
        ok, inputs = comm.bcast(None, root=0)
        if not ok:
            return
        args, kwargs = group.call_args(i)
        attempt = 1
        try:
            while True:
                os.environ["MPITINY_ATTEMPT"] = str(attempt)
                _, exc = self.call(group, args, kwargs, inputs, comm)
                comm.gather(None if exc is None else self.describe(exc, comm), root=0)
                if not comm.bcast(None, root=0):
                    return
                attempt += 1
        finally:
            os.environ["MPITINY_ATTEMPT"] = "1"

    def command(self, group, instances, env: dict, run_all) -> tuple:
        """``CommandRunner.run_cmd`` for a group of ``ranks``: ``run_all()`` on this rank
        while the gang's other ranks wait asleep (their cores free for the processes the
        command starts), with where they are in ``env`` (``gang_env``)."""
        if not len(instances):
            return [], 0
        gangs = self.gangs
        gid = int(self.bases[group.index]) + int(instances[0])
        comm = None if self.stopping() else \
            gangs.gather(gid, int(group.options.ranks), self.stopping)
        if comm is None:
            return [], 0
        try:
            extra = gang_env(*self.where(comm))
            env.update(extra)
            try:
                return run_all()
            finally:
                for key in extra:
                    env.pop(key, None)
        finally:
            self.until_done(comm)
            if comm is not gangs.MPI.COMM_SELF:
                comm.Free()

    def where(self, comm) -> tuple:
        """The world ranks and host names of a gang's ranks, in comm order (collective)."""
        rank = 0 if self.gangs.words is None else self.gangs.rank
        return comm.allgather(rank), comm.allgather(socket.gethostname())

    @staticmethod
    def until_done(comm) -> None:
        """Wait asleep until every rank of the gang is here (the leader's command ended)."""
        request = comm.Ibarrier()
        nap = WAIT_FIRST
        while not request.Test():
            time.sleep(nap)
            nap = min(2 * nap, WAIT_LONGEST)

    def lead(self, group, instances, chunk: Chunk) -> tuple:
        """``TaskRunner.run_fn`` for a group of ``ranks``: each instance on its gang, this
        rank its comm rank 0, recorded here; returns (failed positions, how many ran)."""
        runner = self.runner
        first = int(self.bases[group.index])
        files = runner.files
        starts: list = []
        ends: list = []
        failed: list = []
        attempts: dict = {}
        printed: dict = {}
        ran = len(instances)
        for k, i in enumerate(instances):
            i = int(i)
            out_at, err_at = files.fn_out.size, files.fn_err.size
            outcome = None if self.stopping() else self.run_one(group, i)
            if outcome is None:
                ran = k
                break
            failure, attempt, t0, t1 = outcome
            starts.append(t0)
            ends.append(t1)
            if attempt > 1:
                attempts[k] = attempt
            if failure is not None:
                failed.append(k)
                exc, text = (failure, None) if isinstance(failure, BaseException) else \
                    (None, failure)
                runner.fail(first + i, group.instance_id(i), exc, t1, text, attempt=attempt)
            if files.fn_out.size != out_at or files.fn_err.size != err_at:
                printed[k] = ((out_at, files.fn_out.size - out_at),
                              (err_at, files.fn_err.size - err_at))
        if ran:
            column = 1
            if attempts:
                column = np.ones(ran, dtype=np.int16)
                column[list(attempts)] = list(attempts.values())
            runner.record_ran(first, instances[:ran], failed, starts, ends, chunk, column,
                              0, printed)
        return failed, ran

    def run_one(self, group, i: int) -> tuple | None:
        """Instance ``i`` on its gang: (failure or None, attempt, start, end); its value
        kept. None if a stop came while gathering (it did not run)."""
        gid = int(self.bases[group.index]) + i
        gangs = self.gangs
        comm = gangs.gather(gid, int(group.options.ranks), self.stopping)
        if comm is None:
            return None
        try:
            failure, value, attempt, t0 = self.attempts(group, i, comm)
        finally:
            if comm is not gangs.MPI.COMM_SELF:
                comm.Free()
        if failure is None:
            try:
                self.keep(group, i, value, attempt)
            except Exception as exc:
                failure = exc
        return failure, attempt, t0, time.time()

    def attempts(self, group, i: int, comm) -> tuple:
        """Run instance ``i`` on every rank of ``comm`` (this one comm rank 0) until an
        attempt succeeds everywhere or the retries are spent: (failure or None, value,
        attempt, start)."""
        runner = self.runner
        state, gid = runner.data.state, int(self.bases[group.index]) + i
        inputs = problem = None
        if group.wants_inputs:
            try:
                inputs = runner.data.fetch_inputs(group, i)
            except Exception as exc:
                problem = exc
        comm.bcast((problem is None, inputs), root=0)
        t0 = time.time()
        if problem is not None:
            return problem, None, 1, t0
        args, kwargs = group.call_args(i)
        retries, attempt = runner.retries(group), 1
        runner.journal.now[0] = state.task = gid
        try:
            while True:
                os.environ["MPITINY_ATTEMPT"] = str(attempt)
                value, exc = self.call(group, args, kwargs, inputs, comm)
                errors = comm.gather(None, root=0)
                failure = exc if exc is not None else next((e for e in errors if e), None)
                again = failure is not None and attempt <= retries
                comm.bcast(again, root=0)
                if failure is not None:
                    state.undo()
                if not again:
                    return failure, value, attempt, t0
                runner.counts.retried += 1
                attempt += 1
        finally:
            state.task = -1
            os.environ["MPITINY_ATTEMPT"] = "1"

    def keep(self, group, i: int, value, attempt: int) -> None:
        """Keep what a task returned on comm rank 0, as ``call_each`` does."""
        runner = self.runner
        keep = runner.keeps[group.index]
        if runner.data.state.ops is not None:
            runner.commit(group, i, value, keep, attempt)
        elif value is not None or keep:
            runner.data.store_result(group, i, int(self.bases[group.index]) + i, value,
                                     attempt=attempt)

    @staticmethod
    def call(group, args, kwargs, inputs, comm) -> tuple:
        """``(value, None)`` or ``(None, the exception)`` of one call on this rank."""
        kwargs = dict(kwargs, comm=comm)
        if group.wants_inputs:
            kwargs["inputs"] = inputs
        try:
            return group.function(*args, **kwargs), None
        except (Exception, SystemExit, KeyboardInterrupt) as exc:
            return None, exc

    def describe(self, exc: BaseException, comm) -> str:
        """A member's failure, as the task's error text (from the function's frame on)."""
        tb = exc.__traceback__
        return (f"raised on rank {self.gangs.rank} (comm rank {comm.Get_rank()} of "
                f"{comm.Get_size()}):\n" +
                "".join(traceback.format_exception(type(exc), exc, tb.tb_next if tb else None)))
