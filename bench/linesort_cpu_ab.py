#!/usr/bin/env python
"""CPU seconds of jobs/linesort.json's tasks, two source trees side by side (issue 18).

    python bench/linesort_cpu_ab.py --base /tmp/base --corpora /work/corpora [--repeat 2]

Every task of the job (sample if the tree has one, its maps, R reduces, validate) is called as a function
in one fresh process per tree and corpus, ``time.process_time`` around each call, the trees
alternating (base, this, this, base, ...): on a shared machine the CPU time of the tasks moves
far less than wall time, so the ratio of two trees means something when whole runs do not.
Per corpus: the medians of the CPU seconds per family and in all, whether every run wrote the
same ``sorted.txt`` (a BLAKE2b digest), and the longest task over half the CPU total (the
least fraction of a 2-rank run that task can be). ``--one TREE CORPUS`` is the per-process
measurement itself.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def one(tree: str, h5: str, partitions: int, pieces: int = 1) -> dict:
    """The job's tasks on ``h5`` with ``tree``'s jobs/linesort.py, timed one by one (a tree
    without a sampling task: ``pieces`` maps per split)."""
    sys.path[:0] = [os.path.join(tree, "jobs"), tree]
    os.environ.pop("MPITINY_RUN_DIR", None)
    import linesort
    from mpitiny.io.splits import open_splits
    out = tempfile.mkdtemp(prefix="linesort-cpu-")
    cpu: dict = {}

    def timed(family, fn, *args):
        t0 = time.process_time()
        value = fn(*args)
        cpu.setdefault(family, []).append(time.process_time() - t0)
        return value

    try:
        n = len(open_splits(h5))
        if hasattr(linesort, "sample"):         # a tree before issue 18's maps-only sampling
            splitters = timed("sample", linesort.sample, h5, partitions)
            maps = {f"map[{i}]": timed("map", linesort.map_split, h5, i, partitions, out,
                                       {"sample": splitters}) for i in range(n)}
            reduces = {f"reduce[{r}]": timed("reduce", linesort.reduce_part, r, out, maps)
                       for r in range(partitions)}
        else:
            maps = {f"map[{i},{k}]": timed("map", linesort.map_split, h5, i, out, 128, k, pieces)
                    for i in range(n) for k in range(pieces)}
            reduces = {f"reduce[{r}]": timed("reduce", linesort.reduce_part, r, partitions,
                                             out, maps) for r in range(partitions)}
        timed("validate", linesort.validate, out, {**maps, **reduces})
        with open(os.path.join(out, "sorted.txt"), "rb") as f:
            digest = hashlib.blake2b(f.read(), digest_size=16).hexdigest()
    finally:
        shutil.rmtree(out, ignore_errors=True)
    total = sum(map(sum, cpu.values()))
    longest = max(max(v) for v in cpu.values())
    return {"digest": digest, "cpu": {k: sum(v) for k, v in cpu.items()}, "total": total,
            "longest_task": longest, "longest_over_half_total": longest / (total / 2)}


def _has_sample(tree: str) -> bool:
    with open(os.path.join(tree, "jobs", "linesort.py"), encoding="utf-8") as f:
        return "\ndef sample(" in f.read()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", help="the other source tree (e.g. a git worktree of HEAD)")
    ap.add_argument("--this", default=str(C.REPO_ROOT))
    ap.add_argument("--corpora", default="/work/corpora", help="bench/corpora.py's directory")
    ap.add_argument("--names", default="generated,prose,logs,code,multilingual")
    ap.add_argument("--partitions", type=int, default=8, help="R of a tree with a sample task")
    ap.add_argument("--this-partitions", type=int, default=24,
                    help="R of a tree without one (jobs/linesort.json's default since issue 18)")
    ap.add_argument("--pieces", type=int, default=2, help="maps per split, a tree without one")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--one", nargs=2, metavar=("TREE", "H5"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        print(json.dumps(one(a.one[0], a.one[1], a.partitions, a.pieces)))
        return
    if not a.base:
        ap.error("--base is required")
    trees = {"base": a.base, "this": a.this}
    table = {}
    for name in a.names.split(","):
        h5 = os.path.join(a.corpora, f"{name}-8MiB.h5")
        runs: dict = {"base": [], "this": []}
        for k in range(a.repeat):
            for side in (("base", "this") if k % 2 == 0 else ("this", "base")):
                parts = a.partitions if _has_sample(trees[side]) else a.this_partitions
                p = subprocess.run([C.PYTHON, __file__, "--one", trees[side], h5,
                                    "--partitions", str(parts), "--pieces", str(a.pieces)],
                                   capture_output=True,
                                   text=True, check=True, env=dict(C.bench_env(),
                                                                   PYTHONPATH=trees[side]))
                runs[side].append(json.loads(p.stdout.strip().splitlines()[-1]))

        def med(side, key, runs=runs):
            return statistics.median(key(r) for r in runs[side])
        row = {"same_output": len({r["digest"] for s in runs.values() for r in s}) == 1,
               "load_average": os.getloadavg()[0]}
        for side in trees:
            row[f"{side}_cpu_s"] = C.rnd(med(side, lambda r: r["total"]), 4)
            row[f"{side}_longest_over_half_total"] = C.rnd(
                med(side, lambda r: r["longest_over_half_total"]), 3)
            for fam in ("sample", "map", "reduce"):
                row[f"{side}_{fam}_cpu_s"] = C.rnd(med(side, lambda r, f=fam: r["cpu"].get(f, 0)),
                                                   4)
        row["speed_this_over_base"] = C.rnd(row["base_cpu_s"] / row["this_cpu_s"], 3)
        table[name] = row
        C.log(f"{name}: {row}")
    C.emit({"benchmark": "linesort_cpu_ab", "machine": C.machine(), "trees": trees,
            "partitions": a.partitions, "repeat": a.repeat, "table": table},
           "\n".join(f"{n}: CPU {r['base_cpu_s']} -> {r['this_cpu_s']} s "
                     f"(x{r['speed_this_over_base']}), same output {r['same_output']}"
                     for n, r in table.items()))


if __name__ == "__main__":
    main()
