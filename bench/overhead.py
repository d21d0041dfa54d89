"""What watching a run costs: null-task throughput with progress and trace on vs both off.

10^6 null tasks (one family) on 2 ranks, interleaved repetitions: ``--quiet`` (no progress,
no trace) against ``--progress-interval 0.05 --trace`` with rank 0's progress going to a file
(the Slurm-log case). Throughput = tasks / ``summary.wall_seconds`` (engine start to
termination; the trace file is written after it and timed apart). Prints JSON; the issue's bar:
on >= 90 % of off.

    python bench/overhead.py [--tasks 1000000] [--ranks 2] [--repeat 5]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(work: Path, ranks: int, on: bool, k: int) -> dict:
    out = work / f"run-{'on' if on else 'off'}-{k}"
    cmd = ["mpiexec", "-n", str(ranks), sys.executable, "-m", "mpitiny", "run",
           str(work / "dag.json"), "-o", str(out)]
    cmd += ["--progress-interval", "0.05", "--trace"] if on else ["--quiet"]
    t = time.perf_counter()
    with open(work / f"stderr-{k}-{on}.log", "w") as err:
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=err)
    whole = time.perf_counter() - t
    s = json.loads((out / "summary.json").read_text())
    return {"tasks_per_second": s["tasks"] / s["wall_seconds"], "whole_seconds": whole,
            "progress_lines": sum(1 for l in open(work / f"stderr-{k}-{on}.log")
                                  if l.startswith("mpitiny: progress")),
            "trace_bytes": (out / "trace.json").stat().st_size if on else 0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=1_000_000)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp:
        work = Path(tmp)
        (work / "dag.json").write_text(json.dumps({"name": "null", "tasks": [
            {"id": "n", "fn": "mpitiny.tasks:null", "foreach": {"i": {"range": [0, args.tasks]}}}]}))
        off, on = [], []
        for k in range(args.repeat):
            off.append(run(work, args.ranks, False, k))
            on.append(run(work, args.ranks, True, k))
    med_off = statistics.median(r["tasks_per_second"] for r in off)
    med_on = statistics.median(r["tasks_per_second"] for r in on)
    result = {"benchmark": "overhead", "tasks": args.tasks, "ranks": args.ranks,
              "off": off, "on": on, "median_off": med_off, "median_on": med_on,
              "ratio_on_off": med_on / med_off}
    print(json.dumps(result, indent=1))
    print(f"overhead: {args.tasks} null tasks on {args.ranks} ranks: progress+trace on "
          f"{med_on:,.0f} tasks/s, off {med_off:,.0f} tasks/s, ratio {med_on / med_off:.3f}",
          file=sys.stderr)


if __name__ == "__main__":
    main()
