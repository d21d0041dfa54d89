"""UTS, the Unbalanced Tree Search benchmark (Olivier et al., LCPC 2006), binomial tree, on
mpitiny's tasks that add tasks (``mpitiny.submit_family``), against the same search run
sequentially in one process.

The tree (UTS's BIN type, its SHA-1 splittable random numbers reimplemented with hashlib):
the root's state is SHA-1 of 16 zero bytes and the seed (4 bytes, big-endian); child i's
state is SHA-1 of its parent's 20 bytes and i (4 bytes, big-endian); the root has ``b0``
children; any other node has ``m`` children if its last 4 bytes, as a 31-bit number over
2^31, fall below ``q``, else none. ``--check-t3`` counts UTS's T3 tree (b0 2000, q 0.124875,
m 8, seed 42), whose published size is 4,112,897 nodes.

The parallel search: one DAG task expands the root and adds its ``b0`` children at once as
``--split`` tasks (so that every rank has work one steal after the start); every task expands
nodes depth first,
up to ``--per-task`` of them, then adds the nodes left on its stack as up to ``--split`` new
tasks (one per ``MIN_PART`` nodes; the deepest and shallowest nodes spread over them) and
returns how many it expanded. The
node count is the sum of the tasks' results (``results/``, one per task id, so a resumed
run's total counts every task once).

Usage::

    python bench/uts.py                         # ~10^6 nodes: sequential, then 1, 2, 4, 8 ranks
    python bench/uts.py --ranks 2 --kill        # also: rank 1 killed mid-run, then resumed
    python bench/uts.py --b0 50 --ranks 1,2     # a smaller tree

Prints JSON: the sequential count and time; per rank count the run's count, whether it is
exact, the run's wall time (start-up excluded, from summary.json), tasks and steals, and the
parallel efficiency ``t_seq / (P * t_run)``, each run against the sequential search just
before it, and over all rounds of the medians and of the fastest runs. Right after each run,
P copies of the sequential search run at once (``copies_seconds``): ``machine_share`` =
t_seq / that is how much of P free cores the machine gave P busy processes then (1.0 on an
idle machine), the bound the run's efficiency is to be read against on a loaded one. Runs
alternate with sequential ones (``--rounds``), so both see the same machine load. Two figures
the load moves less: ``cpu_efficiency``, the sequential search's CPU seconds over the CPU
seconds the run's ranks spent from their first look for work to their last
(``work_cpu_seconds``: the tasks, the runtime's own cost, any spinning while idle), and
``idle_share``, the share of the ranks' time from the first task's start to the last one's
end (``P * wall``) spent outside tasks (waiting for work, the runtime between tasks, or off
the core).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import mpitiny

MASK31 = 0x7FFFFFFF
TWO31 = 2147483648.0
MIN_PART = 8          # a task adds its stack as one task per this many nodes, up to --split


def root_state(seed: int) -> bytes:
    return hashlib.sha1(bytes(16) + seed.to_bytes(4, "big", signed=True)).digest()


def children(state: bytes, q: float, m: int) -> int:
    return m if (int.from_bytes(state[16:20], "big") & MASK31) / TWO31 < q else 0


def expand(stack: list, q: float, m: int, budget: int) -> int:
    """Expand up to ``budget`` nodes of ``stack`` depth first (the stack keeps the rest)."""
    sha1 = hashlib.sha1
    pack = [i.to_bytes(4, "big") for i in range(m)]
    count = 0
    while stack and count < budget:
        state = stack.pop()
        count += 1
        if (int.from_bytes(state[16:20], "big") & MASK31) / TWO31 < q:
            stack.extend(sha1(state + pack[i]).digest() for i in range(m))
    return count


def root_children(seed: int, b0: int) -> list:
    root = root_state(seed)
    return [hashlib.sha1(root + i.to_bytes(4, "big")).digest() for i in range(b0)]


def sequential(seed: int, b0: int, q: float, m: int) -> int:
    """The whole tree's node count, in this process."""
    stack = root_children(seed, b0)
    return 1 + expand(stack, q, m, 1 << 62)


