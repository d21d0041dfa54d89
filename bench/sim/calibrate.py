"""Calibration of the engine's CPU costs for the simulator (``bench/sim/costs.py``).

The real ``Engine.work`` on one ``LocalWorld`` rank (``run_local`` with its turn-taking
replaced by one ``work()`` call, the journal on), CPU time of this process: ``spin(0)`` tasks
in chunks of the engine's own size, and with ``chunk_size`` forced to 1. Prints one JSON
object: CPU µs per task for each. ``python bench/sim/calibrate.py``.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from mpitiny.engine import local, loop  # noqa: E402
from mpitiny.engine.types import RunOptions  # noqa: E402

CPU: list = []


def family(n: int) -> str:
    return json.dumps({"name": "c", "tasks": [{"id": "t", "fn": "mpitiny.tasks:spin", "args": [0],
                                               "foreach": {"i": {"range": [0, n]}}}]})


def one_rank_work(engines, rng, crash_after, max_turns) -> None:
    """``local.take_turns`` for one rank: its own ``work()`` loop, CPU-timed."""
    engine = engines[0]
    engine.guard.install()
    t0 = time.process_time()
    engine.work()
    CPU.append(time.process_time() - t0)
    engine.guard.uninstall()


def measure(n: int, one: bool) -> float:
    """CPU seconds of ``Engine.work`` for ``n`` tasks (one per chunk if ``one``)."""
    orig, turns = loop.Engine.chunk_size, local.take_turns
    local.take_turns = one_rank_work
    if one:
        loop.Engine.chunk_size = lambda self, first, available: 1
    try:
        local.run_local(family(n), 1, os.path.join(tempfile.mkdtemp(), "r"),
                        RunOptions(quiet=True))
    finally:
        loop.Engine.chunk_size, local.take_turns = orig, turns
    return CPU[-1]


FIRST_RELEASE = """
import sys, time, numpy as np
sys.path.insert(0, %r)
from sim import workloads
from sim.costs import preset
from sim.simulate import Simulation
rank = Simulation(workloads.make("dag", 800, 1e-3), 8, preset("node"), warm=False).ranks[0]
t0 = time.process_time()
rank.release_children(0, np.array([0]), [])
first = time.process_time() - t0
t0 = time.process_time()
for k in range(1, 101):
    rank.release_children(0, np.array([8 * k]), [])
print(first, (time.process_time() - t0) / 100)
"""


def first_release_cpu() -> tuple:
    """``(first, later)``: CPU seconds of the first ``release_children`` call of one task in a
    fresh process (the mpitiny it imports: PYTHONPATH's, else this tree's), and the mean of
    the next 100."""
    import subprocess
    bench = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", FIRST_RELEASE % bench], capture_output=True,
                         text=True, check=True, cwd=tempfile.gettempdir())
    first, later = out.stdout.split()
    return float(first), float(later)


def main() -> None:
    res = {}
    first, later = first_release_cpu()
    res["first_release_us"], res["release_us"] = first * 1e6, later * 1e6
    for one in (False, True):
        for n in (20000, 40000):
            res[f"{'chunk1' if one else 'chunked'}_{n}_us_per_task"] = measure(n, one) / n * 1e6
    print(json.dumps(res))


if __name__ == "__main__":
    main()
