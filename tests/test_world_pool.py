"""Pooled RMA memories (``MpiWorld.pooled``): memories of the same size on every rank share a
few ``Win.Allocate`` windows at their own offsets, and stay independent words and bytes; ranks
that ask for different pooled memories are a clear error at ``open``."""
from __future__ import annotations

import textwrap

import pytest

import mpirun as harness

pytestmark = pytest.mark.mpi

POOLED = """
    import sys
    import numpy as np
    from mpi4py import MPI
    from mpitiny.engine.world import MpiWorld

    world = MpiWorld(MPI.COMM_WORLD)
    me, P = world.rank, world.nranks
    a, b = world.words(3), world.words(1000)
    own = world.words(5 + me, same_everywhere=False)
    x, y = world.bytes(100), world.bytes(50)
    big = world.bytes((32 << 20) + 8)               # beyond a pool's room: a window of its own
    assert a.window is b.window and x.window is y.window, "not pooled"
    assert own.window is not a.window and big.window is not x.window
    assert (a.base, b.base, x.base, y.base) == (0, 3, 0, 104), (a.base, b.base, x.base, y.base)
    a.local[:] = 11 * (me + 1)
    b.local[:] = 7
    own.local[:] = -1
    windows = [a, b, own, x, y, big]
    world.open(windows)
    right = (me + 1) % P
    for _ in range(5):
        b.fetch_add(right, 999, 1)
    a.add(right, 2, 100)
    y.write(right, 10, b"pooled!")
    world.barrier()
    assert list(a.get(me, 0, 3)) == [11 * (me + 1)] * 2 + [11 * (me + 1) + 100], a.local
    assert int(b.local[999]) == 12 and int(b.local[0]) == 7 and (own.local == -1).all()
    assert bytes(y.local[10:17]) == b"pooled!" and not x.local.any()
    assert y.read(right, 10, 7) == b"pooled!"
    world.barrier()
    world.close(windows)
    world.free(windows)
    again = world.words(4)                         # a new pool once the old ones are freed
    assert again.base == 0 and again.window is not a.window
    world.open([again])
    world.close([again])
    world.free([again])
    print(f"<pooled ok {me}>", flush=True)
"""

MISMATCH = """
    from mpi4py import MPI
    from mpitiny.engine.world import MpiWorld

    world = MpiWorld(MPI.COMM_WORLD)
    a = world.words(10 + world.rank)               # differs between ranks, yet pooled
    try:
        world.open([a])
    except RuntimeError as exc:
        print(f"<refused {world.rank}: {exc}>", flush=True)
    else:
        print(f"<accepted {world.rank}>", flush=True)
"""


def script(tmp_path, name, body):
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return str(path)


@pytest.mark.parametrize("n", [1, 4])
def test_pooled_memories_share_windows_and_keep_their_own_words(tmp_path, n):
    res = harness.mpirun(n, [script(tmp_path, "pooled.py", POOLED)], timeout=120, check=True)
    assert sorted(res.stdout.count(f"<pooled ok {r}>") for r in range(n)) == [1] * n, res.stdout


def test_ranks_asking_for_different_pooled_memories_are_refused(tmp_path):
    res = harness.mpirun(2, [script(tmp_path, "mismatch.py", MISMATCH)], timeout=120)
    assert res.stdout.count("<refused") == 2 and "same_everywhere=False" in res.stdout, res.stdout
