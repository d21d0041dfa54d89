"""The engine side of ``mpitiny.futures`` (the public face is ``mpitiny.futures.Executor``).

A session (``mpiexec -n N python -m mpitiny.futures script.py``, ``serve``) is one mpitiny
run on every rank, on a scratch run directory (no journal), whose DAG is one null task.
Rank 0 counts one more task as its engine is built (``adding.held_open``), which holds the
run open until the script has ended; its first pump starts the script's ``__main__`` in a
thread of its own (*the client*); rank 0's engine runs calls like every other rank. The other
ranks import the script as module ``__worker__`` (its ``if __name__ == "__main__"`` block does
not run) and alias it as ``__main__``, so functions it defines unpickle there, as
mpi4py.futures does; rank 0 aliases ``__worker__`` to its ``__main__`` in turn, for calls
that tasks on other ranks submit. What tasks print goes to the ranks' own streams
(``start.KEEP_STREAMS``).

Each rank has one ``Channel``. ``Executor.submit`` (any thread) creates the future and
appends the call to the channel's ``submitted`` deque; while fewer futures than ranks are
running the new one becomes RUNNING at once (as a pool's idle worker would take it). The
rank's engine thread ``pump``s the channel each time it looks for work
(``mpitiny.engine.adding.pump``; the loop is never asked, it asks):

1. *hand over*: pending calls become RUNNING (``set_running_or_notify_cancel``: a cancelled
   one is dropped) and are packed into *batches* of calls of one function, each batch's
   calls ``[(fn, args, kwargs)]`` pickled as one (``_pack``: if that fails, the calls that do
   not pickle fail at once with their error and the others go), each batch one added task
   (``Adding.add(run_batch, ...)``, with a parent number of the channel's own, so ids never
   collide with a task's): stealable at once, counted in termination. A batch holds about
   ``BATCH_SECONDS`` of calls at that function's average time as measured so far (1 while
   unknown), never more than a 1/P share of what is pending. Batches of short calls are
   handed over until ``AHEAD`` per rank wait beyond one running per rank; calls that go one
   by one (long or unmeasured) only one per rank: a rank's own store is taken newest first,
   and a deeper queue of long calls would run them out of order (a pool of N workers starts
   the N oldest). The rest stay PENDING in the deque, so ``cancel`` and
   ``shutdown(cancel_futures=True)`` find them. As the items of a chunk of
   ``ProcessPoolExecutor.map``, an object passed to several calls of one batch arrives there
   as one object (pickled once). A batch that does not unpickle where it runs
   (a class or function that rank lacks) comes back ``RESEND``: the submitter sends its
   calls again pickled one by one, and one that does not unpickle fails alone;
2. *results*: the rank that ran a batch sends the submitter one message (``Issend``, tag
   ``TAG``, on the session's own communicator): the values as they are when every call
   returned a built-in scalar (``PLAIN``: they unpickle anywhere), else each value or
   exception pickled on its own (``PICKLED``: one that does not pickle, or unpickle, fails
   only its future); an exception carries its remote traceback as ``__cause__``
   (``RemoteTraceback``: the class ``ProcessPoolExecutor`` uses). Values travel pickled also
   when the submitter ran the batch, so a call's result does not depend on where it ran. The
   submitter's pump receives (``Improbe``) and completes the batch's futures in order (their
   callbacks run in the engine thread, as a process pool's run in its manager thread), then
   tells each executor once how many finished;
3. when the client has ended and every future it made has finished, rank 0's pump counts
   the held task finished: the run ends as any run does, on every rank.

What bounds the rate of short calls is the client's rank: its client thread (creating
futures, ``add_done_callback``, ``wait``) and its engine thread (handing over, completing)
share one GIL, ~5-6 µs per future in all at 2 ranks (of which, in thread CPU time, ~2.3 µs
in ``Executor.submit``, ~1.5 in completing and ~0.8 in handing over), while a batch of 256
null calls runs in 30-100 µs on another rank. So that rank spends nothing it need not: the
futures are ``LightFuture``s (``mpitiny.futures._future``: no lock until one is needed, then
one entered in C), a batch's calls and
plain results are pickled as one, and while its client submits (it did in the last
``CLIENT_SECONDS``) its engine runs no call (the other ranks take them). The collector's
first threshold is ``GC_YOUNG`` in a session: each future brings ~10 tracked objects that
live until it is waited for, and at a threshold of 20 000 the young collections of 20 000
outstanding futures cost 1-2 µs per future (measured with ``gc.callbacks``); at 300 000
they cost none, and at most that many objects of cyclic garbage wait for a collection.

A rank busy with a long call does not pump. The engine thread holds the channel's ``lock``
from its first pump on and gives it up only around the calls of a batch (``run_batch``);
meanwhile the channel's own thread (``assist``), which looks every ``ASSIST_SECONDS``
whether the pumps stand still, pumps in its stead: results reach the client and new calls
are handed over while rank 0 runs a long call. A call that adds tasks (``mpitiny.submit``)
takes the lock for that (``adding.submit_lock``): a rank's store of added tasks has one
writer at a time.

From inside a task (any rank, the engine thread) ``Executor.submit`` hands the call over at
once, with no limit; ``Future.result()`` there helps (runs added tasks, pumps) instead of
blocking, so a task can wait for the calls it submitted even on one rank. ``wait`` /
``as_completed`` are for the client (inside a task they block without helping).

At the end every rank completes its sends while receiving (the ``Ibarrier`` of the NBX
exchange), so no message is left unmatched, then frees the communicator.

Not in this version: ``initializer``/``initargs``, ``map(buffersize=)``, a session started
other than by ``python -m mpitiny.futures`` (``Executor()`` elsewhere raises), a rank that
dies (it ends the MPI job; there is no broken-pool state), a run directory on another file
system than rank 0's temporary directory (``MPITINY_FUTURES_DIR``).
"""
from __future__ import annotations

