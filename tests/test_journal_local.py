"""The journal (mpitiny.io.journal) without MPI: records, torn tails, damaged values, crashes."""
import os

import numpy as np
import pytest

from mpitiny.io import journal as jnl


def journal(tmp_path, incarnation=1, rank=0):
    (tmp_path / "journal").mkdir(exist_ok=True)
    return jnl.Journal(str(tmp_path), incarnation, rank, initial_records=4)


def test_done_runs_ids_and_values_read_back(tmp_path):
    j = journal(tmp_path)
    j.add(jnl.START, 0, 10)
    j.add(jnl.DONE, 0, 10)
    j.add_ids(jnl.START, np.array([20, 22, 24]))
    j.add_ids(jnl.DONE, np.array([20, 24]))
    j.add_ids(jnl.FAILED, np.array([22]))
    j.add(jnl.START, 30, 32)
    j.add_value(30, 1, b"thirty")
    j.add_value(31, 0, b"[31]")
    j.close()                                    # grew twice past its 4 initial records
    r = jnl.read_journals(str(tmp_path), 40)
    assert r.records == 11 and r.torn == 0
    assert sorted(np.flatnonzero(r.done)) == [*range(10), 20, 24, 30, 31]
    assert r.value(30) == (1, b"thirty") and r.value(31) == (0, b"[31]")
    assert not r.crashes.any()                   # 22 failed: it ended, it did not crash


def test_started_but_unfinished_tasks_crashed_once_per_incarnation(tmp_path):
    for inc in (1, 2):
        j = journal(tmp_path, inc, rank=inc)
        j.add(jnl.START, 0, 4)
        j.add(jnl.DONE, 0, 2)                    # 2 and 3 were running when the rank died
        j.now[0], j.now[1] = 2, 2                # (one batch call of both)
        j.add(jnl.START, 8, 9)
        j.add(jnl.STOPPED, 8, 9)                 # interrupted by a stop request: no crash
        j.sync()                                 # no close: like a killed process
    r = jnl.read_journals(str(tmp_path), 10)
    assert list(r.crashes) == [0, 0, 2, 2, 0, 0, 0, 0, 0, 0]
    assert list(np.flatnonzero(r.done)) == [0, 1]


@pytest.mark.parametrize("running", [(5, 1), (-1, 1)])
def test_only_the_task_running_when_the_rank_died_crashed(tmp_path, running):
    j = journal(tmp_path)
    j.add(jnl.START, 0, 10)
    j.add(jnl.DONE, 0, 5)                        # 5 was running; 6..9 had not started
    j.now[0], j.now[1] = running
    j.sync()
    r = jnl.read_journals(str(tmp_path), 10)
    assert list(np.flatnonzero(r.crashes)) == ([5] if running[0] == 5 else [])
    assert list(np.flatnonzero(r.done)) == [0, 1, 2, 3, 4]


def test_a_journal_without_its_now_file_counts_every_unfinished_task(tmp_path):
    j = journal(tmp_path)
    j.add(jnl.START, 0, 4)
    j.add(jnl.DONE, 0, 2)
    j.sync()
    os.remove(jnl.journal_path(str(tmp_path), 1, 0, ".now"))
    r = jnl.read_journals(str(tmp_path), 4)
    assert list(np.flatnonzero(r.crashes)) == [2, 3]


def test_a_state_record_whose_bytes_are_damaged_undoes_its_whole_unit(tmp_path):
    j = journal(tmp_path)
    j.begin_unit()
    j.add_value(3, jnl.VK_STATE, b'{"add": [], "put": [], "claim": []}')
    j.add_value(4, jnl.VK_DONE, b"")
    j.end_unit()
    j.add_value(7, jnl.VK_STATE, b'{"add": [["6b", 2]], "put": [], "claim": []}')
    j.close()
    r = jnl.read_journals(str(tmp_path), 10)
    assert list(np.flatnonzero(r.done)) == [3, 4, 7] and not r.values
    assert [gid for gid, _ in r.state_updates()] == [3, 7]
    with open(jnl.journal_path(str(tmp_path), 1, 0, ".val"), "r+b") as f:
        f.write(b"X")                            # the first record's bytes
    r = jnl.read_journals(str(tmp_path), 10)
    assert list(np.flatnonzero(r.done)) == [7]
    assert r.state_updates() == [(7, b'{"add": [["6b", 2]], "put": [], "claim": []}')]


def test_a_killed_rank_leaves_a_readable_journal(tmp_path):
    j = journal(tmp_path)
    j.add(jnl.DONE, 0, 3)
    j.sync()
    # never closed: the file keeps its zero-filled tail, which must read as no records
    r = jnl.read_journals(str(tmp_path), 5)
    assert list(np.flatnonzero(r.done)) == [0, 1, 2] and r.torn >= 1


