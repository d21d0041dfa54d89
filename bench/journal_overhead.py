#!/usr/bin/env python
"""What the journal costs: null-task throughput with the journal on (the default) vs
``--no-journal``, same DAGs, same run, repetitions interleaved (on, off, off, on, ...).

DAGs, on ``mpiexec -n RANKS`` (default 2):

* ``family``: one family of ``--family`` null tasks (default 200,000): journal records per chunk
  (one START and one DONE record for up to 4,096 tasks);
* ``listed``: ``--listed`` null tasks listed one by one (default 100,000): chunks of single
  task ids, one record per task;
* ``values``: a family of ``--values`` small tasks whose return values a second family reads
  (``"sq[{i}]"`` deps with ``inputs``): every value is also written to the journal's value
  file, with its CRC-32, one record per task.

Measured per run: the engine's tasks/s (``summary.json``: tasks / ``wall_seconds``, the worker
loop from first claim to the last rank's exit of the loop) and the whole ``mpiexec`` command's
tasks/s (start-up, run directory and the journal's final sync and close included). Figures
are medians; the ratio on/off is the bar (>= 0.9).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402


def dags(args) -> dict:
    null = "mpitiny.tasks:null"
    return {
        "family": {"name": "family", "tasks": [
            {"id": "t", "fn": null, "foreach": {"i": {"range": [args.family]}}}]},
        "listed": {"name": "listed", "tasks": [
            {"id": f"t{i}", "fn": null} for i in range(args.listed)]},
        "values": {"name": "values", "tasks": [
            {"id": "sq", "fn": "mpitiny.tasks:echo", "args": ["{i}"],
             "foreach": {"i": {"range": [args.values]}}},
            {"id": "use", "fn": "mpitiny.tasks:echo", "args": ["{i}"],
             "foreach": {"i": {"range": [args.values]}}, "deps": ["sq[{i}]"]}]},
    }


def one_run(ranks: int, dag_path: str, run_dir: str, journal: bool) -> dict:
    shutil.rmtree(run_dir, ignore_errors=True)     # --fresh would keep the last run aside
    argv = ["-m", "mpitiny", "run", dag_path, "--out", run_dir, "-q"]
    if not journal:
        argv.append("--no-journal")
    proc = C.run_mpi(ranks, argv, timeout=600)
    with open(os.path.join(run_dir, "summary.json"), encoding="utf-8") as f:
        summary = json.load(f)
    assert summary["done"] == summary["tasks"], summary
    return {"tasks": summary["tasks"], "engine_tps": summary["tasks_per_second"],
            "whole_tps": summary["tasks"] / proc["wall"], "wall": proc["wall"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--family", type=int, default=200_000)
    ap.add_argument("--listed", type=int, default=100_000)
    ap.add_argument("--values", type=int, default=20_000)
    ap.add_argument("--only", help="comma-separated subset of family,listed,values")
    ap.add_argument("--keep", help="work directory to keep (default: a temporary one)")
    args = ap.parse_args()
    wd = C.workdir(args.keep, "mpitiny-journal-")
    chosen = dags(args)
    if args.only:
        chosen = {k: v for k, v in chosen.items() if k in args.only.split(",")}
    results = {}
    for name, dag in chosen.items():
        path = C.write_dag(os.path.join(wd, f"{name}.json"), dag)
        runs = {True: [], False: []}
        one_run(args.ranks, path, os.path.join(wd, f"{name}-warm"), True)     # warm the caches
        for rep in range(args.reps):
            for journal in ((True, False) if rep % 2 == 0 else (False, True)):
                r = one_run(args.ranks, path, os.path.join(wd, f"{name}-{journal}"), journal)
                runs[journal].append(r)
                C.log(f"{name} rep {rep} journal={'on' if journal else 'off'}: engine "
                      f"{r['engine_tps']:,.0f} tasks/s, whole {r['whole_tps']:,.0f} tasks/s")
        med = {j: {k: statistics.median(r[k] for r in runs[j]) for k in ("engine_tps", "whole_tps")}
               for j in runs}
        results[name] = {
            "tasks": runs[True][0]["tasks"],
            "journal_on": med[True], "journal_off": med[False],
            "engine_ratio": C.rnd(C.ratio(med[True]["engine_tps"], med[False]["engine_tps"]), 3),
            "whole_ratio": C.rnd(C.ratio(med[True]["whole_tps"], med[False]["whole_tps"]), 3),
            "runs": {("on" if j else "off"): runs[j] for j in runs},
        }
    out = {"bench": "journal_overhead", "ranks": args.ranks, "reps": args.reps,
           "machine": C.machine(), "results": results}
    human = "\n".join(
        f"{name}: journal on/off engine {r['engine_ratio']} ({r['journal_on']['engine_tps']:,.0f} vs "
        f"{r['journal_off']['engine_tps']:,.0f} tasks/s), whole process {r['whole_ratio']} "
        f"(bar >= 0.9: {r['engine_ratio'] >= 0.9 and r['whole_ratio'] >= 0.9})"
        for name, r in results.items())
    C.emit(out, human)


if __name__ == "__main__":
    main()
