#!/usr/bin/env python
"""Jobs that share an allocation (Tiny Tasks, Fig. 4): a new high-priority job gets the ranks
within one task length instead of waiting for the job that holds them.

One server (``mpiexec -n RANKS python -m mpitiny serve RUN``, ``--ranks`` 8) and three jobs
submitted to it with ``mpitiny submit``:

- **A**: ``RANKS x --a-seconds / --task`` tasks of ``--task`` s (50 ms; ``mpitiny.tasks:sleep``,
  so that 8 ranks are busy on a machine with fewer cores), priority 0: it keeps every rank
  busy for about ``--a-seconds`` (30);
- **B**: ``--b-tasks`` (80) tasks of the same length, priority 10, submitted once A has run
  for a third of its time;
- **C**: B again, submitted once A has ended: B alone on the same, now empty, server.

Measured from the jobs' files (``RUN/jobs/ID/state.json`` ``picked``: when a rank picked the
submission up; ``tasks/rank-*.jsonl``: each task's start and end): for B and C each task's
start - pickup (its *delay*), the time by which every rank had started one of the job's tasks
(*spread*), the makespan (last end - pickup). Bars: B's spread <= 100 ms (every rank switches
to B within a task length of 50 ms plus 50 ms), every B task's delay no more than 100 ms above
the same-ranked delay of C (B starts as it would on an empty allocation, in waves of RANKS),
B's makespan <= 1.3 x C's, A exact (every task once, done). Also A's makespan (from its pickup) against
(A's + B's tasks) x task / RANKS (``a_efficiency``: what the server's own cost leaves of the
ranks' time). Prints JSON; the load average at start and end is in ``machine``.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402

from mpitiny.io import jobs as jf  # noqa: E402


def job_dag(name: str, n: int, task: float) -> dict:
    return {"name": name, "tasks": [{"id": name, "fn": "mpitiny.tasks:sleep", "args": [task],
                                     "foreach": {"i": {"range": [0, n]}}}]}


def submit(run: str, dag_path: str, priority: int) -> str:
    out = subprocess.run([C.PYTHON, "-m", "mpitiny", "submit", run, dag_path, "--priority",
                          str(priority)], check=True, capture_output=True, text=True,
                         env=C.bench_env())
    return out.stdout.strip()


def wait_state(run: str, jid: str, test, timeout: float, poll: float = 0.05) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        st = jf.read_state(run, jid)
        if test(st):
            return st
        time.sleep(poll)
    raise SystemExit(f"sharing: job {jid} not there in {timeout} s: {jf.read_state(run, jid)}")


def measure(run: str, jid: str, nranks: int) -> dict:
    """Delays, spread and makespan of a job from its files (seconds)."""
    st = jf.read_state(run, jid)
    picked = st["picked"]
    rows = jf.read_lines(run, jid, "tasks")
    delays = sorted(r["start"] - picked for r in rows)
    first_by_rank: dict = {}
    for r in rows:
        first_by_rank[r["rank"]] = min(first_by_rank.get(r["rank"], 1e300), r["start"])
    return {"tasks": len(rows), "done": sum(r["status"] == "done" for r in rows),
            "ranks_used": len(first_by_rank),
            "spread_s": C.rnd(max(first_by_rank.values()) - picked)
            if len(first_by_rank) == nranks else None,
            "delay_s": C.percentiles(delays), "delays": delays,
            "makespan_s": C.rnd(max(r["end"] for r in rows) - picked),
            "pickup_after_submit_s": C.rnd(picked - st["submitted"])}


def exact(run: str, jid: str, n: int) -> dict:
    rows = jf.read_lines(run, jid, "tasks")
    ids = [r["id"] for r in rows]
    return {"rows": len(rows), "distinct": len(set(ids)), "expected": n,
            "all_done": all(r["status"] == "done" for r in rows),
            "exact": len(rows) == n == len(set(ids)) and all(r["status"] == "done" for r in rows)}


def start_server(run: str, nranks: int, run_id: str) -> subprocess.Popen:
    env = C.bench_env({"MPITINY_BENCH_RUN_ID": run_id})
    return subprocess.Popen([C.mpiexec_path(), "-n", str(nranks), C.PYTHON, "-m", "mpitiny",
                             "serve", run, "-q"], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def scenario(args, work: str) -> dict:
    run = os.path.join(work, "run")
    n_a = int(round(args.ranks * args.a_seconds / args.task))
    paths = {k: C.write_dag(os.path.join(work, f"{k}.json"), job_dag(k, n, args.task))
             for k, n in (("a", n_a), ("b", args.b_tasks))}
    run_id = uuid.uuid4().hex
    server = start_server(run, args.ranks, run_id)
    try:
        a = submit(run, paths["a"], 0)
        st = wait_state(run, a, lambda s: "picked" in s, 120)
        time.sleep(max(0.0, st["picked"] + args.a_seconds / 3 - time.time()))
        b = submit(run, paths["b"], args.b_priority)
        wait_state(run, b, lambda s: s.get("state") in jf.FINAL, 300)
        during = jf.read_state(run, a).get("done")
        wait_state(run, a, lambda s: s.get("state") in jf.FINAL, 600, poll=0.5)
        c = submit(run, paths["b"], args.b_priority)
        wait_state(run, c, lambda s: s.get("state") in jf.FINAL, 300)
        subprocess.run([C.PYTHON, "-m", "mpitiny", "stop", run], check=True,
                       capture_output=True, env=C.bench_env())
        out, err = server.communicate(timeout=120)
    except BaseException:
        C._kill(server, run_id)
        raise
    mb, mc = measure(run, b, args.ranks), measure(run, c, args.ranks)
    excess = [x - y for x, y in zip(mb.pop("delays"), mc.pop("delays"))]
    ma = measure(run, a, args.ranks)
    ideal = (n_a + args.b_tasks) * args.task / args.ranks      # A and B share the ranks
    return {"server_exit": server.returncode, "a_tasks": n_a, "a": exact(run, a, n_a),
            "a_makespan_s": ma["makespan_s"], "a_ideal_with_b_s": C.rnd(ideal),
            "a_efficiency": C.ratio(ideal, ma["makespan_s"]),
            "a_done_when_b_ended": during, "b": mb, "b_alone": mc,
            "b_delay_over_alone_max_s": C.rnd(max(excess)),
            "makespan_ratio": C.ratio(mb["makespan_s"], mc["makespan_s"]),
            "server_stderr_tail": err[-1500:]}


def bars(r: dict) -> dict:
    return {"b_spread_le_100ms": r["b"]["spread_s"] is not None and r["b"]["spread_s"] <= 0.1,
            "b_delays_within_100ms_of_alone": r["b_delay_over_alone_max_s"] <= 0.1,
            "b_makespan_le_1.3x_alone": r["makespan_ratio"] <= 1.3,
            "a_exact": r["a"]["exact"], "server_exit_0": r["server_exit"] == 0}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ranks", type=int, default=8)
    p.add_argument("--task", type=float, default=0.05, help="seconds per task")
    p.add_argument("--a-seconds", type=float, default=30.0)
    p.add_argument("--b-tasks", type=int, default=80)
    p.add_argument("--b-priority", type=int, default=10)
    p.add_argument("--keep", help="work directory to keep (default: a temporary one)")
    args = p.parse_args()
    machine = C.machine()
    work = C.workdir(args.keep, "mpitiny-sharing-")
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    result = scenario(args, work)
    result.update(params=vars(args), machine=machine, bars=bars(result))
    human = (f"sharing: B spread {result['b']['spread_s']} s, B delay p50/max "
             f"{result['b']['delay_s'].get('p50')}/{result['b']['delay_s'].get('max')} s, "
             f"over alone max {result['b_delay_over_alone_max_s']} s, makespan B "
             f"{result['b']['makespan_s']} s vs alone {result['b_alone']['makespan_s']} s "
             f"(x{result['makespan_ratio']}), A exact {result['a']['exact']}; bars "
             f"{json.dumps(result['bars'])}")
    C.emit(result, human)


if __name__ == "__main__":
    main()
