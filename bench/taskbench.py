#!/usr/bin/env python
"""Task Bench (Slaughter et al., SC'20) on mpitiny and on Task Bench's own Dask driver: METG.

Graphs: Task Bench's dependence patterns (``_taskbench_graph.py``, ported from its
``core/core.cc``: trivial, no_comm, stencil_1d, stencil_1d_periodic, nearest, spread, fft,
tree, all_to_all, random_nearest), width ``--width`` (default: the ranks, ``--ranks``, 2),
``--steps`` timesteps. Kernel: a busy-wait of L µs (``mpitiny.tasks:spin``; the Dask driver
spins the same way). mpitiny runs each graph as listed tasks (one entry per point and
timestep, ``deps`` on the points of the timestep before; repeated dependencies listed once),
``mpiexec -n RANKS python -m mpitiny run``.

``--family-patterns stencil_1d,...`` also runs those patterns as families (``foreach`` over
the steps and points, dependencies with offsets: ``_taskbench_graph.family_tasks``), named
``PATTERN_family`` (``--placed``: also ``PATTERN_placed_family``, point ``i`` placed on rank
``i`` as in Task Bench's MPI implementation; by default a ready task runs where it was
released or wherever it is stolen), together with ``trivial_family`` (no dependencies, the baseline), all at
one L before the next (side by side); it reports each one's dag.json size and its METG over
``trivial_family``'s (``ratio_PATTERN_family_over_trivial_family_metg_*``). ``--family``:
``trivial_family`` alone.
Dask: ``_taskbench_dask.py`` (a port of Task Bench's ``dask/task_bench.py``) under
``--dask-python`` (a benchmark-only venv), processes scheduler with one worker per rank, and
optionally (``--dask-threads``) the threaded one the original uses without ``-scheduler``.

For each system and pattern, the same graph runs at decreasing L (``--us``; Dask from
``--dask-us``), alternating the systems at each L. Two time bases:

- ``process``: the whole ``mpiexec ... mpitiny run`` / the whole Dask driver process
  (interpreter, imports, MPI or pool start, graph construction, run, exit);
- ``span``: first task start -> last task end (mpitiny: its task table; Dask: the kernel's
  own time stamps).

METG as Task Bench's ``scripts/chart_metg.py`` computes it: the runs at one L (``--reps``,
alternating the systems at each repetition) count by their mean elapsed time, efficiency at an
L = elapsed(the largest L) / (elapsed × L_largest / L) (relative to the largest tasks), task
granularity = ranks × elapsed / tasks; METG(50 %) = the smallest granularity whose efficiency
is ≥ 0.5, interpolated linearly (in efficiency) with the next smaller one. Also reported:
the absolute efficiency tasks × L / (ranks × elapsed) of every run (the issue's bar: ≥ 0.5 at
L = 50 µs on the span basis).

Prints one JSON object on stdout (per pattern and system: every run, METG on both bases, and
mpitiny / Dask ratios), a summary on stderr.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402
from _taskbench_graph import FAMILY_PATTERNS, PATTERNS, family_tasks, graph  # noqa: E402

DASK_PYTHON = "/work/dask-venv/bin/python"


def listed_dag(pattern: str, steps: int, width: int, us: float) -> dict:
    """The graph as a dag.json of listed tasks ``t{T}_{P}``."""
    tasks = []
    for t, p, deps in graph(pattern, steps, width):
        task = {"id": f"t{t}_{p}", "fn": "mpitiny.tasks:spin", "args": [us * 1e-6]}
        if deps:
            task["deps"] = [f"t{t - 1}_{d}" for d in dict.fromkeys(deps)]
        tasks.append(task)
    return {"name": f"taskbench_{pattern}", "tasks": tasks}


def family_dag(pattern: str, steps: int, width: int, us: float, placed: bool = False) -> dict:
    """``pattern`` as families (``family_tasks``), each instance spinning ``us``; ``placed``:
    point ``i`` asks for rank ``i`` (``"rank": "{i}"``, modulo the ranks: one column per rank
    at width = ranks, as Task Bench's MPI implementation owns its points)."""
    kernel = {"fn": "mpitiny.tasks:spin", "args": [us * 1e-6], **({"rank": "{i}"} if placed else {})}
    return {"name": f"{pattern}_family",
            "tasks": [{"id": t["id"], **kernel, **{k: v for k, v in t.items() if k != "id"}}
                      for t in family_tasks(pattern, steps, width)]}


def run_mpitiny(work: str, pattern: str, steps: int, ranks: int, us: float,
                width: int | None = None) -> dict:
    width = width or ranks
    if pattern.endswith("_family"):
        base = pattern[:-len("_family")]
        placed = base.endswith("_placed")
        dag = family_dag(base[:-len("_placed")] if placed else base, steps, width, us, placed)
    else:
        dag = listed_dag(pattern, steps, width, us)
    path = C.write_dag(os.path.join(work, f"{pattern}-{us:g}.json"), dag)
    run_dir = os.path.join(work, f"{pattern}-{us:g}-run")
    proc, s = C.run_mpitiny(ranks, path, run_dir, timeout=900)
    t = C.read_table(run_dir)
    assert len(t) == s["tasks"] == s["done"], s
    return {"us": us, "tasks": s["tasks"], "process": proc["wall"],
            "span": float(t["end"].max() - t["start"].min()),
            "setup": s["setup_seconds"], "dag_bytes": os.path.getsize(path)}


def run_dask(python: str, pattern: str, steps: int, ranks: int, us: float,
             scheduler: str, width: int | None = None) -> dict:
    cmd = [python, os.path.join(C.BENCH_DIR, "_taskbench_dask.py"), pattern, "--steps",
           str(steps), "--width", str(width or ranks), "--us", str(us), "--scheduler", scheduler,
           "--workers", str(ranks)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - t0
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise C.RunFailed(f"dask driver failed ({proc.returncode}): {proc.stderr[-2000:]}")
    got = json.loads(lines[-1])
    return {"us": us, "tasks": got["tasks"], "process": wall, "span": got["span"],
            "elapsed": got["elapsed"]}


def metg(runs: list, ranks: int, basis: str, threshold: float = 0.5) -> dict:
    """chart_metg.py's METG over ``runs`` (one or more per L: their mean elapsed time, as
    chart_metg.py averages its repetitions) on one time basis, in µs."""
    by_us: dict = {}
    for r in runs:
        by_us.setdefault(r["us"], []).append(r)
    us = np.array(sorted(by_us, reverse=True))
    elapsed = np.array([np.mean([r[basis] for r in by_us[u]]) for u in us])
    tasks = np.array([by_us[u][0]["tasks"] for u in us])
    efficiency = elapsed[0] / (elapsed * (us[0] / us))
    granularity = elapsed / tasks * ranks * 1e6
    absolute = tasks * us * 1e-6 / (ranks * elapsed)
    out = {"reps": [len(by_us[u]) for u in us],
           "efficiency": [round(float(e), 4) for e in efficiency],
           "absolute_efficiency": [round(float(e), 4) for e in absolute],
           "granularity_us": [round(float(g), 2) for g in granularity], "us": us.tolist()}
    ok = [i for i in range(len(us)) if efficiency[i] >= threshold]
    if not ok:
        out["metg_us"] = None
        return out
    i = min(ok, key=lambda k: granularity[k])
    value = granularity[i]
    if i + 1 < len(us) and granularity[i + 1] < value:
        value = float(np.interp(threshold, [efficiency[i + 1], efficiency[i]],
                                [granularity[i + 1], granularity[i]]))
    out["metg_us"] = round(float(value), 2)
    out["below_all"] = i == len(us) - 1      # still efficient at the smallest L tried
    return out


def schedulers_of(entry: dict) -> list:
    """The Dask systems of a pattern's entry."""
    return [k for k in entry if k.startswith("dask_") and isinstance(entry[k], dict)]


def family_runs(work: str, families: list, steps: int, ranks: int, width: int,
                lengths: list, reps: int = 1) -> dict:
    """Every family pattern at each L in turn (side by side), ``reps`` times: pattern -> its
    runs."""
    runs: dict = {p: [] for p in families}
    for us in lengths:
        for _ in range(reps):
            for pattern in families:
                runs[pattern].append(run_mpitiny(work, pattern, steps, ranks, us, width))
    return runs


def family_ratios(result: dict, families: list) -> list:
    """METG of each family pattern over ``trivial_family``'s, into ``result``; the lines."""
    base = result["patterns"].get("trivial_family")
    lines = []
    for pattern in families[1:] if base else ():
        entry = result["patterns"][pattern]
        for basis in ("span", "process"):
            mine = entry["mpitiny"][f"metg_{basis}"]["metg_us"]
            theirs = base["mpitiny"][f"metg_{basis}"]["metg_us"]
            if mine and theirs:
                result[f"ratio_{pattern}_over_trivial_family_metg_{basis}"] = \
                    round(mine / theirs, 2)
        lines.append(f"{pattern} ({entry['dag_bytes']} B dag.json)/trivial_family METG span "
                     f"{result.get(f'ratio_{pattern}_over_trivial_family_metg_span')}, process "
                     f"{result.get(f'ratio_{pattern}_over_trivial_family_metg_process')}")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patterns", default=",".join(PATTERNS))
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--us", default="2000,1000,500,200,100,50,20,10,5")
    ap.add_argument("--dask-us", default="20000,10000,5000,2000,1000,500",
                    help="Dask's task lengths (µs): its overhead per task is ms")
    ap.add_argument("--dask-steps", type=int, default=200)
    ap.add_argument("--dask-python", default=DASK_PYTHON, help="'' skips Dask")
    ap.add_argument("--dask-threads", action="store_true",
                    help="also the threaded scheduler (the original's default)")
    ap.add_argument("--family", action="store_true",
                    help="also trivial as one family (trivial_family; mpitiny only)")
    ap.add_argument("--family-patterns", default="",
                    help="also these patterns as families (PATTERN_family; of "
                         f"{','.join(FAMILY_PATTERNS)}), side by side with trivial_family")
    ap.add_argument("--placed", action="store_true",
                    help="also each of --family-patterns with point i placed on rank i "
                         "(PATTERN_placed_family, \"rank\": \"{i}\")")
    ap.add_argument("--width", type=int, default=0, help="points per step (default: --ranks)")
    ap.add_argument("--reps", type=int, default=1,
                    help="runs of each system at each L (METG from their mean, as "
                         "chart_metg.py; Task Bench's own experiments run 5)")
    ap.add_argument("--workdir")
    a = ap.parse_args()
    C.machine()
    work = C.workdir(a.workdir, "bench-taskbench-")
    lengths = [float(x) for x in a.us.split(",")]
    dask_lengths = [float(x) for x in a.dask_us.split(",")]
    dask = a.dask_python if a.dask_python and os.path.exists(a.dask_python) else None
    schedulers = ["processes"] + (["threads"] if a.dask_threads else [])
    width = a.width or a.ranks
    result: dict = {"benchmark": "taskbench", "ranks": a.ranks, "width": width, "reps": a.reps,
                    "steps": a.steps, "dask_steps": a.dask_steps, "machine": C.machine(),
                    "workdir": work, "patterns": {}}
    human = []
    families = [f"{p}_family" for p in a.family_patterns.split(",") if p and p != "trivial"]
    if a.placed:
        families += [f"{p[:-len('_family')]}_placed_family" for p in families]
    if families or a.family:
        families.insert(0, "trivial_family")
    side_by_side = family_runs(work, families, a.steps, a.ranks, width, lengths, a.reps)
    for pattern in [p for p in a.patterns.split(",") if p] + families:
        family = pattern.endswith("_family")
        runs: dict = {"mpitiny": side_by_side.get(pattern, []),
                      **{f"dask_{s}": [] for s in schedulers}}
        for k in range(max(len(lengths), len(dask_lengths) if dask else 0)):
            for _ in range(a.reps):
                if k < len(lengths) and not family:
                    runs["mpitiny"].append(run_mpitiny(work, pattern, a.steps, a.ranks,
                                                       lengths[k], width))
                for s in schedulers if dask and not family and k < len(dask_lengths) else ():
                    runs[f"dask_{s}"].append(run_dask(dask, pattern, a.dask_steps, a.ranks,
                                                      dask_lengths[k], s, width))
        entry: dict = {"dag_bytes": runs["mpitiny"][0]["dag_bytes"]}
        for system, rs in runs.items():
            if rs:
                entry[system] = {"runs": rs, "metg_span": metg(rs, a.ranks, "span"),
                                 "metg_process": metg(rs, a.ranks, "process")}
        mt = entry["mpitiny"]
        at50 = [e for e, us in zip(mt["metg_span"]["absolute_efficiency"],
                                   mt["metg_span"]["us"]) if us == 50]
        entry["mpitiny_absolute_efficiency_span_at_50us"] = at50[0] if at50 else None
        for basis in ("span", "process"):
            mine = mt[f"metg_{basis}"]["metg_us"]
            theirs = [entry[k][f"metg_{basis}"]["metg_us"] for k in schedulers_of(entry)
                      if entry[k][f"metg_{basis}"]["metg_us"]]
            if mine and theirs:
                entry[f"ratio_dask_over_mpitiny_metg_{basis}"] = round(min(theirs) / mine, 1)
        result["patterns"][pattern] = entry
        human.append(f"{pattern}: METG span {mt['metg_span']['metg_us']} us / process "
                     f"{mt['metg_process']['metg_us']} us, eff@50us {at50[0] if at50 else None}"
                     + (f", Dask/mpitiny {entry.get('ratio_dask_over_mpitiny_metg_span')}x "
                        f"(span) {entry.get('ratio_dask_over_mpitiny_metg_process')}x (process)"
                        if dask else ""))
        C.log(human[-1])
    human += family_ratios(result, families)
    listed, fam = (result["patterns"].get(p) for p in ("trivial", "trivial_family"))
    if listed and fam:
        for basis in ("span", "process"):
            mine, theirs = (x["mpitiny"][f"metg_{basis}"]["metg_us"] for x in (listed, fam))
            if mine and theirs:
                result[f"ratio_trivial_listed_over_family_metg_{basis}"] = round(mine / theirs, 2)
        human.append("trivial listed/family METG span "
                     f"{result.get('ratio_trivial_listed_over_family_metg_span')}, process "
                     f"{result.get('ratio_trivial_listed_over_family_metg_process')}")
    C.emit(result, "taskbench: " + " | ".join(human))


if __name__ == "__main__":
    main()
