"""A ``concurrent.futures.Future`` that costs less per future, for ``mpitiny.futures``.

Every operation on a ``Future`` (``set_running_or_notify_cancel``, ``set_result``,
``result``, ``done``) enters its ``_condition``, a ``threading.Condition`` made in
``__init__``: built in Python (an ``RLock`` and five bound methods per future) and entered
through a Python ``__enter__``. At the hundred thousand futures a second that
``mpitiny.futures`` hands out on one core, the submitting process spent 2.5 µs per future on
that alone (``bench/futures_floor.py``: made, queued, marked running, given its result; 1.4
µs with ``LightFuture``), where a family task costs a rank 0.4-0.7 µs.

``LightFuture`` is the same ``Future`` whose lock, waiter list and callback list are made when
something first asks for them (``_MadeOnce``: each with one ``dict.setdefault``, so two
threads that ask at once get the same ones), and whose state lives in class attributes until
it changes:

- the state is PENDING (the class's) until its first change, which puts it in the
  instance's ``__dict__`` with one ``dict.setdefault`` (atomic under the interpreter's lock):
  ``set_running_or_notify_cancel`` with RUNNING, with no lock; ``cancel`` with CANCELLED,
  under the future's lock as ``Future.cancel``. The two ways out of PENDING exclude each
  other: the one that comes second finds the other's state and acts on it as ``Future``
  would (a cancelled future is not run, a running one is not cancelled). A thread in
  ``wait`` or ``as_completed`` cannot tell PENDING from RUNNING, so this change needs no lock;
- every change to a done state is made under the lock (``set_result`` makes it if there is
  none yet): ``wait`` reads the state twice under the lock (``_create_and_install_waiters``
  counts the pending futures again) and relies on it not changing between the two reads;
- callbacks are taken off their list before they are called, by whoever takes them first:
  ``_invoke_callbacks`` (after ``set_result``, ``set_exception`` or ``cancel``), or an
  ``add_done_callback`` that appended one without a lock and then found the future done. So
  each runs once, and ``add_done_callback`` needs no lock;
- ``done``, ``running``, ``cancelled`` and the ``result`` of a finished future read the state
  without the lock (one attribute; FINISHED and the CANCELLED states are final).

Everything else (exceptions, cancelling, waiting, callbacks, ``wait``, ``as_completed``) is
``Future``'s own code on the lock made on demand: a ``_LightCondition``, the C ``RLock`` itself
(entered in C), with ``Condition``'s ``wait``/``notify``/``notify_all`` (CPython's own, which
need only ``_waiters`` and the lock's ``_is_owned``, ``_release_save`` and
``_acquire_restore``); ``notify_all`` returns at once when no thread waits. If this Python's
``Future`` has other fields than the ones above (checked once, at import), ``LightFuture``
makes them in ``__init__`` as ``Future`` does, and every operation takes the lock.
"""
from __future__ import annotations

import collections
import threading
from concurrent.futures import Future, InvalidStateError
from concurrent.futures._base import (CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED, LOGGER,
                                      PENDING, RUNNING)
from typing import Any

_RLock: type = type(threading.RLock())
_DONE = frozenset({CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED})
_CANCELLED = frozenset({CANCELLED, CANCELLED_AND_NOTIFIED})


class _LightCondition(_RLock):
    """A ``threading.Condition`` on a reentrant lock that is the lock itself."""

    __slots__ = ("_waiters",)

    def __init__(self) -> None:
        self._waiters: collections.deque = collections.deque()

    wait = threading.Condition.wait
    wait_for = threading.Condition.wait_for
    notify = threading.Condition.notify

    def notify_all(self) -> None:
        if self._waiters:
            threading.Condition.notify(self, len(self._waiters))


