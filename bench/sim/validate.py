"""Validation: the same workload run for real (``mpiexec -n N python -m mpitiny run``) and
simulated, makespans (and CPU times) side by side.

The real runs use sleeping tasks (``mpitiny.tasks:sleep``, ``time.sleep``: the rank's core is
free meanwhile), 20 of 5 ms per rank, on this 2-core machine: at 32 and 64 ranks the ranks
share the cores 16-32 to one. The makespan compared is first task start to last task end
(task table; the simulation's ``tasks_span``); ``summary.json``'s ``wall_seconds`` (start
barrier to rank 0 leaving) is reported beside it. The CPU compared is the sum over ranks of
``work_cpu_seconds`` (``summary.json``: each rank's process CPU time in ``Engine.work``).

The simulation models this machine as what it is, a pool of ``cores`` (the CPUs this process
may run on, 2 here; ``--cores``) shared by all ranks (``Costs.cores``, ``Simulation.pools``):
an event of a rank (a round of the loop, a chunk's bookkeeping, a release, a task's return)
needs a core and waits, first come first served, until one is free; a sleeping task, and a
rank sleeping in ``Backoff``, holds none. The engine's rules for more ranks than cores apply
(``Engine.spare_cores``: no spinning, ``max_sleep`` 1 ms). What each figure is:

- measured, not from the run: the per-operation and per-chunk CPU costs (``costs.py``:
  ``probe.py``, ``calibrate.py``, hot caches), a release's CPU (timed as the simulator runs
  the real code) and a process's first release (``calibrate.first_release_cpu``);
- measured, from the run: each rank's start (its first task's start in the task table: the
  start-up, which the simulator does not model, spreads 64 ranks over 25-50 ms); a 5 ms
  ``time.sleep`` 's overshoot in this process just before the run (``task_extra``: the tasks
  last their nominal 5 ms plus that; their measured durations are not used: the wait for a
  core when a task's sleep ends is the model's); the cores other work used during the run's
  tasks (``others_cores``: ``/proc/stat`` sampled every 10 ms by ``BusySampler`` over the
  tasks' span, less the ranks' own CPU), which keep a core busy for ``background / (cores -
  background)`` s after each second a rank held it (``Costs.debt``);
- modelled, fitted once on other runs: ``wake_cpu``, the CPU a rank spends each time it wakes
  from a sleep (its task's or ``Backoff`` 's) beyond the hot-cache costs: the kernel's switch
  and the caches other processes emptied meanwhile. ``sim`` takes it from ``wake.WAKE_MODEL``
  (136 µs + 14.4 µs × the 1-minute load average before the run), fitted on the 24 stored runs
  of 2026-12-06; a run after those is a prediction with nothing fitted on it. ``heldout.py``
  tests the model on stored runs it was not fitted on: 22 of 36 held-out makespans within
  15 %, 2 of 6 at 8 ranks and 6 of 12 at 64; a fresh run at 16:50 was within 15 % at all 8
  points, 0.888-1.149 (docs/scale.md).
- fitted on the run itself, for comparison only (``sim_fit_cpu``): ``wake_cpu`` fitted on the
  run's own CPU time (``fit_wake``: the simulated CPU of all ranks equals ``work_cpu``). It
  ranged 226-846 µs. This is what the validation reported before the model; it is close to
  circular where the ranks keep both cores busy (32 and 64 ranks): their CPU time is about
  2 × their makespan.

The others' cores are measured as the machine's busy time less the ranks' CPU over the
tasks' span; this machine was always fully busy in the stored runs (1.86-2.07 cores used),
so that is close to ``cores - CPU / span`` and carries the run's own span too (``heldout.py``
also tries a model of it fitted on other runs). Runs from 16:50 on 2026-12-06 also record the
cores busy during 1 s just before ``mpiexec`` (``others_cores_before``: other work only), and
are simulated with that too (``sim_before``: then nothing but the start offsets comes from
the run). At 16:50 that was 1.82-1.98 cores (other work takes every idle cycle but yields to
the ranks, which ``debt`` does not model): 2-9 × the makespan from 8 ranks on, not usable.

Not modelled: the kernel's time slices (a core is held for a whole event) and its
preference for a woken process beyond what ``debt`` gives. Each row also has the simulation
without the pool (``sim_no_pool``: a core per rank, the same costs), which shows what sharing
the cores adds.
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import replace

import numpy as np

from . import calibrate, workloads
from .costs import Costs, preset
from .simulate import Simulation
from .wake import WAKE_MODEL, WakeModel

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


def busy_seconds() -> float:
    """CPU seconds this machine has run so far, all cores (``/proc/stat``)."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _wait, irq, softirq = map(int, f.readline().split()[1:8])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


