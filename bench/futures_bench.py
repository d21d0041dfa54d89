#!/usr/bin/env python
"""mpitiny.futures against mpi4py.futures and mpitiny families (issue 21's Executor bar: null
``submit`` throughput >= 20x mpi4py.futures and within 2x of mpitiny families on 2 ranks).

Side by side in one run, interleaved, ``--repeat`` times (medians reported, every repetition
kept), on ``--ranks`` R:

- mpitiny.futures: ``mpiexec -n R python -m mpitiny.futures _mpitiny_futures_peer.py``: the
  phases of ``_futures_peer.py`` (same functions, same null task ``mpitiny.tasks:null``) on
  ``mpitiny.futures.Executor``: ``submit`` N null tasks at once, tasks/s = N / (last
  completion - just before the first submit); ``map`` with chunksize 1 and 100;
- mpi4py.futures: ``bench/_common.run_futures``: ``mpiexec -n R+1`` (R workers and its
  master, as ``bench/throughput.py`` runs it), the same phases;
- mpitiny families: one family of N ``mpitiny.tasks:null`` instances, ``mpitiny run`` on R
  ranks, tasks/s = N / the run's ``wall_seconds`` (engine start to termination).

- both executors again, collecting as a user does, without callbacks: N null ``submit``s
  then ``wait(fs)`` (``collect_wait``), or then ``[f.result() for f in fs]``
  (``collect_result``); tasks/s = N / (when that returned - just before the first submit).

Ratios: futures submit / mpi4py.futures submit (bar >= 20; also per repetition, the two
measured one after the other) and families / futures submit (bar <= 2), and the same two for
each way of collecting. Prints the JSON
result on stdout and one line per figure on stderr.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402
from throughput import med as median, null_family, peer_phases, summarise_peer  # noqa: E402

PEER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_mpitiny_futures_peer.py")


def run_mpitiny_futures(ranks: int, phases: list, timeout: float = 600) -> dict:
    proc = C.run_mpi(ranks, ["-m", "mpitiny.futures", PEER, json.dumps(phases)],
                     timeout=timeout)
    lines = [x for x in proc["stdout"].splitlines() if x.startswith("{")]
    if proc["rc"] != 0 or not lines:
        raise C.RunFailed(f"mpitiny.futures peer failed (exit {proc['rc']})\n"
                          f"{proc['stdout'][-2000:]}\n{proc['stderr'][-3000:]}")
    out = json.loads(lines[-1])
    out["mpiexec_wall"] = proc["wall"]
    return out


def summarise(out: dict) -> dict:
    """``summarise_peer`` of the first four phases, and the two ways of collecting."""
    res = summarise_peer({"phases": out["phases"][:4]})
    for ph in out["phases"][4:]:
        res[f"collect_{ph['how']}"] = {"tasks_per_second": ph["tasks_per_second"],
                                       "seconds": ph["seconds"],
                                       "submit_loop_seconds": ph["submit_seconds"]}
    return res


def families(work: str, ranks: int, n: int, rep: int) -> dict:
    dag = C.write_dag(os.path.join(work, "fam.json"), null_family("fam", n))
    _, s = C.run_mpitiny(ranks, dag, os.path.join(work, f"fam-run-{rep}"))
    assert s["done"] == n, s
    return {"tasks": n, "engine_wall_seconds": s["wall_seconds"],
            "tasks_per_second": n / s["wall_seconds"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--tasks-per-rank", type=int, default=10_000)
    ap.add_argument("--latency-tasks-per-rank", type=int, default=1_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workdir", help="keep dag files and run directories here")
    a = ap.parse_args()
    machine = C.machine()
    work = C.workdir(a.workdir, "bench-futures-")
    n, n_lat = a.ranks * a.tasks_per_rank, a.ranks * a.latency_tasks_per_rank
    phases = peer_phases(n, n_lat) + [{"kind": "collect", "n": n, "how": how}
                                      for how in ("wait", "result")]
    reps: dict = {"mpitiny_futures": [], "mpi4py_futures": [], "mpitiny_families": []}
    for rep in range(a.repeat):
        C.log(f"repetition {rep + 1}/{a.repeat}: mpitiny.futures")
        reps["mpitiny_futures"].append(summarise(run_mpitiny_futures(a.ranks, phases)))
        C.log("  mpi4py.futures")
        reps["mpi4py_futures"].append(summarise(C.run_futures(a.ranks, phases)))
        C.log("  mpitiny families")
        reps["mpitiny_families"].append(families(work, a.ranks, n, rep))
    ours = median(reps["mpitiny_futures"], "submit", "tasks_per_second")
    theirs = median(reps["mpi4py_futures"], "submit", "tasks_per_second")
    fam = median(reps["mpitiny_families"], "tasks_per_second")
    med = {
        "mpitiny_futures_submit_tasks_per_second": ours,
        "mpi4py_futures_submit_tasks_per_second": theirs,
        "mpitiny_families_tasks_per_second": fam,
        "ratio_submit_over_mpi4py_futures": C.ratio(ours, theirs),
        "ratio_families_over_submit": C.ratio(fam, ours),
    }
    med["ratio_submit_over_mpi4py_futures_per_repetition"] = [
        C.ratio(o["submit"]["tasks_per_second"], t["submit"]["tasks_per_second"])
        for o, t in zip(reps["mpitiny_futures"], reps["mpi4py_futures"])]
    for how in ("wait", "result"):
        kind = f"collect_{how}"
        ours = median(reps["mpitiny_futures"], kind, "tasks_per_second")
        theirs = median(reps["mpi4py_futures"], kind, "tasks_per_second")
        med[f"mpitiny_futures_{kind}_tasks_per_second"] = ours
        med[f"mpi4py_futures_{kind}_tasks_per_second"] = theirs
        med[f"ratio_{kind}_over_mpi4py_futures"] = C.ratio(ours, theirs)
        med[f"ratio_families_over_{kind}"] = C.ratio(fam, ours)
    for kind in ("map_chunksize_1", "map_chunksize_100"):
        med[f"mpitiny_futures_{kind}_tasks_per_second"] = median(
            reps["mpitiny_futures"], kind, "tasks_per_second")
        med[f"mpi4py_futures_{kind}_tasks_per_second"] = median(
            reps["mpi4py_futures"], kind, "tasks_per_second")
    for who in ("mpitiny_futures", "mpi4py_futures"):
        mid = sorted(reps[who], key=lambda r: r["latency_us"]["p50"])[len(reps[who]) // 2]
        med[f"{who}_latency_us"] = mid["latency_us"]
    result = {"benchmark": "futures", "ranks": a.ranks, "tasks": n, "latency_tasks": n_lat,
              "repeat": a.repeat, "machine": machine, "workdir": work, "median": med,
              "repetitions": reps}
    human = "\n".join(f"{k}: {v:,.1f}" for k, v in med.items() if isinstance(v, float))
    C.emit(result, human)


if __name__ == "__main__":
    main()
