"""Tasks that add tasks: ``mpitiny.submit`` from inside a running task (the engine side; the
one-sided store is ``mpitiny.queue.added``, the identity of added tasks ``mpitiny.io.added``).

A parent waits for nothing (the Swift/T / ADLB model): ``submit`` returns the new task's id at
once, the parent returns when it is done, and its children run later, anywhere, possibly
before the parent has finished. ``submit`` on rank r:

1. computes the task's key from its parent and the order of the parent's submits
   (``child_key``); a key the journals of earlier incarnations hold (done, or added and not
   done: *recovered*, queued again when the run resumes), or one an earlier attempt of this
   parent added, is not added again: its id is returned;
2. pickles the call (function by reference, arguments, deps, the time) as the task's
   *payload* and takes a slot for it in rank r's store (HELD);
3. counts the new tasks in termination (``Control.add_tasks``: the run-wide FINISHED word goes
   down by their number) before any of them can be stolen, so the count never reaches the
   total early even when a child finishes before its parent;
4. journals the payload (a value record of kind ``VK_ADDED``: a resumed run queues the tasks
   added but not done again, ``mpitiny.io.journal``); it reaches the journal before the
   parent's own DONE record, so a parent journaled done never lost a child;
5. publishes the task (``AddedStore.publish``: stealable at once), or, if it has deps, keeps
   it *waiting* on rank r until they have finished (``poll``, each time the rank looks for
   work: a dep added on this rank is read locally, one on another rank with one ``Get``); a
   failed dep makes it upstream-failed.

Running (``work``, called by the loop's ``find_work`` after the rank's own DAG tasks): the
newest of the rank's own published tasks (depth first), else one it could not publish (HELD),
else up to half of another rank's, from the oldest end of its ring (``AddedStore.steal``):
the thief runs one and publishes the others in its own store (``AddedStore.forward``), so
they stay stealable. Each
task: unpickle, call (``--retries`` / ``--timeout`` as for the DAG's tasks), record its row
(``gid`` = its key; ``queued`` = when it was submitted; ``stolen``), its result
(``results/``, under its id ``name@key``), its id text (``tasks/rank-R.added``), journal it
DONE (after its result and the payloads it added reached the OS), mark its slot DONE or FAILED
at the rank that added it, and count it finished like any task. Those last three steps
(``settle``) are done for the tasks of several chunks at once, at most ``SETTLE_SECONDS``
after the first of them finished, and at once when the rank finds no added task to run, when
the run is ending, or when DAG work waits on the rank: a rank's own chunks are mostly one
task (it leaves half of its tasks to thieves), and one flush of results and payloads per
task cost it more than the 2 ms of delay cost the dependents. A task that waits
(``result()`` of a ``mpitiny.futures`` future inside a task) runs other tasks inside its own
call; ``run_one`` keeps the waiting task's submit counter (``parent``, ``count``, ``given``,
``attempt``) aside meanwhile, so its next ids follow its earlier ones instead of repeating
them. A stop that comes while a DAG chunk runs can find the last of them unsettled: resumed,
they run again (as after a crash).

Resuming: every rank knows the recovered keys (sent with the journals); the i-th in key order
goes to rank i mod P, slot i div P, so a dep on a recovered task is found without asking.
Rank 0 counts them all as its engine is built (``Control.count_recovered``); each rank queues
its share when it first looks for work.
A dep on a task of an earlier incarnation that is neither done nor recovered (its submission
was lost with its rank) counts as failed.

Any rank may add at any time while the run lives: ``Adding.add`` takes the number the new ids
derive from (by default the running task's), so a submitter outside any task, such as a
``concurrent.futures`` executor's client loop, can use it with a number of its own (the
running task's counter is kept as it was). ``mpitiny.futures`` also sets ``pump`` (called at
each look for added work; True: run none now), ``held_open`` (tasks rank 0 counts as its
engine is built, finished by the caller of the run: its client script) and ``submit_lock``
(its channel's lock: its own thread adds tasks while the engine thread runs a call, and a
rank's store has one writer at a time). ``mpitiny serve``
sets ``serving``: each rank's jobs (``mpitiny.engine.serving``) are built beside its store,
with a window of their own, and run first at each look for added work.

Not in this version: priorities, placement (``rank``) and deps on the DAG's own tasks for
added tasks; added tasks are not held back by a time limit, not run alone after a crash
(one that was running when its rank died simply runs again), and the updates they make to
the shared state store are neither undone on failure nor journaled; ``submit`` cannot be
called from a batch form or from a task run alone in a child process.
"""
from __future__ import annotations

