"""Start-up and many ranks: what ``mpitiny run`` costs on top of starting Python and MPI.

Two parts (issue "At scale"):

1. **Start-up CPU** (``--ranks``, default 8, 32, 64): a one-task DAG (``mpitiny.tasks:null``)
   run by ``mpiexec -n N python -m mpitiny run``, against the bare baseline ``mpiexec -n N
   python -c "import numpy, h5py, psutil, click; from mpi4py import MPI; barrier"``,
   alternating, ``--repeat`` times. Figures: the total CPU time (user + system) of every
   process the ``mpiexec`` started (``getrusage(RUSAGE_CHILDREN)`` around it: the launcher
   waits for its proxies and they for their ranks, so every rank is counted), its wall time,
   and their ratio mpitiny / bare (bar: CPU ≤ 1.15× at 8, 32 and 64 ranks).
2. **64 ranks at work** (``--work-ranks``, default 64; 0 skips it): a family of 640 tasks
   that sleep 20 ms, 640 plain tasks listed one by one (the same sleep), and a WfCommons
   instance (``../shared/wfcommons``, sleeps scaled to ≤ 0.2 s): every task exactly once and
   after its parents (``check_run``), the run's setup (``summary.json``'s setup_seconds), the
   whole process's wall time and its CPU time per rank.

Oversubscribed on a small machine, sleeping tasks still schedule as on a cluster; CPU per rank
is what the ranks themselves spent (start-up, polling), not the tasks.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time

from _common import (REPO_ROOT, emit, log, machine, run_mpi, run_mpitiny, workdir,
                     write_dag)
from wfcommons_bench import max_runtime

BARE = ("import numpy, h5py, psutil, click\n"
        "from mpi4py import MPI\n"
        "MPI.COMM_WORLD.Barrier()\n")
WFCOMMONS = REPO_ROOT.parent / "shared" / "wfcommons"


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measured(fn, *args, **kwargs) -> tuple:
    """(result of ``fn(*args, **kwargs)``, CPU seconds of the processes it started and waited
    for)."""
    before = children_cpu()
    result = fn(*args, **kwargs)
    return result, children_cpu() - before


def startup_cpu(ranks: list, repeat: int, work: str) -> dict:
    one = write_dag(os.path.join(work, "one.json"),
                    {"name": "one", "tasks": [{"id": "a", "fn": "mpitiny.tasks:null"}]})
    out: dict = {}
    for n in ranks:
        rows: dict = {"bare": [], "mpitiny": []}
        for rep in range(repeat):
            order = ("bare", "mpitiny") if rep % 2 == 0 else ("mpitiny", "bare")
            for which in order:
                if which == "bare":
                    proc, cpu = measured(run_mpi, n, ["-c", BARE], timeout=600)
                    wall = proc["wall"]
                else:
                    run_dir = os.path.join(work, f"one-{n}-{rep}")
                    (proc, summary), cpu = measured(run_mpitiny, n, one, run_dir,
                                                    timeout=600)
                    wall = proc["wall"]
                rows[which].append({"cpu_seconds": round(cpu, 3), "wall_seconds": round(wall, 3)})
        med = {k: {m: statistics.median(r[m] for r in v) for m in ("cpu_seconds", "wall_seconds")}
               for k, v in rows.items()}
        out[str(n)] = {"runs": rows, "median": med,
                       "cpu_ratio": round(med["mpitiny"]["cpu_seconds"] /
                                          med["bare"]["cpu_seconds"], 3),
                       "wall_ratio": round(med["mpitiny"]["wall_seconds"] /
                                           med["bare"]["wall_seconds"], 3)}
        log(f"{n} ranks: CPU mpitiny {med['mpitiny']['cpu_seconds']:.2f} s vs bare "
            f"{med['bare']['cpu_seconds']:.2f} s ({out[str(n)]['cpu_ratio']}x); wall "
            f"{med['mpitiny']['wall_seconds']:.2f} vs {med['bare']['wall_seconds']:.2f} s")
    return out


def work_dags(work: str, n: int) -> dict:
    """The three workloads of part 2: name -> dag.json path."""
    tasks = 10 * n
    family = write_dag(os.path.join(work, "family.json"), {"name": "family", "tasks": [
        {"id": "s", "fn": "mpitiny.tasks:sleep", "args": [0.02],
         "foreach": {"i": {"range": [0, tasks]}}}]})
    listed = write_dag(os.path.join(work, "listed.json"), {"name": "listed", "tasks": [
        {"id": f"s{i}", "fn": "mpitiny.tasks:sleep", "args": [0.02]} for i in range(tasks)]})
    dags = {"family": family, "listed": listed}
    instances = sorted(WFCOMMONS.glob("*.json"))
    if instances:
        instance = next((p for p in instances if "1000genome" in p.name), instances[0])
        longest = max_runtime(instance) or 1.0
        path = os.path.join(work, "wfcommons.json")
        subprocess.run([sys.executable, "-m", "mpitiny", "import-wfcommons", str(instance),
                        "-o", path, "--scale", f"{0.2 / longest:.6g}"], check=True,
                       cwd=str(REPO_ROOT))
        dags["wfcommons:" + instance.stem] = path
    return dags


def at_work(n: int, work: str) -> dict:
    from mpitiny.dag.load import load_dag
    from mpitiny.io.check import check_run
    out = {}
    for name, path in work_dags(work, n).items():
        run_dir = os.path.join(work, "run-" + name.replace(":", "-"))
        (proc, summary), cpu = measured(run_mpitiny, n, path, run_dir, timeout=900)
        counts = check_run(load_dag(path), run_dir)
        out[name] = {"tasks": summary["tasks"], "counts": counts,
                     "setup_seconds": summary.get("setup_seconds"),
                     "engine_seconds": summary.get("wall_seconds"),
                     "whole_process_seconds": round(proc["wall"], 3),
                     "cpu_seconds_total": round(cpu, 3),
                     "cpu_seconds_per_rank": round(cpu / n, 3)}
        log(f"{n} ranks, {name}: {summary['tasks']} tasks exactly once; setup "
            f"{summary.get('setup_seconds', 0):.2f} s, whole {proc['wall']:.2f} s, CPU per rank "
            f"{cpu / n:.2f} s")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ranks", type=int, nargs="*", default=[8, 32, 64])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--work-ranks", type=int, default=64)
    ap.add_argument("--workdir")
    args = ap.parse_args()
    info = machine()
    work = workdir(args.workdir, "mpitiny-startup-")
    t0 = time.time()
    result = {"machine": info, "workdir": work,
              "startup": startup_cpu(args.ranks, args.repeat, work) if args.ranks else {},
              "work": at_work(args.work_ranks, work) if args.work_ranks else {}}
    result["seconds"] = round(time.time() - t0, 1)
    human = "; ".join(f"{n} ranks CPU {r['cpu_ratio']}x bare"
                      for n, r in result["startup"].items())
    emit(result, human or "startup: nothing measured")


if __name__ == "__main__":
    main()
