"""A mpitiny.futures session's script for tests/test_submit_nested.py: tasks that
``mpitiny.submit``, then wait for an executor's future (their rank runs other tasks meanwhile,
``Adding.run_one`` inside ``run_one``, and those submit too), then submit again.

``python -m mpitiny.futures futures_submit_wait.py LOG OUTERS``: every leaf task appends its
label to LOG; the script prints one JSON line: the ids that ``mpitiny.submit`` returned
(every one must differ) and how many inner calls ran inside a waiting outer one on the same
rank (the case under test). The calls are submitted as functions of module
``futures_submit_wait`` (not ``__main__``): leaves added after the script's ``__main__``
has returned still unpickle on rank 0.
"""
from __future__ import annotations

import json
import os
import sys

import mpitiny
from mpitiny.futures import Executor

BEFORE, INNERS, PER_INNER, AFTER = 3, 2, 3, 3
_waiting = [0]                 # outer calls of this process that wait for their inner ones


def leaf(label: str, log: str) -> None:
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{label}\n".encode())
    finally:
        os.close(fd)


def inner(label: str, log: str) -> tuple:
    ids = [mpitiny.submit(leaf, f"{label}.{j}", log) for j in range(PER_INNER)]
    return [str(i) for i in ids], _waiting[0] > 0


def outer(i: int, log: str) -> tuple:
    ids = [mpitiny.submit(leaf, f"o{i}.before{j}", log) for j in range(BEFORE)]
    nested = 0
    with Executor() as ex:
        fs = [ex.submit(inner, f"o{i}.inner{k}", log) for k in range(INNERS)]
        _waiting[0] += 1
        try:
            for f in fs:
                inner_ids, was_nested = f.result()
                ids += inner_ids
                nested += was_nested
        finally:
            _waiting[0] -= 1
    ids += [mpitiny.submit(leaf, f"o{i}.after{j}", log) for j in range(AFTER)]
    return [str(x) for x in ids], nested


def expected_labels(outers: int) -> set:
    labels = set()
    for i in range(outers):
        labels |= {f"o{i}.before{j}" for j in range(BEFORE)}
        labels |= {f"o{i}.after{j}" for j in range(AFTER)}
        labels |= {f"o{i}.inner{k}.{j}" for k in range(INNERS) for j in range(PER_INNER)}
    return labels


def main() -> None:
    import futures_submit_wait as me
    log, outers = sys.argv[1], int(sys.argv[2])
    with Executor() as ex:
        rows = [f.result() for f in [ex.submit(me.outer, i, log) for i in range(outers)]]
    print(json.dumps({"ids": [x for ids, _ in rows for x in ids],
                      "nested": sum(n for _, n in rows)}))


if __name__ == "__main__":
    main()
