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


def twin_words(dag, nranks: int) -> tuple:
    """``dag``'s layout on ``nranks`` and two copies of every rank's words, initialised alike:
    one for each of the two ways that run in lockstep."""
    layout = Layout(dag, nranks, 0)
    mems = [LocalMemory(nranks, int(layout.nwords.max())) for _ in range(2)]
    for mem in mems:
        for r in range(nranks):
            layout.init_words(r, mem.words[r])
    return layout, mems


def roots(dag, layout) -> list:
    """``(group, instance)`` of every task that waits for none."""
    ready = [(g.index, i) for g in dag.groups for i in layout.waiting_for_none(g.index)] \
        if any(g.deps for g in dag.groups) else []
    ready += [(g.index, i) for g in dag.groups if not g.deps for i in range(g.size)]
    return list(dict.fromkeys((int(g), int(i)) for g, i in ready))


def count_word(layout, child: int, j: int) -> tuple:
    """``(rank, word)`` of instance ``j`` of ``child``'s count word (what ``fetch_add`` names)."""
    rank, pos = layout.owner(child, j)
    return rank, int(layout.counts0[rank]) + int(layout.count_base[child][rank]) + pos


def sole(layout, child: int, j: int) -> bool:
    """Whether instance ``j`` of ``child`` starts waiting for one task only (its count word
    starts at 1): ``finish_one`` releases it without counting it down."""
    vec = layout.count_vec.get(child)
    return int(layout.count_init[child] if vec is None else vec[j]) == 1


def same_words(mems, nranks: int) -> None:
    """The two copies' words are equal (both ways leave a sole instance's count word at 1)."""
    for r in range(nranks):
        differ = np.flatnonzero(mems[0].words[r] != mems[1].words[r]).tolist()
        assert not differ, (r, differ)


def drive(dag, nranks: int, rng: random.Random, fail_prob: float) -> int:
    """Run ``dag`` both ways in lockstep; returns how many single successes were compared."""
    layout, mems = twin_words(dag, nranks)
    rel = [[Release(layout, mem.view(r)) for r in range(nranks)] for mem in mems]
    ready = roots(dag, layout)
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
        same_words(mems, nranks)
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


def placed_family(pattern: str, steps: int, width: int) -> list:
    """A Task Bench family with each column on a rank, as its MPI implementation owns them."""
    return [{**t, "rank": "{i}"} for t in family(pattern, steps, width)]


PLACED = {**{f"placed_{p}": (lambda p=p: load(placed_family(p, 10, 4)))
             for p in ("stencil_1d", "stencil_1d_periodic", "fft", "tree", "nearest")},
          "placed_chain": lambda: load(chain(40, 3))}


class LoggedMemory:
    """A rank's view of ``LocalMemory`` that logs each ``fetch_add`` target into ``log``."""

    def __init__(self, view, log: list) -> None:
        self.view, self.log = view, log

    def fetch_add(self, rank: int, disp: int, delta: int) -> int:
        self.log.append(("count", rank, int(disp)))
        return self.view.fetch_add(rank, disp, delta)

    def fetch_add_two(self, rank: int, disp: int, delta: int, disp2: int, delta2: int) -> tuple:
        return self.fetch_add(rank, disp, delta), self.fetch_add(rank, disp2, delta2)

    def fetch_add_block(self, rank: int, start: int, block):
        self.log.extend(("count", rank, start + k) for k in np.flatnonzero(block).tolist())
        return self.view.fetch_add_block(rank, start, block)

    def __getattr__(self, name):
        return getattr(self.view, name)


