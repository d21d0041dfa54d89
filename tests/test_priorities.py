"""Priorities across ranks (``mpitiny.queue.levels``): among ready tasks anywhere in the run,
a higher priority starts first, not only within the queue of the rank that released it.

The scenario of the issue: every rank busy with priority-0 tasks; a task placed on rank 0
(``trigger``) releases 8 urgent children (priority 10) there. Checked as an order of starts in
the task records, never as a duration: every urgent task starts before any priority-0 task that
starts after their release (the end of ``trigger``). In-process on simulated ranks
(``run_local``, many interleavings; without the board the order fails, which the control test
shows), then on 4 MPI ranks. Also: every task exactly once with several levels (``check_run``),
and the board's counts back at zero when the run ends.

Urgent tasks placed on a rank busy with a long task (pushed into its inbox): the other ranks
take them out of that inbox before any more priority-0 work. In-process the long task is a
rank held with its BUSY word set and no turns (``held_busy``), and on MPI ranks a sleep.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from mpitiny.dag.load import load_dag_text
from mpitiny.engine import local as local_module
from mpitiny.engine import ready as ready_module
from mpitiny.engine.local import run_local, take_turns
from mpitiny.engine.loop import Engine
from mpitiny.engine.types import RunOptions
from mpitiny.io.check import check_run
from mpitiny.io.rundir import read_tasks
from mpitiny.queue.memory import LocalMemory
from mpitiny.queue.stealq import StealQueue, region_size

NULL = "mpitiny.tasks:null"


def urgent_dag(nranks: int, per_rank: int = 64, urgent: int = 8, after: int = 0,
               levels: tuple = (10,)) -> dict:
    """``bg``: ``per_rank`` priority-0 tasks per rank (roots, a block each); ``trigger``
    on rank 0 waits for rank 0's ``after``-th of them; ``u<p>``: ``urgent`` children of
    ``trigger`` at each priority ``p`` of ``levels``."""
    tasks = [{"id": "bg", "fn": NULL, "foreach": {"i": {"range": [0, per_rank * nranks]}}},
             {"id": "trigger", "fn": NULL, "rank": 0, "deps": [f"bg[{after}]"]}]
    tasks += [{"id": f"u{p}", "fn": NULL, "foreach": {"i": {"range": [0, urgent]}},
               "priority": p, "deps": ["trigger"]} for p in levels]
    return {"name": "urgent", "tasks": tasks}


def starts_by_group(dag: dict, run_dir) -> tuple:
    """``({group name: start times}, end of trigger)`` from the task records."""
    loaded = load_dag_text(json.dumps(dag), source="<test>")
    rows = read_tasks(str(run_dir))
    names = group_names(loaded, rows)
    starts = {name: rows["start"][names == name] for name in set(names.tolist())}
    release = float(rows["end"][names == "trigger"][0])
    return starts, release, loaded


def group_names(loaded, rows) -> np.ndarray:
    """The group name of every task row."""
    g = np.searchsorted(loaded.base, rows["gid"], side="right") - 1
    return np.array([grp.name for grp in loaded.groups])[g]


def order_violations(higher: np.ndarray, lower: np.ndarray, release: float) -> int:
    """Lower-priority tasks that started after the release while a higher one still waited."""
    return int(np.count_nonzero((lower > release) & (lower < higher.max())))


def run_checked(dag: dict, nranks: int, run_dir, seed: int) -> None:
    status = run_local(json.dumps(dag), nranks, str(run_dir), RunOptions(quiet=True),
                       seed=seed, max_turns=200_000)
    assert status == 0
    check_run(load_dag_text(json.dumps(dag), source="<test>"), str(run_dir))


@pytest.fixture
def board_counts(monkeypatch):
    """The board's counts as each engine sees them when it stops (None: no board)."""
    seen: list = []
    stop = Engine.stop

    def stopping(self):
        board = self.ready.board
        seen.append(None if board is None else board.counts())
        stop(self)

    monkeypatch.setattr(Engine, "stop", stopping)
    return seen