class _MadeOnce:
    """A class attribute of ``LightFuture`` that makes the future's lock and its two lists,
    those it lacks, at the first ask for one of them (``Future``'s code that takes the lock
    goes on to the waiters), as the instance's own attributes, which hide it from then on (it
    has no ``__set__``). A ``dict.setdefault`` each: two threads that ask at once get the same
    ones. (``set_result`` makes the lock alone.)"""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, future: Any, owner: type | None = None) -> Any:
        if future is None:
            return self
        fields = future.__dict__
        fields.setdefault("_waiters", [])
        fields.setdefault("_done_callbacks", [])
        fields.setdefault("_condition", _LightCondition())
        return fields[self.name]


_FIELDS = {"_condition", "_state", "_result", "_exception", "_waiters", "_done_callbacks"}


class LightFuture(Future):
    """A ``Future`` whose lock is made when first needed (see the module docstring)."""

    _state = PENDING
    _result: Any = None
    _exception: BaseException | None = None
    _condition: Any = _MadeOnce()
    _waiters: Any = _MadeOnce()
    _done_callbacks: Any = _MadeOnce()

    def __init__(self) -> None:
        pass

    def set_running_or_notify_cancel(self) -> bool:
        fields = self.__dict__
        if "_state" not in fields and fields.setdefault("_state", RUNNING) == RUNNING:
            return True
        return super().set_running_or_notify_cancel()

    def cancel(self) -> bool:
        """``Future.cancel``, whose first change of state is a ``setdefault`` (see above)."""
        with self._condition:
            fields = self.__dict__
            if "_state" not in fields:
                if fields.setdefault("_state", CANCELLED) != CANCELLED:
                    return False                  # it started running first
            elif self._state in (RUNNING, FINISHED):
                return False
            elif self._state in _CANCELLED:
                return True
            self._state = CANCELLED
            self._condition.notify_all()
        self._invoke_callbacks()
        return True

    def set_result(self, result: Any) -> None:
        """``Future.set_result``, under a lock made here if the future has none yet."""
        fields = self.__dict__
        lock = fields.get("_condition")
        if lock is None:
            lock = fields.setdefault("_condition", _LightCondition())
        with lock:
            if self._state in _DONE:
                raise InvalidStateError(f"{self._state}: {self!r}")
            self._result = result
            self._state = FINISHED
            waiters = fields.get("_waiters")
            if waiters:
                for waiter in waiters:
                    waiter.add_result(self)
            lock.notify_all()
        if "_done_callbacks" in fields:
            self._invoke_callbacks()

    def add_done_callback(self, fn: Any) -> None:
        """``Future.add_done_callback``; with no lock yet, without one: the callback is
        appended, and if the future is done by then, whoever takes it off the list first
        (this, or ``_invoke_callbacks``) calls it."""
        fields = self.__dict__
        if "_condition" in fields:
            super().add_done_callback(fn)
            return
        callbacks = fields.setdefault("_done_callbacks", [])
        callbacks.append(fn)
        if self._state in _DONE:
            try:
                callbacks.remove(fn)
            except ValueError:
                return                            # _invoke_callbacks took it
            self._call_back(fn)

    def _invoke_callbacks(self) -> None:
        """Call the callbacks, each taken off the list first (``add_done_callback``)."""
        callbacks = self.__dict__.get("_done_callbacks")
        while callbacks:
            try:
                fn = callbacks.pop(0)
            except IndexError:
                return
            self._call_back(fn)

    def _call_back(self, fn: Any) -> None:
        try:
            fn(self)
        except Exception:                         # as Future's: logged, not raised
            LOGGER.exception("exception calling callback for %r", self)

    def done(self) -> bool:
        return self._state in _DONE

    def running(self) -> bool:
        return self._state == RUNNING

    def cancelled(self) -> bool:
        return self._state in _CANCELLED

    def result(self, timeout: float | None = None) -> Any:
        if self._state == FINISHED and self._exception is None:
            return self._result
        return super().result(timeout)


if set(vars(Future())) != _FIELDS:            # pragma: no cover (another Future)
    LightFuture.__init__ = Future.__init__    # type: ignore[method-assign]
