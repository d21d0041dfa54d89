"""Kept task outputs on simulated ranks: window, spill file, reader counts, freeing."""
import random

import numpy as np
import pytest

from mpitiny.io.values import Parts, Pieces, decode, encode, encode_pieces, size_of
from mpitiny.queue.store import FreeList, ResultStore
from mpitiny.queue.memory import LocalBytes, LocalMemory


def test_freelist_first_fit_and_coalescing():
    rng = random.Random(0)
    fl = FreeList(1000)
    held = []
    for _ in range(2000):
        if held and rng.random() < 0.5:
            fl.free(*held.pop(rng.randrange(len(held))))
        else:
            n = rng.randint(1, 60)
            at = fl.alloc(n)
            if at >= 0:
                for a, m in held:
                    assert at + n <= a or a + m <= at, "overlapping allocations"
                held.append((at, n))
    for a, m in held:
        fl.free(a, m)
    assert fl.starts == [0] and fl.sizes == [1000] and fl.used == 0


@pytest.mark.parametrize("value", [{"a": [1, 2]}, None, 3.5, b"\x00raw\xff",
                                   np.arange(12, dtype=np.float32).reshape(3, 4)])
def test_encode_decode_roundtrip(value):
    got = decode(*encode(value))
    if isinstance(value, np.ndarray):
        assert got.dtype == value.dtype and np.array_equal(got, value)
    else:
        assert got == value


def test_object_arrays_are_refused():
    with pytest.raises(TypeError):
        encode(np.array([object()]))


def stores(tmp_path, nranks=2, window=4096, objects=8, mem_limit=None, rss_limit=None):
    counts = LocalMemory(nranks, ResultStore.words(objects))
    buffers = [np.zeros(window, np.uint8) for _ in range(nranks)]
    return [ResultStore(r, LocalBytes(buffers, r), counts.view(r), objects, str(tmp_path / "spill"),
                        mem_limit, rss_limit) for r in range(nranks)]


def test_values_are_freed_when_every_reader_has_read(tmp_path):
    holder, reader = stores(tmp_path)
    loc = holder.keep(b"x" * 1000, readers=2)
    assert holder.in_window() == 1000
    assert reader.fetch(*loc) == b"x" * 1000
    holder.collect()
    assert holder.in_window() == 1000          # one reader still to come
    assert holder.fetch(*loc) == b"x" * 1000   # a local reader
    holder.collect()
    assert holder.in_window() == 0


def test_spill_past_the_limit_and_read_from_another_rank(tmp_path):
    holder, reader = stores(tmp_path, mem_limit=2500)
    locs = [holder.keep(bytes([k]) * 1000, readers=1) for k in range(5)]
    assert holder.kept == 2 and holder.spilled == 3
    assert [reader.fetch(*loc) for loc in locs] == [bytes([k]) * 1000 for k in range(5)]
    holder.collect()
    assert holder.in_window() == 0
    more = holder.keep(b"y" * 2000, readers=1)     # the freed space is used again
    assert holder.kept == 3 and reader.fetch(*more) == b"y" * 2000


def test_fetch_many_reads_every_medium_and_counts_each_read(tmp_path):
    """One batch from three holders (the reader's own window, another rank's window, a
    spill file), values of every kind: each comes back in order, and each holder frees its
    values once every reader has read them (counts and RELEASED decremented per value)."""
    a, b, c = stores(tmp_path, nranks=3, mem_limit=3000)
    values = [b"\x00own", {"k": [1, 2]}, np.arange(5), b"b" * 1000, b"c" * 2900, b"spilled" * 100]
    locs = [a.keep(values[0], readers=2), b.keep(values[1], readers=1),
            b.keep(values[2], readers=1), b.keep(values[3], readers=1),
            c.keep(values[4], readers=1), c.keep(values[5], readers=1)]
    assert c.spilled == 1
    got = a.fetch_many(locs)
    assert got[0] == values[0] and got[1] == values[1] and got[3:] == values[3:]
    assert np.array_equal(got[2], values[2])
    for holder in (b, c):
        holder.collect()
        assert holder.in_window() == 0
    a.collect()
    assert a.in_window() == len(values[0])        # one more reader to come
    assert b.fetch_many([locs[0]]) == [values[0]]
    a.collect()
    assert a.in_window() == 0