class BusySampler:
    """Samples ``(time.time(), busy_seconds())`` every ``every`` seconds in a thread, so that
    the machine's CPU during any window of a run (its tasks' span) can be read afterwards."""

    def __init__(self, every: float = 0.01) -> None:
        import threading
        self.every, self.samples = every, []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def loop(self) -> None:
        while not self.stop.is_set():
            self.samples.append((time.time(), busy_seconds()))
            time.sleep(self.every)

    def __enter__(self) -> "BusySampler":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()

    def cores_used(self, t0: float, t1: float) -> float:
        """Cores busy on average between epoch times ``t0`` and ``t1`` (interpolated)."""
        t, busy = np.array(self.samples).T
        return float((np.interp(t1, t, busy) - np.interp(t0, t, busy)) / max(t1 - t0, 1e-9))


def real_run(kind: str, nranks: int, tasks: int, length: float, work: str, tag: str,
             reuse: bool = False) -> dict:
    """One real run (kept in ``work``; with ``reuse``, a kept one is read back): its makespan,
    the ranks' starts and CPU times, and the machine's other load meanwhile."""
    saved = os.path.join(work, f"{tag}-real.json")
    if reuse and os.path.exists(saved):
        with open(saved) as f:
            return json.load(f)
    import _common as C
    doc = workloads.make(kind, tasks, length, fn="mpitiny.tasks:sleep")
    path = C.write_dag(os.path.join(work, f"{tag}.json"), doc)
    run_dir = os.path.join(work, f"{tag}-run")
    overshoot = sleep_overshoot(length)
    load_before = os.getloadavg()
    others_before = cores_busy_for(1.0)
    with BusySampler() as busy:
        proc, s = C.run_mpitiny(nranks, path, run_dir, timeout=600)
    real = table_figures(C.read_table(run_dir), nranks)
    work_cpu = float(sum(r["work_cpu_seconds"] for r in s["per_rank"]))
    used = busy.cores_used(s["first_task_start"], s["last_task_end"])
    real.update({"wall_seconds": s["wall_seconds"], "done": s["done"], "work_cpu": work_cpu,
                 "mpiexec_seconds": proc["wall"], "sleep_overshoot": overshoot,
                 "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
                 "cores_used": used, "others_cores_before": others_before,
                 "others_cores": max(0.0, used - work_cpu / real["tasks_span"])})
    with open(saved, "w") as f:
        json.dump(real, f)
    return real


def cores_busy_for(seconds: float) -> float:
    """Cores this machine keeps busy on average over the next ``seconds`` (before a run: the
    other work's cores, with no rank running)."""
    t0 = time.time()
    with BusySampler() as busy:
        time.sleep(seconds)
    return busy.cores_used(t0 + 0.02, t0 + seconds)


def table_figures(t: np.ndarray, nranks: int) -> dict:
    t0 = float(t["start"].min())
    offsets = [float(t["start"][t["rank"] == r].min()) - t0 if np.any(t["rank"] == r) else 0.0
               for r in range(nranks)]
    median, mean = gaps(t)
    return {"offsets": offsets, "start_skew_max": max(offsets), "gap_median": median,
            "gap_mean": mean, "tasks_span": float(t["end"].max() - t0),
            "task_mean": float((t["end"] - t["start"]).mean())}


def gaps(t: np.ndarray) -> tuple:
    """Median and mean time between the end of a task and the start of the next on the same
    rank (the engine's CPU per chunk, as this machine's load stretched it)."""
    found = []
    for r in np.unique(t["rank"]):
        m = np.sort(t[t["rank"] == r], order="start")
        found.append(m["start"][1:] - m["end"][:-1])
    every = np.concatenate(found)
    return float(np.median(every)), float(every.mean())


def costs_for(nranks: int, cores: int | None, wake_cpu: float, first_release: float,
              real: dict) -> Costs:
    """The ``node`` costs with the engine's rules for ``nranks`` ranks on ``cores`` cores, the
    run's sleep overshoot, and the cores other work took during its tasks (``background``)."""
    spare = cores is None or nranks <= cores
    return replace(preset("node"), spin=spare, max_sleep=1e-4 if spare else 1e-3,
                   cores=cores, wake_cpu=wake_cpu, first_release=first_release,
                   task_extra=real["sleep_overshoot"],
                   background=max(0.0, real.get("others_cores", 0.0)))


def sim_run(kind: str, nranks: int, tasks: int, length: float, real: dict, costs: Costs,
            seed: int = 0) -> dict:
    doc = workloads.make(kind, tasks, length, fn="mpitiny.tasks:sleep")
    r = Simulation(doc, nranks, costs, seed, offsets=real["offsets"]).run()
    return {"rank0_end": r.rank0_end, "makespan": r.makespan, "tasks_span": r.tasks_span,
            "cpu": r.cpu, "core_wait": r.core_wait}