@pytest.mark.parametrize("nranks,seed", [(2, 0), (3, 1), (4, 2), (4, 3), (4, 4), (7, 5)])
def test_urgent_tasks_start_before_any_later_priority_0_task(tmp_path, nranks, seed,
                                                             board_counts):
    dag = urgent_dag(nranks)
    run_checked(dag, nranks, tmp_path / "run", seed)
    starts, release, _ = starts_by_group(dag, tmp_path / "run")
    later = starts["bg"][starts["bg"] > release]
    assert len(later), "the release came after every priority-0 task: nothing was checked"
    assert order_violations(starts["u10"], starts["bg"], release) == 0
    assert board_counts == [[0]] * nranks          # every counted task was counted off


def test_a_release_under_way_is_on_the_board_before_its_children_are_counted(
        tmp_path, monkeypatch, board_counts):
    """From the moment ``trigger`` ends until its urgent children are queued, the board
    already counts one urgent task (``ReadyQueue.around_release``): a rank about to claim a
    priority-0 task in that window looks for the urgent one instead. Every count ends at 0."""
    seen: list = []
    release = Engine.release_children

    def releasing(self, g, instances, failed):
        if self.dag.groups[g].name == "trigger":
            seen.append(self.ready.board.counts())
        release(self, g, instances, failed)

    monkeypatch.setattr(Engine, "release_children", releasing)
    run_checked(urgent_dag(3), 3, tmp_path / "run", seed=0)
    assert seen == [[1]], seen                 # the one announced, none of the 8 yet
    assert board_counts == [[0]] * 3


@pytest.mark.parametrize("nranks,seed", [(5, 0), (7, 1), (9, 2)])
def test_a_tiered_board_keeps_urgent_tasks_first(tmp_path, monkeypatch, nranks, seed,
                                                  board_counts):
    """The board in groups of 2 ranks (as beyond 64 ranks), the summary read afresh every
    time: urgent tasks released in rank 0's group still start before any later priority-0
    task anywhere, and every group's count ends at 0."""
    import mpitiny.queue.levels as levels
    monkeypatch.setattr(levels, "GROUP_RANKS", 2)
    monkeypatch.setattr(levels, "READ_SECONDS", 0.0)
    dag = urgent_dag(nranks)
    run_checked(dag, nranks, tmp_path / "run", seed)
    starts, release, _ = starts_by_group(dag, tmp_path / "run")
    assert len(starts["bg"][starts["bg"] > release]), "nothing was checked"
    assert order_violations(starts["u10"], starts["bg"], release) == 0
    assert board_counts == [[0]] * nranks


def test_without_the_board_urgent_tasks_wait_behind_other_ranks_work(tmp_path, monkeypatch):
    """The control: with the board off (as before it), the other ranks start priority-0 tasks
    while urgent ones wait on rank 0; so the test above does test something."""
    monkeypatch.setattr(ready_module, "PriorityBoard", lambda *a, **k: None)
    dag = urgent_dag(4)
    run_checked(dag, 4, tmp_path / "run", seed=2)
    starts, release, _ = starts_by_group(dag, tmp_path / "run")
    assert order_violations(starts["u10"], starts["bg"], release) > 0


@pytest.mark.parametrize("seed", range(4))
def test_three_levels_in_order(tmp_path, seed, board_counts):
    """Released together on rank 0: priority 10 before 5 before 0, across the 4 ranks."""
    dag = urgent_dag(4, levels=(5, 10))
    run_checked(dag, 4, tmp_path / "run", seed)
    starts, release, _ = starts_by_group(dag, tmp_path / "run")
    assert order_violations(starts["u10"], starts["u5"], release) == 0
    assert order_violations(starts["u5"], starts["bg"], release) == 0
    assert order_violations(starts["u10"], starts["bg"], release) == 0
    assert board_counts == [[0, 0]] * 4