@pytest.mark.parametrize("nranks", [2, 3, 4])
@pytest.mark.parametrize("case", sorted(PLACED))
def test_finish_one_sends_placed_children_home_first(case, nranks):
    """With ``hand_off``'s ``send``, ``finish_one`` hands each released instance placed on another
    rank to ``send`` (and no longer returns it), the moment its count reaches zero and before
    counting down any sibling placed here; what it returns and sends together is what
    ``finish`` releases, and an instance whose inbox is full (``send`` returns False) comes
    back as ready."""
    dag = CASES.get(case, PLACED[case])()
    rng = random.Random(zlib.crc32(f"{case} {nranks}".encode()))
    layout, mems = twin_words(dag, nranks)
    log: list = []
    fast = [Release(layout, LoggedMemory(mems[0].view(r), log)) for r in range(nranks)]
    slow = [Release(layout, mems[1].view(r)) for r in range(nranks)]
    for r, rel in enumerate(fast):
        def send(home, child, j, r=r):
            assert home == layout.home_of(child, j) != r
            ok = rng.random() < 0.8              # else: the home's inbox is full
            if ok:
                log.append(("sent", child, j))
            return ok
        rel.hand_off(r, send, None)
    ready = roots(dag, layout)
    seen, sent_total, ordered = set(), 0, 0
    while ready:
        g, i = ready.pop(rng.randrange(len(ready)))
        assert (g, i) not in seen
        seen.add((g, i))
        r = rng.randrange(nranks)
        log.clear()
        got, _ = fast[r].finish_one(g, i)
        want, _ = slow[r].finish(g, np.array([i]))
        sent = [(c, j) for kind, c, j in log if kind == "sent"]
        assert flat(got) | set(sent) == flat(want) and not flat(got) & set(sent)
        at = {e: k for k, e in enumerate(log)}
        for c, j in sent:                        # before any sibling placed here is counted
            for c2, j2 in flat(want):
                if c2 == c and layout.home_of(c2, j2) == r and sole(layout, c2, j2):
                    assert ("count", *count_word(layout, c2, j2)) not in at
                elif c2 == c and layout.home_of(c2, j2) == r:
                    assert at[("sent", c, j)] < at[("count", *count_word(layout, c2, j2))]
                    ordered += 1
        sent_total += len(sent)
        ready += sorted(flat(want))
    assert len(seen) == dag.total
    assert sent_total > 0
    assert ordered > 0 or case in ("placed_chain", "placed_tree")   # their children: sole


@pytest.mark.parametrize("nranks", [1, 2, 3])
@pytest.mark.parametrize("case", sorted(c for c in CASES if c.startswith(("family", "listed"))))
def test_finish_one_publishes_what_it_does_not_keep_at_once(case, nranks):
    """With ``keep`` (this rank runs the first instance returned), every other instance a
    count-down releases is handed to ``publish`` right after its own count-down, not after
    its siblings'; what it returns and publishes together is what ``finish`` releases."""
    dag = CASES[case]()
    rng = random.Random(zlib.crc32(f"{case} {nranks} publish".encode()))
    layout, mems = twin_words(dag, nranks)
    log: list = []
    fast = [Release(layout, LoggedMemory(mems[0].view(r), log)) for r in range(nranks)]
    slow = [Release(layout, mems[1].view(r)) for r in range(nranks)]
    for r, rel in enumerate(fast):
        rel.hand_off(r, None, lambda child, j: log.append(("published", child, j)))
    ready = roots(dag, layout)
    seen, published_total = set(), 0
    while ready:
        g, i = ready.pop(rng.randrange(len(ready)))
        seen.add((g, i))
        r = rng.randrange(nranks)
        log.clear()
        got, _ = fast[r].finish_one(g, i, keep=True)
        want, _ = slow[r].finish(g, np.array([i]))
        published = [(c, j) for kind, c, j in log if kind == "published"]
        assert flat(got) | set(published) == flat(want) and not flat(got) & set(published)
        assert bool(got) == bool(want)              # the first one found is kept
        for k, event in enumerate(log):
            if event[0] == "published" and sole(layout, *event[1:]):
                assert ("count", *count_word(layout, *event[1:])) not in log
            elif event[0] == "published":
                assert log[k - 1] == ("count", *count_word(layout, *event[1:]))
        published_total += len(published)
        ready += sorted(flat(want))
    assert len(seen) == dag.total
    assert published_total > 0 or case.startswith("listed") or "no_comm" in case