import collections
import gc
import importlib
import itertools
import os
import pickle
import runpy
import shutil
import sys
import tempfile
import threading
import time
import traceback
import types
from concurrent.futures import Future
from typing import Any, Callable

from mpitiny.futures._future import LightFuture

TAG = 0x6D74                  # the results' tag on the session's communicator
BATCH_SECONDS = 0.002         # a batch holds about this much work
MAX_BATCH = 256
AHEAD = 4                     # batches per rank handed over beyond the running ones
GC_YOUNG = 300_000            # the collector's first threshold in a session (module docstring)
CLIENT_SECONDS = 0.002        # a client that submitted within this is busy (``pump``)
ASSIST_SECONDS = 0.001        # how often the channel's thread looks whether the engine pumps
PROTOCOL = pickle.HIGHEST_PROTOCOL
PLAIN, PICKLED, RESEND = 0, 1, 2          # how a batch's results travel (``_dumps``)
_PLAIN_TYPES = frozenset({type(None), bool, int, float, complex, str, bytes})

_channel: "Channel | None" = None


try:                                # the class ProcessPoolExecutor's exceptions carry
    from concurrent.futures.process import _RemoteTraceback as RemoteTraceback
except ImportError:                 # pragma: no cover (no multiprocessing)
    class RemoteTraceback(Exception):   # type: ignore[no-redef]
        """The ``__cause__`` of an exception raised by a call on some rank: its traceback."""

        def __init__(self, tb: str) -> None:
            self.tb = tb

        def __str__(self) -> str:
            return self.tb


def _rebuild(exc: BaseException, tb: str) -> BaseException:
    exc.__cause__ = RemoteTraceback(tb)      # type: ignore[arg-type]
    return exc


class _Raised:
    """An exception on its way back, pickled with its traceback as text."""

    def __init__(self, exc: BaseException) -> None:
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        self.exc, self.tb = exc, f'\n"""\n{tb}"""'
        exc.__traceback__ = None

    def __reduce__(self):
        return _rebuild, (self.exc, self.tb)


