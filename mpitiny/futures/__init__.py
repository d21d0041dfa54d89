"""``concurrent.futures`` on mpitiny: code written for ``mpi4py.futures`` or a process pool
moves by changing one line::

    # primes.py, started with: mpiexec -n 4 python -m mpitiny.futures primes.py
    from mpitiny.futures import Executor

    def is_prime(n): ...

    if __name__ == "__main__":
        with Executor() as ex:
            print(sum(ex.map(is_prime, range(10**5), chunksize=100)))

The script's ``__main__`` runs on rank 0 (in a thread beside its engine); every rank,
rank 0 included, runs the calls; ``Executor`` also works inside a task of any mpitiny run
started that way (``future.result()`` there runs other tasks while it waits). Functions
must be importable on every rank (top level of the script or of a module), arguments and
results picklable. Futures are ``concurrent.futures.Future``s: ``wait`` and
``as_completed`` (re-exported here) work on them. An exception raised by a call is raised
by ``result()`` with the traceback from the rank that ran it as its ``__cause__``.

Design (how calls travel, batching, termination): ``mpitiny.futures._core``.
"""
from __future__ import annotations

import itertools
import threading
import time
from concurrent.futures import (ALL_COMPLETED, FIRST_COMPLETED, FIRST_EXCEPTION,
                                CancelledError, Future, TimeoutError, as_completed, wait)
from concurrent.futures import Executor as _BaseExecutor
from typing import Any, Callable, Iterable, Iterator

from mpitiny.futures import _core
from mpitiny.futures._core import RemoteTraceback, serve

__all__ = ["Executor", "Future", "wait", "as_completed", "CancelledError", "TimeoutError",
           "ALL_COMPLETED", "FIRST_COMPLETED", "FIRST_EXCEPTION", "RemoteTraceback", "serve"]


class Executor(_BaseExecutor):
    """A ``concurrent.futures.Executor`` whose calls run as tasks on every rank of the
    mpitiny.futures session. ``max_workers`` is checked (> 0) and otherwise ignored: every
    rank works."""

    def __init__(self, max_workers: int | None = None) -> None:
        if max_workers is not None and max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        self._channel = _core.channel()
        self._mutex = threading.Lock()
        self._idle = threading.Condition(self._mutex)
        self._shut = False
        self._open = 0                        # its futures not yet finished

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> Future:
        with self._mutex:
            if self._shut:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._open += 1
        return self._channel.submit(fn, args, kwargs, self)

    def _closed(self, n: int = 1) -> None:
        """``n`` of its futures finished (or were dropped cancelled): the channel says so."""
        with self._mutex:
            self._open -= n
            if not self._open:
                self._idle.notify_all()

    def map(self, fn: Callable, *iterables: Iterable, timeout: float | None = None,
            chunksize: int = 1, unordered: bool = False) -> Iterator:
        """As ``concurrent.futures``: results in order; ``chunksize`` calls per task;
        ``unordered=True`` (as mpi4py's): results as they come."""
        return self.starmap(fn, zip(*iterables), timeout=timeout, chunksize=chunksize,
                            unordered=unordered)

    def starmap(self, fn: Callable, iterable: Iterable, timeout: float | None = None,
                chunksize: int = 1, unordered: bool = False) -> Iterator:
        """``map`` with each item the tuple of a call's arguments (as mpi4py's)."""
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        end = None if timeout is None else time.monotonic() + timeout
        if chunksize == 1:
            fs = [self.submit(fn, *args) for args in iterable]
            return _results(fs, end, unordered)
        fs = [self.submit(_core.run_chunk, fn, chunk) for chunk in _chunks(iter(iterable),
                                                                             chunksize)]
        return itertools.chain.from_iterable(_results(fs, end, unordered))

    def bootup(self, wait: bool = True) -> "Executor":
        """As mpi4py's: the ranks are up already; returns the executor."""
        return self

    @property
    def num_workers(self) -> int:
        """The ranks that run calls: all of them."""
        return self._channel.nranks

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._mutex:
            self._shut = True
        if cancel_futures:
            self._channel.cancel_pending(self)
        if wait:
            _core.help_until(lambda: not self._open)       # inside a task: helping
            with self._mutex:
                self._idle.wait_for(lambda: not self._open)


def _chunks(rows: Iterator, size: int) -> Iterator[list]:
    while chunk := list(itertools.islice(rows, size)):
        yield chunk


def _results(fs: list, end: float | None, unordered: bool) -> Iterator:
    """Each future's result in order (or as they finish), cancelling the rest on an error,
    a timeout or an early close, as ``concurrent.futures`` does."""
    order = as_completed(fs, None if end is None else max(0.0, end - time.monotonic())) \
        if unordered else None
    fs.reverse()
    try:
        while fs:
            if order is not None:           # the next to finish goes last, then is taken
                fs.remove(fut := next(order))
                fs.append(fut)
                del fut
            yield _result_or_cancel(fs.pop(), None if end is None else end - time.monotonic())
    finally:
        for fut in fs:
            fut.cancel()


def _result_or_cancel(fut: Future, timeout: float | None) -> Any:
    try:
        try:
            return fut.result(timeout)
        finally:
            fut.cancel()
    finally:
        del fut
