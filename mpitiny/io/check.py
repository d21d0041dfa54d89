"""Check a finished run against its DAG: every task exactly once, never before its parents.

Used by the tests and by ``mpitiny check RUNDIR`` style tooling; it reads only what a run
leaves (``tasks/rank-*.h5``) and the DAG, so it checks the runtime from the outside.
"""
from __future__ import annotations

import numpy as np

from mpitiny.dag.model import DAG, Edges
from mpitiny.io.rundir import DONE, UPSTREAM_FAILED, read_tasks


def check_run(dag: DAG, run_dir: str) -> dict:
    """Raise AssertionError on any violation; return counts by status."""
    rows = read_tasks(run_dir)
    gids = rows["gid"]
    counts = np.bincount(gids, minlength=dag.total)
    if len(counts) > dag.total:
        raise AssertionError(f"unknown task ids in the records (max gid {gids.max()})")
    missing = np.flatnonzero(counts == 0)
    if len(missing):
        raise AssertionError(f"{len(missing)} tasks never finished, e.g. {dag.task_id(int(missing[0]))}")
    twice = np.flatnonzero(counts > 1)
    if len(twice):
        raise AssertionError(f"{len(twice)} tasks finished more than once, e.g. {dag.task_id(int(twice[0]))}")
    order = np.argsort(gids)
    start = rows["start"][order]
    end = rows["end"][order]
    status = rows["status"][order]
    for g in dag.groups:
        lo, hi = int(dag.base[g.index]), int(dag.base[g.index + 1])
        cidx = np.arange(g.size, dtype=np.int64)
        parents_ok = np.ones(g.size, dtype=bool)
        for d in g.deps:
            parent = dag.groups[d.parent]
            plo = int(dag.base[parent.index])
            if d.each is None:
                p_end = np.full(g.size, end[plo:plo + parent.size].max())
                p_ok = np.full(g.size, bool((status[plo:plo + parent.size] == DONE).all()))
            elif isinstance(d.each, Edges):     # listed: the latest of each one's parents
                p_end, p_ok = listed_parents(d.each, g.size, end[plo + d.each.parents],
                                             status[plo + d.each.parents] == DONE)
            else:
                pidx = d.each.parent_indices(g, parent, cidx)
                has = pidx >= 0              # an expression item outside the parent: none
                at = plo + np.where(has, pidx, 0)
                p_end = np.where(has, end[at], -np.inf)
                p_ok = ~has | (status[at] == DONE)
            early = np.flatnonzero((status[lo:hi] != UPSTREAM_FAILED) & (start[lo:hi] < p_end))
            if len(early):
                i = int(early[0])
                raise AssertionError(f"{g.instance_id(i)} started {p_end[i] - start[lo + i]:.6f} s "
                                     f"before its parent {parent.name} ended")
            parents_ok &= p_ok
        skipped = status[lo:hi] == UPSTREAM_FAILED
        wrong = np.flatnonzero(skipped == parents_ok)
        if len(wrong):
            i = int(wrong[0])
            what = "was skipped although every parent succeeded" if skipped[i] else \
                "ran although a parent did not succeed"
            raise AssertionError(f"{g.instance_id(i)} {what}")
    return {"done": int(np.count_nonzero(status == DONE)),
            "upstream_failed": int(np.count_nonzero(status == UPSTREAM_FAILED)),
            "failed": int(np.count_nonzero((status != DONE) & (status != UPSTREAM_FAILED)))}



def listed_parents(edges: Edges, size: int, ends: np.ndarray, ok: np.ndarray) -> tuple:
    """Per child instance of listed edges: the latest end of its parents (-inf if none) and
    whether all of them succeeded."""
    kids = edges.children()
    p_end = np.full(size, -np.inf)
    np.maximum.at(p_end, kids, ends)
    bad = np.zeros(size, dtype=np.int64)
    np.add.at(bad, kids, (~ok).astype(np.int64))
    return p_end, bad == 0