def many_levels_dag(seed: int) -> dict:
    """Families and plain tasks at 40 priorities (more than the board's levels: they share),
    placed and not, in a few layers."""
    rng = np.random.default_rng(seed)
    tasks = []
    for k in range(12):
        task = {"id": f"f{k}", "fn": NULL, "foreach": {"i": {"range": [0, int(rng.integers(1, 60))]}},
                "priority": int(rng.integers(-20, 20))}
        if k >= 3:
            task["deps"] = [f"f{int(j)}" for j in rng.choice(k, size=int(rng.integers(1, 3)),
                                                              replace=False)]
        if rng.random() < 0.3:
            task["rank"] = "{i}"
        tasks.append(task)
    tasks += [{"id": f"p{k}", "fn": NULL, "priority": int(rng.integers(-20, 20)),
               "deps": [f"f{int(rng.integers(0, 12))}"]} for k in range(30)]
    return {"name": f"levels{seed}", "tasks": tasks}


@pytest.mark.parametrize("nranks,seed", [(1, 0), (3, 1), (5, 2), (8, 3)])
def test_many_levels_every_task_once_and_the_board_ends_at_zero(tmp_path, nranks, seed,
                                                                 board_counts):
    dag = many_levels_dag(seed)
    run_checked(dag, nranks, tmp_path / "run", seed)
    assert len(board_counts) == nranks and board_counts[0] is not None
    assert all(c == [0] * len(board_counts[0]) for c in board_counts)


def test_a_single_level_has_no_board(tmp_path, board_counts):
    dag = urgent_dag(3, levels=(0,))
    run_checked(dag, 3, tmp_path / "run", seed=0)
    assert board_counts == [None] * 3


# ---------------------------------------------------------------------- placed on a busy rank
def test_a_thief_for_higher_work_takes_only_higher_inbox_entries_of_a_busy_rank():
    mem = LocalMemory(3, region_size(4, 8, 16))
    queues = [StealQueue(mem.view(r), 0, 4, 8, 16) for r in range(3)]
    prio_of = lambda gid: 10 if gid >= 100 else 0       # noqa: E731
    assert queues[0].push_remote(1, 0, 5) == 5
    assert queues[0].push_remote(1, 100, 108) == 108
    assert queues[2].steal(1, 10, prio_of) is None        # rank 1 is idle: it takes them itself
    queues[1].set_busy(True)
    assert queues[2].steal(1, 10) is None                 # no priority lookup: slots only
    assert queues[2].steal(1, 10, prio_of) == (None, [(100, 108)])
    assert queues[2].steal(1, 10, prio_of) is None
    assert queues[2].steal(1) == (None, [(0, 5)])         # late binding takes any entry
    assert queues[1].take_inbox() == []


def placed_urgent_dag(nranks: int, home: int = 1) -> dict:
    """``urgent_dag`` with the urgent tasks placed on rank ``home`` (``"rank"``): released on
    rank 0, they are pushed into ``home``'s inbox."""
    dag = urgent_dag(nranks)
    dag["tasks"][-1]["rank"] = home
    return dag


def held_busy(rank: int):
    """A ``take_turns`` in which ``rank`` runs a long task: its BUSY word set and no turns,
    until the other ranks find nothing to do in three rounds in a row; then the usual turns."""
    def turns(engines: list, rng, crash_after, max_turns: int) -> None:
        held = engines[rank]
        held.queue.set_busy(True)
        others = [e for e in engines if e is not held]
        idle = 0
        for _ in range(max_turns):
            if idle == 3 or not others:
                break
            before = sum(len(e.records) for e in others)
            rng.shuffle(others)
            for engine in list(others):
                engine.bind()
                engine.guard.install()
                try:
                    if not engine.step():
                        others.remove(engine)
                finally:
                    engine.guard.uninstall()
            idle = idle + 1 if sum(len(e.records) for e in others) == before else 0
        held.queue.set_busy(False)
        take_turns(engines, rng, crash_after, max_turns)
    return turns


@pytest.mark.parametrize("nranks,seed", [(2, 0), (3, 1), (4, 2), (4, 3), (7, 4)])
def test_urgent_tasks_placed_on_a_busy_rank_start_first_elsewhere(tmp_path, monkeypatch,
                                                                  nranks, seed, board_counts):
    monkeypatch.setattr(local_module, "take_turns", held_busy(1))
    dag = placed_urgent_dag(nranks)
    run_checked(dag, nranks, tmp_path / "run", seed)
    starts, release, loaded = starts_by_group(dag, tmp_path / "run")
    later = starts["bg"][starts["bg"] > release]
    assert len(later), "the release came after every priority-0 task: nothing was checked"
    assert order_violations(starts["u10"], starts["bg"], release) == 0
    rows = read_tasks(str(tmp_path / "run"))
    assert 1 not in rows["rank"][group_names(loaded, rows) == "u10"].tolist()
    assert board_counts == [[0]] * nranks


