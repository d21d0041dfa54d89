"""A mpitiny.futures session's script for tests/test_futures.py: checks what an Executor
gives back and prints one JSON line of findings (the test asserts on them)."""
from __future__ import annotations

import json
import sys
import time

from mpitiny.futures import (ALL_COMPLETED, Executor, RemoteTraceback, as_completed,
                             wait)


def square(x):
    return x * x


def add(x, y=0):
    return x + y


def fails(x):
    raise ValueError(f"bad value {x}")          # the line the remote traceback shows


def nap(seconds):
    time.sleep(seconds)
    return seconds


def fib(n):
    """Calls that submit calls and wait for them (from inside a task)."""
    if n < 2:
        return n
    with Executor() as ex:
        a, b = ex.submit(fib, n - 1), ex.submit(fib, n - 2)
        return a.result() + b.result()


def unpicklable_result():
    return lambda: None


def main() -> int:
    found: dict = {}
    with Executor() as ex:
        found["map"] = list(ex.map(square, range(500))) == [x * x for x in range(500)]
        found["map_chunks"] = list(ex.map(add, range(300), range(300), chunksize=7)) == \
            [2 * x for x in range(300)]
        found["starmap"] = list(ex.starmap(add, [(1, 2), (3, 4)])) == [3, 7]
        found["kwargs"] = ex.submit(add, 1, y=41).result() == 42
        fs = [ex.submit(square, i) for i in range(400)]
        found["as_completed"] = sorted(f.result() for f in as_completed(fs)) == \
            sorted(x * x for x in range(400))
        done, not_done = wait([ex.submit(square, i) for i in range(50)],
                              return_when=ALL_COMPLETED)
        found["wait"] = (len(done), len(not_done)) == (50, 0)
        exc = ex.submit(fails, 3).exception()
        found["exception"] = [type(exc).__name__, str(exc)]
        found["remote_traceback"] = isinstance(exc.__cause__, RemoteTraceback) and \
            'raise ValueError(f"bad value {x}")' in str(exc.__cause__)
        found["unpicklable_arg"] = type(ex.submit(square, lambda: 1).exception()).__name__
        found["unpicklable_result"] = type(ex.submit(unpicklable_result).exception()).__name__
        found["fib"] = ex.submit(fib, 12).result()
    with Executor() as ex:
        fs = [ex.submit(nap, 0.02) for _ in range(200)]
        ex.shutdown(wait=True, cancel_futures=True)
        found["cancelled"] = sum(f.cancelled() for f in fs)
        found["others_done"] = all(f.done() and f.result() == 0.02
                                   for f in fs if not f.cancelled())
    try:
        ex.submit(square, 1)
        found["after_shutdown"] = "accepted"
    except RuntimeError as e:
        found["after_shutdown"] = str(e)
    print(json.dumps(found))
    return int(sys.argv[1]) if len(sys.argv) > 1 else 0


if __name__ == "__main__":
    sys.exit(main())
