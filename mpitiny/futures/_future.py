"""A ``concurrent.futures.Future`` that costs less per future, for ``mpitiny.futures``.

Every operation on a ``Future`` (``add_done_callback``, ``set_running_or_notify_cancel``,
``set_result``, ``wait``'s and ``as_completed``'s taking of every future's lock) enters its
``_condition``, a ``threading.Condition``: built in Python (an ``RLock`` and five bound methods
per future) and entered through a Python ``__enter__``. At the hundred thousand futures a
second that ``mpitiny.futures`` hands out on one core, that is about a microsecond per future
(``bench/futures_bench.py``: the submitting rank's CPU per future is the bound).

``LightFuture`` is the same ``Future`` whose ``_condition`` is a ``_LightCondition``: the
C ``RLock`` itself (entered in C), with the ``Condition`` methods ``wait``/``notify``/
``notify_all`` (CPython's own, which need only ``_waiters`` and the lock's ``_is_owned``,
``_release_save`` and ``_acquire_restore``); ``notify_all`` returns at once when no thread
waits. Its ``__init__`` sets the attributes ``Future.__init__`` sets; if this Python's
``Future`` has others (checked once, at import), it is ``Future.__init__`` itself.
"""
from __future__ import annotations

import collections
import threading
from concurrent.futures import Future
from concurrent.futures._base import PENDING

_RLock: type = type(threading.RLock())


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


_FIELDS = {"_condition", "_state", "_result", "_exception", "_waiters", "_done_callbacks"}


class LightFuture(Future):
    """A ``Future`` with a ``_LightCondition`` (see the module docstring)."""

    def __init__(self) -> None:
        self._condition = _LightCondition()
        self._state = PENDING
        self._result = None
        self._exception = None
        self._waiters: list = []
        self._done_callbacks: list = []


if set(vars(Future())) != _FIELDS:            # pragma: no cover (another Future)
    LightFuture.__init__ = Future.__init__    # type: ignore[method-assign]