# ---------------------------------------------------------------------- on MPI ranks
def mpi_urgent_dag() -> dict:
    """4 ranks each busy with 10 sleeping tasks of its own: 50 ms on rank 0, 100, 105 and 110
    ms on ranks 1-3; ``trigger`` (50 ms, on rank 0, after its second task) releases 8 urgent 50
    ms tasks there at ~150 ms, 40-50 ms after the other ranks' last task ends and 50-70 ms
    before their next (a rank that reads the board in the moment between the release and the
    update of the board may still start one lower task, and on the network path of a loaded
    machine that moment lasts milliseconds: not what this test is about)."""
    tasks = [{"id": f"bg{r}", "fn": "mpitiny.tasks:sleep",
              "args": [0.05 if r == 0 else 0.095 + 0.005 * r],
              "foreach": {"i": {"range": [0, 10]}}, "rank": r} for r in range(4)]
    tasks.append({"id": "trigger", "fn": "mpitiny.tasks:sleep", "args": [0.05], "rank": 0,
                  "deps": ["bg0[1]"]})
    tasks.append({"id": "u10", "fn": "mpitiny.tasks:sleep", "args": [0.05], "priority": 10,
                  "foreach": {"i": {"range": [0, 8]}}, "deps": ["trigger"]})
    return {"name": "urgent-mpi", "tasks": tasks}


def run_on_four_ranks(python_module, tmp_path, dag: dict) -> tuple:
    """``dag`` run on 4 MPI ranks and checked (every task once, after its parents): the
    start times by group, the urgent tasks' release, the task rows and their group names."""
    path = tmp_path / "dag.json"
    path.write_text(json.dumps(dag))
    out = tmp_path / "run"
    proc = python_module(4, "mpitiny", "run", str(path), "--out", str(out), "-q", timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    starts, release, loaded = starts_by_group(dag, out)
    check_run(loaded, str(out))
    rows = read_tasks(str(out))
    names = group_names(loaded, rows)
    return starts, release, rows, names


def test_urgent_tasks_first_across_four_mpi_ranks(python_module, tmp_path):
    dag = mpi_urgent_dag()
    starts, release, rows, names = run_on_four_ranks(python_module, tmp_path, dag)
    assert len(set(rows["rank"][names == "u10"].tolist())) > 1, "no other rank took one"
    background = np.concatenate([starts[f"bg{r}"] for r in range(4)])
    assert order_violations(starts["u10"], background, release) == 0


def mpi_placed_urgent_dag() -> dict:
    """``mpi_urgent_dag`` with rank 1 busy with one 1.5 s task (``long``) and the urgent tasks
    placed on rank 1: released on rank 0 while ``long`` runs, they wait in rank 1's inbox
    unless another rank takes them out (ranks 0, 2 and 3 are busy for ~0.3-0.9 s more)."""
    dag = mpi_urgent_dag()
    tasks = [t for t in dag["tasks"] if t["id"] != "bg1"]
    tasks.append({"id": "long", "fn": "mpitiny.tasks:sleep", "args": [1.5], "rank": 1})
    tasks[-2]["rank"] = 1
    return {"name": "urgent-placed-mpi", "tasks": tasks}


def test_urgent_tasks_placed_on_a_busy_mpi_rank_start_first_elsewhere(python_module, tmp_path):
    dag = mpi_placed_urgent_dag()
    starts, release, rows, names = run_on_four_ranks(python_module, tmp_path, dag)
    assert float(rows["start"][names == "long"][0]) < release < float(rows["end"][names == "long"][0])
    background = np.concatenate([starts[f"bg{r}"] for r in (0, 2, 3)])
    assert len(background[background > release]), "nothing was checked"
    assert order_violations(starts["u10"], background, release) == 0
