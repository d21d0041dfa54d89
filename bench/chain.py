#!/usr/bin/env python
"""Hand-off latency along a chain of null tasks.

mpitiny: a 10,000-link chain (``--links``) of plain null tasks, link k depends on link k-1 and
carries ``"rank": k % N`` (N = ``--ranks``, default 2), so consecutive links ask for different
ranks. From the task table, per link: hand-off = start(link k) - end(link k-1); the statistics
(median, p90, p99, max) are over the links that ran on a different rank than their parent
("crossing" links), and their count is reported. Links that ran on the same rank as their
parent (late binding: an idle rank may take a link whose home is busy) are reported apart.
For reference the same chain without ``rank`` hints is also run (the runtime then normally keeps
the chain on one rank).

Peers: MPIPoolExecutor with N workers, each link submitted after the previous one completed
(``submit(...).result()`` in a loop): per-link time = total / links (the master's view), and the
hand-off start(k) - end(k-1) from timestamps the task itself returns, for links that ran on a
different worker than their parent. mpi4py.futures is run twice: as it comes (idle back-off of
up to 1 ms in the master and the workers, MPI4PY_FUTURES_BACKOFF=0.001) and with
MPI4PY_FUTURES_BACKOFF=0 (busy polling). The same with multiprocessing.Pool(N) ``apply``.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402


def chain_dag(name, links, ranks, hints=True):
    tasks = []
    for k in range(links):
        t = {"id": f"c{k:06d}", "fn": "mpitiny.tasks:null"}
        if k:
            t["deps"] = [f"c{k - 1:06d}"]
        if hints:
            t["rank"] = k % ranks
        tasks.append(t)
    return {"name": name, "tasks": tasks}


def handoffs(starts, ends, where):
    """Per link k >= 1: start[k] - end[k-1], split by whether it changed rank/worker."""
    starts, ends, where = map(np.asarray, (starts, ends, where))
    h = starts[1:] - ends[:-1]
    cross = where[1:] != where[:-1]
    out = {"links": int(len(starts)), "crossing_links": int(cross.sum()),
           "same_rank_links": int((~cross).sum())}
    if cross.any():
        out["crossing_handoff_us"] = C.percentiles(h[cross], pcts=(10, 50, 90, 99), scale=1e6, digits=1)
        out["crossing_handoff_us"]["mean"] = round(float(h[cross].mean()) * 1e6, 1)
    if (~cross).any():
        out["same_rank_handoff_us"] = C.percentiles(h[~cross], pcts=(10, 50, 90, 99), scale=1e6, digits=1)
    out["total_seconds"] = float(ends[-1] - starts[0])
    out["per_link_us"] = round(out["total_seconds"] / len(starts) * 1e6, 1)
    return out


def mpitiny_chain(work, links, ranks, hints, tag, retry):
    name = f"chain_{tag}"
    dag = C.write_dag(os.path.join(work, f"{name}.json"), chain_dag(name, links, ranks, hints))
    run_dir = os.path.join(work, f"{name}-run")
    proc, s = C.run_mpitiny(ranks, dag, run_dir, timeout=900, retry_bad_input=retry)
    assert s["done"] == links, s
    t = C.read_table(run_dir)
    from mpitiny.io.rundir import groups_of, task_id
    groups = groups_of(run_dir)
    order = np.array([int(task_id(groups, int(g))[1:]) for g in t["gid"]])
    t = t[np.argsort(order)]
    res = handoffs(t["start"], t["end"], t["rank"])
    if hints:
        home = np.arange(links) % ranks
        res["links_on_their_home_rank"] = int((t["rank"] == home).sum())
    res["engine_wall_seconds"] = s["wall_seconds"]
    res["setup_seconds"] = s["setup_seconds"]
    res["per_rank_done"] = [r["done"] for r in s["per_rank"]]
    return res


def peer_chain(out):
    ph = out["phases"][0]
    rows = np.array([(r[0], r[1]) for r in ph["rows"]])
    pids = [r[2] for r in ph["rows"]]
    res = handoffs(rows[:, 0], rows[:, 1], pids)
    res["per_link_us_master_view"] = round(ph["per_link_seconds"] * 1e6, 1)
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--links", type=int, default=10_000)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--peer-links", type=int, default=None, help="links for the peers (default --links)")
    ap.add_argument("--no-pool", action="store_true")
    ap.add_argument("--no-backoff0", action="store_true",
                    help="skip the extra futures run with MPI4PY_FUTURES_BACKOFF=0 (its idle "
                         "back-off, 1 ms by default, dominates a chain)")
    ap.add_argument("--retry-seconds", type=float, default=600,
                    help="if mpitiny rejects the dag (exit 2, e.g. 'rank' not accepted yet), retry this long")
    ap.add_argument("--mpitiny-only", action="store_true",
                    help="the hinted mpitiny chain alone (no peers, no unhinted chain)")
    ap.add_argument("--workdir")
    a = ap.parse_args()
    C.machine()     # record the load and the mpitiny commit before running anything
    work = C.workdir(a.workdir, "bench-chain-")
    peer_links = a.peer_links or a.links
    C.log(f"mpitiny chain of {a.links} links with rank hints k % {a.ranks}")
    hinted = mpitiny_chain(work, a.links, a.ranks, True, "hinted", a.retry_seconds)
    if a.mpitiny_only:
        hm = hinted.get("crossing_handoff_us", {})
        C.emit({"benchmark": "chain", "ranks": a.ranks, "links": a.links,
                "machine": C.machine(), "workdir": work, "mpitiny_rank_hints": hinted},
               f"chain {a.links} links on {a.ranks} ranks: mpitiny crossing hand-off median "
               f"{hm.get('p50')} us p90 {hm.get('p90')} ({hinted['crossing_links']} crossing, "
               f"per link {hinted['per_link_us']} us)")
        return
    C.log(f"mpi4py.futures chain of {peer_links} links")
    fut = peer_chain(C.run_futures(a.ranks, [{"kind": "chain", "n": peer_links}], timeout=1800))
    fut0 = None
    if not a.no_backoff0:
        C.log(f"mpi4py.futures chain of {peer_links} links, MPI4PY_FUTURES_BACKOFF=0")
        fut0 = peer_chain(C.run_futures(a.ranks, [{"kind": "chain", "n": peer_links}], timeout=1800,
                                        env={"MPI4PY_FUTURES_BACKOFF": "0"}))
    C.log("mpitiny chain without rank hints")
    plain = mpitiny_chain(work, a.links, a.ranks, False, "nohint", 0)
    pool = None
    if not a.no_pool:
        pool = peer_chain(C.run_pool(a.ranks, [{"kind": "chain", "n": peer_links}], timeout=1800))
    result = {"benchmark": "chain", "ranks": a.ranks, "links": a.links, "machine": C.machine(), "workdir": work,
              "mpitiny_rank_hints": hinted, "mpi4py_futures": fut,
              "mpi4py_futures_backoff_0": fut0, "mpitiny_no_hints": plain,
              "multiprocessing_pool": pool}
    hm = hinted.get("crossing_handoff_us", {})
    fm = fut.get("crossing_handoff_us", {})
    if hm and fm:
        result["ratio_futures_over_mpitiny_crossing_median"] = round(fm["p50"] / hm["p50"], 2) if hm["p50"] > 0 else None
    result["ratio_futures_over_mpitiny_per_link"] = round(fut["per_link_us_master_view"] / hinted["per_link_us"], 2)
    C.emit(result, f"chain {a.links} links on {a.ranks} ranks: mpitiny crossing hand-off median "
                   f"{hm.get('p50')} us p90 {hm.get('p90')} p99 {hm.get('p99')} "
                   f"({hinted['crossing_links']} crossing, per link {hinted['per_link_us']} us); "
                   f"futures hand-off median {fm.get('p50')} us, per link {fut['per_link_us_master_view']} us"
                   + (f" (backoff 0: {fut0['per_link_us_master_view']} us)" if fut0 else ""))


if __name__ == "__main__":
    main()
