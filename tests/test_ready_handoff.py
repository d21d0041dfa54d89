"""The hand-off path between a parent's end and its child's start (issue 19), without MPI:

- an owner counts the inbox entries it took on ``INBOX_TAKEN`` only when it is no longer busy
  (``StealQueue.set_busy(False)``), and never sees them as waiting again meanwhile;
- a lone released task is queued as a run of one while nothing else is queued here (a thief
  takes it with one compare-and-swap), on the ring otherwise;
- the releasing rank keeps the first released task to run next (``keep_first``) and queues the
  rest: Task Bench's family graphs at width 2 and 8 on 1-3 simulated ranks (many
  interleavings) still run every task exactly once, after all its parents.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from mpitiny.dag.load import load_dag_text
from mpitiny.engine.local import run_local
from mpitiny.engine.ready import ReadyQueue
from mpitiny.engine.types import RunOptions
from mpitiny.io.check import check_run
from mpitiny.queue.layout import Layout
from mpitiny.queue.memory import LocalMemory
from mpitiny.queue.stealq import INBOX_TAIL, INBOX_TAKEN, MAIL, StealQueue, region_size

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from _taskbench_graph import family_tasks  # noqa: E402


def queues(nranks: int, slots: int = 8, inbox: int = 8, ring: int = 32) -> list:
    mem = LocalMemory(nranks, region_size(slots, inbox, ring))
    return [StealQueue(mem.view(r), 0, slots, inbox, ring) for r in range(nranks)]


def test_owner_counts_its_inbox_takes_once_it_is_no_longer_busy():
    a, b, c = queues(3)
    assert b.push_remote(0, 7, 9) == 9
    assert a.take_inbox() == [(7, 9)]
    assert a.local[INBOX_TAKEN] == 0 and a.local[INBOX_TAIL] == 1   # not counted yet
    assert a.take_inbox() == []                                      # and not waiting again
    a.set_busy(True)
    assert c.steal(0) is None          # TAIL > TAKEN, but the entry is gone: nothing to take
    assert b.push_remote(0, 20, 22) == 22
    prio, runs = c.steal(0)            # a later entry of the busy owner: late binding
    assert prio is None and runs == [(20, 22)]
    assert a.take_inbox() == []
    a.set_busy(False)
    assert a.local[INBOX_TAKEN] == a.local[INBOX_TAIL] == 2


def test_a_single_task_goes_to_the_mail_word_that_the_owner_or_a_thief_takes():
    a, b, c = queues(3)
    assert b.push_remote(0, 5, 6) == 6 and a.local[MAIL] and a.local[INBOX_TAIL] == 0
    assert b.push_remote(0, 6, 7) == 7 and a.local[INBOX_TAIL] == 1   # MAIL full: inbox
    assert c.steal(0) is None                       # an idle owner's mail waits for it
    assert sorted(a.take_inbox()) == [(5, 6), (6, 7)] and not a.local[MAIL]
    assert b.push_remote(0, 9, 10) == 10
    a.set_busy(True)
    assert c.steal(0) == (None, [(9, 10)])          # a busy owner's: late binding
    assert a.take_inbox() == [] and c.steal(0) is None


def family_dag(pattern: str, steps: int, width: int) -> dict:
    return {"name": f"{pattern}_family",
            "tasks": [{**t, "fn": "mpitiny.tasks:null"} for t in family_tasks(pattern, steps, width)]}


def test_a_lone_ready_task_is_a_run_of_one_unless_work_is_queued_here():
    dag = load_dag_text(json.dumps(family_dag("stencil_1d", 4, 2)), "dag.json")
    a, b = queues(2)
    ready = ReadyQueue(a, dag, Layout(dag, 2, 0), 0, 2)
    ready.queue_ready(0, np.array([3]))
    prio, work = b.steal(0)
    assert work == (3, 4)                       # a run: taken with one compare-and-swap
    a.push_range(100, 110)
    ready.queue_ready(0, np.array([5]))         # work waits here: onto the ring
    assert [int(x) for x in a.local[a.ring0:a.ring0 + 1]] == [5]


FAMILIES = [(p, w) for p in ("stencil_1d", "stencil_1d_periodic", "fft", "tree", "nearest")
            for w in (2, 8)]


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("nranks", [1, 2, 3])
@pytest.mark.parametrize("pattern,width", FAMILIES)
def test_task_bench_families_run_every_task_once_after_its_parents(tmp_path, pattern, width,
                                                                   nranks, seed):
    text = json.dumps(family_dag(pattern, 15, width))
    out = str(tmp_path / "run")
    assert run_local(text, nranks, out, RunOptions(quiet=True), seed=seed) == 0
    dag = load_dag_text(text, "dag.json")
    assert check_run(dag, out) == {"done": dag.total, "upstream_failed": 0, "failed": 0}


@pytest.mark.parametrize("width", [10, 300])
def test_a_fan_out_runs_every_task_once_after_its_parents(tmp_path, width):
    """A gate that opens a family (one run): of 10, the first task is kept and the other 9
    queued as one run; of 300 (more than ``KEEP_MAX``), all are queued and claimed in chunks;
    an element-wise family and a task waiting for all of it follow."""
    dag = {"name": "fan", "tasks": [
        {"id": "root", "fn": "mpitiny.tasks:null"},
        {"id": "f", "fn": "mpitiny.tasks:null", "foreach": {"i": {"range": [0, width]}},
         "deps": ["root"]},
        {"id": "g", "fn": "mpitiny.tasks:null", "foreach": {"i": {"range": [0, width]}},
         "deps": ["f[{i}]"]},
        {"id": "last", "fn": "mpitiny.tasks:null", "deps": ["g"]}]}
    text = json.dumps(dag)
    for nranks in (1, 2, 4):
        out = str(tmp_path / f"run{nranks}")
        assert run_local(text, nranks, out, RunOptions(quiet=True), seed=nranks) == 0
        loaded = load_dag_text(text, "dag.json")
        assert check_run(loaded, out) == {"done": 2 * width + 2, "upstream_failed": 0,
                                          "failed": 0}


@pytest.mark.parametrize("nranks", [2, 3])
@pytest.mark.parametrize("pattern", ["stencil_1d", "fft", "tree"])
def test_placed_task_bench_families_run_every_task_once_after_its_parents(tmp_path, pattern,
                                                                          nranks):
    """Point ``i`` placed on rank ``i`` (``"rank": "{i}"``): a releasing rank keeps the
    child placed on it and sends the others to their homes' ``MAIL`` words."""
    dag = family_dag(pattern, 15, 2)
    for t in dag["tasks"]:
        t["rank"] = "{i}"
    text = json.dumps(dag)
    for seed in range(3):
        out = str(tmp_path / f"run{seed}")
        assert run_local(text, nranks, out, RunOptions(quiet=True), seed=seed) == 0
        loaded = load_dag_text(text, "dag.json")
        assert check_run(loaded, out) == {"done": loaded.total, "upstream_failed": 0,
                                          "failed": 0}


