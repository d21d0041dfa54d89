#!/usr/bin/env python
"""How fast can one process hand out futures at all, against mpitiny families (issue 21's bar
"Executor: null ``submit`` throughput within 2x of mpitiny families on 2 ranks").

Every future of a ``concurrent.futures.Executor`` is created, queued, marked running and
completed in the process that submitted it, whatever runs the call: that work is done by the
one submitting process (its threads share one interpreter lock) and bounds the executor's
rate from above. This measures that bound with no transport at all, in this process, for
``--tasks`` futures at a time (the collector's first threshold set as in a session:
``mpitiny.futures._core.GC_YOUNG``), and side by side (``--repeat`` times, interleaved) the
rate of a family of as many null tasks on ``--ranks`` ranks (``mpitiny run``, tasks / the
run's ``wall_seconds``, as ``bench/futures_bench.py`` measures it):

- ``queue_only``: the call tuple appended to a deque and taken off again (no future);
- ``task_future``: what ``mpitiny.futures`` does per call in the submitting process, without
  pickling, sending or receiving: a ``TaskFuture`` made, its call queued, then
  ``set_running_or_notify_cancel`` and ``set_result``;
- ``bare_future``: the least a ``Future`` can cost in Python: a subclass with no lock at
  all (class attributes for its state, ``set_result`` two stores). Not thread-safe, so no
  executor can use it: a floor below any real one.

Ratios: families / each (the bar asks the executor's rate for at least half the families',
a ratio <= 2). Prints the JSON result on stdout and one line per figure on stderr.
"""
from __future__ import annotations

import argparse
import collections
import gc
import os
import sys
import time
from concurrent.futures import Future
from concurrent.futures._base import FINISHED, PENDING

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402
from futures_bench import families  # noqa: E402
from throughput import med as median  # noqa: E402

from mpitiny.futures._core import GC_YOUNG, TaskFuture  # noqa: E402
from mpitiny.tasks import null  # noqa: E402


class BareFuture(Future):
    """A future with no lock: the floor (see the module docstring)."""

    _state = PENDING
    _result = None

    def __init__(self) -> None:
        pass

    def set_result(self, result) -> None:
        self._result = result
        self._state = FINISHED


def queue_only(n: int) -> float:
    queue: collections.deque = collections.deque()
    start = time.perf_counter()
    for _ in range(n):
        queue.append((None, null, (), {}))
    while queue:
        queue.popleft()
    return time.perf_counter() - start


def task_future(n: int) -> float:
    queue: collections.deque = collections.deque()
    start = time.perf_counter()
    for _ in range(n):
        queue.append((TaskFuture(), null, (), {}))
    while queue:
        fut = queue.popleft()[0]
        fut.set_running_or_notify_cancel()
        fut.set_result(None)
    return time.perf_counter() - start


def bare_future(n: int) -> float:
    queue: collections.deque = collections.deque()
    start = time.perf_counter()
    for _ in range(n):
        queue.append((BareFuture(), null, (), {}))
    while queue:
        queue.popleft()[0].set_result(None)
    return time.perf_counter() - start


FLOORS = {"queue_only": queue_only, "task_future": task_future, "bare_future": bare_future}


def floors(n: int) -> dict:
    """Each floor's rate for ``n`` futures, with the collector set as in a session."""
    threshold = gc.get_threshold()
    gc.set_threshold(GC_YOUNG, *threshold[1:])
    try:
        out = {}
        for name, fn in FLOORS.items():
            gc.collect()
            seconds = fn(n)
            out[name] = {"seconds": seconds, "tasks_per_second": n / seconds,
                         "us_per_future": 1e6 * seconds / n}
        return out
    finally:
        gc.set_threshold(*threshold)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--tasks", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--workdir", help="keep dag files and run directories here")
    a = ap.parse_args()
    machine = C.machine()
    work = C.workdir(a.workdir, "bench-futures-floor-")
    reps: dict = {"floors": [], "mpitiny_families": []}
    for rep in range(a.repeat):
        C.log(f"repetition {rep + 1}/{a.repeat}")
        reps["floors"].append(floors(a.tasks))
        reps["mpitiny_families"].append(families(work, a.ranks, a.tasks, rep))
    fam = median(reps["mpitiny_families"], "tasks_per_second")
    med: dict = {"mpitiny_families_tasks_per_second": fam}
    for name in FLOORS:
        rate = median(reps["floors"], name, "tasks_per_second")
        med[f"{name}_tasks_per_second"] = rate
        med[f"{name}_us_per_future"] = 1e6 / rate
        med[f"ratio_families_over_{name}"] = C.ratio(fam, rate)
    result = {"benchmark": "futures_floor", "ranks": a.ranks, "tasks": a.tasks,
              "repeat": a.repeat, "machine": machine, "workdir": work, "median": med,
              "repetitions": reps}
    human = "\n".join(f"{k}: {v:,.2f}" for k, v in med.items() if isinstance(v, float))
    C.emit(result, human)


if __name__ == "__main__":
    main()
