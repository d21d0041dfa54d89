"""The run's shared key-value store, as tasks call it: ``from mpitiny import state``.

Every function acts on the store the engine set up for this rank (``use``); outside a run, on a
private one-rank store, so task code can be tested without MPI.

Tasks run at least once (retries, crashes, resumed runs); their updates take effect once:
those of a failed attempt are undone, those of a task that succeeded are journaled with it and
put back when the run is resumed, and ``put_if_absent`` answers True again to the task that
claimed the key if it runs again (the other tasks get False). The design (hash-partitioned
open addressing in each rank's RMA window, atomic per-key updates) is in
``mpitiny.queue.state``.
"""
from __future__ import annotations

from typing import Any, Iterator

import numpy as np

from mpitiny.queue.state import RemoteState, StateStore, StateStoreFull

__all__ = ["StateStore", "StateStoreFull", "use", "add", "put", "put_if_absent", "get", "items"]

_store: StateStore | RemoteState | None = None


def _current() -> StateStore | RemoteState:
    global _store
    if _store is None:     # outside a run: a private one-rank store, so task code can be tested
        from mpitiny.queue.memory import LocalBytes, LocalMemory
        slots = 1 << 12
        mem = LocalMemory(1, StateStore.words(slots)).view(0)
        _store = StateStore(mem, 0, slots, LocalBytes([np.zeros(1 << 22, np.uint8)], 0))
    return _store


def use(store: StateStore | RemoteState | None) -> None:
    """Make ``store`` the one the functions below use (the engine does this at start)."""
    global _store
    _store = store


def add(key, amount: int = 1) -> int:
    """Add to the integer at ``key``; returns the new value."""
    return _current().add(key, amount)


def put(key, value: Any) -> None:
    """Set ``key`` to ``value`` (int or JSON value)."""
    _current().put(key, value)


def put_if_absent(key, value: Any = 1) -> bool:
    """Set ``key`` unless it exists; True for exactly one caller per key across the run."""
    return _current().put_if_absent(key, value)


def get(key, default: Any = None) -> Any:
    return _current().get(key, default)


def items() -> Iterator[tuple]:
    """Every ``(key bytes, value)`` stored so far, from every rank."""
    return _current().items()
