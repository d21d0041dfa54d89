"""Validation: the same workload run for real (``mpiexec -n N python -m mpitiny run``) and
simulated, makespans side by side.

The real runs use sleeping tasks (``mpitiny.tasks:sleep``): on this 2-core machine 64 ranks
are oversubscribed 32x, and a sleep takes its time whatever the load while a busy-wait would
not. The makespan compared is first task start to last task end (task table; the
simulation's ``tasks_span``); ``summary.json``'s ``wall_seconds`` (start barrier to rank 0
leaving) is reported beside it, but it also holds the time ranks take to leave the barrier.

The simulation is given what the engine sees here: ``max_sleep`` 1 ms and no spinning when
there are more ranks than cores (``Engine.spare_cores``), every rank on one node (the ``node``
costs), each task lasting what it lasted in the real run (end - start in the task table: on
this loaded machine a 5 ms sleep inside a rank takes 6.7-7.8 ms, while ``time.sleep`` in the
launching process overshoots by 0.1-0.3 ms; both are reported), and this machine's load,
which other work on its 2 cores dominates (load average 6-65 during this session):

- ``cpu_stretch`` = the 1-minute load average / cores at the end of the run (a runnable
  process gets about cores / load of a core): every CPU cost of the model is multiplied by
  it (the first release's 10.7 ms of CPU took 64-77 ms at 8 ranks);
- ``wake_extra``: added to every chunk, the wait for a core when a rank wakes from its
  sleeping task: the ``independent`` run's mean gap between two tasks on one rank, less the
  modelled gap (21.9 µs x ``cpu_stretch``);
- start offsets: each rank starts when its first task started in the ``independent`` run
  (32 oversubscribed ranks leave the start barrier over ~16 ms).

``wake_extra`` and the offsets are fitted on the ``independent`` run at each rank count and
used for the ``dag`` run at the same count, which is therefore predicted. Each row also has
the simulation with the ``dag`` run's own gap (``sim_own``) and with no load at all
(``sim_unstretched``: every rank at 0, CPU as measured unloaded, no wake-up wait): that one
shows how much of the makespan here is the machine's load, not the engine.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import replace

import numpy as np

from . import calibrate, workloads
from .costs import preset
from .simulate import Simulation

BENCH = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if BENCH not in sys.path:
    sys.path.insert(0, BENCH)


def sleep_overshoot(length: float, reps: int = 50) -> float:
    """Mean extra time of ``time.sleep(length)`` here, now (seconds)."""
    extra = []
    for _ in range(reps):
        t0 = time.perf_counter()
        time.sleep(length)
        extra.append(time.perf_counter() - t0 - length)
    return float(np.median(extra))


def real_run(kind: str, nranks: int, tasks: int, length: float, work: str, tag: str) -> dict:
    """One real run; its wall time, tasks span and mean task duration."""
    import _common as C
    doc = workloads.make(kind, tasks, length, fn="mpitiny.tasks:sleep")
    path = C.write_dag(os.path.join(work, f"{tag}.json"), doc)
    run_dir = os.path.join(work, f"{tag}-run")
    proc, s = C.run_mpitiny(nranks, path, run_dir, timeout=600)
    t = C.read_table(run_dir)
    durations = np.zeros(len(t))
    durations[t["gid"]] = t["end"] - t["start"]
    t0 = float(t["start"].min())
    offsets = [float(t["start"][t["rank"] == r].min()) - t0 if np.any(t["rank"] == r) else 0.0
               for r in range(nranks)]
    median, mean = gaps(t)
    return {"durations": durations, "offsets": offsets, "gap_median": median, "gap_mean": mean,
            "start_skew_max": max(offsets), "wall_seconds": s["wall_seconds"],
            "tasks_span": float(t["end"].max() - t["start"].min()),
            "task_mean": float((t["end"] - t["start"]).mean()), "done": s["done"],
            "mpiexec_seconds": proc["wall"], "loadavg": os.getloadavg()}


def gaps(t: np.ndarray) -> tuple:
    """Median and mean time between the end of a task and the start of the next on the same
    rank (the engine's CPU per chunk, as this machine's load stretched it)."""
    found = []
    for r in np.unique(t["rank"]):
        m = np.sort(t[t["rank"] == r], order="start")
        found.append(m["start"][1:] - m["end"][:-1])
    every = np.concatenate(found)
    return float(np.median(every)), float(every.mean())


def one_task_chunk(costs) -> float:
    """The modelled CPU time between two one-task chunks (round, claim, chunk, task)."""
    return costs.round_cpu + costs.chunk_cpu + costs.task_cpu + costs.node_ops["cas"]


def sim_run(kind: str, nranks: int, tasks: int, length: float, durations: np.ndarray,
            stretch: float = 1.0, offsets: list | None = None, cores: int = 2,
            seed: int = 0, first_release: float = 0.0, wake: float = 0.0) -> dict:
    spare = nranks <= cores
    costs = replace(preset("node"), spin=spare, cpu_stretch=stretch, wake_extra=wake,
                    first_release=first_release,
                    max_sleep=1e-4 if spare else 1e-3)
    doc = workloads.make(kind, tasks, length, fn="mpitiny.tasks:sleep")
    r = Simulation(doc, nranks, costs, seed, durations=durations, offsets=offsets).run()
    return {"rank0_end": r.rank0_end, "makespan": r.makespan, "tasks_span": r.tasks_span}


def validate(cases: list, work: str, log=print) -> list:
    """``cases``: ``(kind, nranks, tasks, length)``; runs each for real, then simulates it.

    The wake-up wait and the start offsets come from the ``independent`` run at the same rank
    count when there is one (list it first): the other workloads at that count are then
    predicted, not fitted. Each row also has the simulation with its own run's wake-up wait
    (``sim_own``) and with no load (``sim_unstretched``)."""
    rows, calib = [], {}
    node = preset("node")
    first_release = calibrate.first_release_cpu()[0]
    log(f"first release in a fresh process: {first_release * 1e6:.0f} µs CPU")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    for kind, nranks, tasks, length in cases:
        probe = sleep_overshoot(length)
        tag = f"{kind}-{nranks}"
        real = real_run(kind, nranks, tasks, length, work, tag)
        durations, offsets = real.pop("durations"), real.pop("offsets")
        stretch = max(1.0, real["loadavg"][0] / (cores or 1))
        own = max(0.0, real["gap_mean"] - stretch * one_task_chunk(node))
        if kind == "independent":
            calib[nranks] = (own, offsets)
        wake, start = calib.get(nranks, (own, offsets))
        sim = sim_run(kind, nranks, tasks, length, durations, stretch, start,
                      first_release=first_release, wake=wake)
        sim_own = sim_run(kind, nranks, tasks, length, durations, stretch, offsets,
                          first_release=first_release, wake=own)
        plain = sim_run(kind, nranks, tasks, length, durations, 1.0, first_release=first_release)
        row = {"kind": kind, "nranks": nranks, "tasks": tasks, "length": length,
               "first_release_cpu": first_release, "sleep_overshoot_probe": probe,
               "task_mean": real["task_mean"], "real": real,
               "calibrated_on": "independent" if nranks in calib else kind,
               "cpu_stretch": stretch, "wake_extra": wake, "wake_extra_own": own,
               "sim": sim, "sim_own": sim_own,
               "sim_unstretched": plain,
               "ratio_span": sim["tasks_span"] / real["tasks_span"],
               "ratio_wall": sim["rank0_end"] / real["wall_seconds"],
               "ratio_span_own": sim_own["tasks_span"] / real["tasks_span"],
               "ratio_span_unstretched": plain["tasks_span"] / real["tasks_span"]}
        log(f"{tag}: real span {real['tasks_span']:.4f} s (wall {real['wall_seconds']:.4f}); "
            f"sim {sim['tasks_span']:.4f} s: ratio {row['ratio_span']:.3f} (CPU x{stretch:.1f}, "
            f"wake {wake * 1e6:.0f} µs from {row['calibrated_on']}); own wake "
            f"{own * 1e6:.0f} µs: {row['ratio_span_own']:.3f}; "
            f"unstretched {row['ratio_span_unstretched']:.3f}; wall ratio {row['ratio_wall']:.3f}")
        rows.append(row)
    return rows