def fit_wake(runs: list, cores: int, first_release: float) -> float:
    """The ``wake_cpu`` (s) at which the simulated CPU of ``runs`` (``(kind, nranks, tasks,
    length, real)``) matches their measured CPU: the mean over them of log(simulated /
    measured) is 0 (bisection between 0 and 2 ms; the simulated CPU grows with it)."""
    def error(wake: float) -> float:
        logs = []
        for kind, nranks, tasks, length, real in runs:
            costs = costs_for(nranks, cores, wake, first_release, real)
            sim = sim_run(kind, nranks, tasks, length, real, costs)
            logs.append(np.log(sim["cpu"] / real["work_cpu"]))
        return float(np.mean(logs))

    lo, hi = 0.0, 2e-3
    for _ in range(12):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if error(mid) < 0 else (lo, mid)
    return 0.5 * (lo + hi)


def validate(cases: list, work: str, log=print, reuse: bool = False,
             cores: int | None = None, model: WakeModel = WAKE_MODEL) -> dict:
    """``cases``: ``(kind, nranks, tasks, length)``: runs each for real (or reads it back), then
    simulates each with ``wake_cpu`` from ``model`` (``sim``: fitted on other runs, nothing
    from this one but its start offsets, sleep overshoot, others' cores and the load average
    before it) and, for comparison, with ``wake_cpu`` fitted on this run's CPU time
    (``sim_fit_cpu``) and without the pool (``sim_no_pool``)."""
    cores = cores or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                      else os.cpu_count() or 1)
    first_release = calibrate.first_release_cpu()[0]
    log(f"first release in a fresh process: {first_release * 1e6:.0f} µs CPU; {cores} cores; "
        f"wake_cpu = {model.describe()} µs")
    runs = []
    for kind, nranks, tasks, length in cases:
        real = real_run(kind, nranks, tasks, length, work, f"{kind}-{nranks}", reuse)
        runs.append((kind, nranks, tasks, length, real))
        log(f"{kind}-{nranks}: real span {real['tasks_span']:.4f} s, CPU {real['work_cpu']:.3f}"
            f" s, others' cores {real['others_cores']:.2f}, load {real['loadavg_before'][0]:.1f}"
            f" -> {real['loadavg_after'][0]:.1f}")
    rows = [validate_row(run, cores, first_release, model, log) for run in runs]
    return {"rows": rows, "wake_model": {"terms": list(model.terms), "coef": list(model.coef)},
            "cores": cores, "first_release_cpu": first_release}


def validate_row(run: tuple, cores: int, first_release: float, model: WakeModel, log) -> dict:
    """One real run against its simulation with the modelled and the self-fitted ``wake_cpu``."""
    kind, nranks, tasks, length, real = run
    wake = model.at(nranks, cores, real["loadavg_before"][0])
    costs = costs_for(nranks, cores, wake, first_release, real)
    sim = sim_run(kind, nranks, tasks, length, real, costs)
    alone = sim_run(kind, nranks, tasks, length, real, replace(costs, cores=None))
    own = fit_wake([run], cores, first_release)
    fitted = sim_run(kind, nranks, tasks, length, real,
                     costs_for(nranks, cores, own, first_release, real))
    row = {"kind": kind, "nranks": nranks, "tasks": tasks, "length": length, "cores": cores,
           "wake_cpu": wake, "wake_cpu_fit_cpu": own, "background": costs.background,
           "real": real, "sim": sim, "sim_no_pool": alone, "sim_fit_cpu": fitted,
           "ratio_span": sim["tasks_span"] / real["tasks_span"],
           "ratio_wall": sim["rank0_end"] / real["wall_seconds"],
           "ratio_cpu": sim["cpu"] / real["work_cpu"],
           "ratio_span_no_pool": alone["tasks_span"] / real["tasks_span"],
           "ratio_span_fit_cpu": fitted["tasks_span"] / real["tasks_span"],
           "ratio_cpu_fit_cpu": fitted["cpu"] / real["work_cpu"]}
    if "others_cores_before" in real:        # nothing from the run but its start offsets
        before = dict(real, others_cores=real["others_cores_before"])
        sim_before = sim_run(kind, nranks, tasks, length, before,
                             costs_for(nranks, cores, wake, first_release, before))
        row["sim_before"] = sim_before
        row["ratio_span_before"] = sim_before["tasks_span"] / real["tasks_span"]
        log(f"{kind}-{nranks}: with the others' cores measured before the run "
            f"({real['others_cores_before']:.2f}): ratio {row['ratio_span_before']:.3f}")
    log(f"{kind}-{nranks}: modelled wake_cpu {wake * 1e6:.0f} µs (own CPU's fit {own * 1e6:.0f}),"
        f" others' cores {costs.background:.2f}: real span {real['tasks_span']:.4f} s, sim "
        f"{sim['tasks_span']:.4f} s: ratio {row['ratio_span']:.3f} (CPU {row['ratio_cpu']:.2f});"
        f" fitted on its CPU {row['ratio_span_fit_cpu']:.3f}; no pool "
        f"{row['ratio_span_no_pool']:.3f}; wall ratio {row['ratio_wall']:.3f}")
    return row
