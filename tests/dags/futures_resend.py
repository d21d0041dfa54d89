"""A mpitiny.futures session's script for tests/test_futures.py: calls of one function whose
batches hold an argument that other ranks cannot unpickle (a class only the script's
``__main__`` defines): such a batch comes back to be sent call by call, so only the calls
with that argument fail there. Prints one JSON line of findings."""
from __future__ import annotations

import json
import time

from mpitiny.futures import Executor


def ident(x):
    """``x``, after 0.5 ms: 3,000 calls keep one rank busy for 1.5 s, so that the other ranks
    take batches too (instantaneous calls could all run on the script's rank under load, and
    then no batch would need resending)."""
    time.sleep(0.0005)
    return x


if __name__ == "__main__":
    class OnlyHere:
        """Defined on the script's rank only (the others import the script as a module)."""

    with Executor() as ex:
        args = [OnlyHere() if i % 10 == 3 else i for i in range(3000)]
        fs = [ex.submit(ident, a) for a in args]
        found = {"ints_ok": 0, "ints_bad": [], "odd_ran": 0, "odd_failed": [],
                 "after": ex.submit(ident, 7).result()}
        for a, f in zip(args, fs):
            exc = f.exception()
            if isinstance(a, int):
                if exc is None and f.result() == a:
                    found["ints_ok"] += 1
                else:
                    found["ints_bad"].append(repr(exc))
            elif exc is None:
                found["odd_ran"] += 1
            else:
                found["odd_failed"].append(type(exc).__name__)
    print(json.dumps(found))