# ---------------------------------------------------------------------- the tasks
def uts_root(seed: int, b0: int, q: float, m: int, per_task: int, split: int) -> int:
    stack = root_children(seed, b0)
    return 1 + uts_grow(stack, q, m, per_task, split, budget=0)


def uts_node(nodes: bytes, q: float, m: int, per_task: int, split: int) -> int:
    stack = [nodes[k:k + 20] for k in range(0, len(nodes), 20)]
    return uts_grow(stack, q, m, per_task, split)


def uts_grow(stack: list, q: float, m: int, per_task: int, split: int,
             budget: int | None = None) -> int:
    """Expand up to ``budget`` (default ``per_task``) nodes, add the rest as tasks."""
    count = expand(stack, q, m, per_task if budget is None else budget)
    if stack:
        ways = max(1, min(split, len(stack) // MIN_PART))
        parts = [b"".join(stack[j::ways]) for j in range(ways)]
        mpitiny.submit_family(uts_node, [(p, q, m, per_task, split) for p in parts])
    return count


# ---------------------------------------------------------------------- the benchmark
def uts_dag(args) -> dict:
    return {"name": "uts", "tasks": [{
        "id": "root", "fn": "uts:uts_root",
        "args": [args.seed, args.b0, args.q, args.m, args.per_task, args.split]}]}


def counted(run_dir: str) -> int:
    from mpitiny.io.rundir import read_results
    return sum(read_results(run_dir).values())


def run_ranks(n: int, dag_path: str, run_dir: str, env: dict | None = None) -> dict:
    from _common import run_mpitiny
    _, summary = run_mpitiny(n, dag_path, run_dir, timeout=900, env=env)
    return summary


def killed_and_resumed(n: int, dag_path: str, run_dir: str, after: int) -> dict:
    """Rank 1 kills itself (kill -9) after ``after`` tasks; the same command resumes."""
    import shutil

    from _common import run_mpi
    shutil.rmtree(run_dir, ignore_errors=True)
    cmd = ["-m", "mpitiny", "run", dag_path, "--out", run_dir, "-q"]
    first = run_mpi(n, cmd, timeout=900, check=False,
                    env={"MPITINY_FAULT": f"rank=1:after={after}:mode=kill"})
    second = run_mpi(n, cmd, timeout=900, check=False)
    with open(os.path.join(run_dir, "summary.json"), encoding="utf-8") as f:
        summary = json.load(f)
    return {"first_exit": first["rc"], "resumed_exit": second["rc"],
            "incarnation": summary["incarnation"], "added_in_resumed_run": summary["added"]}


def _timed_sequential(args: tuple) -> float:
    t0 = time.perf_counter()
    sequential(*args)
    return time.perf_counter() - t0


def concurrent_sequential(n: int, args) -> float:
    """The machine's share for ``n`` processes: ``n`` copies of the sequential search at
    once, the slowest one's seconds (alone on ``n`` free cores: the sequential time)."""
    import multiprocessing
    with multiprocessing.get_context("fork").Pool(n) as pool:
        return max(pool.map(_timed_sequential, [(args.seed, args.b0, args.q, args.m)] * n))


def run_cpu(summary: dict) -> float:
    """CPU seconds the run's ranks spent from their first look for work to their last."""
    return sum(p["work_cpu_seconds"] for p in summary["per_rank"])


def idle_share(summary: dict) -> float:
    """The share of the ranks' time in the run (``P * wall_seconds``) spent outside tasks."""
    busy = sum(p["busy_seconds"] for p in summary["per_rank"])
    return round(1 - busy / (len(summary["per_rank"]) * summary["wall_seconds"]), 3)


def efficiencies(seq_times: list, runs: list) -> dict:
    """Per rank count: t_seq / (P * t_run) of the medians, and of the fastest of each (on a
    loaded machine the fastest run is the one least slowed by other processes)."""
    import statistics
    out = {}
    for n in sorted({r["ranks"] for r in runs}):
        walls = [r["wall_seconds"] for r in runs if r["ranks"] == n]
        out[n] = {"median": round(statistics.median(seq_times) / (n * statistics.median(walls)), 3),
                  "best": round(min(seq_times) / (n * min(walls)), 3),
                  "walls": walls}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--b0", type=int, default=800)
    ap.add_argument("--q", type=float, default=0.124875)
    ap.add_argument("--m", type=int, default=8)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--per-task", type=int, default=2000)
    ap.add_argument("--split", type=int, default=4)
    ap.add_argument("--ranks", default="1,2,4,8")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--kill", action="store_true")
    ap.add_argument("--check-t3", action="store_true")
    ap.add_argument("--keep", default=None)
    args = ap.parse_args()
    from _common import emit, log, machine, workdir
    result: dict = {"machine": machine(), "tree": {"type": "binomial", "b0": args.b0,
                    "q": args.q, "m": args.m, "seed": args.seed},
                    "per_task": args.per_task, "split": args.split}
    if args.check_t3:
        t0 = time.perf_counter()
        result["t3_nodes"] = sequential(42, 2000, 0.124875, 8)
        result["t3_seconds"] = round(time.perf_counter() - t0, 3)
        result["t3_exact"] = result["t3_nodes"] == 4112897
    work = workdir(args.keep, "uts-")
    dag_path = os.path.join(work, "uts.json")
    from _common import write_dag
    write_dag(dag_path, uts_dag(args))
    seq_times, runs = [], []
    nodes = None
    for r in range(args.rounds):
        for n in [int(x) for x in args.ranks.split(",")]:
            t0, cpu0 = time.perf_counter(), time.process_time()
            nodes = sequential(args.seed, args.b0, args.q, args.m)
            seq_times.append(time.perf_counter() - t0)
            seq_cpu = time.process_time() - cpu0
            log(f"sequential: {nodes} nodes in {seq_times[-1]:.3f} s")
            run_dir = os.path.join(work, f"run-{n}-{r}")
            summary = run_ranks(n, dag_path, run_dir)
            got = counted(run_dir)
            wall = summary["wall_seconds"]
            copies = concurrent_sequential(n, args)
            runs.append({"ranks": n, "round": r, "nodes": got, "exact": got == nodes,
                         "wall_seconds": round(wall, 3), "seq_seconds": round(seq_times[-1], 3),
                         "efficiency": round(seq_times[-1] / (n * wall), 3),
                         "copies_seconds": round(copies, 3),
                         "machine_share": round(seq_times[-1] / copies, 3),
                         "cpu_efficiency": round(seq_cpu / run_cpu(summary), 3),
                         "idle_share": idle_share(summary),
                         "tasks": summary["tasks"],
                         "steals": sum(p.get("steals", 0) for p in summary["per_rank"])})
            log(f"{n} ranks: {got} nodes ({'exact' if got == nodes else 'WRONG'}) in "
                f"{wall:.3f} s, efficiency {runs[-1]['efficiency']}")
    result.update(nodes=nodes, seq_seconds=[round(t, 3) for t in seq_times], runs=runs,
                  efficiency=efficiencies(seq_times, runs))
    if args.kill:
        n = max(2, max(int(x) for x in args.ranks.split(",")))
        run_dir = os.path.join(work, "run-killed")
        info = killed_and_resumed(n, dag_path, run_dir, after=20)
        got = counted(run_dir)
        result["killed_and_resumed"] = {"ranks": n, **info, "nodes": got, "exact": got == nodes}
        log(f"killed and resumed on {n} ranks: {got} nodes "
            f"({'exact' if got == nodes else 'WRONG'})")
    emit(result, f"uts: {nodes} nodes; efficiency (median, best): " + "; ".join(
        f"{n} ranks {e['median']}, {e['best']}" for n, e in result["efficiency"].items()))


if __name__ == "__main__":
    main()