def test_parts_whole_or_one_part_from_every_medium(tmp_path):
    """A Parts value read whole is the list of its parts; read with ``part=p`` it is the bytes
    of part p, from the reader's own window (all such values at once), another rank's window
    and a spill file, also with hundreds of parts; a plain value is read whole; a part past
    the end is an error naming the value, read locally or remotely."""
    a, b, c = stores(tmp_path, nranks=3, window=1 << 16, mem_limit=19010)
    small = Parts([b"p0", b"", b"part two"])
    many = Parts([b"%d" % i for i in range(552)])
    assert decode(*encode(small)) == small and isinstance(decode(*encode(small)), Parts)
    locs = [a.keep(small, readers=2), b.keep(small, readers=2), b.keep(many, readers=2),
            c.keep(b"x" * 19000, readers=2), c.keep(small, readers=2), a.keep(many, readers=2),
            a.keep(b"plain", readers=2)]
    assert c.spilled == 1
    got = a.fetch_many(locs, part=2, names=list("abcdefg"))
    assert got == [b"part two", b"part two", b"2", b"x" * 19000, b"part two", b"2", b"plain"]
    last = len(many) - 1
    assert a.fetch_many([locs[2], locs[5]], part=last) == [b"%d" % last] * 2
    whole = a.fetch_many(locs[:1])
    assert whole == [small]
    with pytest.raises(ValueError, match=r"part 3 of m\[1\] was asked for, but it has 3 parts"):
        c.fetch_many(locs[4:5], part=3, names=["m[1]"])
    with pytest.raises(ValueError, match=r"part 3 of m\[2\] was asked for, but it has 3 parts"):
        a.fetch_many(locs[4:5], part=3, names=["m[2]"])


def test_parts_of_buffer_tuples_are_kept_and_read_as_their_bytes_joined(tmp_path):
    """A part may be a tuple of buffers (``encode_pieces`` gives ``Pieces``, never joined):
    kept in a window and in a spill file, read whole or one part, it is the same as the
    joined bytes; ``encode`` of it is the joined encoding."""
    a, b = stores(tmp_path, nranks=2, window=1 << 12, mem_limit=3000)
    arr = np.arange(5, dtype=np.int64)
    pieced = Parts([(b"he", memoryview(b"ad"), arr), b"", (b"x" * 2500,)])
    joined = Parts([b"head" + arr.tobytes(), b"", b"x" * 2500])
    kind, pieces = encode_pieces(pieced)
    assert isinstance(pieces, Pieces) and size_of(pieces) == len(encode(joined)[1])
    assert pieces.join() == encode(joined)[1] == encode(pieced)[1]
    locs = [a.keep_encoded(kind, pieces, readers=2), a.keep_encoded(kind, pieces, readers=2)]
    assert a.spilled == 1                                  # the second one went to disk
    assert b.fetch_many(locs, part=0) == [joined[0]] * 2
    assert b.fetch_many(locs) == [joined] * 2


def test_one_part_of_many_remote_values_and_the_one_without_it(tmp_path):
    """Part p of many values in another rank's window (their heads parsed together), in the
    reader's order; a value with too few parts among them is named in the error."""
    a, b = stores(tmp_path, window=1 << 16, objects=32)
    values = [Parts([b"%d.%d" % (i, p) for p in range(3 + 7 * (i % 2))]) for i in range(12)]
    locs = [b.keep(v, readers=1) for v in values]
    names = [f"m[{i}]" for i in range(12)]
    assert a.fetch_many(locs, part=2, names=names) == [b"%d.2" % i for i in range(12)]
    short = b.keep(Parts([b"x" * 100, b"y" * 100]), readers=1)      # long enough to parse
    more = [b.keep(v, readers=1) for v in values[:9]]
    with pytest.raises(ValueError, match=r"part 2 of m\[9\] was asked for, but it has 2 parts"):
        a.fetch_many(more + [short], part=2, names=names[:9] + ["m[9]"])