class TaskFuture(LightFuture):
    """A future of ``mpitiny.futures``: in the engine thread (inside a task) ``result`` and
    ``exception`` run other tasks while they wait, instead of blocking the rank."""

    def result(self, timeout: float | None = None) -> Any:
        if not self.done():
            _help_until_done(self, timeout)
        return super().result(timeout)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        _help_until_done(self, timeout)
        return super().exception(timeout)


def _help_until_done(fut: Future, timeout: float | None) -> None:
    help_until(fut.done, timeout)


def help_until(done: Callable[[], bool], timeout: float | None = None) -> None:
    """In the engine thread (inside a task): run added tasks and pump until ``done()`` (or
    the timeout); elsewhere return at once (the caller blocks as usual)."""
    ch = _channel
    if ch is None or ch.adding is None or threading.get_ident() != ch.engine_ident:
        return
    end = None if timeout is None else time.monotonic() + timeout
    while not done() and (end is None or time.monotonic() < end):
        with ch.lock:                         # run_batch gave it up around this call
            if ch.submitted:
                ch.hand_over(ch.adding, force=True)
            worked = ch.adding.work()         # (which pumps)
        if not worked:
            time.sleep(1e-5)


def run_batch(src: int, key: int, bid: int, blob: bytes | list) -> None:
    """An added task: run a batch's calls and send their results to the rank that submitted
    them. ``blob``: the calls ``[(fn, args, kwargs)]`` pickled as one; if they do not
    unpickle here, the submitter is asked to send them again one by one (``blob`` then is a
    list of pickled calls, and one that does not unpickle fails alone)."""
    t0 = time.perf_counter()
    ch = _channel
    assert ch is not None
    if isinstance(blob, bytes):
        try:
            calls = pickle.loads(blob)
        except BaseException:                 # noqa: BLE001 (resent call by call)
            ch.deliver(src, pickle.dumps((key, bid, 0.0, RESEND, None), PROTOCOL))
            return
    else:
        calls = [_load_call(b) for b in blob]
    results: list = []
    failed: list = []
    lock = ch.lock
    lock.release()                            # the channel's thread may pump meanwhile
    try:
        for fn, args, kwargs in calls:
            try:
                results.append(fn(*args, **kwargs))
            except BaseException as exc:      # carried back, as the future's exception
                failed.append(len(results))
                results.append(_Raised(exc))
    finally:
        lock.acquire()
    per_call = (time.perf_counter() - t0) / len(calls)
    ch.deliver(src, _dumps(key, bid, per_call, results, failed))


def _load_call(blob: bytes) -> tuple:
    try:
        return pickle.loads(blob)
    except BaseException as exc:              # noqa: BLE001 (fails this call only)
        return _raise, (exc,), {}


def _raise(exc: BaseException) -> None:
    raise exc


def run_chunk(fn: Callable, chunk: list) -> list:
    """``Executor.map`` with ``chunksize`` > 1: one call per chunk of argument tuples."""
    return [fn(*args) for args in chunk]