def test_keep_first_keeps_the_released_task_placed_on_this_rank():
    """Of a placed family's released instances the one whose home is the releasing rank is
    kept (not only the first): a thief taking it while its sibling waits in the thief's own
    ``MAIL`` word would run the two one after the other."""
    from types import SimpleNamespace

    from mpitiny.engine.loop import keep_first
    text = json.dumps({"name": "p", "tasks": [
        {"id": "u", "fn": "mpitiny.tasks:null", "foreach": {"i": {"range": [0, 6]}},
         "rank": "{i}"},
        {"id": "v", "fn": "mpitiny.tasks:null", "foreach": {"i": {"range": [0, 6]}}}]})
    dag = load_dag_text(text, "dag.json")
    layout = Layout(dag, 3, 0)
    for rank, expect in ((0, 0), (1, 1), (2, 2)):
        e = SimpleNamespace(placed=[True, False], layout=layout, rank=rank,
                            bases=dag.base.tolist(), direct=None, direct_stolen=True)
        rest = keep_first(e, [(0, np.array([0, 1, 2], dtype=np.int64))])
        assert e.direct == (expect, expect + 1) and not e.direct_stolen
        assert [int(i) for i in rest[0][1]] == [i for i in (0, 1, 2) if i != expect]
    e = SimpleNamespace(placed=[True, False], layout=layout, rank=0, bases=dag.base.tolist(),
                        direct=None, direct_stolen=False)
    rest = keep_first(e, [(0, np.array([1, 2], dtype=np.int64)),
                          (1, np.array([4, 5], dtype=np.int64))])
    assert e.direct == (int(dag.base[1]) + 4, int(dag.base[1]) + 5)   # none of u is rank 0's
    assert [(g, [int(i) for i in idx]) for g, idx in rest] == [(0, [1, 2]), (1, [5])]


@pytest.mark.parametrize("nranks", [1, 2, 5])
def test_home_of_one_instance_is_placed_on(nranks):
    """``Layout.home_of`` (plain integers, the hand-off's) agrees with ``placed_on`` (numpy)
    for a rank from a variable of a 2-D foreach, from a list variable, and a fixed rank."""
    text = json.dumps({"name": "h", "tasks": [
        {"id": "a", "fn": "mpitiny.tasks:null", "rank": "{j}",
         "foreach": {"t": {"range": [0, 4]}, "j": {"range": [3, 30, 4]}}},
        {"id": "b", "fn": "mpitiny.tasks:null", "rank": "{t}",
         "foreach": {"t": {"range": [0, 4]}, "j": [7, 1, 12]}},
        {"id": "c", "fn": "mpitiny.tasks:null", "rank": "{j}", "foreach": {"j": [7, 1, 12, 0]}},
        {"id": "d", "fn": "mpitiny.tasks:null", "rank": 3, "foreach": {"j": {"range": [0, 5]}}}]})
    dag = load_dag_text(text, "dag.json")
    layout = Layout(dag, nranks, 0)
    for g in dag.groups:
        idx = np.arange(g.size, dtype=np.int64)
        assert [layout.home_of(g.index, int(i)) for i in idx] == \
            [int(r) for r in layout.placed_on(g.index, idx)]