@pytest.mark.parametrize("cut", [1, 17, 39])
def test_torn_last_record_is_ignored(tmp_path, cut):
    j = journal(tmp_path)
    j.add(jnl.DONE, 0, 3)
    j.add(jnl.DONE, 3, 6)
    j.close()
    size = 2 * jnl.RECORD.itemsize
    with open(j.path, "r+b") as f:
        f.truncate(size - jnl.RECORD.itemsize + cut)     # the second record half-written
    r = jnl.read_journals(str(tmp_path), 10)
    assert list(np.flatnonzero(r.done)) == [0, 1, 2] and r.torn == 1


def test_garbage_record_is_ignored(tmp_path):
    j = journal(tmp_path)
    j.add(jnl.DONE, 0, 2)
    j.close()
    with open(j.path, "ab") as f:
        f.write(os.urandom(jnl.RECORD.itemsize * 3))
    r = jnl.read_journals(str(tmp_path), 10)
    assert list(np.flatnonzero(r.done)) == [0, 1] and r.torn == 3


def test_value_beyond_its_file_is_not_done_and_bad_crc_raises(tmp_path):
    j = journal(tmp_path)
    j.add_value(0, 1, b"aaaa")
    j.add_value(1, 1, b"bbbb")
    j.close()
    with open(j.value_path, "r+b") as f:
        f.truncate(6)                                    # value of task 1 lost
    r = jnl.read_journals(str(tmp_path), 2)
    assert list(np.flatnonzero(r.done)) == [0]
    with open(j.value_path, "r+b") as f:
        f.write(b"X")                                    # value of task 0 damaged
    with pytest.raises(OSError, match="damaged"):
        r.value(0)


def test_dag_hash_depends_on_text_and_params():
    a = jnl.dag_hash(b"{}", {"n": 1})
    assert a == jnl.dag_hash(b"{}", {"n": 1})
    assert a != jnl.dag_hash(b"{}", {"n": 2}) != jnl.dag_hash(b"{ }", {"n": 1})


def test_done_counts_per_incarnation(tmp_path):
    for inc in (1, 2):
        j = journal(tmp_path, inc)
        j.add(jnl.DONE, 0, 3) if inc == 1 else j.add(jnl.DONE, 3, 5)
        j.add_value(5 + inc, 0, b"1")
        j.close()
    assert list(jnl.done_counts(str(tmp_path), 8)) == [1, 1, 1, 1, 1, 0, 1, 1]


def test_values_are_written_whole_when_writev_writes_little(tmp_path, monkeypatch):
    """``_write_all`` finishes every value although each ``os.writev`` writes only a few bytes
    (as it may on a full pipe or a signal), and writes more than IOV_MAX values in one go."""
    real = os.writev
    monkeypatch.setattr(jnl.os, "writev",
                        lambda fd, views: real(fd, [bytes(memoryview(views[0])[:5])]))
    datas = [b"", b"abc", b"0123456789" * 3, b"z"] + [b"%d," % i for i in range(1500)]
    path = tmp_path / "v.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    jnl._write_all(fd, datas)
    os.close(fd)
    assert path.read_bytes() == b"".join(datas)
    monkeypatch.setattr(jnl.os, "writev", real)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    jnl._write_all(fd, datas)
    os.close(fd)
    assert path.read_bytes() == b"".join(datas) * 2


@pytest.mark.parametrize("size", [3, 12])           # 12: the vectorised write of records
def test_a_unit_of_values_counts_whole_or_not_at_all(tmp_path, size):
    """A batch's values (``begin_unit``/``end_unit``): one of them may hold what the others'
    would have, so a unit whose last record is missing or torn leaves none of them done."""
    j = journal(tmp_path)
    j.add_value(0, 1, b"alone")
    j.begin_unit()
    for gid in range(10, 10 + size):
        j.add_value(gid, 1, b"value %d" % gid)
    j.end_unit()
    j.add_value(50, 1, b"after")
    j.close()
    whole = jnl.read_journals(str(tmp_path), 60)
    assert sorted(np.flatnonzero(whole.done)) == [0, *range(10, 10 + size), 50]
    assert whole.value(11) == (1, b"value 11")
    raw = np.fromfile(j.path, dtype=jnl.RECORD)
    assert raw["unit"][1:size + 1].tolist() == [(size << 16) | k for k in range(size)]
    assert raw["unit"][[0, size + 1]].tolist() == [0, 0]
    for torn in (1, 2, size):                     # the unit's first, a middle, its last record
        rec = raw.copy()
        rec[torn]["check"] ^= 1
        rec.tofile(j.path)
        r = jnl.read_journals(str(tmp_path), 60)
        assert sorted(np.flatnonzero(r.done)) == [0, 50], torn