def test_process_memory_above_the_limit_sends_outputs_to_disk(tmp_path):
    holder, reader = stores(tmp_path, rss_limit=1)     # any real process is above 1 byte
    loc = holder.keep(b"z" * 100, readers=1)
    assert holder.spilled == 1 and holder.kept == 0
    assert reader.fetch(*loc) == b"z" * 100


def test_records_stay_bounded_and_come_back_whole(tmp_path):
    from mpitiny.io.rundir import DONE, FAILED, UPSTREAM_FAILED, Records, read_tasks, write_rank_table
    (tmp_path / "tasks").mkdir()
    rec = Records(3, str(tmp_path / "tasks" / "rank-00003.rows"), capacity=1000)
    for k in range(25):
        gids = np.arange(k * 400, (k + 1) * 400)
        status = np.where(gids % 7 == 0, FAILED, DONE)
        rec.add_run(gids, status, gids * 1.0, gids * 1.0 + 0.5)
        assert len(rec.rows) <= 2048
    rec.add_run(np.array([10_000]), UPSTREAM_FAILED, [0.0], [0.0])
    assert rec.counts() == {"done": 8571, "failed": 1429, "upstream_failed": 1}
    assert rec.first_start == 0.0 and rec.last_end == 9999.5
    write_rank_table(str(tmp_path), 3, rec)
    rows = read_tasks(str(tmp_path))
    assert sorted(rows["gid"]) == list(range(10_001)) and set(rows["rank"]) == {3}
    assert not (tmp_path / "tasks" / "rank-00003.rows").exists()


def test_held_rows_are_the_rows_add_one_would_write(tmp_path):
    """``Records.hold`` (the hand-off's cheap row) gives, once settled, the rows, counts and
    first start / last end that ``add_one`` gives, whatever comes between: other rows, a
    flush to the rows file (capacity 64 here), a read of the counts, or ``HOLD_ROWS`` held."""
    from mpitiny.io.rundir import DONE, FAILED, Records, read_tasks, write_rank_table
    (tmp_path / "a" / "tasks").mkdir(parents=True)
    (tmp_path / "b" / "tasks").mkdir(parents=True)
    held = Records(1, str(tmp_path / "a" / "tasks" / "rank-00001.rows"), capacity=64)
    added = Records(1, str(tmp_path / "b" / "tasks" / "rank-00001.rows"), capacity=64)
    held.HOLD_ROWS = 10
    for gid in range(300):
        start, end = 100.0 - gid * 0.25, 200.0 + gid * 0.5
        attempt, queued, stolen = 1 + gid % 3, gid * 0.125, bool(gid % 2)
        if gid % 37 == 5:
            for rec in (held, added):
                rec.add_one(gid, FAILED, start, end, attempt, queued=queued, stolen=stolen)
        else:
            held.hold(gid, start, end, attempt, queued, stolen)
            added.add_one(gid, DONE, start, end, attempt, queued=queued, stolen=stolen)
        if gid == 150:
            assert held.counts() == added.counts()
            assert not held.held
    assert held.held                   # some still held: the reads below settle them
    assert len(held) == len(added) == 300
    assert held.counts() == added.counts() == {"done": 292, "failed": 8, "upstream_failed": 0}
    assert (held.first_start, held.last_end) == (added.first_start, added.last_end)
    assert (held.first_start, held.last_end) == (100.0 - 299 * 0.25, 200.0 + 299 * 0.5)
    for name, rec in (("a", held), ("b", added)):
        write_rank_table(str(tmp_path / name), 1, rec)
    a, b = (np.sort(read_tasks(str(tmp_path / name)), order="gid") for name in "ab")
    assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
