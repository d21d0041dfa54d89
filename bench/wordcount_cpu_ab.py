#!/usr/bin/env python
"""Wordcount's tasks in one process, this tree against another, in CPU seconds.

    python bench/wordcount_cpu_ab.py --base /tmp/base --corpora /work/corpora \\
        [--names prose,code] [--reducers 8] [--mergers 8]

On this shared 2-core machine a whole ``mpiexec`` run varies 2-5x with the other sessions'
load, so the wall times of two trees measured minutes apart say little. This bench runs
``jobs/wordcount.json``'s tasks as functions in one process for both trees, alternating
tree for every task (``map_split`` of every split of ``CORPUS-8MiB.h5``, then each
``reduce_sorted``, then ``plan``, the merges and ``commit``), and sums the CPU time
(``time.process_time``) per family: the time a task costs, whatever else runs. It also
times the one-process baseline (``Counter.update(block.split())`` per 8 MiB block of
``CORPUS.txt``, ``mapreduce_bench.baseline_wordcount``) in CPU seconds, and prints
``2 x Counter / job``: the job's best case on 2 ranks (no startup, no waits, no engine),
an upper bound for the whole-run ratio. The two trees' ``wordcount.tsv`` are compared.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
import mapreduce_bench as mb  # noqa: E402

MODULES = ("longwords", "mapreduce", "sortedruns", "wordcount")


def load_tree(tree: str) -> dict:
    """The job modules of ``tree/jobs`` (imported apart from any other tree's)."""
    for name in MODULES:
        sys.modules.pop(name, None)
    sys.path.insert(0, os.path.join(tree, "jobs"))
    try:
        import wordcount  # noqa: F401
        mods = {name: sys.modules[name] for name in MODULES if name in sys.modules}
    finally:
        sys.path.pop(0)
        for name in MODULES:
            sys.modules.pop(name, None)
    return mods


def _cpu(fn, *args):
    t = time.process_time()
    value = fn(*args)
    return value, time.process_time() - t


def counter_cpu(text: str) -> float:
    t = time.process_time()
    c: Counter = Counter()
    for block in mb.line_blocks(text, 8 << 20):
        c.update(block.split())
    return time.process_time() - t


def run_corpus(trees: dict, h5: str, work: str, reducers: int, mergers: int) -> dict:
    """CPU seconds per family for each tree, and the digest of each tree's output."""
    from mpitiny.io.splits import open_splits
    n = len(open_splits(h5))
    cpu = {k: {"map": 0.0, "reduce": 0.0, "merge": 0.0} for k in trees}
    maps: dict = {k: [] for k in trees}
    runs: dict = {k: {} for k in trees}

    def step(k: str, family: str, fn, *args):
        sys.modules.update(trees[k])       # sortedruns imports mapreduce lazily
        os.environ["MPITINY_RUN_DIR"] = os.path.join(work, f"{k}-run")
        value, secs = _cpu(fn, *args)
        cpu[k][family] += secs
        return value

    names = list(trees)
    for i in range(n):
        for k in names if i % 2 else names[::-1]:
            maps[k].append(step(k, "map", trees[k]["wordcount"].map_split, h5, i, reducers))
    for r in range(reducers):
        for k in names if r % 2 else names[::-1]:
            parts = {f"map[{i}]": m[r] for i, m in enumerate(maps[k])}
            runs[k][f"reduce[{r}]"] = step(k, "reduce", trees[k]["wordcount"].reduce_sorted,
                                           os.path.join(work, k), parts, r, mergers)
    digests = {}
    for k in names:
        wc, out = trees[k]["wordcount"], os.path.join(work, k)
        plan = step(k, "merge", wc.plan, out, runs[k], mergers)
        inputs = dict(runs[k], plan=plan)
        for m in range(mergers):
            step(k, "merge", wc.merge, inputs, m)
        step(k, "merge", wc.commit, out, inputs)
        with open(os.path.join(out, "wordcount.tsv"), "rb") as f:
            digests[k] = hashlib.blake2b(f.read(), digest_size=16).hexdigest()
    return {"cpu_s": {k: {f: C.rnd(v, 4) for f, v in c.items()} for k, c in cpu.items()},
            "same_output": len(set(digests.values())) == 1}


def _ratio(a: float, b: float):
    r = C.ratio(a, b)
    return None if r is None else round(r, 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", required=True, help="the other source tree (e.g. a git worktree)")
    ap.add_argument("--this", default=str(C.REPO_ROOT))
    ap.add_argument("--corpora", required=True, help="bench/corpora.py's directory")
    ap.add_argument("--names", default="generated,prose,logs,code,multilingual")
    ap.add_argument("--reducers", type=int, default=16)
    ap.add_argument("--mergers", type=int, default=8)
    a = ap.parse_args()
    trees = {"base": load_tree(a.base), "this": load_tree(a.this)}
    work = C.workdir(None, "wordcount-cpu-ab-")
    result: dict = {"benchmark": "wordcount_cpu_ab", "machine": C.machine(), "base": a.base,
                    "this": a.this, "reducers": a.reducers, "mergers": a.mergers, "corpora": {}}
    lines = []
    for name in [n for n in a.names.split(",") if n]:
        load = os.getloadavg()[0]
        got = run_corpus(trees, os.path.join(a.corpora, f"{name}-8MiB.h5"),
                         os.path.join(work, name), a.reducers, a.mergers)
        base = counter_cpu(os.path.join(a.corpora, f"{name}.txt"))
        total = {k: sum(v.values()) for k, v in got["cpu_s"].items()}
        got.update(counter_cpu_s=C.rnd(base, 4), load_average=load,
                   this_vs_base={f: _ratio(got["cpu_s"]["base"][f], got["cpu_s"]["this"][f])
                                 for f in ("map", "reduce", "merge")},
                   total_this_vs_base=_ratio(total["base"], total["this"]),
                   two_ranks_x_counter={k: _ratio(2 * base, t) for k, t in total.items()})
        result["corpora"][name] = got
        lines.append(f"{name}: cpu s this {total['this']:.2f} base {total['base']:.2f} "
                     f"(this/base speed {got['total_this_vs_base']}, map "
                     f"{got['this_vs_base']['map']}, reduce {got['this_vs_base']['reduce']}, "
                     f"merge {got['this_vs_base']['merge']}); Counter {base:.2f} s: 2 ranks at "
                     f"best x{got['two_ranks_x_counter']['this']} (base "
                     f"x{got['two_ranks_x_counter']['base']}); same output "
                     f"{got['same_output']}; load {load:.1f}")
        C.log(lines[-1])
        shutil.rmtree(os.path.join(work, name), ignore_errors=True)
    C.emit(result, "\n".join(lines))


if __name__ == "__main__":
    main()