def test_a_child_that_waits_for_one_task_only_is_released_without_an_atomic():
    """A tree's children each wait for one task (here through gates: each task its own
    group): finishing it releases both with no count-down (their words stay at 1, never read
    again); a stencil's wait for two, and are counted down."""
    dag = load(listed("tree", 6, 2))
    layout, mems = twin_words(dag, 2)
    log: list = []
    ready, _ = Release(layout, LoggedMemory(mems[0].view(0), log)).finish_one(0, 0)
    assert len(flat(ready)) == 2 and log == []
    dag = load(listed("stencil_1d", 6, 2))
    layout, mems = twin_words(dag, 2)
    ready, _ = Release(layout, LoggedMemory(mems[0].view(0), log)).finish_one(0, 0)
    assert ready == [] and len(log) == 2 and {kind for kind, *_ in log} == {"count"}


@pytest.mark.parametrize("failed", [None, (1,), (1, 5, 6)])
@pytest.mark.parametrize("nranks", [1, 2, 3])
def test_finish_counts_down_only_the_instances_that_wait_for_several(nranks, failed):
    """``finish`` of a chunk of parents (the batch path, one ``Get_accumulate`` per block for
    more than FEW children, one atomic each for fewer) releases the child instances that
    wait for one task only with no count-down, as ``finish_one`` does: ``c[{i}]`` waits for
    ``a[{i}]`` and ``a[{i}-n]``, so its first n instances wait for one task, the rest for two;
    a failed parent's children are upstream-failed either way."""
    for n, size in ((4, 8), (20, 40)):          # 4 counted (one atomic each), 20 (blocks)
        dag = load([{"id": "a", "cmd": "true", "foreach": {"i": {"range": [0, size]}}},
                    {"id": "c", "cmd": "true", "foreach": {"i": {"range": [0, size]}},
                     "deps": ["a[{i}]", f"a[{{i}}-{n}]"]}])
        layout, mems = twin_words(dag, nranks)
        log: list = []
        mask = None if failed is None else np.isin(np.arange(size), failed)
        ready, skipped = Release(layout, LoggedMemory(mems[0].view(0), log)).finish(
            0, np.arange(size), mask)
        lost = set() if failed is None else {j for p in failed for j in (p, p + n) if j < size}
        assert flat(ready) == {(1, j) for j in range(size)} - {(1, j) for j in lost}
        assert flat(skipped) == {(1, j) for j in lost}
        assert {tuple(w) for _, *w in log} == {count_word(layout, 1, j) for j in range(n, size)}
        assert all(mems[0].words[r][w] == 1 for r, w in (count_word(layout, 1, j)
                                                         for j in range(n)))


@pytest.mark.parametrize("way", ["finish_one", "finish"])
@pytest.mark.parametrize("parent_failed", [False, True])
def test_a_reserved_child_is_left_to_the_rank_that_reserved_it(way, parent_failed):
    """A count word marked ``RESERVED`` (an idle rank will run that instance: the engine's
    ``reserve``) that a count-down brings to zero is neither released nor upstream-failed
    by that count-down, on every path (one atomic, two together, a few, blocks, a gate's
    share); the word then holds the mark, a zero count and the failed parents' marks, for
    the reserving rank to read."""
    from mpitiny.queue.layout import COUNT_MASK, POISON_BITS, RESERVED
    dag = load(listed("stencil_1d", 50, 2))         # one group of listed tasks, count words
    layout, mems = twin_words(dag, 2)
    first, last = Release(layout, mems[0].view(0)), Release(layout, mems[0].view(1))
    assert first.finish_one(0, 0) == ([], []) and len(first.waiting) == 2
    child, j, count = first.waiting[0]
    rank, word = count_word(layout, child, j)
    assert count == 1 and mems[0].view(0).cas(rank, word, 1, 1 | RESERVED) == 1
    if parent_failed:
        ready, skipped = last.finish(0, np.array([1]), np.array([True]))
    elif way == "finish_one":
        ready, skipped = last.finish_one(0, 1)
    else:
        ready, skipped = last.finish(0, np.array([1]))
    others = {(child, k) for k in (2, 3)} - {(child, j)}
    assert (flat(skipped) if parent_failed else flat(ready)) == others
    assert (child, j) not in flat(ready) | flat(skipped)
    left = int(mems[0].words[rank][word])
    assert left & RESERVED and not left & COUNT_MASK and bool(left & POISON_BITS) == parent_failed
    for n, size in ((4, 8), (20, 40)):          # a few (one atomic each), blocks
        dag = load([{"id": "a", "cmd": "true", "foreach": {"i": {"range": [0, size]}}},
                    {"id": "c", "cmd": "true", "foreach": {"i": {"range": [0, size]}},
                     "deps": ["a[{i}]", f"a[{{i}}-{n}]"]}])
        layout, mems = twin_words(dag, 2)
        rank, word = count_word(layout, 1, n + 1)
        mems[0].words[rank][word] |= RESERVED
        ready, skipped = Release(layout, mems[0].view(0)).finish(0, np.arange(size))
        assert flat(ready) == {(1, k) for k in range(size)} - {(1, n + 1)} and not skipped
        assert int(mems[0].words[rank][word]) == RESERVED


