"""``Release.finish_one`` (one succeeded instance: a DAG's hand-off) against ``Release.finish``:
two copies of the same words driven in the same random order, every single success released
by ``finish_one`` in one copy and ``finish`` in the other, failures by ``finish`` in both.
Both must release and skip the same instances and leave the same words, on listed tasks
(a chain with rank hints, Task Bench's graphs listed), families with offsets (Task Bench's
family forms: a stencil's merged maps, fft, tree, nearest), literal deps, gates and
random DAGs."""
from __future__ import annotations

import json
import random
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from mpitiny.dag.load import load_dag_text
from mpitiny.queue.layout import Layout
from mpitiny.queue.memory import LocalMemory
from mpitiny.queue.release import Release

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from _taskbench_graph import family_tasks, graph  # noqa: E402
from test_release_local import random_dag  # noqa: E402


def load(tasks: list):
    return load_dag_text(json.dumps({"name": "t", "tasks": tasks}), "dag.json")


def chain(links: int, ranks: int) -> list:
    return [{"id": f"c{k}", "cmd": "true", "rank": k % ranks,
             **({"deps": [f"c{k - 1}"]} if k else {})} for k in range(links)]


def listed(pattern: str, steps: int, width: int) -> list:
    out = []
    for t, p, deps in graph(pattern, steps, width):
        task = {"id": f"t{t}_{p}", "cmd": "true"}
        if deps:
            task["deps"] = [f"t{t - 1}_{d}" for d in dict.fromkeys(deps)]
        out.append(task)
    return out


def family(pattern: str, steps: int, width: int) -> list:
    return [{**t, "cmd": "true"} for t in family_tasks(pattern, steps, width)]


def mixed() -> list:
    """A gate, a literal dep, an element-wise identity and a fan-out of more than FEW."""
    return [{"id": "a", "cmd": "true", "foreach": {"i": {"range": [0, 40]}}},
            {"id": "b", "cmd": "true", "foreach": {"i": {"range": [0, 40]}}, "deps": ["a[{i}]"]},
            {"id": "one", "cmd": "true", "deps": ["a[3]"]},
            {"id": "all", "cmd": "true", "deps": ["b"]},
            {"id": "fan", "cmd": "true", "foreach": {"j": {"range": [0, 30]}},
             "deps": ["one"]}]


def drive(dag, nranks: int, rng: random.Random, fail_prob: float) -> int:
    """Run ``dag`` both ways in lockstep; returns how many single successes were compared."""
    layout = Layout(dag, nranks, 0)
    mems = [LocalMemory(nranks, int(layout.nwords.max())) for _ in range(2)]
    for mem in mems:
        for r in range(nranks):
            layout.init_words(r, mem.words[r])
    rel = [[Release(layout, mem.view(r)) for r in range(nranks)] for mem in mems]
    ready = [(g.index, i) for g in dag.groups for i in layout.waiting_for_none(g.index)] \
        if any(g.deps for g in dag.groups) else []
    ready += [(g.index, i) for g in dag.groups if not g.deps for i in range(g.size)]
    ready = list(dict.fromkeys((int(g), int(i)) for g, i in ready))
    seen, compared = set(), 0
    while ready:
        g, i = ready.pop(rng.randrange(len(ready)))
        assert (g, i) not in seen
        seen.add((g, i))
        r = rng.randrange(nranks)
        if rng.random() < fail_prob:
            got = [rel[k][r].finish(g, np.array([i]), np.array([True])) for k in range(2)]
        else:
            got = [rel[0][r].finish_one(g, i), rel[1][r].finish(g, np.array([i]))]
            compared += 1
        (fast_ready, fast_skipped), (slow_ready, slow_skipped) = got
        assert flat(fast_ready) == flat(slow_ready), (g, i)
        assert flat(fast_skipped) == flat(slow_skipped), (g, i)
        for r2 in range(nranks):
            assert np.array_equal(mems[0].words[r2], mems[1].words[r2]), (g, i, r2)
        seen.update(flat(fast_skipped))
        ready += sorted(flat(fast_ready))
    assert len(seen) == dag.total
    return compared


def flat(pairs: list) -> set:
    return {(int(g), int(i)) for g, idx in pairs for i in idx}


def shifted_join() -> list:
    """Each parent instance has one child instance, through an offset (not the identity), and
    each child two parents: a failed parent poisons a child that the other then counts down
    alone (``finish_one``'s one-child path, skipping)."""
    return [{"id": "a", "cmd": "true", "foreach": {"i": {"range": [0, 40]}}},
            {"id": "b", "cmd": "true", "foreach": {"i": {"range": [0, 40]}}},
            {"id": "c", "cmd": "true", "foreach": {"i": {"range": [0, 38]}},
             "deps": ["a[{i}+1]", "b[{i}+2]"]}]


CASES = {
    "chain": lambda: load(chain(60, 3)),
    "shifted_join": lambda: load(shifted_join()),
    "mixed": lambda: load(mixed()),
    **{f"listed_{p}": (lambda p=p: load(listed(p, 12, 4)))
       for p in ("stencil_1d", "fft", "tree", "nearest", "random_nearest", "all_to_all")},
    **{f"family_{p}": (lambda p=p: load(family(p, 12, 4)))
       for p in ("stencil_1d", "stencil_1d_periodic", "fft", "tree", "nearest", "no_comm")},
    **{f"family_{p}_width2": (lambda p=p: load(family(p, 12, 2)))
       for p in ("stencil_1d", "stencil_1d_periodic", "fft", "tree", "nearest")},
}


@pytest.mark.parametrize("fail_prob", [0.0, 0.1, 0.4])
@pytest.mark.parametrize("nranks", [1, 2, 3])
@pytest.mark.parametrize("case", sorted(CASES))
def test_finish_one_matches_finish(case, nranks, fail_prob):
    rng = random.Random(zlib.crc32(f"{case} {nranks} {fail_prob}".encode()))
    compared = drive(CASES[case](), nranks, rng, fail_prob)
    assert compared > 0 or fail_prob


@pytest.mark.parametrize("seed", range(40))
def test_finish_one_matches_finish_on_random_dags(seed):
    rng = random.Random(seed)
    dag = random_dag(rng, placed=seed >= 20)
    drive(dag, rng.choice([1, 2, 3, 8]), rng, rng.choice([0.0, 0.2]))
