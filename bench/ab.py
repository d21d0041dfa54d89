#!/usr/bin/env python
"""Two source trees side by side: the same benchmark script, run alternately with each tree.

    python bench/ab.py --base /tmp/base --repeat 3 bars.py --only a --only b

runs ``TREE/bench/SCRIPT ARGS`` with ``PYTHONPATH=TREE`` for the base tree (e.g. a
``git worktree`` of the commit before a change) and for this tree, ``--repeat`` times,
alternating which goes first, so that both see the same machine over the same minutes (this
machine's times drift 2-3x between hours, not within a few minutes). Each run's JSON (what
``_common.emit`` prints) is flattened to its numeric leaves; the medians of both trees and
their ratio (this / base) are printed and written to ``bench/results/ab-SCRIPT.json``.
A ratio of a time near 1.0 means no change; of a rate, likewise.

``--base-env K=V`` / ``--this-env K=V`` (repeatable) set environment variables for one side:
with ``--base`` the same tree, that compares two settings of one tree, e.g. the progress
thread forced on and off (``--base . --base-env MPITINY_PROGRESS=0 --this-env
MPITINY_PROGRESS=1``).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent


def flatten(value, prefix: str = "") -> dict:
    """``{"a.b.c": number}`` for every int or float leaf (lists by index)."""
    out: dict = {}
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = ((str(i), v) for i, v in enumerate(value))
    else:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[prefix] = value
        return out
    for key, v in items:
        out.update(flatten(v, f"{prefix}.{key}" if prefix else str(key)))
    return out


def run_once(tree: Path, script: str, args: list, timeout: float, extra_env: dict) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree), **extra_env)
    t0 = time.time()
    proc = subprocess.run([sys.executable, str(tree / "bench" / script), *args], env=env,
                          capture_output=True, text=True, timeout=timeout, cwd=str(tree))
    if proc.returncode != 0:
        raise SystemExit(f"ab: {tree}/bench/{script} failed ({proc.returncode}):\n"
                         f"{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout)
    result.pop("machine", None)
    flat = flatten(result)
    flat["ab_script_seconds"] = time.time() - t0
    print(f"ab: {tree.name} {extra_env or ''}: {proc.stderr.strip().splitlines()[-1]}",
          file=sys.stderr, flush=True)
    return flat


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True, help="the other source tree (a checkout)")
    ap.add_argument("--this", default=str(HERE),
                    help="this source tree (default: the one this script is in; a snapshot "
                         "checkout lets the working tree change while the benchmark runs)")
    ap.add_argument("--base-env", action="append", default=[], metavar="K=V")
    ap.add_argument("--this-env", action="append", default=[], metavar="K=V")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--keys", help="comma-separated substrings: report only metrics matching one")
    ap.add_argument("--name", help="results file: bench/results/ab-NAME.json (default: the "
                                   "script's name)")
    ap.add_argument("script", help="a script in bench/, e.g. bars.py")
    ap.add_argument("args", nargs=argparse.REMAINDER, help="its arguments")
    a = ap.parse_args()
    trees = {"base": Path(a.base).resolve(), "this": Path(a.this).resolve()}
    envs = {"base": dict(kv.split("=", 1) for kv in a.base_env),
            "this": dict(kv.split("=", 1) for kv in a.this_env)}
    runs: dict = {"base": [], "this": []}
    for k in range(a.repeat):
        order = ("base", "this") if k % 2 == 0 else ("this", "base")
        for name in order:
            runs[name].append(run_once(trees[name], a.script, a.args, a.timeout, envs[name]))
    keys = sorted(set(runs["base"][0]) & set(runs["this"][0]))
    if a.keys:
        wanted = a.keys.split(",")
        keys = [k for k in keys if any(w in k for w in wanted)]
    table = {}
    for key in keys:
        base = statistics.median(r[key] for r in runs["base"] if key in r)
        this = statistics.median(r[key] for r in runs["this"] if key in r)
        table[key] = {"base": base, "this": this, "ratio": this / base if base else None}
    out = {"benchmark": "ab", "script": a.script, "args": a.args, "repeat": a.repeat,
           "trees": {k: str(v) for k, v in trees.items()}, "envs": envs,
           "started": time.strftime("%Y-%m-%d %H:%M:%S"), "medians": table, "runs": runs}
    results = HERE / "bench" / "results"
    results.mkdir(exist_ok=True)
    path = results / f"ab-{a.name or Path(a.script).stem}.json"
    path.write_text(json.dumps(out, indent=1))
    width = max((len(k) for k in table), default=10)
    print(f"{'metric':<{width}}  {'base':>14}  {'this':>14}  this/base")
    for key, row in table.items():
        ratio = "-" if row["ratio"] is None else f"{row['ratio']:.3f}"
        print(f"{key:<{width}}  {row['base']:>14.6g}  {row['this']:>14.6g}  {ratio}")
    print(f"ab: written {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
