"""The shared state store on simulated ranks (no MPI)."""
import random

import numpy as np
import pytest

from mpitiny import state
from mpitiny.queue.memory import LocalBytes, LocalMemory
from mpitiny.state import StateStore, StateStoreFull


def stores(nranks, slots=64, heap=1 << 16):
    mem = LocalMemory(nranks, StateStore.words(slots))
    buffers = [np.zeros(heap, np.uint8) for _ in range(nranks)]
    return [StateStore(mem.view(r), 0, slots, LocalBytes(buffers, r)) for r in range(nranks)]


def test_add_put_get_put_if_absent_across_ranks():
    a, b, c = stores(3)
    assert a.add("n", 5) == 5 and b.add("n", 2) == 7 and c.get("n") == 7
    assert a.put_if_absent(b"k", {"x": 1}) is True
    assert b.put_if_absent(b"k", {"x": 2}) is False
    assert c.get(b"k") == {"x": 1}
    b.put("k", [1, 2])
    assert a.get("k") == [1, 2]
    assert a.get("missing", "dflt") == "dflt"
    assert dict(c.items()) == {b"n": 7, b"k": [1, 2]}


def test_collisions_and_probing_keep_keys_apart():
    (s,) = stores(1, slots=16)
    keys = [f"key{i}" for i in range(16)]
    for i, k in enumerate(keys):
        assert s.put_if_absent(k, i)
    assert all(s.get(k) == i for i, k in enumerate(keys))
    with pytest.raises(StateStoreFull):
        s.put_if_absent("one too many")


def test_random_ops_match_a_dict():
    rng = random.Random(3)
    ranks = stores(4, slots=256)
    ref: dict = {}
    for _ in range(2000):
        s = rng.choice(ranks)
        k = f"k{rng.randrange(60)}"
        op = rng.random()
        if op < 0.4:
            n = rng.randint(-5, 5)
            if k in ref and not isinstance(ref[k], int):
                continue
            ref[k] = ref.get(k, 0) + n
            assert s.add(k, n) == ref[k]
        elif op < 0.6:
            inserted = s.put_if_absent(k, 1)
            assert inserted == (k not in ref)
            ref.setdefault(k, 1)
        elif op < 0.7:
            ref[k] = [k, 1]
            s.put(k, [k, 1])
        else:
            assert s.get(k, None) == ref.get(k)
    assert {k.decode(): v for k, v in ranks[0].items()} == ref


def test_module_functions_work_outside_a_run():
    state.use(None)
    assert state.add("x", 3) == 3
    assert state.put_if_absent("y") and not state.put_if_absent("y")
    assert dict(state.items()) == {b"x": 3, b"y": 1}
    state.use(None)


def test_a_failed_attempt_s_updates_are_undone():
    a, b = stores(2)
    b.add("n", 10)
    a.task = 7
    assert a.add("n", 5) == 15
    a.put("k", {"v": 1})
    a.undo()
    a.task = -1
    assert b.get("n") == 10 and b.get("k") is None
    b.put("k", 3)
    a.task = 8
    a.put("k", 4)
    b.put("k", 5)                      # changed again since: the undo must not clobber it
    a.undo()
    assert b.get("k") == 5


def test_put_if_absent_answers_the_claiming_task_again_and_no_other():
    a, b = stores(2)
    a.task = 3
    assert a.put_if_absent("w") is True
    a.undo()                           # a claim stays: the same task asks again
    assert a.put_if_absent("w") is True
    b.task = 4
    assert b.put_if_absent("w") is False
    b.task = -1
    assert b.put_if_absent("w") is False


def test_take_log_then_replay_rebuilds_the_store_on_any_number_of_ranks():
    (a,) = stores(1)
    logs = []
    for gid in range(6):
        a.task = gid
        a.add("n", gid)
        a.put("last", gid)
        a.put_if_absent(f"w{gid % 3}", gid)
        logs.append((gid, a.take_log()))
        assert a.take_log() is None    # the log starts over
    a.task = -1
    want = dict(a.items())
    for nranks in (1, 2, 3):
        fresh = stores(nranks)
        for s in fresh:
            s.replay(logs)
        assert dict(fresh[0].items()) == want
