"""Task functions of tests/test_submit.py: tasks that add tasks (``mpitiny.submit``).

``tree_root`` / ``grow``: a UTS binomial tree (bench/uts.py has the design), each task
expanding up to ``per_task`` nodes and adding the rest of its stack as ``split`` tasks; each
returns how many nodes it expanded, so the results sum to the tree's size (``tree_size``).
With ``log``, each task appends the hex of the node it expands first to that file as it
starts; with ``delay``, it sleeps that long (so that every rank gets some of the tasks).

``deps_root``: tasks with deps on added tasks, some added by other tasks (the ids travel as
arguments); every task that adds returns ``{id: [its deps' ids]}`` so the test can check
each task started after its deps ended.
"""
from __future__ import annotations

import hashlib
import time

import mpitiny

MASK31 = 0x7FFFFFFF


def _children(seed: int, b0: int) -> list:
    root = hashlib.sha1(bytes(16) + seed.to_bytes(4, "big")).digest()
    return [hashlib.sha1(root + i.to_bytes(4, "big")).digest() for i in range(b0)]


def _expand(stack: list, q: float, m: int, budget: int) -> int:
    count = 0
    while stack and count < budget:
        state = stack.pop()
        count += 1
        if (int.from_bytes(state[16:20], "big") & MASK31) / 2147483648.0 < q:
            stack.extend(hashlib.sha1(state + i.to_bytes(4, "big")).digest() for i in range(m))
    return count


def tree_size(seed: int, b0: int, q: float, m: int) -> int:
    return 1 + _expand(_children(seed, b0), q, m, 1 << 62)


def tree_root(seed: int, b0: int, q: float, m: int, per_task: int, split: int,
              log: str = "", delay: float = 0.0) -> int:
    return 1 + _grow(_children(seed, b0), q, m, per_task, split, log, delay)


def grow(nodes: bytes, q: float, m: int, per_task: int, split: int, log: str = "",
         delay: float = 0.0) -> int:
    if log:
        with open(log, "a", encoding="utf-8") as f:
            f.write(nodes[-20:].hex() + "\n")        # the node it expands first
    time.sleep(delay)
    stack = [nodes[k:k + 20] for k in range(0, len(nodes), 20)]
    return _grow(stack, q, m, per_task, split, log, delay)


def _grow(stack: list, q: float, m: int, per_task: int, split: int, log: str,
          delay: float) -> int:
    count = _expand(stack, q, m, per_task)
    if stack:
        parts = [b"".join(stack[j::split]) for j in range(min(split, len(stack)))]
        mpitiny.submit_family(grow, [(p, q, m, per_task, split, log, delay) for p in parts])
    return count


def leaf(i: int, delay: float) -> int:
    time.sleep(delay)
    return i


def joined(i: int) -> int:
    return -i


def fails() -> None:
    raise ValueError("this added task fails")


def waits_on(first, j: int) -> dict:
    """Added by another task: adds one that waits on ``first`` (an id passed along)."""
    mine = mpitiny.submit(joined, 1000 + j, deps=[first])
    return {mine: [first]}


def deps_root(n: int, delay: float) -> dict:
    """``leaf`` i < n; ``joined`` i after leaves i and i+1; a last one after all joined; one
    leaf's id handed to ``waits_on`` tasks, each adding a task that waits on it."""
    leaves = mpitiny.submit_family(leaf, [(i, delay) for i in range(n + 1)])
    graph: dict = {tid: [] for tid in leaves}
    mids = []
    for i in range(n):
        mid = mpitiny.submit(joined, i, deps=[leaves[i], leaves[i + 1]])
        graph[mid] = [leaves[i], leaves[i + 1]]
        mids.append(mid)
    last = mpitiny.submit(joined, -1, deps=mids)
    graph[last] = list(mids)
    for j in range(3):
        graph[mpitiny.submit(waits_on, leaves[n], j)] = []
    return graph


def failed_dep_root() -> dict:
    """A failing task and two generations waiting on it (upstream-failed), and one that
    does not."""
    bad = mpitiny.submit(fails)
    child = mpitiny.submit(joined, 1, deps=[bad])
    grandchild = mpitiny.submit(joined, 2, deps=[child])
    fine = mpitiny.submit(joined, 3)
    return {"bad": bad, "child": child, "grandchild": grandchild, "fine": fine}


def bad_submits() -> list:
    """Submits that must be refused, each with its message; then one good submit (the
    refused ones add nothing, not even part of a family)."""
    messages = []
    for call in (lambda: mpitiny.submit(lambda: 1),
                 lambda: mpitiny.submit_family(leaf, [(1, 0.0), (lambda: 2, 0.0)]),
                 lambda: mpitiny.submit(leaf, 1, 0.0, deps=["leaf[1]"])):
        try:
            call()
        except RuntimeError as exc:
            messages.append(str(exc))
    mpitiny.submit(leaf, 7, 0.0)
    return messages