@pytest.mark.parametrize("nranks", [1, 2, 3])
@pytest.mark.parametrize("other_way", ["plain", "reserving", "failed"])
@pytest.mark.parametrize("order", ["first", "last"])
def test_finish_one_reserves_the_first_of_a_pair_in_its_count_down(order, other_way, nranks):
    """``finish_one(..., reserve=True)`` on a stencil step (width 2: both children wait for
    both parents), the other parent finished plainly, reserving too, or failed. Counted
    down first, it reserves the first child in the same flush (``reserved`` names it,
    ``waiting`` the other only) and the other parent's count-down then releases, or marks
    upstream-failed, the other child only, leaving the first's word at a zero count with the
    mark (held twice if both reserved: the next bit up) and the failed parent's marks, for the
    reserving rank to read. Counted down last, it reserves nothing and releases what
    ``finish_one`` without ``reserve`` releases."""
    from mpitiny.queue.layout import COUNT_MASK, POISON_BITS, RESERVED
    dag = load(listed("stencil_1d", 50, 2))
    layout, mems = twin_words(dag, nranks)
    t = next(t for t in range(1, 48)
             if count_word(layout, 0, 2 * t + 2)[0] == count_word(layout, 0, 2 * t + 3)[0])
    a, b = 2 * t + 2, 2 * t + 3                  # the children of parents 2t and 2t + 1
    ours, other = Release(layout, mems[0].view(0)), Release(layout, mems[0].view(nranks - 1))
    plain, plain_other = Release(layout, mems[1].view(0)), Release(layout, mems[1].view(0))
    rank, word = count_word(layout, 0, a)

    def other_ends(release):
        if other_way == "failed":
            return release.finish(0, np.array([2 * t + 1]), np.array([True]))
        return release.finish_one(0, 2 * t + 1, reserve=other_way == "reserving")

    if order == "first":
        assert ours.finish_one(0, 2 * t, reserve=True) == ([], [])
        assert ours.reserved == (0, a, rank, word)
        assert [(c, j) for c, j, _ in ours.waiting] == [(0, b)]
        assert int(mems[0].words[rank][word]) == 1 | RESERVED
        ready, skipped = other_ends(other)
        assert (flat(skipped) if other_way == "failed" else flat(ready)) >= {(0, b)}
        assert (0, a) not in flat(ready) | flat(skipped) and other.reserved is None
        left = int(mems[0].words[rank][word])
        assert not left & COUNT_MASK and bool(left & POISON_BITS) == (other_way == "failed")
        assert left == (2 * RESERVED if other_way == "reserving" else left | RESERVED)
        return
    ready, skipped = other_ends(other)
    assert not ready and not skipped
    other_ends(plain_other)
    ready, skipped = ours.finish_one(0, 2 * t, reserve=True)
    expected = plain.finish_one(0, 2 * t)
    assert ours.reserved is None
    assert (flat(ready), flat(skipped)) == (flat(expected[0]), flat(expected[1]))
    if other_way == "reserving":          # the other reserved the first: ours releases the other
        assert other.reserved == (0, a, rank, word) and flat(ready) == {(0, b)}
        assert int(mems[0].words[rank][word]) == 2 * RESERVED
    else:
        assert (flat(skipped) if other_way == "failed" else flat(ready)) >= {(0, a), (0, b)}