import os
import pickle
import time
from typing import TYPE_CHECKING, Any, Callable, Iterable

import numpy as np

from mpitiny.engine.control import chunk_done
from mpitiny.engine.guard import StopRun
from mpitiny.engine.world import LocalWorld
from mpitiny.io.added import child_key, names_path, task_text
from mpitiny.io.rundir import DONE as ROW_DONE
from mpitiny.io.rundir import FAILED as ROW_FAILED
from mpitiny.io.rundir import UPSTREAM_FAILED
from mpitiny.io.values import KIND_JSON, encode
from mpitiny.queue.added import DONE, FAILED, AddedStore, StoreFull
from mpitiny.queue.stealq import random_other

if TYPE_CHECKING:
    from mpitiny.engine.loop import Engine

SLOTS = 1 << 16              # added tasks a rank holds at once (not yet finished)
RING = 1 << 16               # of them published at once
ARENA_BYTES = 8 << 20        # their payloads
POLL_SECONDS = 0.0005        # how often a rank reads the status of other ranks' deps
LOOK_SECONDS = 0.001         # how often an idle rank looks whether any task was added at all
DEP_DONE = -1                # a dep's rank: done in an earlier incarnation
CHUNK_SECONDS = 0.005        # a rank takes about this much of its own added tasks at once
MAX_CHUNK = 64
SETTLE_SECONDS = 0.002       # finished added tasks are journaled and marked at most this late

_by_state: dict = {}       # id of a rank's state store -> its Adding (see ``submit_rows``)
pump: Callable | None = None   # called with the Adding at each look for work (mpitiny.futures);
                               # True: run nothing now
held_open = 0                  # tasks rank 0 counts as its engine is built, that only the
                               # caller of ``run_file`` finishes (a mpitiny.futures session)
serving: Callable | None = None  # ``mpitiny serve``: builds the rank's jobs beside its store,
                                 # run first at each look (``mpitiny.engine.serving.Jobs``)
submit_lock: Any = None          # held around a submit from a task (mpitiny.futures: its
                                 # channel's thread adds tasks while a call runs)


class SubmitError(RuntimeError):
    """``mpitiny.submit`` called where no task of a run is running, or with bad arguments."""


class TaskId(str):
    """The id of an added task (``name@key``), and where its status lives in this run, so
    that other tasks can name it in their ``deps`` (it pickles with that)."""

    key: int
    where: tuple

    def __new__(cls, text: str, key: int, where: tuple) -> "TaskId":
        self = super().__new__(cls, text)
        self.key, self.where = key, where        # (rank, slot, incarnation)
        return self

    def __reduce__(self):
        return (TaskId, (str(self), self.key, self.where))


def submit_rows(fn: Callable, rows: Iterable, kwargs: dict, deps: Iterable) -> list:
    """``mpitiny.submit`` / ``submit_family``: add one task per row of positional arguments,
    on the rank whose task calls it: the one whose state store ``mpitiny.state`` uses (the
    engine binds it, ``Engine.bind``: once per process under MPI, at each turn of a rank
    simulated in one process)."""
    from mpitiny import state
    active = _by_state.get(id(state._store))
    if active is None and any(a.pid != os.getpid() for a in _by_state.values()):
        raise SubmitError("mpitiny.submit: not available in a task run alone in a child "
                          "process (a resumed task that crashed its rank)")
    if active is None or not active.in_task():
        raise SubmitError("mpitiny.submit: called outside a running task: a task can add "
                          "tasks only while mpitiny runs it (mpitiny run, mpitiny.run)")
    if submit_lock is None:
        return active.add(fn, rows, kwargs, deps)
    with submit_lock:
        return active.add(fn, rows, kwargs, deps)


class NoAdding:
    """The ``Engine.adding`` of an engine that runs no added tasks (the simulator's ranks,
    ``bench/sim``)."""

    @staticmethod
    def work() -> bool:
        return False


