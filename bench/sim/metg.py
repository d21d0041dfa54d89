"""Efficiency against task length and METG(50 %) against ranks, simulated and central.

``sweep`` simulates one workload at each task length of ``lengths`` (seconds, ascending) on P
ranks; ``metg`` finds where the efficiency work / (P x makespan) crosses 0.5, interpolating
linearly in log(length) between the two lengths around the crossing (Task Bench's METG:
the smallest task length at which a system still reaches 50 % efficiency).
"""
from __future__ import annotations

import math

from . import central
from .costs import Costs
from .fixes import VARIANTS
from .simulate import Simulation
from . import workloads


def sweep(kind: str, nranks: int, lengths: list, costs: Costs, tasks_per_rank: int,
          variant: str = "engine", seed: int = 0, log=None) -> list:
    """``[{length, efficiency, makespan, hot...}]`` for each length."""
    points = []
    n = tasks_per_rank * nranks if kind == "independent" else max(1, tasks_per_rank * nranks // 2)
    for length in lengths:
        doc = workloads.make(kind, n, length)
        r = Simulation(doc, nranks, costs, seed, rank_class=VARIANTS[variant]).run()
        point = {"length": length, "efficiency": r.efficiency, "makespan": r.makespan,
                 "rank0_end": r.rank0_end, "events": r.events,
                 "real_seconds": round(r.real_seconds, 2), "hot": r.hot}
        points.append(point)
        if log:
            log(f"  {kind} P={nranks} {variant} {costs.name} L={length * 1e6:g} µs: "
                f"efficiency {r.efficiency:.3f}, makespan {r.makespan * 1e3:.3f} ms "
                f"({r.real_seconds:.1f} s real)")
    return points


def metg(points: list) -> float | None:
    """The task length at which efficiency reaches 0.5 (log-interpolated), or None if no
    point of the sweep reaches it; the first length if all do."""
    prev = None
    for p in points:
        if p["efficiency"] >= 0.5:
            if prev is None:
                return p["length"]
            a, b = math.log(prev["length"]), math.log(p["length"])
            ea, eb = prev["efficiency"], p["efficiency"]
            return math.exp(a + (0.5 - ea) * (b - a) / (eb - ea))
        prev = p
    return None


def central_sweep(nranks: int, lengths: list, tasks_per_rank: int, **kw) -> list:
    """The central baseline at the same points (P workers behind one master)."""
    out = []
    for length in lengths:
        ms = central.central_makespan(tasks_per_rank * nranks, nranks, length, **kw)
        out.append({"length": length, "makespan": ms,
                    "efficiency": tasks_per_rank * nranks * length / (nranks * ms)})
    return out
