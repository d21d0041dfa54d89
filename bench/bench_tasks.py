"""Task functions used by the benchmarks (importable by mpitiny ranks and mpi4py.futures
workers: the scripts put ``bench/`` on PYTHONPATH).

mpitiny sets ``MPITINY_RANK`` in every rank's environment; ``straggler_sleep`` reads it.
"""
from __future__ import annotations

import os
import random
import time


def null(*args, **kwargs) -> None:
    """Do nothing."""


def mixed_duration(i: int, seed: int, lo: float, hi: float) -> float:
    """Seconds that task ``i`` of a mixed-length set sleeps: uniform in [lo, hi), from ``seed``."""
    return random.Random(seed * 1_000_003 + int(i)).uniform(lo, hi)


def mixed_sleep(i: int, seed: int, lo: float, hi: float) -> None:
    time.sleep(mixed_duration(i, seed, lo, hi))


def is_slow_rank(slow) -> bool:
    rank = int(os.environ["MPITINY_RANK"])
    return rank in set(slow)


def straggler_sleep(seconds: float, slow, factor: float = 20.0) -> None:
    """Sleep ``seconds``, or ``seconds * factor`` on the ranks listed in ``slow`` (the rank is
    read from ``MPITINY_RANK``, which the runtime sets on every rank)."""
    time.sleep(seconds * factor if is_slow_rank(slow) else seconds)


# ---------------------------------------------------------------- for the mpi4py.futures peer
def timed(fn, *args):
    """Run ``fn(*args)`` and return (start, end, pid) in Unix time (for schedules)."""
    t0 = time.time()
    fn(*args)
    return t0, time.time(), os.getpid()


def timed_null():
    t0 = time.time()
    return t0, time.time(), os.getpid()


def timed_sleep(seconds: float):
    t0 = time.time()
    time.sleep(seconds)
    return t0, time.time(), os.getpid()


def run_phases(executor, phases: list, handlers: dict) -> list:
    """Run the peers' benchmark phases in order: ``handlers[kind](executor, **params)`` for
    each ``{"kind": ..., **params}``; each result dict gets its ``kind``."""
    out = []
    for ph in phases:
        kind = ph["kind"]
        if kind not in handlers:
            raise SystemExit(f"unknown phase {kind!r}")
        res = handlers[kind](executor, **{k: v for k, v in ph.items() if k != "kind"})
        res["kind"] = kind
        out.append(res)
    return out
