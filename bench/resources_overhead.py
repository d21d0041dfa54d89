#!/usr/bin/env python
"""What counting resources costs (``mpitiny.engine.resources``): the same DAGs run side by
side, alternately, with and without a ``"cores": 1`` on every entry (which makes the run
count slots: two atomics on the node's window per chunk, nothing else changes).

    python bench/resources_overhead.py [--ranks 2] [--tasks 40000] [--repeat 3]

Two shapes: a family of ``--tasks`` null tasks (chunks of many tasks: the claim is shared),
and a chain of ``--tasks // 20`` one-task hand-offs (each chunk is one task: the worst case).
Prints the median seconds of each and the ratio counted / plain (1.0: no cost).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
MPIEXEC = HERE / ".venv" / "bin" / "mpiexec"
PYTHON = HERE / ".venv" / "bin" / "python"


def dags(tasks: int, counted: bool) -> dict:
    extra = {"cores": 1} if counted else {}
    family = {"name": "fam", "tasks": [{"id": "f", "fn": "mpitiny.tasks:null",
                                         "foreach": {"i": {"range": [0, tasks]}}, **extra}]}
    links = tasks // 20
    chain = {"name": "chain", "tasks": [{"id": "c", "fn": "mpitiny.tasks:null", **extra},
                                        *[{"id": f"c{k}", "fn": "mpitiny.tasks:null",
                                           "deps": [f"c{k - 1}" if k else "c"], **extra}
                                          for k in range(links)]]}
    return {"family": family, "chain": chain}


def run_once(dag: dict, ranks: int, workdir: str) -> float:
    path = os.path.join(workdir, "dag.json")
    Path(path).write_text(json.dumps(dag))
    proc = subprocess.run([str(MPIEXEC), "-n", str(ranks), str(PYTHON), "-m", "mpitiny", "run",
                           path, "--out", os.path.join(workdir, "run"), "--fresh",
                           "--no-journal"], capture_output=True, text=True, timeout=600)
    m = re.search(r"tasks on \d+ ranks in ([0-9.]+) s", proc.stdout)
    if proc.returncode != 0 or m is None:
        sys.exit(f"run failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return float(m.group(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--tasks", type=int, default=40000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    times: dict = {}
    with tempfile.TemporaryDirectory() as workdir:
        for r in range(args.repeat):
            for counted in ((False, True) if r % 2 == 0 else (True, False)):
                for shape, dag in dags(args.tasks, counted).items():
                    times.setdefault((shape, counted), []).append(
                        run_once(dag, args.ranks, workdir))
    out = {}
    for shape in ("family", "chain"):
        plain = statistics.median(times[(shape, False)])
        counted = statistics.median(times[(shape, True)])
        out[shape] = {"plain_s": plain, "counted_s": counted, "ratio": counted / plain}
    out["load_average"] = os.getloadavg()[0]
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
