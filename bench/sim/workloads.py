"""The benchmark workloads as dag.json documents, for the simulator and for the real runs.

- ``independent(n, L, fn)``: one family of ``n`` independent tasks of ``L`` seconds
  (``mpitiny.tasks:spin`` busy-waits, ``mpitiny.tasks:sleep`` sleeps: the real runs on this
  2-core machine use sleeps so that 64 oversubscribed ranks do not distort task times);
- ``dag(n, L, fn)``: a two-stage DAG: ``a[i]`` (``n`` tasks), ``b[i]`` waiting for ``a[i]``
  each (``n`` tasks, element-wise hand-off: the released child runs on the parent's rank
  unless stolen), and ``end`` waiting for every ``b`` (a gate opened by the last one);
- ``dag-prio``: the same with ``b`` at priority 1 over ``a``'s 0: two levels, so the run-wide
  priority board on rank 0 (``mpitiny.queue.levels``) counts every queued and claimed ``b``
  and every claim reads it first.
"""
from __future__ import annotations

import json


def independent(n: int, length: float, fn: str = "mpitiny.tasks:spin") -> dict:
    return {"name": "sim-independent", "tasks": [
        {"id": "t", "fn": fn, "args": [length], "foreach": {"i": {"range": [0, n]}}}]}


def dag(n: int, length: float, fn: str = "mpitiny.tasks:spin") -> dict:
    return {"name": "sim-dag", "tasks": [
        {"id": "a", "fn": fn, "args": [length], "foreach": {"i": {"range": [0, n]}}},
        {"id": "b", "fn": fn, "args": [length], "foreach": {"i": {"range": [0, n]}},
         "deps": ["a[{i}]"]},
        {"id": "end", "fn": fn, "args": [length], "deps": ["b"]}]}


def dag_prio(n: int, length: float, fn: str = "mpitiny.tasks:spin") -> dict:
    doc = dag(n, length, fn)
    doc["name"] = "sim-dag-prio"
    doc["tasks"][1]["priority"] = 1
    return doc


WORKLOADS = {"independent": independent, "dag": dag, "dag-prio": dag_prio}


def make(kind: str, n: int, length: float, fn: str = "mpitiny.tasks:spin") -> dict:
    return WORKLOADS[kind](n, length, fn)


def text(doc: dict) -> str:
    return json.dumps(doc)


SLEEPING = {"mpitiny.tasks:sleep"}     # task functions that leave the core free while they run


def task_sleeps(doc: dict) -> dict:
    """``{task id: whether it sleeps}`` (``mpitiny.tasks:sleep``; else it needs a core)."""
    return {t["id"]: t["fn"] in SLEEPING for t in doc["tasks"]}


def task_lengths(doc: dict) -> dict:
    """``{task id: seconds}``: the first argument of every entry (the task's length)."""
    return {t["id"]: float(t["args"][0]) for t in doc["tasks"]}
