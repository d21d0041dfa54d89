"""The whole engine in one process (``mpitiny.engine.local.run_local``): P simulated ranks on
numpy "windows", taking turns in an order shuffled by a seed. The DAG, failure, retry, resume,
data-plane, state and batch cases of the MPI tests (test_run_mpi.py, test_reliability.py,
test_batch.py), in milliseconds and with many interleavings.

Every DAG run is checked from what it leaves, as the MPI tests do: every task recorded exactly
once and never started before its parents ended (``check_run``), results, ``summary.json``.
The task functions (tests/dags/local_tasks.py) also append a line to a log each time they run,
so a test sees how often each task ran and in what order (the log's order is the order of the
calls: the simulated ranks share one process).
"""
from __future__ import annotations

import json
import random
import shutil
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from mpitiny.dag.load import load_dag_text
from mpitiny.engine.local import SimulatedCrash, run_local
from mpitiny.engine.types import RunOptions
from mpitiny.io import journal as jnl
from mpitiny.io.check import check_run
from mpitiny.io.rundir import gid_of, groups_of, read_results, read_tasks

DAGS = Path(__file__).resolve().parent / "dags"
MAX_TURNS = 200_000        # a run that loses a task never ends: fail fast instead
MOD = 1_000_003


@pytest.fixture(autouse=True)
def task_modules(monkeypatch):
    """``local_tasks`` is imported by module name (run_local's DAG text has no directory)."""
    monkeypatch.syspath_prepend(str(DAGS))


# ---------------------------------------------------------------------- helpers
def local(dag: dict, nranks: int, run_dir, seed: int = 0, params: dict | None = None,
          **opts) -> int:
    return run_local(json.dumps(dag), nranks, str(run_dir), RunOptions(quiet=True, **opts),
                     params=params, seed=seed, max_turns=MAX_TURNS)


def load(dag: dict, params: dict | None = None):
    return load_dag_text(json.dumps(dag), source="<local DAG>", params=params)


def summary_of(run_dir) -> dict:
    return json.loads((Path(run_dir) / "summary.json").read_text())


def failures(run_dir) -> list:
    recs = []
    for path in sorted((Path(run_dir) / "failures").glob("*.jsonl")):
        recs += [json.loads(line) for line in path.read_text().splitlines()]
    return recs


def log_lines(log: Path) -> list:
    """``(task id, attempt, rank)`` of every call, in order."""
    if not log.exists():
        return []
    return [tuple(line.split()) for line in log.read_text().splitlines()]


def checked(dag: dict, nranks: int, run_dir, seed=0, expect_status=0, **opts):
    status = local(dag, nranks, run_dir, seed, **opts)
    assert status == expect_status, failures(run_dir)[:3]
    counts = check_run(load(dag), str(run_dir))
    summary = summary_of(run_dir)
    assert summary["ranks"] == nranks and summary["exit_status"] == status
    assert summary["done"] == counts["done"] and summary["failed"] == counts["failed"]
    assert summary["upstream_failed"] == counts["upstream_failed"]
    return counts, summary