class Channel:
    """One rank's futures: submitted here (by any thread), handed over, completed."""

    def __init__(self, comm) -> None:
        from mpi4py import MPI
        self.MPI = MPI
        self.comm = comm
        self.rank, self.nranks = comm.Get_rank(), comm.Get_size()
        self.submitted: collections.deque = collections.deque()  # (future, fn, args, kwargs, early, executor)
        self.waiting: dict = {}          # batch -> ([(future, executor)], calls): not back
        self.bids = itertools.count()
        self.outstanding = 0             # futures handed over, not back
        self.parents = itertools.count()
        self.sends: list = []            # (request, buffer)
        self.status = MPI.Status()
        self.fn_keys: dict = {}          # function -> its key (batches hold one function)
        self.avgs: dict = {}             # key -> seconds per call, as the ranks measured it
        self.inflight = 0                # batches handed over, their results not back
        self.adding: Any = None          # this rank's engine side, once a run is on
        self.engine_ident = -1
        self.target: list | None = None   # rank 0: the script, started at the first pump
        self.submits = self.seen = 0     # calls submitted, and as the last sample saw them
        self.sampled = 0.0
        self.client_busy = False
        self.main_done = self.released = self.closing = False
        self.lock = threading.RLock()    # see ``pump`` and ``assist``
        self.owned = False
        self.pumps = 0
        self.started = self.taken = 0    # futures RUNNING before their hand-over: taken
                                         # by the client, handed over by the engine
        self.exit_code = 0

    # ------------------------------------------------------------------ any thread
    def submit(self, fn: Callable, args: tuple, kwargs: dict, owner: Any = None) -> TaskFuture:
        fut = TaskFuture()
        self.submits += 1
        early = self.outstanding + self.started - self.taken < self.nranks and \
            self.start_early(fut)
        self.submitted.append((fut, fn, args, kwargs, early, owner))
        if self.engine_ident == threading.get_ident() and self.adding is not None:
            with self.lock:                      # inside a task: the loop is not looking
                self.hand_over(self.adding, force=True)
        return fut

    # ------------------------------------------------------------------ the engine thread
    def pump(self, adding) -> bool:
        """Called by the engine each time it looks for work (see the module docstring); the
        engine thread holds ``lock`` from its first pump on, except while it runs a call.
        True while this rank's client is submitting (it did in the last ``CLIENT_SECONDS``),
        on more than one rank: the engine runs no call then, so that the client has the GIL
        (the other ranks take the calls; this one works when its client waits)."""
        if not self.owned:
            self.lock.acquire()
            self.owned = True
            self.adding, self.engine_ident = adding, threading.get_ident()
            if self.target is not None:       # rank 0: the script's __main__ starts
                threading.Thread(target=_client, args=(self, self.target),
                                 name="mpitiny-futures-main", daemon=True).start()
        self.pumps += 1
        self.serve_rank(adding)

        if self.target is None or self.nranks == 1:
            return False
        now = time.monotonic()
        if now - self.sampled >= CLIENT_SECONDS:
            self.sampled, self.client_busy = now, self.submits != self.seen
            self.seen = self.submits
        return self.client_busy

    def serve_rank(self, adding) -> None:
        """What a pump does (with ``lock`` held): sends, results, hand-over, the end."""
        if self.sends:
            self.sends = [(r, b) for r, b in self.sends if not r.Test()]
        self.receive()
        if self.submitted:
            self.hand_over(adding)
        if self.main_done and not self.released and not self.waiting and not self.submitted:
            self.released = True
            adding.e.unreported += 1              # the held task (the client) finished

    def assist(self) -> None:
        """The channel's thread: while the engine thread runs a long call (its pumps stand
        still), receive results and hand calls over in its stead (under ``lock``, which the
        engine thread gives up only around a call)."""
        seen = -1
        while not self.closing:
            time.sleep(ASSIST_SECONDS)
            if self.pumps == seen and self.adding is not None and (
                    self.waiting or self.submitted or self.main_done and not self.released):
                if self.lock.acquire(blocking=False):
                    try:
                        self.serve_rank(self.adding)
                    finally:
                        self.lock.release()
            seen = self.pumps

    def cancel_pending(self, owner: Any) -> None:
        """Cancel the calls ``owner`` submitted that are not handed over yet."""
        for entry in list(self.submitted):
            if entry[5] is owner:
                entry[0].cancel()

    def start_early(self, fut: Future) -> bool:
        """A new future starts RUNNING at once (``submit``: when fewer than one per rank
        are). The counts have one writer each, so no lock (two client threads may start one
        too many: harmless)."""
        self.started += 1
        return fut.set_running_or_notify_cancel()

    def batch_size(self, key: int) -> int:
        """Calls of one function per batch: ``BATCH_SECONDS`` of them at their average time
        (1 while unknown)."""
        avg = self.avgs.get(key)
        if avg is None or key < 0:
            return 1
        return max(1, min(MAX_BATCH, int(BATCH_SECONDS / max(avg, 1e-7))))

    def fn_key(self, fn: Callable) -> int:
        """A number per function name (a name, so that no function object is kept)."""
        f = getattr(fn, "func", fn)           # functools.partial
        name = getattr(f, "__qualname__", None)
        if name is None:
            return -1                         # its calls go one by one
        return self.fn_keys.setdefault((getattr(f, "__module__", None), name),
                                       len(self.fn_keys))

    def hand_over(self, adding, force: bool = False) -> None:
        """Pack pending calls into batches (calls of one function each) and add them, until
        ``AHEAD`` batches per rank wait beyond one running per rank, or, for calls that go
        one by one (long, or not yet measured), one per rank: a rank's own store is taken
        newest first, so a deeper queue would run them out of order."""
        rows: list = []
        submitted = self.submitted
        while submitted:
            fn = submitted[0][1]
            key = self.fn_key(fn)
            k = self.batch_size(key)
            if force:                 # a task waits for them: no limit (would deadlock)
                pass
            elif self.inflight + len(rows) >= (AHEAD + 1) * self.nranks if k > 1 else \
                    self.inflight + len(rows) >= self.nranks:
                break
            k = min(k, max(1, len(submitted) // self.nranks))     # a 1/P share at most
            futs: list = []
            calls: list = []
            while submitted and len(calls) < k and (submitted[0][1] is fn or
                                                    self.fn_key(submitted[0][1]) == key):
                fut, f, args, kwargs, early, owner = submitted.popleft()
                if early:
                    self.taken += 1
                elif not fut.set_running_or_notify_cancel():
                    owner._closed()
                    continue
                futs.append((fut, owner))
                calls.append((f, args, kwargs))
            blob = _pack(futs, calls) if calls else None
            if blob is not None:
                bid = next(self.bids)
                self.waiting[bid] = futs, calls
                self.outstanding += len(futs)
                rows.append((self.rank, key, bid, blob))
        self.add_rows(adding, rows)

    def add_rows(self, adding, rows: list) -> None:
        if rows:
            self.inflight += len(rows)
            adding.add(run_batch, rows, {}, (), parent=self.parent())

    def parent(self) -> int:
        """A number no task has: the ids of each hand-over derive from a new one."""
        return -1 - self.rank - self.nranks * next(self.parents)

    def deliver(self, src: int, data: bytes) -> None:
        """A batch's results (``_dumps``) to the rank that submitted it; also here they
        are unpickled, so that values are what another rank would get."""
        if src == self.rank:
            self.complete(*pickle.loads(data))
            return
        self.sends.append((self.comm.Issend([data, self.MPI.BYTE], src, TAG), data))

    def receive(self) -> None:
        MPI, comm, st = self.MPI, self.comm, self.status
        while (msg := comm.Improbe(MPI.ANY_SOURCE, TAG, st)) is not None:
            buf = bytearray(st.Get_count(MPI.BYTE))
            msg.Recv([buf, MPI.BYTE])
            self.complete(*pickle.loads(buf))

    def complete(self, key: int, bid: int, per_call: float, kind: int, body: Any) -> None:
        """A batch's results came back: complete its futures in order, then tell their
        executors at once (``Executor._closed``)."""
        if kind == RESEND:                    # its calls did not unpickle as one there
            calls = self.waiting[bid][1]
            self.add_rows(self.adding, [(self.rank, key, bid, [_dumps_call(c) for c in calls])])
            self.inflight -= 1
            return
        avg = self.avgs.get(key)
        self.avgs[key] = per_call if avg is None else 0.7 * avg + 0.3 * per_call
        self.inflight -= 1
        futs, _ = self.waiting.pop(bid)
        self.outstanding -= len(futs)
        if kind == PLAIN:
            for (fut, _), value in zip(futs, body):
                fut.set_result(value)
        else:
            for (fut, _), (ok, blob) in zip(futs, body):
                _settle(fut, ok, blob)
        _close_owners(futs)

    def drain(self) -> None:
        """At the end of the session: complete every send while receiving (NBX)."""
        barrier = None
        while True:
            self.receive()
            self.sends = [(r, b) for r, b in self.sends if not r.Test()]
            if barrier is None and not self.sends:
                barrier = self.comm.Ibarrier()
            if barrier is not None and barrier.Test():
                return
            time.sleep(1e-4)


def _pack(futs: list, calls: list) -> bytes | None:
    """A batch's calls pickled as one; if that fails, those that do not pickle fail at once
    with their error (both lists lose them) and the others are pickled (None: none left)."""
    try:
        return pickle.dumps(calls, PROTOCOL)
    except BaseException:                     # noqa: BLE001 (find the calls that fail)
        pass
    for i in reversed(range(len(calls))):
        try:
            pickle.dumps(calls[i], PROTOCOL)
        except BaseException as exc:          # noqa: BLE001 (the future's exception)
            fut, owner = futs.pop(i)
            del calls[i]
            fut.set_exception(exc)
            owner._closed()
    if not calls:
        return None
    try:
        return pickle.dumps(calls, PROTOCOL)
    except BaseException as exc:              # noqa: BLE001 (one by one they pickled)
        for fut, owner in futs:
            fut.set_exception(exc)
            owner._closed()
        return None


def _dumps_call(call: tuple) -> bytes:
    try:
        return pickle.dumps(call, PROTOCOL)
    except BaseException as exc:              # noqa: BLE001 (pickled before, as a batch)
        return pickle.dumps((_raise, (exc,), {}), PROTOCOL)


def _dumps(key: int, bid: int, per_call: float, results: list, failed: list) -> bytes:
    """A batch's results as one message: as they are (``PLAIN``) when every call returned
    a value of a built-in scalar type (which unpickles anywhere), else each value or
    exception pickled on its own (one that does not pickle, or later does not unpickle,
    fails its own future only)."""
    plain = _PLAIN_TYPES
    if not failed and all(type(v) in plain for v in results):
        return pickle.dumps((key, bid, per_call, PLAIN, results), PROTOCOL)
    bad = set(failed)
    body = [_reply(i not in bad, v) for i, v in enumerate(results)]
    return pickle.dumps((key, bid, per_call, PICKLED, body), PROTOCOL)


def _reply(ok: bool, value) -> tuple:
    try:
        return ok, pickle.dumps(value, PROTOCOL)
    except Exception as exc:                  # the error pickling it raised
        try:
            return False, pickle.dumps(_Raised(exc), PROTOCOL)
        except Exception:
            err = pickle.PicklingError(f"a call's {'result' if ok else 'exception'} cannot be "
                                       f"sent back: {type(exc).__name__}: {exc}")
            return False, pickle.dumps(_Raised(err), PROTOCOL)


def _settle(fut: Future, ok: bool, blob: bytes) -> None:
    try:
        value = pickle.loads(blob)
    except BaseException as exc:              # noqa: BLE001 (this future's exception)
        fut.set_exception(exc)
        return
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)


def _close_owners(futs: list) -> None:
    """Tell each executor how many of its futures finished (once per run of one owner)."""
    owner: Any = None
    n = 0
    for _, o in futs:
        if o is not owner:
            if n:
                owner._closed(n)
            owner, n = o, 0
        n += 1
    if n:
        owner._closed(n)


def channel() -> Channel:
    """This rank's channel; a clear error where no session runs."""
    if _channel is None:
        raise RuntimeError("mpitiny.futures.Executor: no mpitiny.futures session on this rank: "
                           "start the script with `mpiexec -n N python -m mpitiny.futures "
                           "script.py` (or `mpitiny.futures.serve`)")
    return _channel


# ---------------------------------------------------------------------- the session
def _client(ch: Channel, target: list) -> None:
    """The client thread: the script's ``__main__``, then wait for its futures."""
    try:
        _run_target(target, "__main__")
    except SystemExit as exc:
        ch.exit_code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if exc.code is not None and not isinstance(exc.code, int):
            print(exc.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
        ch.exit_code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        ch.main_done = True


class _MainAlias(types.ModuleType):
    """Rank 0's ``__worker__``: the script running as ``__main__`` (functions that the other
    ranks' tasks submit are named ``__worker__.f`` there)."""

    def __getattr__(self, name: str):
        return getattr(sys.modules["__main__"], name)


def _run_target(target: list, run_name: str) -> None:
    sys.modules.setdefault("__worker__", _MainAlias("__worker__"))
    kind, name, *args = target
    sys.argv = [name, *args]
    if kind == "module":
        runpy.run_module(name, run_name=run_name, alter_sys=True)
    else:
        sys.path.insert(0, os.path.dirname(os.path.abspath(name)))
        runpy.run_path(name, run_name=run_name)


def _import_worker(target: list) -> None:
    """Other ranks: the script as module ``__worker__``, also known as ``__main__``. One
    that raises as it is imported raises on rank 0 too, which says so once (its calls fail
    here as there): this rank goes on with what it could define."""
    kind, name, *args = target
    sys.argv = [name, *args]
    module: Any = types.ModuleType("__worker__")
    try:
        if kind == "module":
            module = importlib.import_module(name)
        else:
            sys.path.insert(0, os.path.dirname(os.path.abspath(name)))
            module.__dict__.update(runpy.run_path(name, run_name="__worker__"))
    except BaseException:                     # noqa: BLE001 (rank 0 reports it)
        pass
    sys.modules["__worker__"] = sys.modules["__main__"] = module


def serve(target: list, quiet: bool = True) -> int:
    """Run a session on every rank: ``target`` is ``["path", script, *args]`` or
    ``["module", name, *args]``. Returns the script's exit status, on every rank."""
    global _channel
    from mpitiny.mpienv import mpi_environment
    mpi_environment()
    from mpi4py import MPI
    from mpitiny.engine import adding as adding_mod
    from mpitiny.engine import start as start_mod
    from mpitiny.engine import run_file
    world = MPI.COMM_WORLD
    if target[0] == "path" and not os.path.isfile(target[1]):
        if world.Get_rank() == 0:
            print(f"mpitiny.futures: no such script: {target[1]}", file=sys.stderr)
        return 2
    if world.Get_rank() != 0:
        _import_worker(target)
    run_dir = world.bcast(tempfile.mkdtemp(prefix="mpitiny-futures-",
                                           dir=os.environ.get("MPITINY_FUTURES_DIR"))
                          if world.Get_rank() == 0 else None)
    _channel = ch = Channel(world.Dup())
    if world.Get_rank() == 0:
        ch.target = list(target)
    adding_mod.held_open = 1                  # the client: see the module docstring
    collect = gc.get_threshold()
    gc.set_threshold(GC_YOUNG, *collect[1:])
    adding_mod.pump = ch.pump
    adding_mod.submit_lock = ch.lock
    start_mod.KEEP_STREAMS = True
    assistant = threading.Thread(target=ch.assist, name="mpitiny-futures-channel", daemon=True)
    assistant.start()
    dag = {"name": "futures", "tasks": [{"id": "start", "fn": "mpitiny.tasks:null"}]}
    import json
    try:
        run_file(None, {}, out_dir=run_dir, dag_text=json.dumps(dag), scratch=True,
                 quiet=quiet, journal=False)
    finally:
        ch.closing = True
        assistant.join()
        if ch.owned:
            ch.lock.release()
        adding_mod.pump = None
        adding_mod.submit_lock = None
        adding_mod.held_open = 0
        start_mod.KEEP_STREAMS = False
        gc.set_threshold(*collect)
    ch.drain()
    _channel = None
    ch.comm.Free()
    if world.Get_rank() == 0 and not os.environ.get("MPITINY_FUTURES_KEEP"):
        shutil.rmtree(run_dir, ignore_errors=True)
    return world.bcast(ch.exit_code if world.Get_rank() == 0 else None)