class Adding:
    """One rank's added tasks: submitting, waiting for deps, running, resuming."""

    def __init__(self, engine: "Engine") -> None:
        self.e = engine
        self.rank, self.nranks, self.run_no = engine.rank, engine.nranks, engine.incarnation
        self.mem = engine.world.words(AddedStore.words(SLOTS, RING))
        self.arena = engine.world.bytes(ARENA_BYTES)
        self.store = AddedStore(self.mem, self.arena, SLOTS, RING)
        resumed = engine.resumed
        self.done_before = np.zeros(0, dtype=np.int64) if resumed is None else \
            resumed.added_done
        pending = [] if resumed is None else resumed.added_pending()
        self.recovered = {key: (i % self.nranks, i // self.nranks)
                          for i, key in enumerate(pending)}
        self.held: list = []          # (owner, slot, key, payload): no room to publish, run here
        self.waiting: list = []       # [slot, key, payload, deps, name] until deps finish
        self.polled = 0.0
        self.parent, self.attempt, self.count = -1, "", 0
        self.given: dict = {}         # key -> TaskId added by the current parent
        self.running = -1             # the key of the added task running now
        self.finished: list = []      # (owner, slot, key, failed) run, not yet settled
        self.finished_at = 0.0        # when the first of them finished
        self.any_added = False
        self.looked = 0.0
        self.avg = float("nan")       # seconds per added task run here
        self.pid = os.getpid()
        self.stepped = isinstance(engine.world, LocalWorld)  # ranks simulated in one process
        self.names: Any = None
        self.unplaced = [(self.store.new_slot(key), key)          # this rank's share, whose
                         for key in sorted(self.recovered)[self.rank::self.nranks]]  # slots
        assert all((self.rank, slot) == self.recovered[key] for slot, key in self.unplaced)
        if self.rank == 0 and (self.recovered or held_open):
            engine.control.count_recovered(len(self.recovered) + held_open)
        _by_state[id(engine.data.state)] = self
        self.jobs = serving(self) if serving is not None else None

    @property
    def windows(self) -> list:
        return [self.arena, self.mem, *(self.jobs.windows if self.jobs is not None else ())]

    def place_recovered(self) -> None:
        """Queue this rank's share of the recovered tasks, in the slots taken for them as the
        engine was built (at its first look for work: rank 0 counted them all then, before
        any rank could report a task)."""
        e = self.e
        assert e.resumed is not None
        for slot, key in self.unplaced:
            payload = e.resumed.added_payload(key)
            self.place(slot, key, payload, pickle.loads(payload)[3])
        e.counts.added += len(self.unplaced)
        self.unplaced = []

    def close(self) -> None:
        _by_state.pop(id(self.e.data.state), None)
        if self.jobs is not None:
            self.jobs.close()
        if self.names is not None:
            self.names.close()
            self.names = None

    # ------------------------------------------------------------------ submitting
    def in_task(self) -> bool:
        return self.running >= 0 or self.e.data.state.task >= 0

    def current_parent(self) -> int:
        """The key or gid of the task that submits, its submit counter reset at each attempt
        (a retry adds the same keys, found in ``given``)."""
        if self.e.journal.now[1] > 1:
            raise SubmitError("mpitiny.submit: not available in a batch form "
                              "(mpitiny.with_batch): submit from the task function")
        parent = self.running if self.running >= 0 else int(self.e.data.state.task)
        attempt = os.environ.get("MPITINY_ATTEMPT", "1")
        if parent != self.parent or attempt != self.attempt:
            self.count = 0
        if parent != self.parent:
            self.parent, self.given = parent, {}
        self.attempt = attempt
        return parent

    def add(self, fn: Callable, rows: Iterable, kwargs: dict, deps: Iterable,
            parent: int | None = None) -> list:
        """Add one task per row; returns their ids (see the module docstring). ``parent``:
        the number the ids derive from, by default the running task's (``current_parent``);
        a submitter outside any task (an executor's client) passes its own."""
        if parent is None:
            return self.add_rows(fn, rows, kwargs, deps, self.current_parent())
        task = self.parent, self.count, self.given     # a task's counter stays as it is
        self.parent, self.count, self.given = parent, 0, {}
        try:
            return self.add_rows(fn, rows, kwargs, deps, parent)
        finally:
            self.parent, self.count, self.given = task

    def add_rows(self, fn: Callable, rows: Iterable, kwargs: dict, deps: Iterable,
                 parent: int) -> list:
        """``add`` with the parent's counter in place."""
        name = getattr(fn, "__name__", None)
        if not callable(fn) or not name or "<" in getattr(fn, "__qualname__", "<"):
            raise SubmitError(f"mpitiny.submit: {fn!r} is not a function defined at the top "
                              "level of a module or of the script (other ranks import it)")
        dep_where = tuple(self.dep_of(d) for d in deps)
        ids: list = []
        new: list = []
        try:
            for args in rows:
                ids.append(self.add_one(fn, args, kwargs, dep_where, name, parent, new))
        except BaseException:               # none of this call's tasks is added
            for slot, key, _ in new:
                self.store.drop(slot)
                del self.given[key]
            raise
        if new:
            self.count_and_place(new, dep_where, name)
        return ids

    def add_one(self, fn: Callable, args, kwargs: dict, deps: tuple, name: str, parent: int,
                new: list) -> TaskId:
        """The id of the parent's next task; unless it is known, its payload and slot are
        appended to ``new``."""
        key = child_key(parent, self.count)
        self.count += 1
        known = self.known(key, name)
        if known is not None:
            return known
        try:
            payload = pickle.dumps((fn, tuple(args), kwargs, deps, name, time.time()),
                                   protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise SubmitError(f"mpitiny.submit: the arguments of {name} cannot be sent "
                              f"to other ranks: {type(exc).__name__}: {exc}") from None
        try:
            slot = self.store.new_slot(key)
        except StoreFull as exc:
            raise SubmitError(f"mpitiny.submit: {exc} (at most {SLOTS})") from None
        tid = self.given[key] = TaskId(task_text(name, key), key, (self.rank, slot, self.run_no))
        new.append((slot, key, payload))
        return tid

    def count_and_place(self, new: list, deps: tuple, name: str) -> None:
        e = self.e
        e.control.add_tasks(len(new))
        e.counts.added += len(new)
        self.any_added = True
        if e.journal.on:
            for _, key, payload in new:
                e.journal.added(key, payload)
        if deps:
            self.waiting.extend([slot, key, payload, deps, name] for slot, key, payload in new)
        else:
            self.publish(new)

    def known(self, key: int, name: str) -> TaskId | None:
        """The id of ``key`` if it needs no adding: done or recovered, or given before."""
        if key in self.given:
            return self.given[key]
        if not self.recovered and not len(self.done_before):
            return None
        at = int(np.searchsorted(self.done_before, key))
        if at < len(self.done_before) and int(self.done_before[at]) == key:
            return TaskId(task_text(name, key), key, (DEP_DONE, 0, self.run_no))
        if key in self.recovered:
            return TaskId(task_text(name, key), key, (*self.recovered[key], self.run_no))
        return None

    def dep_of(self, dep) -> tuple:
        """``(key, rank, slot, incarnation)`` of a dep, which must be an added task's id."""
        if not isinstance(dep, TaskId):
            raise SubmitError(f"mpitiny.submit: deps must be ids that mpitiny.submit returned "
                              f"in this run, not {dep!r}")
        return (dep.key, *dep.where)

    def place(self, slot: int, key: int, payload: bytes, deps: tuple) -> None:
        """A new task: waiting for its deps, else published (or HELD if there is no room)."""
        if deps:
            name = pickle.loads(payload)[4]
            self.waiting.append([slot, key, payload, deps, name])
        else:
            self.publish([(slot, key, payload)])

    def publish(self, new: list) -> None:
        """Make tasks ``[(slot, key, payload)]`` stealable; those that find no room in the
        store stay HELD here (this rank runs them)."""
        k = self.store.publish([(slot, payload) for slot, _, payload in new])
        self.held.extend((self.rank, *item) for item in new[k:])

    # ------------------------------------------------------------------ deps
    def dep_state(self, dep: tuple) -> int:
        """DONE, FAILED or not yet (another state) of a dep ``(key, rank, slot, run)``."""
        key, rank, slot, run = dep
        if run != self.run_no:
            at = int(np.searchsorted(self.done_before, key))
            if at < len(self.done_before) and int(self.done_before[at]) == key:
                return DONE
            if key not in self.recovered:
                return FAILED                   # lost with its rank: see the docstring
            rank, slot = self.recovered[key]
        elif rank == DEP_DONE:
            return DONE
        return self.store.status(rank, slot, key)

    def poll(self) -> None:
        """Release the waiting tasks whose deps have all finished."""
        now = time.monotonic()
        if now - self.polled < POLL_SECONDS:
            return
        self.polled = now
        still, ready = [], []
        for entry in self.waiting:
            slot, key, payload, deps, name = entry
            states = []
            for dep in deps:
                states.append(self.dep_state(dep))
                if states[-1] < DONE:
                    break
            if states[-1] < DONE:
                still.append(entry)
            elif FAILED in states:
                self.upstream_failed(slot, key, name)
            else:
                ready.append((slot, key, payload))
        self.waiting = still
        if ready:
            self.publish(ready)

    def upstream_failed(self, slot: int, key: int, name: str) -> None:
        e = self.e
        now = time.time()
        e.records.add_run([key], UPSTREAM_FAILED, [now], [now])
        self.name(key, name)
        self.store.finish(self.rank, slot, True)
        e.unreported += 1
        e.unreported_failed += 1

    # ------------------------------------------------------------------ running
    def work(self) -> bool:
        """Run an added task if this rank has or can steal one; whether it ran one (so the
        loop looks for work again at once). A rank simulated in one process says False, so
        that its turn ends after one task, as after a chunk (``Engine.step``). Finding none,
        it settles the tasks it ran (``settle``) before the loop reports or waits."""
        if self.take_work():
            return not self.stepped
        if self.finished:
            self.settle()
        return False

    def take_work(self) -> bool:
        """``work`` but for settling: whether it ran a task."""
        if self.unplaced:
            self.place_recovered()
        if pump is not None and pump(self):
            return False                 # this rank's client submits: it leaves the core to it
        if self.jobs is not None and self.jobs.work():
            return True
        if self.waiting:
            self.poll()
        mine = self.store.pop(self.chunk(), 1 if self.nranks == 1 else 2)
        if not mine and self.held:
            mine = [self.held.pop()]
        if mine:
            self.run(mine, False)
            return True
        got = self.steal()
        if len(got) > 1:                 # stealable again from here
            self.held.extend(got[1 + self.store.forward(got[1:]):])
        if got:
            self.run(got[:1], True)
            return True
        return False

    def chunk(self) -> int:
        """How many of its own tasks a rank takes at once: ``CHUNK_SECONDS`` of them at their
        average time here (1 while it is unknown), at most ``MAX_CHUNK``."""
        if self.avg != self.avg:
            return 1
        return max(1, min(MAX_CHUNK, int(CHUNK_SECONDS / max(self.avg, 1e-7))))

    def steal(self) -> list:
        """Tasks taken from a few random ranks' stores: ``[(owner, slot, key, payload)]``."""
        e = self.e
        if self.nranks == 1 or not self.anything_added():
            return []
        for _ in range(min(self.nranks - 1, 4)):
            got = self.store.steal(random_other(e.rng, self.rank, self.nranks))
            if got:
                e.steals += 1
                e.stolen_tasks += len(got)
                return got
        return []

    def anything_added(self) -> bool:
        """Whether any rank has added a task in this run (rank 0's ADDED word, read at most
        every ``LOOK_SECONDS`` until it is non-zero): a DAG that adds none pays no steals."""
        if self.any_added:
            return True
        now = time.monotonic()
        if now - self.looked >= LOOK_SECONDS:
            self.looked = now
            self.any_added = self.e.control.added_anywhere() > 0
        return self.any_added

    def run(self, items: list, stolen: bool) -> None:
        """Run taken tasks ``(owner, slot, key, payload)`` one after another."""
        e = self.e
        e.queue.set_busy(True)
        t0 = time.perf_counter()
        if not self.finished:
            self.finished_at = time.monotonic()
        for owner, slot, key, payload in items:
            if e.ending():
                break                    # not counted: a stopped run; resumed, they run again
            self.run_one(owner, slot, key, payload, stolen)
        if self.stepped or e.ending() or len(self.finished) >= MAX_CHUNK or \
                time.monotonic() - self.finished_at >= SETTLE_SECONDS or \
                e.direct is not None or e.queue.has_work():     # a DAG chunk may come next
            self.settle()
        took = time.perf_counter() - t0
        per_task = took / len(items)
        self.avg = per_task if self.avg != self.avg else 0.8 * self.avg + 0.2 * per_task
        chunk_done(e, took)

    def settle(self) -> None:
        """Journal the tasks run since the last settling DONE and mark them finished: one
        flush of results and payloads and one pass of DONE records for the tasks of a few
        chunks (this rank's own chunks are mostly one task)."""
        done, self.finished = self.finished, []
        if done:
            self.e.journal.added_done(done)
        self.finish(done)

    def finish(self, done: list) -> None:
        """Mark tasks ``(owner, slot, key, failed)`` finished where their status lives (after
        their DONE records), and count them."""
        e = self.e
        for owner, slot, _, failed in done:
            self.store.finish(owner, slot, failed)
        e.unreported += len(done)
        e.unreported_failed += sum(failed for *_, failed in done)

    def run_one(self, owner: int, slot: int, key: int, payload: bytes, stolen: bool) -> None:
        """Run one added task and record it; ``finished`` gets ``(owner, slot, key, failed)``
        (journaled, marked and counted by ``settle``; the task may have settled others, such
        as those it ran while it waited)."""
        e = self.e
        fn, args, kwargs, _, name, submitted = pickle.loads(payload)
        if e.fault is not None:
            if e.fault.take(1) is not None:
                fault, e.fault = e.fault, None
                fault.fire()
        text = task_text(name, key)
        outer = self.running, self.parent, self.count, self.given, self.attempt
        self.running = key               # outer: a task that waits, helping (its submit
        t0 = time.time()                 # counter goes on where it was when it is back)
        try:
            value, error, attempt = call_task(e, fn, args, kwargs)
        finally:
            self.running, self.parent, self.count, self.given, self.attempt = outer
        if error is StopRun:
            return
        if error is None and value is not None:
            try:
                e.files.result(text, *((KIND_JSON, b"%d" % value) if type(value) is int
                                       else encode(value)))
            except (TypeError, ValueError) as exc:
                error = exc
        t1 = time.time()
        if error is not None:
            e.runner.fail(key, text, error, t1, attempt=attempt)
        e.records.add_run([key], ROW_FAILED if error is not None else ROW_DONE, [t0], [t1],
                          attempt=attempt, queued=submitted, stolen=stolen)
        self.name(key, text, full=True)
        self.finished.append((owner, slot, key, error is not None))

    def name(self, key: int, name: str, full: bool = False) -> None:
        """Note the id text of an added task this rank recorded (``tasks/rank-R.added``)."""
        if self.names is None:
            self.names = open(names_path(self.e.run_dir, self.rank), "a", encoding="utf-8")
        self.names.write(f"{key}\t{name if full else task_text(name, key)}\n")


def call_task(e: "Engine", fn: Callable, args: tuple, kwargs: dict) -> tuple:
    """``(value, error or None or StopRun, attempt)`` of an added task's call and its retries
    (``--retries`` / ``--timeout`` as for the DAG's tasks). ``MPITINY_ATTEMPT`` and the
    guard's ``in_task`` are left as they were: "1" and False between tasks, a waiting task's
    own around a task it runs meanwhile."""
    guard, timeout = e.guard, e.opts.timeout
    error: Any = None
    attempt = 1
    outer_attempt, outer_in_task = "1", guard.in_task
    for attempt in range(1, e.opts.retries + 2):
        if attempt > 1:
            e.counts.retried += 1
            if attempt == 2:
                outer_attempt = os.environ.get("MPITINY_ATTEMPT", "1")
            os.environ["MPITINY_ATTEMPT"] = str(attempt)
        try:
            if timeout:
                value = guard.call(fn, args, kwargs, timeout)
            else:
                guard.in_task = True
                value = fn(*args, **kwargs)
            return value, None, attempt
        except StopRun:
            return None, StopRun, attempt
        except (Exception, SystemExit, KeyboardInterrupt) as exc:
            error = exc
        finally:
            guard.in_task = outer_in_task
            if attempt > 1:
                os.environ["MPITINY_ATTEMPT"] = outer_attempt
    return None, error, attempt