# ---------------------------------------------------------------------- random DAGs
def random_dag(seed: int, log: str, max_entries: int = 40) -> tuple:
    """A seeded random DAG and, per entry, what its expected values need.

    Entries: plain ``fn`` tasks, families over ``i`` (and over ``a`` x ``i``), a few plain
    ``cmd`` tasks; dependencies on whole tasks or families, element-wise (``"f[{i}]"``) and on
    one literal instance (``"f[3]"``); fan-in to readers of ``inputs`` and fan-out to families;
    some priorities. Returns (dag, entries) with entries in creation (topological) order."""
    rng = random.Random(seed)
    entries: list = []
    ncmd = 0
    for k in range(rng.randint(max_entries // 2, max_entries)):
        earlier = [e for e in entries]
        kind = rng.choices(["plain", "family", "grid", "cmd"], [45, 35, 8, 12])[0]
        if kind == "cmd" and ncmd >= 3:
            kind = "plain"
        size = rng.choice([2, 3, 7, 20, 40]) if kind in ("family", "grid") else None
        deps, parents = [], []          # dependency strings; (entry, how, literal)
        for p in rng.sample(earlier, min(len(earlier), rng.choice([0, 1, 1, 2, 2, 3]))):
            if kind in ("family", "grid") and p["kind"] == "family" and p["size"] == size \
                    and rng.random() < 0.7:
                deps.append(f"{p['id']}[{{i}}]")
                parents.append((p, "each", None))
            elif p["kind"] == "family" and rng.random() < 0.25:
                lit = rng.randrange(p["size"])
                deps.append(f"{p['id']}[{lit}]")
                parents.append((p, "one", lit))
            else:
                deps.append(p["id"])
                parents.append((p, "all", None))
        tid = f"{kind[0]}{k}"
        entry = {"id": tid, "kind": kind, "size": size, "parents": parents,
                 "v": rng.randrange(MOD), "reads": False}
        if kind == "cmd":
            ncmd += 1
            task = {"id": tid, "cmd": f"echo {tid} $MPITINY_ATTEMPT $MPITINY_RANK >> {{log}}"}
        else:
            entry["reads"] = bool(parents) and rng.random() < 0.6
            i = "{a},{i}" if kind == "grid" else "{i}" if kind == "family" else None
            task = {"id": tid, "fn": "local_tasks:reader" if entry["reads"] else "local_tasks:leaf",
                    "args": [tid, i, entry["v"], "{log}"]}
            if kind == "family":
                task["foreach"] = {"i": {"range": [0, size]}}
            elif kind == "grid":
                task["foreach"] = {"a": ["x", "y"], "i": {"range": [0, size]}}
        if deps:
            task["deps"] = deps
        if rng.random() < 0.3:
            task["priority"] = rng.randint(-3, 3)
        entry["task"] = task
        entries.append(entry)
    tasks = [e["task"] for e in entries]
    rng.shuffle(tasks)                  # listed in any order
    return {"name": f"random{seed}", "params": {"log": log}, "tasks": tasks}, entries


def instances(entry: dict) -> list:
    """(instance id, i) of an entry's instances; ``i`` is what its element-wise deps match."""
    name = entry["id"]
    if entry["kind"] == "family":
        return [(f"{name}[{i}]", i) for i in range(entry["size"])]
    if entry["kind"] == "grid":
        return [(f"{name}[{a},{i}]", i) for a in "xy" for i in range(entry["size"])]
    return [(name, None)]


def parent_ids(entry: dict, i) -> list:
    out = []
    for p, how, lit in entry["parents"]:
        if how == "all":
            out += [pid for pid, _ in instances(p)]
        elif how == "each":
            out.append(f"{p['id']}[{i}]")
        else:
            out.append(f"{p['id']}[{lit}]")
    return out


def expected_values(entries: list) -> tuple:
    """({instance id: result} of the fn tasks, {instance id: parent ids}), the results as
    ``local_tasks.leaf`` / ``reader`` compute them."""
    values, parents = {}, {}
    for e in entries:
        for tid, i in instances(e):
            parents[tid] = parent_ids(e, i)
            if e["kind"] == "cmd":
                values[tid] = None
                continue
            value = (e["v"] + zlib.crc32(tid.encode())) % MOD
            if e["reads"]:
                value += sum(zlib.crc32(p.encode()) + (values[p] or 0) for p in parents[tid])
            values[tid] = value % MOD
    results = {tid: v for tid, v in values.items() if v is not None}
    return results, parents


def check_random_run(dag: dict, entries: list, run_dir: Path, log: Path, nranks: int) -> dict:
    """Every task once, after its parents; the right values; a clean summary."""
    counts = check_run(load(dag), str(run_dir))
    results, parents = expected_values(entries)
    assert counts == {"done": len(parents), "failed": 0, "upstream_failed": 0}
    assert read_results(str(run_dir)) == results
    calls = [line[0] for line in log_lines(log)]
    assert Counter(calls) == Counter(parents.keys()), "some task did not run exactly once"
    position = {tid: k for k, tid in enumerate(calls)}
    for tid, ps in parents.items():
        late = [p for p in ps if position[p] > position[tid]]
        assert not late, f"{tid} ran before its parents {late[:3]}"
    summary = summary_of(run_dir)
    assert summary["ranks"] == nranks and summary["exit_status"] == 0
    assert summary["done"] == len(parents) and summary["not_run"] == 0
    assert summary["stopped"] is None and summary["cached"] == 0
    rows = read_tasks(str(run_dir))
    assert set(np.unique(rows["rank"]).tolist()) <= set(range(nranks))
    return summary


@pytest.mark.parametrize("nranks", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_dags_run_every_task_once_after_its_parents(tmp_path, nranks, seed):
    dag_seed = 10 * seed + nranks
    log = tmp_path / "ran.log"
    dag, entries = random_dag(dag_seed, str(log))
    status = local(dag, nranks, tmp_path / "run", seed=seed)
    assert status == 0, failures(tmp_path / "run")[:3]
    check_random_run(dag, entries, tmp_path / "run", log, nranks)


@pytest.mark.parametrize("nranks", [33, 100])
def test_many_ranks_learn_the_end_down_the_tree(tmp_path, nranks):
    """Beyond ``control.TREE_RANKS`` ranks the end of a finished run reaches rank 0 only, and
    each rank passes it to its children as it leaves: every rank still leaves (the run
    returns) and every task ran once, after its parents."""
    from mpitiny.engine.control import TREE_RANKS
    assert nranks > TREE_RANKS
    log = tmp_path / "ran.log"
    dag, entries = random_dag(7, str(log))
    status = local(dag, nranks, tmp_path / "run", seed=nranks)
    assert status == 0, failures(tmp_path / "run")[:3]
    check_random_run(dag, entries, tmp_path / "run", log, nranks)


def spy_on_finished(monkeypatch) -> list:
    """The origin rank of every add to rank 0's FINISHED word from now on."""
    from mpitiny.engine.control import FINISHED
    from mpitiny.queue.memory import LocalView
    origins: list = []
    fetch_add, add_block = LocalView.fetch_add, LocalView.fetch_add_block

    def spied_fetch_add(self, rank, disp, value):
        if rank == 0 and disp == FINISHED:
            origins.append(self.rank)
        return fetch_add(self, rank, disp, value)

    def spied_block(self, rank, disp, values):
        if rank == 0 and disp == FINISHED:
            origins.append(self.rank)
        return add_block(self, rank, disp, values)

    monkeypatch.setattr(LocalView, "fetch_add", spied_fetch_add)
    monkeypatch.setattr(LocalView, "fetch_add_block", spied_block)
    return origins


@pytest.mark.parametrize("nranks", [33, 100, 300])
def test_many_ranks_count_their_finishes_up_a_tree(tmp_path, monkeypatch, nranks):
    """Beyond ``control.TREE_RANKS`` ranks the finishes are combined up a ``FANIN``-ary tree:
    only rank 0 and its children add to FINISHED (so no word takes adds from P ranks), every
    task runs once and the run still ends (the combined count reaches the total). The
    ancestors' drain is put off (``DRAIN_SECONDS``) so that only the tree's own path counts.
    300 ranks make three levels (1,000 whole engines in one process take 3.4 GB here: the
    1,000-rank case is ``tests/test_sim.py``'s, on the same ``Control``)."""
    from mpitiny.engine import control
    monkeypatch.setattr(control, "DRAIN_SECONDS", 1e9)
    origins = spy_on_finished(monkeypatch)
    dag = {"name": "wide", "tasks": [
        {"id": "t", "fn": "mpitiny.tasks:null", "foreach": {"i": {"range": [0, 3 * nranks]}}},
        {"id": "end", "fn": "mpitiny.tasks:null", "deps": ["t"]}]}
    counts, summary = checked(dag, nranks, tmp_path / "run", seed=nranks, journal=False)
    assert counts["done"] == 3 * nranks + 1 and not summary["stopped"]
    assert origins and set(origins) <= set(range(control.FANIN + 1))
    if nranks > 2 * control.FANIN:
        assert len(set(origins)) > 1            # the children of rank 0 did add


@pytest.mark.parametrize("nranks", [33, 100])
def test_combined_counts_stay_exact_with_added_tasks_and_draining(tmp_path, monkeypatch,
                                                                  nranks):
    """Tasks that add tasks subtract from FINISHED directly while finishes climb the tree, and
    every rank drains its ancestors' words at every report (``DRAIN_SECONDS`` = 0: the most
    interleaving): the run ends exactly when every added task ran, each once."""
    from mpitiny.engine import control
    monkeypatch.setattr(control, "DRAIN_SECONDS", 0.0)
    import submit_tasks
    tree = (42, 20, 0.124875, 8)
    dag = {"name": "tree", "tasks": [{"id": "root", "fn": "submit_tasks:tree_root",
                                      "args": [*tree, 40, 3, "", 0.0]}]}
    assert local(dag, nranks, tmp_path / "run", seed=nranks) == 0
    results = read_results(str(tmp_path / "run"))
    assert sum(results.values()) == submit_tasks.tree_size(*tree)
    rows = read_tasks(str(tmp_path / "run"))
    assert len(np.unique(rows["gid"])) == len(rows) == len(results)
    summary = summary_of(tmp_path / "run")
    assert summary["done"] == summary["tasks"] == summary["added"] + 1 and not summary["stopped"]


@pytest.mark.parametrize("seed", [0, 1])
def test_a_run_crashed_on_many_ranks_resumes_with_exact_counts(tmp_path, seed):
    """A run on 40 ranks (finishes combined up the tree, tasks added at run time) crashes; the
    resumed run, again on 40 ranks, counts the added tasks it queues again on rank 0 and the
    rest up the tree: it ends when every task has run, each exactly once in the end."""
    import submit_tasks
    tree = (42, 20, 0.124875, 8)
    dag = {"name": "tree", "tasks": [{"id": "root", "fn": "submit_tasks:tree_root",
                                      "args": [*tree, 40, 3, "", 0.0]}]}
    text, out = json.dumps(dag), str(tmp_path / "run")
    with pytest.raises(SimulatedCrash):
        run_local(text, 40, out, seed=seed, crash_after=300 + 200 * seed)
    assert run_local(text, 40, out, seed=seed + 10, max_turns=MAX_TURNS) == 0
    results = read_results(out)
    assert sum(results.values()) == submit_tasks.tree_size(*tree)
    summary = summary_of(out)
    assert summary["incarnation"] == 2 and not summary["stopped"]
    assert 0 < summary["done"] < len(results)        # the crashed run had done some


@pytest.mark.parametrize("nranks", [2, 3, 8])
def test_a_fan_out_spreads_over_the_ranks_by_stealing(tmp_path, nranks):
    """One task releases a family of 300: the rank that ran it queues them all, the others
    steal; the fan-in waits for every one."""
    log = str(tmp_path / "ran.log")
    dag = {"name": "forkjoin", "params": {"log": log}, "tasks": [
        {"id": "src", "fn": "local_tasks:leaf", "args": ["src", None, 1, "{log}"]},
        {"id": "mid", "fn": "local_tasks:reader", "args": ["mid", "{i}", 2, "{log}"],
         "foreach": {"i": {"range": [0, 300]}}, "deps": ["src"]},
        {"id": "sink", "fn": "local_tasks:reader", "args": ["sink", None, 3, "{log}"],
         "deps": ["mid"]}]}
    counts, summary = checked(dag, nranks, tmp_path / "run", seed=nranks)
    assert counts["done"] == 302
    ran_on = {r["rank"] for r in summary["per_rank"] if r["done"]}
    assert len(ran_on) > 1, "the fan-out never spread beyond one rank"
    assert sum(r["steals"] for r in summary["per_rank"]) > 0
    results = read_results(str(tmp_path / "run"))
    src = (1 + zlib.crc32(b"src")) % MOD
    mids = {f"mid[{i}]": (2 + zlib.crc32(f"mid[{i}]".encode()) + zlib.crc32(b"src") + src) % MOD
            for i in range(300)}
    assert {k: results[k] for k in mids} == mids
    assert results["sink"] == (3 + zlib.crc32(b"sink") + sum(
        zlib.crc32(k.encode()) + v for k, v in mids.items())) % MOD


@pytest.mark.parametrize("nranks", [1, 4])
def test_a_long_chain_and_a_wide_root_family(tmp_path, nranks):
    """A chain of 60 (each released task runs next, unqueued) beside 2000 roots split in
    blocks over the ranks."""
    tasks = [{"id": "c0", "fn": "local_tasks:ident", "args": [0]}]
    tasks += [{"id": f"c{k}", "fn": "local_tasks:ident", "args": [k], "deps": [f"c{k - 1}"]}
              for k in range(1, 60)]
    tasks.append({"id": "wide", "fn": "local_tasks:ident", "args": ["{i}"],
                  "foreach": {"i": {"range": [0, 2000]}}, "priority": -1})
    counts, summary = checked({"name": "chain", "tasks": tasks}, nranks, tmp_path / "run")
    assert counts["done"] == 2060
    results = read_results(str(tmp_path / "run"))
    assert results == {**{f"c{k}": k for k in range(60)},
                       **{f"wide[{i}]": i for i in range(2000)}}
    if nranks > 1:
        assert all(r["done"] > 0 for r in summary["per_rank"])


def test_a_chain_runs_in_one_execute_when_its_released_task_is_kept(tmp_path, monkeypatch):
    """``Engine.execute`` runs the task a release kept (``direct``) at once, without leaving
    (``kept_next``): a chain of 40 on one rank is one call; every task still recorded once,
    after its parent."""
    from mpitiny.engine import loop
    monkeypatch.setattr(loop, "REPORT_SECONDS", 1e9)        # no report falls due meanwhile
    ran: list = []
    execute = loop.Engine.execute

    def chained(self, chunk, chain=True):
        before = len(self.records)
        execute(self, chunk, chain=True)
        ran.append(len(self.records) - before)
    monkeypatch.setattr(loop.Engine, "execute", chained)
    tasks = [{"id": "c0", "fn": "local_tasks:ident", "args": [0]}]
    tasks += [{"id": f"c{k}", "fn": "local_tasks:ident", "args": [k], "deps": [f"c{k - 1}"]}
              for k in range(1, 40)]
    counts, _ = checked({"name": "chain", "tasks": tasks}, 1, tmp_path / "run")
    assert counts["done"] == 40 and ran == [40]


@pytest.mark.parametrize("every", [0.0, 1e9])
def test_a_kept_chain_journals_its_ends_together_and_no_start_per_task(tmp_path, monkeypatch,
                                                                       every):
    """A chain run in one ``execute`` journals its tasks' ends every ``CHUNK_SECONDS`` and at
    its end (``chunk_done``), not after each task; its one-task chunks write no START record
    (the ``.now`` file names the task running). Every task has its DONE record all the same."""
    from mpitiny.engine import journaling, loop
    monkeypatch.setattr(loop, "REPORT_SECONDS", 1e9)
    monkeypatch.setattr(loop, "CHUNK_SECONDS", every)
    calls = []
    chunk_done = journaling.ChunkJournal.chunk_done
    monkeypatch.setattr(journaling.ChunkJournal, "chunk_done",
                        lambda self: calls.append(1) or chunk_done(self))
    execute = loop.Engine.execute
    monkeypatch.setattr(loop.Engine, "execute",
                        lambda self, chunk, chain=True: execute(self, chunk, chain=True))
    tasks = [{"id": "c0", "fn": "local_tasks:ident", "args": [0]}]
    tasks += [{"id": f"c{k}", "fn": "local_tasks:ident", "args": [k], "deps": [f"c{k - 1}"]}
              for k in range(1, 40)]
    counts, _ = checked({"name": "chain", "tasks": tasks}, 1, tmp_path / "run")
    assert counts["done"] == 40 and len(calls) == (40 if every == 0 else 1)
    records = []
    for path in jnl.journal_files(str(tmp_path / "run")):
        rec, _ = jnl._valid_records(path)
        records.append(rec)
    rec = np.concatenate(records)
    assert not (rec["kind"] == jnl.START).any()
    assert jnl.read_journals(str(tmp_path / "run"), 40).done.all()


def test_a_lone_task_that_released_nothing_asks_at_once(monkeypatch):
    """``release_children``: when the one task of a chunk (``lone``) released nothing and
    nothing else waits here, the rank reserves a child it counted down (``reserve``), else
    asks for work right away (``ask_first``), its ``.now`` cleared first (the task has ended);
    not when it released a task, ran in a bigger chunk, or has other work queued. A task it
    released runs next (``direct``), other work queued here or not (depth first)."""
    import types

    from mpitiny.engine import loop
    asked, reserving = [], []
    monkeypatch.setattr(loop, "ask_first", lambda e: asked.append(e.journal.now[0]))
    monkeypatch.setattr(loop, "reserve", lambda e: bool(reserving))

    def engine(released, lone=True, queued=False):
        e = types.SimpleNamespace(
            direct=None, lone=lone, journal=types.SimpleNamespace(now=[5, 1]),
            ready=types.SimpleNamespace(board=None, queue_ready=lambda *a: None),
            queue=types.SimpleNamespace(has_work=lambda: queued),
            release=types.SimpleNamespace(finish_one=lambda g, i, keep, early: (released, []),
                                          reserved=None),
            placed=[False], bases=[0], layout=None, rank=0, reserving=False, reserved=None)
        return e
    loop.Engine.release_children(engine([]), 0, [5], [])
    assert asked == [-1]
    loop.Engine.release_children(engine([]), 0, [5], [])
    assert asked == [-1, -1]
    reserving.append(1)                                 # a child reserved: no request
    loop.Engine.release_children(engine([]), 0, [5], [])
    assert asked == [-1, -1]
    reserving.clear()
    for e in (engine([], lone=False), engine([], queued=True)):
        loop.Engine.release_children(e, 0, [5], [])
    assert asked == [-1, -1]
    e = engine([(0, np.array([6]))])
    loop.Engine.release_children(e, 0, [5], [])
    assert asked == [-1, -1] and e.direct == (6, 7)
    e = engine([(0, np.array([6]))], queued=True)    # older tasks queued: kept all the same
    loop.Engine.release_children(e, 0, [5], [])
    assert asked == [-1, -1] and e.direct == (6, 7)


def test_a_kept_task_waits_for_the_loop_when_it_has_something_to_do_first():
    """``kept_next``: the kept task as a chunk, unless the run ends or stops, a report is
    due, or gangs are gathered; rounds count on (the progress thread watches them)."""
    import time
    import types

    from mpitiny.engine.loop import kept_next
    stopping = []
    e = types.SimpleNamespace(direct=(7, 8), direct_stolen=False, runner=types.SimpleNamespace(gang=None),
                              ending=lambda: bool(stopping), reported_at=time.monotonic(),
                              progress=None, rounds=0)
    e.take_direct = lambda: loop_take(e)
    got = kept_next(e)
    assert got.tasks == (7, 8) and e.direct is None and e.rounds == 1
    assert kept_next(e) is None                           # nothing kept
    for blocker in ("stop", "report", "gang"):
        e.direct, e.reported_at, e.runner.gang = (9, 10), time.monotonic(), None
        if blocker == "stop":
            stopping.append(1)
        elif blocker == "report":
            stopping.clear()
            e.reported_at -= 3600
        else:
            e.runner.gang = object()
        assert kept_next(e) is None and e.direct == (9, 10), blocker


def loop_take(e):
    from mpitiny.engine.loop import Engine
    return Engine.take_direct(e)


@pytest.mark.parametrize("fails", [False, True])
def test_the_journal_is_synced_at_the_end_unless_the_run_is_complete_without_failures(
        tmp_path, monkeypatch, fails):
    """A run complete with nothing failed closes its journals without the fsyncs (no rerun
    reads them: summary.json says it is complete); one with a failure keeps them durable."""
    from mpitiny.io import journal
    closed = []
    close = journal.Journal.close
    monkeypatch.setattr(journal.Journal, "close",
                        lambda self, durable=True: closed.append(durable) or close(self, durable))
    tasks = [{"id": "a", "fn": "local_tasks:ident", "args": ["{i}"], "foreach": {"i": {"range": [0, 20]}}}]
    if fails:
        tasks.append({"id": "bad", "fn": "mpitiny.tasks:fail", "args": ["boom"], "deps": ["a"]})
    local({"name": "ends", "tasks": tasks}, 3, tmp_path / "run")
    assert closed == [fails] * 3


# ---------------------------------------------------------------------- failures
def failing_dag() -> dict:
    null = "mpitiny.tasks:null"
    return {"name": "fails", "tasks": [
        {"id": "a", "fn": "local_tasks:ident", "args": ["{i}"], "foreach": {"i": {"range": [0, 6]}}},
        {"id": "bad", "fn": "mpitiny.tasks:fail", "args": ["boom {i}"],
         "foreach": {"i": {"range": [0, 6]}}, "deps": ["a[{i}]"]},
        {"id": "after", "fn": null, "foreach": {"i": {"range": [0, 6]}}, "deps": ["bad[{i}]"]},
        {"id": "end", "fn": null, "deps": ["after"]},
        {"id": "independent", "fn": null, "deps": ["a"]},
        {"id": "shell_bad", "cmd": "echo to-stderr >&2; exit 7"},
        {"id": "after_shell", "fn": null, "deps": ["shell_bad"]}]}


@pytest.mark.parametrize("nranks,seed", [(1, 0), (2, 1), (3, 2), (5, 3)])
def test_failure_propagation(tmp_path, nranks, seed):
    run_dir = tmp_path / "run"
    counts, summary = checked(failing_dag(), nranks, run_dir, seed, expect_status=1)
    assert counts == {"done": 7, "failed": 7, "upstream_failed": 8}
    assert summary["stopped"] is None and summary["not_run"] == 0
    by_id = {f["id"]: f for f in failures(run_dir)}
    assert sorted(by_id) == sorted([f"bad[{i}]" for i in range(6)] + ["shell_bad"])
    rec = by_id["bad[3]"]
    assert "Traceback" in rec["error"] and "RuntimeError: boom 3" in rec["error"]
    assert rec["error"].startswith(f"### task bad[3] failed on rank {rec['rank']} of {nranks} (")
    assert "exited with status 7" in by_id["shell_bad"]["error"]
    assert "to-stderr" in by_id["shell_bad"]["error"]
    assert len(summary["failures_first"]) == 7
    results = read_results(str(run_dir))
    assert results == {f"a[{i}]": i for i in range(6)}
    rows = read_tasks(str(run_dir))
    groups = groups_of(str(run_dir))
    status = {int(r["gid"]): int(r["status"]) for r in rows}
    from mpitiny.io.rundir import DONE, UPSTREAM_FAILED
    for tid in ["end", "after_shell"] + [f"after[{i}]" for i in range(6)]:
        assert status[gid_of(groups, tid)] == UPSTREAM_FAILED, tid
    assert status[gid_of(groups, "independent")] == DONE


@pytest.mark.parametrize("how,expect", [
    ("sys_exit", "SystemExit: 4"),
    ("keyboard", "KeyboardInterrupt"),
    ("raise", "ValueError: bad"),
])
def test_a_python_task_that_exits_or_interrupts_fails_alone(tmp_path, how, expect):
    log = str(tmp_path / "ran.log")
    dag = misbehaving_dag(log, how)
    counts, _ = checked(dag, 2, tmp_path / "run", expect_status=1)
    assert counts == {"done": 41, "failed": 1, "upstream_failed": 1}
    (rec,) = failures(tmp_path / "run")
    assert rec["id"] == "bad" and expect in rec["error"]


def misbehaving_dag(log: str, how: str, **bad_options) -> dict:
    return {"name": f"bad-{how}", "params": {"log": log}, "tasks": [
        {"id": "ok", "fn": "local_tasks:square", "args": ["{i}", "{log}"],
         "foreach": {"i": {"range": [0, 40]}}},
        {"id": "bad", "fn": "local_tasks:misbehave", "args": [how, "{log}"], **bad_options},
        {"id": "after_ok", "fn": "local_tasks:square", "args": [1000, "{log}"], "deps": ["ok"]},
        {"id": "after_bad", "fn": "local_tasks:square", "args": [2000, "{log}"],
         "deps": ["bad"]}]}


@pytest.mark.parametrize("nranks", [1, 2, 3, 40])
def test_max_fails_ends_the_run(tmp_path, nranks):
    dag = {"name": "many-fail", "tasks": [
        {"id": "f", "fn": "mpitiny.tasks:fail", "foreach": {"i": {"range": [0, 2000]}}}]}
    run_dir = tmp_path / "run"
    assert local(dag, nranks, run_dir, max_fails=5) == 1
    summary = summary_of(run_dir)
    assert summary["stopped"] == "max-fails" and 5 <= summary["failed"] < 2000
    assert summary["not_run"] == 2000 - summary["failed"] > 0
    rows = read_tasks(str(run_dir))
    assert len(rows) == summary["failed"] == len(failures(run_dir))
    assert len(np.unique(rows["gid"])) == len(rows)


# ---------------------------------------------------------------------- timeouts
def test_a_python_task_past_its_timeout_fails_and_the_run_goes_on(tmp_path):
    """SIGALRM reaches a task of a simulated rank (run_local installs the rank's guard)."""
    log = str(tmp_path / "ran.log")
    dag = misbehaving_dag(log, "hang", timeout=0.2)
    counts, _ = checked(dag, 2, tmp_path / "run", expect_status=1)
    assert counts == {"done": 41, "failed": 1, "upstream_failed": 1}
    (rec,) = failures(tmp_path / "run")
    assert rec["id"] == "bad" and "TaskTimeout: timed out after 0.2 s" in rec["error"]


def test_a_command_past_its_timeout_is_killed(tmp_path):
    dag = {"name": "cmd-timeout", "tasks": [
        {"id": "slow", "cmd": "sleep 60", "timeout": 0.2},
        {"id": "fine", "cmd": "true"},
        {"id": "after", "cmd": "true", "deps": ["slow"]}]}
    counts, _ = checked(dag, 2, tmp_path / "run", expect_status=1)
    assert counts == {"done": 1, "failed": 1, "upstream_failed": 1}
    (rec,) = failures(tmp_path / "run")
    assert "timed out after 0.2 s: its process group was killed" in rec["error"]


# ---------------------------------------------------------------------- retries
@pytest.mark.parametrize("nranks", [1, 3])
def test_retries_and_attempt_numbers(tmp_path, nranks):
    log = tmp_path / "ran.log"
    dag = {"name": "retry", "params": {"log": str(log)}, "tasks": [
        {"id": "flaky", "fn": "local_tasks:flaky", "args": ["{i}", "{log}", 3],
         "foreach": {"i": {"range": [0, 5]}}, "retries": 2},
        {"id": "hopeless", "fn": "local_tasks:flaky", "args": [9, "{log}", 5]},
        {"id": "cmd", "cmd": 'test "$MPITINY_ATTEMPT" -ge 2'},
        {"id": "after", "fn": "local_tasks:ident", "args": ["ok"], "deps": ["flaky"]}]}
    run_dir = tmp_path / "run"
    counts, summary = checked(dag, nranks, run_dir, expect_status=1, retries=1)
    assert counts == {"done": 7, "failed": 1, "upstream_failed": 0}
    results = read_results(str(run_dir))
    assert all(results[f"flaky[{i}]"] == 3 for i in range(5)) and results["after"] == "ok"
    groups = groups_of(str(run_dir))
    attempt = {int(r["gid"]): int(r["attempt"]) for r in read_tasks(str(run_dir))}
    assert all(attempt[gid_of(groups, f"flaky[{i}]")] == 3 for i in range(5))
    assert attempt[gid_of(groups, "cmd")] == 2 and attempt[gid_of(groups, "hopeless")] == 2
    (rec,) = failures(run_dir)
    assert rec["id"] == "hopeless" and rec["attempt"] == 2
    assert "attempt 2 of flaky[9]" in rec["error"]
    calls = log_lines(log)
    # MPITINY_ATTEMPT as the tasks saw it: 1, 2, 3 for each flaky, 1, 2 for hopeless
    seen = {}
    for tid, att, _ in calls:
        seen.setdefault(tid, []).append(att)
    assert seen == {**{f"flaky[{i}]": ["1", "2", "3"] for i in range(5)},
                    "flaky[9]": ["1", "2"]}
    assert summary["retried"] == 5 * 2 + 1 + 1


@pytest.mark.parametrize("nranks", [1, 2, 3])
def test_a_retried_task_reads_its_inputs_once(tmp_path, nranks):
    """c[0] fails its first attempt; its retry gets the inputs that attempt read (a second
    read would count p's value down twice and free it before the other c read it)."""
    log = str(tmp_path / "ran.log")
    dag = {"name": "readers", "params": {"log": log}, "tasks": [
        {"id": "p", "fn": "local_tasks:parent_bytes"},
        {"id": "c", "fn": "local_tasks:child_of_bytes", "args": ["{i}", "{log}"], "retries": 2,
         "foreach": {"i": {"range": [0, 6]}}, "deps": ["p"]},
        {"id": "d", "fn": "local_tasks:count_inputs", "deps": ["c"]}]}
    counts, summary = checked(dag, nranks, tmp_path / "run", seed=nranks)
    assert counts["done"] == 8 and summary["retried"] == 1
    assert read_results(str(tmp_path / "run"))["d"] == 6


# ---------------------------------------------------------------------- resume
def journaled_done(run_dir: Path, dag: dict) -> set:
    d = load(dag)
    done = jnl.read_journals(str(run_dir), d.total).done
    return {d.task_id(int(gid)) for gid in np.flatnonzero(done)}


def crash_once(dag: dict, nranks: int, run_dir: Path, log: Path, seed: int, mode: str,
               rng: random.Random) -> tuple:
    """Run until a simulated crash that leaves some tasks journaled done, and some not.

    Returns (the journaled-done task ids, the rank that crashed: None between turns).
    ``mode``: "turns" (``crash_after``: between chunks) or "raise" (``MPITINY_FAULT``
    mode=raise on one rank, inside a chunk). The crash point is random; moved earlier when
    the run ends first, later when nothing was journaled done."""
    total = load(dag).total
    victim = rng.randrange(nranks)
    after = rng.randrange(2, total // 2 + 3) if mode == "turns" else \
        rng.randrange(0, total // (2 * nranks) + 2)
    for _ in range(40):
        shutil.rmtree(run_dir, ignore_errors=True)
        log.unlink(missing_ok=True)
        kwargs = {"crash_after": after} if mode == "turns" else \
            {"fault": f"rank={victim}:after={after}:mode=raise"}
        expected = SimulatedCrash if mode == "turns" else RuntimeError
        try:
            run_local(json.dumps(dag), nranks, str(run_dir), RunOptions(quiet=True), seed=seed,
                      max_turns=MAX_TURNS, **kwargs)
        except expected as exc:
            assert mode == "turns" or "fault injected" in str(exc)
            done = journaled_done(run_dir, dag)
            if done and len(done) < total:
                return done, (None if mode == "turns" else victim)
            after = max(1, 2 * after) if not done else after // 2
        else:                 # no crash: the run (or the victim) ran fewer than `after`
            after //= 2
    raise AssertionError("no crash left a partly done run")


@pytest.mark.parametrize("mode", ["turns", "raise"])
@pytest.mark.parametrize("seed", range(6))
def test_resume_after_a_simulated_crash(tmp_path, mode, seed):
    rng = random.Random(seed)
    first, second = rng.choice([1, 2, 3, 4, 8]), rng.choice([1, 2, 3, 5])
    log = tmp_path / "ran.log"
    dag, entries = random_dag(100 + seed, str(log), max_entries=30)
    clean_log = tmp_path / "clean.log"
    clean, _ = random_dag(100 + seed, str(clean_log), max_entries=30)
    assert local(clean, second, tmp_path / "clean", seed=seed) == 0
    run_dir = tmp_path / "run"
    done_before, victim = crash_once(dag, first, run_dir, log, seed, mode, rng)
    calls_before = len(log_lines(log))
    status = local(dag, second, run_dir, seed=seed + 1)
    assert status == 0, failures(run_dir)[:3]
    check_resumed(dag, entries, run_dir, log, done_before, calls_before)
    expected, _ = expected_values(entries)
    assert read_results(str(run_dir)) == read_results(str(tmp_path / "clean")) == expected
    summary = summary_of(run_dir)
    assert summary["incarnation"] == 2 and summary["ranks"] == second
    assert summary["crashed"] == 0          # suspects run alone succeed
    # The crash interrupted no chunk but the victim's (none between turns): every other task
    # that ran before it was journaled done (commands too, also those a child reads)
    ran_before = {tid for tid, _, rank in log_lines(log)[:calls_before] if int(rank) != victim}
    unjournaled = ran_before - done_before
    assert not unjournaled, f"ran before the crash, not journaled done: {sorted(unjournaled)}"


def check_resumed(dag: dict, entries: list, run_dir: Path, log: Path, done_before: set,
                  calls_before: int) -> None:
    """After a resumed run: each task recorded once and after its parents, none that the
    journals marked done ran again, none ran more than twice, cached counted."""
    results, parents = expected_values(entries)
    counts = check_run(load(dag), str(run_dir))
    assert counts == {"done": len(parents), "failed": 0, "upstream_failed": 0}
    calls = [line[0] for line in log_lines(log)]
    again = done_before.intersection(calls[calls_before:])
    assert not again, f"{len(again)} tasks journaled done ran again: {sorted(again)[:5]}"
    ran = Counter(calls)
    assert set(ran) == set(parents), "some task never ran"
    assert max(ran.values()) <= 2, [t for t, n in ran.items() if n > 2][:5]
    assert all(ran[t] == 1 for t in done_before)
    # the resumed incarnation ran the others after their parents (cached ones did not run)
    second = calls[calls_before:]
    position = {tid: k for k, tid in enumerate(second)}
    for tid in second:
        late = [p for p in parents[tid] if position.get(p, -1) > position[tid]]
        assert not late, f"{tid} ran before its parents {late[:3]}"
    summary = summary_of(run_dir)
    assert summary["cached"] == len(done_before) > 0
    assert summary["resumed"]["done_before"] == len(done_before)
    rows = read_tasks(str(run_dir))
    assert np.count_nonzero(rows["attempt"] == 0) == len(done_before)


def command_parent_dag(log: Path) -> dict:
    return {"name": "cmd-parent", "params": {"log": str(log)}, "tasks": [
        {"id": "c", "cmd": "echo c $MPITINY_ATTEMPT $MPITINY_RANK >> {log}"},
        {"id": "more", "fn": "local_tasks:square", "args": ["{i}", "{log}"],
         "foreach": {"i": {"range": [0, 20]}}, "deps": ["c"]},
        {"id": "r", "fn": "local_tasks:count_inputs", "deps": ["c"]}]}


def test_a_finished_command_read_by_a_child_is_not_run_again_after_a_crash(tmp_path):
    """c finishes in the first turn, then each run crashes after one turn: c must be cached
    from the second run on, and the run must end with every task done."""
    log = tmp_path / "ran.log"
    dag = command_parent_dag(log)
    run_dir = tmp_path / "run"
    for _ in range(3):
        with pytest.raises(SimulatedCrash):
            run_local(json.dumps(dag), 1, str(run_dir), RunOptions(quiet=True), crash_after=1,
                      max_turns=MAX_TURNS)
    assert "c" in journaled_done(run_dir, dag)
    counts, _ = checked(dag, 2, run_dir)
    assert counts == {"done": 22, "failed": 0, "upstream_failed": 0}
    assert [line[0] for line in log_lines(log)].count("c") == 1


def test_a_rerun_of_a_complete_run_runs_nothing(tmp_path):
    log = tmp_path / "ran.log"
    dag = command_parent_dag(log)
    run_dir = tmp_path / "run"
    assert local(dag, 2, run_dir) == 0
    ran, summary = log.read_text(), summary_of(run_dir)
    for resume in ("auto", "yes"):
        assert local(dag, 3, run_dir, resume=resume) == 0
    assert log.read_text() == ran and summary_of(run_dir) == summary
    assert [line[0] for line in log_lines(log)].count("c") == 1


@pytest.mark.parametrize("nranks", [1, 2])
def test_a_task_that_crashes_its_rank_fails_after_three_crashes(tmp_path, nranks):
    """A poison task: it takes its rank down (here: a BaseException out of the engine), then
    its child process twice (os._exit): the resumed run runs it alone each time and fails it
    after three crashes; the rest of the DAG finishes; a further resume does not run it."""
    log = tmp_path / "ran.log"
    dag = misbehaving_dag(str(log), "poison")
    run_dir = tmp_path / "run"
    from local_tasks import RankCrash
    with pytest.raises(RankCrash):
        local(dag, nranks, run_dir)
    assert not (run_dir / "summary.json").exists()
    counts, summary = checked(dag, nranks, run_dir, expect_status=1)
    assert counts == {"done": 41, "failed": 1, "upstream_failed": 1}
    assert summary["incarnation"] == 2
    assert summary["crashed"] == 2 and summary["isolated"] >= 2
    (rec,) = failures(run_dir)
    assert rec["id"] == "bad" and "crashed 3 times" in rec["error"] and rec["attempt"] == 3
    assert [att for tid, att, _ in log_lines(log) if tid == "bad"] == ["1", "2", "3"]
    assert sum(1 for tid, _, _ in log_lines(log) if tid == "sq[1000]") == 1
    counts, summary = checked(dag, nranks, run_dir, expect_status=1, resume="yes")
    assert summary["isolated"] == 0 and summary["failed"] == 1
    assert summary["cached"] == 41
    assert [att for tid, att, _ in log_lines(log) if tid == "bad"] == ["1", "2", "3"]


# ---------------------------------------------------------------------- data plane, state
def data_dag(n: int = 24, size: int = 2000) -> dict:
    return {"name": "data", "tasks": [
        {"id": "arr", "fn": "local_tasks:make_array", "args": ["{i}", size],
         "foreach": {"i": {"range": [0, n]}}},
        {"id": "raw", "fn": "local_tasks:make_bytes", "args": ["{i}", size * 4],
         "foreach": {"i": {"range": [0, n]}}},
        {"id": "both", "fn": "local_tasks:array_and_bytes_sum", "args": ["{i}"],
         "foreach": {"i": {"range": [0, n]}}, "deps": ["arr[{i}]", "raw[{i}]"]},
        {"id": "all", "fn": "local_tasks:arrays_total", "deps": ["arr"]},
        {"id": "map", "fn": "local_tasks:split_parts", "args": ["{i}", 4],
         "foreach": {"i": {"range": [0, n]}}},
        {"id": "reduce", "fn": "local_tasks:sum_part", "args": ["{r}"], "part": "{r}",
         "foreach": {"r": {"range": [0, 4]}}, "deps": ["map"]}]}


@pytest.mark.parametrize("nranks,mem_limit", [(1, None), (2, None), (3, 64 << 10), (4, None),
                                              (8, 32 << 10)])
def test_values_travel_between_ranks_as_arrays_bytes_and_parts(tmp_path, nranks, mem_limit):
    n, size = 24, 2000
    run_dir = tmp_path / "run"
    counts, summary = checked(data_dag(n, size), nranks, run_dir, seed=nranks,
                              mem_limit=mem_limit)
    assert counts["done"] == 4 * n + 5
    results = read_results(str(run_dir))
    for i in range(n):
        assert results[f"both[{i}]"] == sum(range(i * size, (i + 1) * size)) + 4 * size
    assert results["all"] == sum(range(n * size))
    for r in range(4):
        assert results[f"reduce[{r}]"] == [(r + 1) * i for i in range(n)]
    if mem_limit:
        assert sum(r["outputs_spilled"] for r in summary["per_rank"]) > 0


def state_dag(n: int, **kwargs) -> dict:
    return {"name": "state", "tasks": [
        {"id": "count", "fn": "local_tasks:count_state", "args": ["{i}"], "kwargs": kwargs,
         "foreach": {"i": {"range": [0, n]}}, "retries": 1},
        {"id": "read", "fn": "local_tasks:read_state", "deps": ["count"]}]}


def check_state(run_dir: Path, n: int) -> None:
    """Every task's updates counted once, one put_if_absent winner per key."""
    results = read_results(str(run_dir))
    got = results["read"]
    assert got["hits"] == n
    assert got["sums"] == [sum(i for i in range(n) if i % 5 == k) for k in range(5)]
    assert got["won"] == 3                      # one put_if_absent winner per key
    winners = {i for i in range(n) if results[f"count[{i}]"] is True}
    assert sorted(i % 3 for i in winners) == [0, 1, 2]
    assert sorted(got["first"]) == sorted(winners)


@pytest.mark.parametrize("nranks", [1, 2, 3, 8])
def test_state_counters_sum_across_ranks(tmp_path, nranks):
    n = 200
    run_dir = tmp_path / "run"
    counts, summary = checked(state_dag(n), nranks, run_dir, seed=nranks)
    assert summary["retried"] == 0
    if nranks > 1:
        assert sum(1 for r in summary["per_rank"] if r["done"]) > 1
    check_state(run_dir, n)


@pytest.mark.parametrize("nranks", [1, 3])
def test_state_updates_of_a_failed_attempt_are_undone(tmp_path, nranks):
    n = 200
    run_dir = tmp_path / "run"
    counts, summary = checked(state_dag(n, fail_every=7), nranks, run_dir, seed=nranks)
    assert summary["retried"] == len(range(0, n, 7))
    check_state(run_dir, n)


@pytest.mark.parametrize("mode", ["turns", "raise"])
@pytest.mark.parametrize("seed", range(3))
def test_state_after_a_crash_and_resume_holds_each_task_s_updates_once(tmp_path, mode, seed):
    """The resumed store replays the updates of the tasks journaled done; the others run
    again (and update again)."""
    rng = random.Random(seed)
    first, second = rng.choice([1, 2, 3, 4]), rng.choice([1, 2, 3])
    n = 200
    dag = state_dag(n, fail_every=11)
    run_dir = tmp_path / "run"
    done_before, _ = crash_once(dag, first, run_dir, tmp_path / "unused.log", seed, mode, rng)
    counts, summary = checked(dag, second, run_dir, seed=seed)
    assert summary["cached"] == len(done_before) > 0
    check_state(run_dir, n)


# ---------------------------------------------------------------------- batch forms
N_BATCH = 400


def batch_dag(log: str, **kwargs) -> dict:
    return {"name": "batchy", "params": {"log": log}, "tasks": [
        {"id": "sq", "fn": "local_tasks:batch_square", "args": ["{i}"],
         "kwargs": {"log": "{log}", **kwargs}, "foreach": {"i": {"range": [0, N_BATCH]}}},
        {"id": "total", "fn": "local_tasks:total", "deps": ["sq"]}]}


def computed(log: Path) -> tuple:
    """(items computed by batch calls, items computed one at a time, batch sizes)."""
    batched, single, sizes = [], [], []
    for line in log.read_text().splitlines():
        kind, *items = line.split()
        if kind.startswith("plus"):
            continue
        (batched if kind == "batch" else single).extend(map(int, items))
        if kind == "batch":
            sizes.append(len(items))
    return batched, single, sizes


@pytest.mark.parametrize("nranks", [1, 2, 4])
def test_a_batched_family_runs_in_chunks_and_each_task_is_recorded_once(tmp_path, nranks):
    log = tmp_path / "computed.log"
    run_dir = tmp_path / "run"
    counts, summary = checked(batch_dag(str(log)), nranks, run_dir, seed=nranks)
    assert counts == {"done": N_BATCH + 1, "failed": 0, "upstream_failed": 0}
    assert read_results(str(run_dir))["total"] == sum(i * i for i in range(N_BATCH))
    batched, single, sizes = computed(log)
    assert sorted(batched + single) == list(range(N_BATCH))     # each item once
    assert max(sizes) > 1 and summary["batched"] == len(batched) and summary["unbatched"] == 0
    assert summary["batches"] == len(sizes)


def test_no_batch_calls_the_function_once_per_task(tmp_path):
    log = tmp_path / "computed.log"
    run_dir = tmp_path / "run"
    counts, summary = checked(batch_dag(str(log)), 2, run_dir, batch=False)
    batched, single, _ = computed(log)
    assert batched == [] and sorted(single) == list(range(N_BATCH))
    assert summary["batched"] == 0
    assert read_results(str(run_dir))["total"] == sum(i * i for i in range(N_BATCH))


@pytest.mark.parametrize("nranks", [1, 3])
def test_a_batch_that_raises_runs_one_by_one_and_only_the_bad_task_fails(tmp_path, nranks):
    log = tmp_path / "computed.log"
    run_dir = tmp_path / "run"
    counts, summary = checked(batch_dag(str(log), bad=213), nranks, run_dir, seed=nranks,
                              expect_status=1)
    assert counts == {"done": N_BATCH - 1, "failed": 1, "upstream_failed": 1}
    batched, single, _ = computed(log)
    assert Counter(batched + single) == Counter(range(N_BATCH))   # 213's chunk ran once, alone
    assert summary["unbatched"] >= 1 and 213 in single
    assert [f["id"] for f in failures(run_dir)] == ["sq[213]"]


def inputs_batch_dag(log: str) -> dict:
    """sq -> plus[i] (batched; reads sq[i] and base, which all plus read) -> plus_total."""
    dag = batch_dag(log)
    dag["tasks"] += [
        {"id": "base", "fn": "local_tasks:base"},
        {"id": "plus", "fn": "local_tasks:batch_plus", "args": ["{i}"], "kwargs": {"log": "{log}"},
         "foreach": {"i": {"range": [0, N_BATCH]}}, "deps": ["sq[{i}]", "base"]},
        {"id": "plus_total", "fn": "local_tasks:plus_total", "deps": ["plus"]}]
    return dag


@pytest.mark.parametrize("nranks", [1, 2, 3])
def test_a_batched_family_that_reads_inputs_gets_each_instance_s_own(tmp_path, nranks):
    log = tmp_path / "computed.log"
    run_dir = tmp_path / "run"
    counts, summary = checked(inputs_batch_dag(str(log)), nranks, run_dir, seed=nranks)
    assert counts["done"] == 2 * N_BATCH + 3
    expected = N_BATCH + sum(i * i for i in range(N_BATCH))
    assert read_results(str(run_dir))["plus_total"] == expected
    plus = [line.split() for line in log.read_text().splitlines() if line.startswith("plus")]
    assert any(kind == "plus-batch" and len(items) > 1 for kind, *items in plus)
    assert sorted(int(i) for _, *items in plus for i in items) == list(range(N_BATCH))


@pytest.mark.parametrize("seed", range(4))
def test_a_batched_run_resumed_after_a_crash_gives_the_same_results(tmp_path, seed):
    """A batch call's kept values are journaled as one unit: all of them are cached or the
    whole chunk runs again."""
    rng = random.Random(seed)
    first, second = rng.choice([1, 2, 3]), rng.choice([1, 2, 4])
    log = tmp_path / "computed.log"
    dag = inputs_batch_dag(str(log))
    run_dir = tmp_path / "run"
    done_before, _ = crash_once(dag, first, run_dir, log, seed, "turns", rng)
    lines_before = log.read_text().splitlines()
    calls_before = len(lines_before)
    computed_before = set()
    for line in lines_before:
        kind, *items = line.split()
        computed_before |= {f"{'plus' if kind.startswith('plus') else 'sq'}[{i}]" for i in items}
    assert computed_before <= done_before      # a crash between turns breaks no chunk
    counts, summary = checked(dag, second, run_dir, seed=seed)
    assert counts["done"] == 2 * N_BATCH + 3
    assert summary["cached"] == len(done_before)
    results = read_results(str(run_dir))
    assert results["plus_total"] == N_BATCH + sum(i * i for i in range(N_BATCH))
    assert results["total"] == sum(i * i for i in range(N_BATCH))
    again = []
    for line in log.read_text().splitlines()[calls_before:]:
        kind, *items = line.split()
        name = "plus" if kind.startswith("plus") else "sq"
        again += [f"{name}[{i}]" for i in items if f"{name}[{i}]" in done_before]
    assert not again, f"tasks journaled done ran again: {again[:5]}"


def two_stencil_ranks(tmp_path, steps: int = 40):
    """Two simulated ranks (``Engine`` on a ``LocalFabric``, as ``run_local`` makes them) of
    Task Bench's stencil_1d at width 2 as listed tasks (one group, count words), started,
    their queues emptied of the roots."""
    from mpitiny.engine.loop import Engine
    from mpitiny.engine.start import plan_run_dir, prepare_run_dir
    from mpitiny.engine.world import LocalFabric
    tasks = [{"id": f"t{t}_{p}", "fn": "local_tasks:ident", "args": [p],
              **({"deps": [f"t{t - 1}_0", f"t{t - 1}_1"]} if t else {})}
             for t in range(steps) for p in range(2)]
    text = json.dumps({"name": "stencil", "tasks": tasks})
    opts = RunOptions(quiet=True)
    dag = load_dag_text(text, source="<local DAG>")
    run_dir = str(tmp_path / "run")
    plan = plan_run_dir(run_dir, dag, text.encode(), {}, opts)
    incarnation, _ = prepare_run_dir(run_dir, dag, None, {}, text, opts, 2, plan)
    fabric = LocalFabric(2)
    engines = [Engine(fabric.world(r), dag, run_dir, opts, None, incarnation, None)
               for r in range(2)]
    for e in engines:
        e.open_journal()
        e.bind()
        e.start()
        while e.queue.claim(lambda first, available: available) is not None:
            pass
    assert len(dag.groups) == 1 and engines[0].spare_cores
    return engines


def claimed(e) -> list:
    got = e.queue.claim(lambda first, available: available)
    return [] if got is None else [int(i) for i in (range(*got) if isinstance(got, tuple) else got)]


@pytest.mark.parametrize("parent_fails", [False, True])
def test_a_reserved_child_runs_on_the_rank_that_reserved_it(tmp_path, parent_fails):
    """``loop.reserve``: rank 0's parent of a stencil step ends first and counts both
    children down to 1: it reserves one. Rank 1's parent ends last: it releases the other
    child only, and rank 0 takes the reserved one as its next chunk (``take_reserved``);
    if rank 1's parent failed, rank 0 records the reserved child and everything after it
    upstream-failed (as the releaser would have), and rank 1 the other child."""
    from mpitiny.engine import loop
    e0, e1 = two_stencil_ranks(tmp_path)
    ready, _ = e0.release.finish_one(0, 0, True)
    assert ready == [] and loop.take_reserved is not None and loop.reserve(e0)
    child, j, _, _ = e0.reserved
    assert loop.take_reserved(e0) is None and e0.reserved is not None      # still waits
    other = 5 - j                                       # the children are instances 2 and 3
    if not parent_fails:
        ready, skipped = e1.release.finish_one(0, 1, True)
        assert [(g, idx.tolist()) for g, idx in ready] == [(child, [other])] and not skipped
        chunk = loop.take_reserved(e0)
        assert chunk.tasks == (j, j + 1) and e0.reserved is None
        return
    ready, skipped = e1.release.finish(0, np.array([1]), np.array([True]))
    assert not ready and {(g, i) for g, idx in skipped for i in idx.tolist()} == {(child, other)}
    e0.unreported_failed = 0
    assert loop.take_reserved(e0) is None and e0.reserved is None
    assert e0.unreported_failed == 2 * 39 - 1          # all after step 0 but ``other``
    assert not e0.queue.has_work()


@pytest.mark.parametrize("queued", [False, True])
def test_a_lone_task_reserves_in_its_count_down(tmp_path, queued):
    """``release_children`` of a lone task whose count-down is the first of a stencil
    step's: the count-down reserves the first child (``Release.finish_one``'s ``reserve``,
    ``took_reserved``), no request is made, and the reserved child runs there once the other
    parent ends, whose count-down releases the other child only (kept to run next:
    ``direct``); with other work queued here, the reservation is handed back at once."""
    from mpitiny.engine import loop
    from mpitiny.queue.layout import COUNT_MASK, RESERVED
    e0, e1 = two_stencil_ranks(tmp_path)
    if queued:
        e0.ready.queue_ready(0, np.array([20]))       # any task, queued on rank 0
    e0.lone = e1.lone = True
    e0.release_children(0, [0], [])
    assert e0.direct is None and e0.queue.asked < 0
    if queued:
        assert e0.reserved is None and claimed(e0) == [20]
        assert not any(int(w) & RESERVED for w in e0.mem.local) and \
            not any(int(w) & RESERVED for w in e1.mem.local)
        return
    child, j, rank, word = e0.reserved
    assert child == 0 and j == 2 and e0.mem.get(rank, word, 1)[0] == 1 | RESERVED
    assert [(c, k) for c, k, _ in e0.release.waiting] == [(0, 3)]    # not reserved after
    assert loop.take_reserved(e0) is None
    e1.release_children(0, [1], [])
    assert e1.direct == (3, 4) and e1.reserved is None
    assert loop.take_reserved(e0).tasks == (2, 3) and e0.reserved is None
    assert not e0.mem.get(rank, word, 1)[0] & COUNT_MASK


@pytest.mark.parametrize("ready_first", [False, True])
def test_a_reservation_taken_back_leaves_the_child_to_its_releaser_or_queues_it(tmp_path,
                                                                                ready_first):
    """``loop.cancel_reserved`` (the rank found other work, stops spinning or leaves): the mark
    is cleared and the rank whose parent ends last releases the child as usual; if that parent
    had ended already (the count reached zero, the child left to the reserving rank), the
    child is queued on the reserving rank, where thieves can take it."""
    from mpitiny.engine import loop
    from mpitiny.queue.layout import RESERVED
    e0, e1 = two_stencil_ranks(tmp_path)
    e0.release.finish_one(0, 0, True)
    assert loop.reserve(e0)
    child, j, rank, word = e0.reserved
    if ready_first:
        ready, _ = e1.release.finish_one(0, 1, True)
        assert j not in {i for _, idx in ready for i in idx.tolist()}
    loop.cancel_reserved(e0)
    assert e0.reserved is None
    if ready_first:
        assert claimed(e0) == [j]
    else:
        assert not e0.queue.has_work() and not e0.mem.get(rank, word, 1)[0] & RESERVED
        ready, _ = e1.release.finish_one(0, 1)
        assert {i for _, idx in ready for i in idx.tolist()} == {2, 3}