def test_a_unit_of_one_value_is_a_plain_record(tmp_path):
    j = journal(tmp_path)
    j.begin_unit()
    j.add_value(3, 1, b"x")
    j.end_unit()
    j.close()
    assert np.fromfile(j.path, dtype=jnl.RECORD)["unit"][0] == 0
    assert list(np.flatnonzero(jnl.read_journals(str(tmp_path), 5).done)) == [3]


def test_a_damaged_value_in_a_unit_undoes_the_whole_unit(tmp_path):
    """A batch call's first value may hold the whole call's result: if one value of its unit
    is damaged, every task of the call runs again (not just the damaged one)."""
    j = journal(tmp_path)
    j.begin_unit()
    for gid, data in ((4, b"[1, 2, 3]"), (5, b"[]"), (6, b"[]")):
        j.add_value(gid, 0, data)
    j.end_unit()
    j.add_value(9, 0, b"[9]")
    j.close()
    assert list(np.flatnonzero(jnl.read_journals(str(tmp_path), 10).done)) == [4, 5, 6, 9]
    with open(jnl.journal_path(str(tmp_path), 1, 0, ".val"), "r+b") as f:
        f.seek(len(b"[1, 2, 3]"))
        f.write(b"X")                            # the unit's second value
    r = jnl.read_journals(str(tmp_path), 10)
    assert list(np.flatnonzero(r.done)) == [9] and set(r.values) == {9}
    assert list(jnl.done_counts(str(tmp_path), 10)) == [0] * 9 + [1]


def test_a_lone_task_named_running_crashed_without_any_record(tmp_path):
    """A chunk of one task writes no START record (the ``.now`` file names it): a rank that
    died in the first task it ran, with no record at all, still counts that task's crash."""
    j = journal(tmp_path)
    j.now[0], j.now[1] = 3, 1
    j.sync()
    r = jnl.read_journals(str(tmp_path), 6)
    assert list(r.crashes) == [0, 0, 0, 1, 0, 0] and not r.done.any()


def test_a_lone_task_named_running_after_other_records_crashed(tmp_path):
    j = journal(tmp_path)
    j.add(jnl.START, 0, 3)
    j.add(jnl.DONE, 0, 3)
    j.now[0], j.now[1] = 4, 1                    # a kept task: no START of its own
    j.sync()
    r = jnl.read_journals(str(tmp_path), 6)
    assert list(np.flatnonzero(r.crashes)) == [4] and list(np.flatnonzero(r.done)) == [0, 1, 2]


@pytest.mark.parametrize("values", [2, 12])
def test_values_given_as_pieces_are_journaled_as_their_bytes_joined(tmp_path, values):
    """``Pieces`` (a Parts value's buffers, never joined) go to the value file end to end,
    with the length and CRC-32 of their bytes joined (one by one, and many at once)."""
    from mpitiny.io.values import Pieces
    j = journal(tmp_path)
    datas = {}
    for gid in range(values):
        parts = [b"a" * gid, memoryview(b"bc"), np.arange(gid, dtype=np.int32)]
        datas[gid] = b"".join(bytes(p) for p in parts)
        j.add_value(gid, 3, Pieces(parts) if gid % 2 else datas[gid])
    j.close()
    r = jnl.read_journals(str(tmp_path), values)
    assert r.done.all()
    assert all(r.value(gid) == (3, datas[gid]) for gid in range(values))


@pytest.mark.parametrize("k", [1, 3, jnl.FEW_RECORDS, jnl.FEW_RECORDS + 1, 40])
def test_a_few_ids_packed_one_by_one_are_the_records_numpy_writes(tmp_path, k):
    """``add_ids`` packs up to ``FEW_RECORDS`` records one by one (as ``add``), more in one
    numpy step: both write the same bytes, and both read back as done."""
    gids = np.arange(0, 3 * k, 3, dtype=np.int64)
    by_one, by_numpy = journal(tmp_path, 1, 0), journal(tmp_path, 1, 1)
    by_one.add_ids(jnl.DONE, gids.tolist(), 2)
    by_numpy.add_ids(jnl.DONE, gids, np.full(k, 2))      # an array of attempts: numpy always
    assert bytes(by_one.mm[:40 * k]) == bytes(by_numpy.mm[:40 * k])
    for j in (by_one, by_numpy):
        j.close()
    r = jnl.read_journals(str(tmp_path), 3 * k)
    assert r.records == 2 * k and sorted(np.flatnonzero(r.done)) == gids.tolist()
