"""The per-rank journal: what finished, so that a killed or requeued run resumes without loss.

Files, under ``RUN_DIR/journal/``::

    run.json                    the DAG's hash, the incarnation count, whether the last one
                                ended complete (written by rank 0, atomically)
    run-0002.rank-00003.jnl     rank 3's records in incarnation 2 (fixed 40-byte records)
    run-0002.rank-00003.val     the values of rank 3's tasks that other tasks read (``inputs``),
                                end to end; records give offset, length and CRC-32
    run-0002.rank-00003.now     which task(s) rank 3 is running now: two int64 words, the
                                first task id and how many (one batch call), first = -1 between
                                chunks (memory-mapped, one store per task)

A record is ``(lo, hi, length, kind, vkind, attempt, vcrc, check, unit)``:

* ``START lo hi``: tasks ``[lo, hi)`` are about to run (written before they start; a chunk of
  one task has none: the ``.now`` file names it while it runs, and that is all a reader needs);
* ``DONE lo hi``: they all finished without error and returned nothing another task reads;
* ``DONE gid off length``: one task finished; its kept value is ``length`` bytes at ``off`` of
  the ``.val`` file (``vkind``: how it was encoded, ``vcrc``: its CRC-32). The values of one
  batch call (``mpitiny.with_batch``) form a *unit*: the j-th of its k records, written in a
  row, carries ``unit`` = k * 2**16 + j, and they count only if all k are valid (one value
  may hold what the others' would have: a unit is kept whole or not at all);
* ``DONE gid off length`` with ``vkind`` ``VK_STATE``: the task's updates to the shared
  state store (``mpitiny.queue.state``, its net effect as JSON), replayed when resumed; with
  ``VK_DONE``: no value, the task is done (the other tasks of a batch call whose updates the
  first one's ``VK_STATE`` record holds, in one unit with it). A state record whose CRC fails
  makes its whole unit not done (the tasks run again, so their updates are made once);
* ``FAILED lo hi``: they failed (they run again when resumed);
* ``STOPPED lo hi``: they were interrupted by a stop request (not a crash);
* ``CRASHED gid``: the task, run alone in a child process, took that process down.
* ``DONE key off length`` with ``vkind`` ``VK_ADDED``: a task added while the run went on
  (``mpitiny.submit``; ``key`` >= ``ADDED_BIT``, ``mpitiny.io.added``), its payload (what it
  runs, pickled) as the value; ``DONE key key+1`` once it ran. Readers of the DAG's own tasks
  ignore both (keys lie beyond every gid); ``Resumed.added_pending`` gives the tasks added and
  not done, which a resumed run queues again.

The journal file is memory-mapped: appending a record is a store into the page cache, with no
system call, yet it survives the process being killed (``kill -9``) at any instant. ``sync``
(``msync`` + ``fsync`` of the value file) runs every ``SYNC_SECONDS`` and at exit (not at the exit
of a run complete without failures: no rerun reads its journal), so a machine
crash loses at most a few seconds. Each record carries a checksum of its fields (``check``),
so a torn or never-written record (zeros) is recognised and ignored; a ``DONE`` whose value
fails its CRC counts as not done.

Reading (``read_journals``, on every rank at start-up, the same answer everywhere): a task is
*done* if some incarnation has a DONE record for it; a task that its rank's ``.now`` file names
as running and that this incarnation never finished, failed or stopped has *crashed* once in
that incarnation (the other tasks of its chunk had not started, or had finished without their
records: they simply run again; without a ``.now`` file, every task STARTed and not ended
counts as crashed); each CRASHED record is one more crash. Tasks with crashes
run alone in a child process when resumed (``mpitiny.engine.resume``), and fail once they have crashed
``max_crashes`` times.
"""
from __future__ import annotations

import errno
import glob
import json
import mmap
import os
import struct
import zlib
from typing import TYPE_CHECKING

import numpy as np

from mpitiny.arrays import distinct
from mpitiny.io.commit import write_atomic
from mpitiny.io.values import buffers_of, size_of

if TYPE_CHECKING:
    import threading     # imported when the first fsync thread starts

START, DONE, FAILED, STOPPED, CRASHED = 1, 2, 3, 4, 5
VK_STATE, VK_DONE = 250, 251     # vkinds of DONE records that hold no kept value
VK_ADDED = 252                   # and of an added task's payload (``mpitiny.io.added``)
RECORD = np.dtype([("lo", "<i8"), ("hi", "<i8"), ("length", "<i8"), ("kind", "u1"),
                   ("vkind", "u1"), ("attempt", "<u2"), ("vcrc", "<u4"), ("check", "<u4"),
                   ("unit", "<u4")])
SYNC_SECONDS = 2.0
FEW_RECORDS = 16      # ``add_ids`` packs this many records one by one, more in one numpy step
_PACK = struct.Struct("<qqqBBHIII").pack_into
assert struct.calcsize("<qqqBBHIII") == RECORD.itemsize
_M = (1 << 64) - 1
_K = (0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0x27D4EB2F165667C5,
      0x94D049BB133111EB)
_SALT = 0x6D707469


def _write_all(fd: int, datas: list) -> None:
    """Append ``datas`` (``bytes``-like, or ``Pieces``) end to end with ``os.writev`` (no
    joined copy), to the last byte."""
    views = [memoryview(b).cast("B") for d in datas for b in buffers_of(d) if len(b)]
    at = 0
    while at < len(views):
        done = os.writev(fd, views[at:at + 1024])    # IOV_MAX is at least 1024 on Linux
        while at < len(views) and done >= views[at].nbytes:
            done -= views[at].nbytes
            at += 1
        if done:
            views[at] = views[at][done:]


def _crc(data) -> int:
    """CRC-32 of an encoded value (``bytes`` or ``Pieces``: of its pieces end to end)."""
    crc = 0
    for b in buffers_of(data):
        crc = zlib.crc32(b, crc)
    return crc


def _check(lo: int, hi: int, length: int, meta: int, unit: int = 0) -> int:
    """The record checksum (the same formula as ``_checks``, on Python ints)."""
    x = (lo * _K[0] + hi * _K[1] + length * _K[2] + meta * _K[3] + unit * _K[4] + _SALT) & _M
    return ((x >> 32) ^ x) & 0xFFFFFFFF


def _checks(rec: np.ndarray) -> np.ndarray:
    meta = (rec["kind"].astype(np.uint64) | (rec["vkind"].astype(np.uint64) << np.uint64(8))
            | (rec["attempt"].astype(np.uint64) << np.uint64(16))
            | (rec["vcrc"].astype(np.uint64) << np.uint64(32)))
    with np.errstate(over="ignore"):
        x = (rec["lo"].astype(np.uint64) * np.uint64(_K[0]) + rec["hi"].astype(np.uint64) * np.uint64(_K[1])
             + rec["length"].astype(np.uint64) * np.uint64(_K[2]) + meta * np.uint64(_K[3])
             + rec["unit"].astype(np.uint64) * np.uint64(_K[4]) + np.uint64(_SALT))
    return ((x >> np.uint64(32)) ^ x) & np.uint64(0xFFFFFFFF)


def _meta(kind: int, vkind: int, attempt: int, vcrc: int) -> int:
    return kind | (vkind << 8) | (attempt << 16) | (vcrc << 32)


def journal_dir(run_dir: str) -> str:
    return os.path.join(run_dir, "journal")


def journal_files(run_dir: str) -> list:
    """Every rank's journal of every incarnation, oldest incarnation first."""
    return sorted(glob.glob(os.path.join(journal_dir(run_dir), "run-*.rank-*.jnl")))


def journal_path(run_dir: str, incarnation: int, rank: int, ext: str = ".jnl") -> str:
    return os.path.join(journal_dir(run_dir), f"run-{incarnation:04d}.rank-{rank:05d}{ext}")


class Journal:
    """One rank's journal of one incarnation (append-only, memory-mapped)."""

    def __init__(self, run_dir: str, incarnation: int, rank: int,
                 initial_records: int = 1 << 12) -> None:
        self.path = journal_path(run_dir, incarnation, rank)
        self.value_path = journal_path(run_dir, incarnation, rank, ".val")
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        self.value_fd = -1
        self.value_end = 0
        self.pending: list = []          # [gid, vkind, data, attempt, unit] not yet in the files
        self.unit_start = -1             # where in ``pending`` the open unit begins
        self._syncer: threading.Thread | None = None  # the thread fsyncing the value file
        self.n = 0
        self._map(initial_records)
        now_fd = os.open(journal_path(run_dir, incarnation, rank, ".now"),
                         os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.posix_fallocate(now_fd, 0, 16)
            self._now_map = mmap.mmap(now_fd, 16)
        finally:
            os.close(now_fd)
        # now[0] = the first task id, now[1] = how many, of what runs now (now[0] = -1: none)
        self.now = memoryview(self._now_map).cast("q")
        self.now[0] = -1

    def _map(self, capacity: int) -> None:
        # allocate the blocks now: a store into a page of a full file system would be SIGBUS
        try:
            os.posix_fallocate(self.fd, 0, capacity * RECORD.itemsize)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise
            os.ftruncate(self.fd, capacity * RECORD.itemsize)
        self.mm = mmap.mmap(self.fd, capacity * RECORD.itemsize)
        self.rec = np.frombuffer(self.mm, dtype=RECORD)

    def _room(self, k: int) -> None:
        if self.n + k <= len(self.rec):
            return
        capacity = max(2 * len(self.rec), self.n + k)
        self.mm.flush()
        del self.rec
        self.mm.close()
        self._map(capacity)

    def add(self, kind: int, lo: int, hi: int, attempt: int = 1) -> None:
        """One record for the run of tasks ``[lo, hi)`` (one ``pack_into`` the mapped file)."""
        if self.n == len(self.rec):
            self._room(1)
        _PACK(self.mm, self.n * 40, lo, hi, -1, kind, 0, attempt, 0,
              _check(lo, hi, _M, kind | (attempt << 16)), 0)
        self.n += 1

    def add_ids(self, kind: int, gids, attempts=1) -> None:
        """One record per task id (non-contiguous tasks): a few packed one by one (the DONE
        records of the tasks a chain or stencil kept running: numpy's fixed cost of ~20 µs
        for a step would be several µs per task), more in one vectorised step."""
        k = len(gids)
        if not k:
            return
        if k <= FEW_RECORDS and isinstance(attempts, int):
            for gid in gids.tolist() if isinstance(gids, np.ndarray) else gids:
                self.add(kind, gid, gid + 1, attempts)
            return
        self._room(k)
        r = self.rec[self.n:self.n + k]
        r["lo"] = gids
        r["hi"] = np.asarray(gids) + 1
        r["length"] = -1
        r["kind"] = kind
        r["vkind"] = 0
        r["attempt"] = attempts
        r["vcrc"] = 0
        r["check"] = _checks(r)
        self.n += k

    def add_value(self, gid: int, vkind: int, data: bytes, attempt: int = 1) -> None:
        """DONE for one task whose value other tasks read (or whose state updates are
        ``data``: ``vkind`` ``VK_STATE``); written by ``write_values``."""
        self.pending.append([gid, vkind, data, attempt, 0])

    def begin_unit(self) -> None:
        """The values added until ``end_unit`` count only all together (a batch's values,
        ``mpitiny.with_batch``: one may hold what the others' would have)."""
        self.unit_start = len(self.pending)

    def end_unit(self) -> None:
        """Close the unit: the j-th of its k records carries ``unit`` = k * 2**16 + j, under
        its checksum (k < 2**16: a unit is one chunk, at most ``MAX_CHUNK`` tasks)."""
        unit = self.pending[self.unit_start:]
        self.unit_start = -1
        if len(unit) > 1:
            for j, p in enumerate(unit):
                p[4] = (len(unit) << 16) | j

    def write_values(self) -> None:
        """The pending values, end to end in one write, then their DONE records."""
        if not self.pending:
            return
        pending, self.pending = self.pending, []
        if self.value_fd < 0:
            self.value_fd = os.open(self.value_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            self.value_end = os.fstat(self.value_fd).st_size
        datas = [p[2] for p in pending]
        _write_all(self.value_fd, datas)
        k = len(pending)
        self._room(k)
        if k <= 8:                       # a few values: packing each beats numpy's overhead
            offset = self.value_end
            for gid, vkind, data, attempt, unit in pending:
                crc, n = _crc(data), size_of(data)
                _PACK(self.mm, self.n * 40, gid, offset, n, DONE, vkind, attempt, crc,
                      _check(gid, offset, n, _meta(DONE, vkind, attempt, crc), unit), unit)
                self.n += 1
                offset += n
            self.value_end = offset
            return
        r = self.rec[self.n:self.n + k]
        lengths = np.fromiter(map(size_of, datas), np.int64, k)
        r["lo"] = [p[0] for p in pending]
        r["hi"] = self.value_end + np.cumsum(lengths) - lengths
        r["length"] = lengths
        r["kind"] = DONE
        r["vkind"] = [p[1] for p in pending]
        r["attempt"] = [p[3] for p in pending]
        r["vcrc"] = list(map(_crc, datas))
        r["unit"] = [p[4] for p in pending]
        r["check"] = _checks(r)
        self.n += k
        self.value_end += int(lengths.sum())

    def sync(self, wait: bool = False) -> None:
        """Make everything recorded so far durable. The value file (megabytes, for MapReduce
        outputs) is fsynced by a background thread, so a rank does not stop for the disk;
        a DONE record that reaches the disk before its value is caught by the value's CRC on
        resume (the task runs again). ``wait``: the value file too, before returning."""
        self.write_values()
        if self.value_fd >= 0:
            if wait:
                self._join_syncer()
                os.fsync(self.value_fd)
            elif self._syncer is None or not self._syncer.is_alive():
                import threading
                self._syncer = threading.Thread(target=os.fsync, args=(self.value_fd,),
                                                name="mpitiny-journal-fsync", daemon=True)
                self._syncer.start()
        self.mm.flush()

    def _join_syncer(self) -> None:
        if self._syncer is not None:
            self._syncer.join()
            self._syncer = None

    def close(self, durable: bool = True) -> None:
        """Sync, and cut the file to the records written (at a clean exit). Not ``durable``
        (the run is complete and nothing failed: no rerun will read the journal), without
        the fsyncs, which at the end of a MapReduce job wait for the disk to take the tens
        of megabytes of values written since the last sync."""
        if durable:
            self.sync(wait=True)
        else:
            self.write_values()
            self._join_syncer()
        del self.rec
        self.mm.close()
        self.now[0] = -1
        self.now.release()
        self._now_map.close()
        os.ftruncate(self.fd, self.n * RECORD.itemsize)
        if durable:
            os.fsync(self.fd)
        os.close(self.fd)
        if self.value_fd >= 0:
            os.close(self.value_fd)
            self.value_fd = -1


# ---------------------------------------------------------------------- run identity
def dag_hash(text: bytes, params: dict) -> str:
    """What makes two runs "the same DAG": the dag.json bytes and the parameters."""
    import hashlib      # rank 0's only: OpenSSL's start costs every other rank 3 ms
    h = hashlib.sha256(text)
    h.update(json.dumps(params, sort_keys=True, default=str).encode())
    return h.hexdigest()[:32]


def read_run_info(run_dir: str) -> dict | None:
    try:
        with open(os.path.join(journal_dir(run_dir), "run.json"), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def write_run_info(run_dir: str, info: dict) -> None:
    write_atomic(os.path.join(journal_dir(run_dir), "run.json"),
                 json.dumps(info, indent=1).encode())


# ---------------------------------------------------------------------- reading
class Resumed:
    """What earlier incarnations left: per task, done or not, its kept value, its crashes."""

    def __init__(self, total: int) -> None:
        self.done = np.zeros(total, dtype=bool)
        self.crashes = np.zeros(total, dtype=np.int16)
        self.values: dict = {}          # gid -> (path, offset, length, vkind, vcrc)
        self.state_logs: list = []      # (gid, path, offset, length) of state updates
        self.records = 0
        self.torn = 0                   # records ignored: bad checksum (torn or never written)
        self.added: dict = {}           # key -> (path, offset, length, vcrc) of added tasks
        self.added_done = np.zeros(0, dtype=np.int64)   # keys of added tasks done, sorted

    def added_pending(self) -> list:
        """Keys of the tasks added and not done (a resumed run queues them again), sorted."""
        keys = np.array(sorted(self.added), dtype=np.int64)
        return keys[~np.isin(keys, self.added_done)].tolist()

    def added_payload(self, key: int) -> bytes:
        """What added task ``key`` runs (its payload), checked against its CRC."""
        path, offset, length, vcrc = self.added[key]
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read(length)
        if len(data) != length or zlib.crc32(data) != vcrc:
            raise OSError(f"{path}: the payload of added task {key} is damaged")
        return data

    @property
    def ndone(self) -> int:
        return int(np.count_nonzero(self.done))

    def state_updates(self) -> list:
        """``[(gid, log bytes)]`` of the done tasks' state updates (CRCs checked on reading
        the journals), oldest incarnation first."""
        out = []
        for gid, path, offset, length in self.state_logs:
            with open(path, "rb") as f:
                f.seek(offset)
                out.append((gid, f.read(length)))
        return out

    def value(self, gid: int) -> tuple:
        """``(vkind, data)`` of a done task's kept value, checked against its CRC."""
        path, offset, length, vkind, vcrc = self.values[gid]
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read(length)
        if len(data) != length or zlib.crc32(data) != vcrc:
            raise OSError(f"{path}: the kept value of task {gid} is damaged")
        return vkind, data


def _valid_records(path: str) -> tuple:
    raw = np.fromfile(path, dtype=np.uint8)
    whole = len(raw) // RECORD.itemsize * RECORD.itemsize
    rec = raw[:whole].view(RECORD)
    ok = (rec["kind"] >= START) & (rec["kind"] <= CRASHED) & \
        (_checks(rec) == rec["check"].astype(np.uint64))
    ok &= (rec["lo"] >= 0) & ((rec["hi"] > rec["lo"]) | ((rec["length"] >= 0) & (rec["hi"] >= 0)))
    _drop_damaged_units(path, rec, ok)
    in_unit = np.flatnonzero(ok & (rec["unit"] > 0))
    if len(in_unit):                  # a unit's records count only if all of them are valid
        unit = rec["unit"][in_unit].astype(np.int64)
        first = in_unit - (unit & 0xFFFF)
        key = first * (1 << 16) + (unit >> 16)          # the unit's first record and size
        keys, where, valid = np.unique(key, return_inverse=True, return_counts=True)
        complete = valid == (keys & 0xFFFF)
        ok[in_unit[~complete[where]]] = False
    return rec[ok], int(len(rec) - np.count_nonzero(ok)) + (len(raw) != whole)


def _drop_damaged_units(path: str, rec: np.ndarray, ok: np.ndarray) -> None:
    """Mark invalid the value records whose bytes fail their CRC (a torn value file) among
    state records and the records of units (a batch call's values: one may hold what the
    others' would have); the rest of their unit then counts as invalid too, so the whole
    call runs again. (A lone damaged value is found when it is read, and its task runs
    again.)"""
    states = np.flatnonzero(ok & (rec["kind"] == DONE) & (rec["length"] >= 0)
                            & ((rec["vkind"] == VK_STATE) | (rec["unit"] > 0)))
    if not len(states):
        return
    vpath = path[:-4] + ".val"
    size = os.path.getsize(vpath) if os.path.exists(vpath) else 0
    with open(vpath, "rb") if size else open(os.devnull, "rb") as f:
        for k in states.tolist():
            offset, length = int(rec["hi"][k]), int(rec["length"][k])
            data = b""
            if offset + length <= size:
                f.seek(offset)
                data = f.read(length)
            if len(data) != length or zlib.crc32(data) != int(rec["vcrc"][k]):
                ok[k] = False


def _running(path: str, total: int) -> np.ndarray | bool:
    """Bool per task: named as running by the ``.now`` file beside journal ``path`` (True for
    every task when there is no such file: a journal of an older version)."""
    try:
        with open(path[:-4] + ".now", "rb") as f:
            first, count = struct.unpack("<qq", f.read(16))
    except (OSError, struct.error):
        return True
    running = np.zeros(total, dtype=bool)
    if 0 <= first < total and count > 0:
        running[first:first + count] = True
    return running


def _mark(total: int, rec: np.ndarray) -> np.ndarray:
    """Bool per task: covered by one of the ``[lo, hi)`` runs of ``rec``."""
    diff = np.zeros(total + 1, dtype=np.int64)
    lo = np.clip(rec["lo"], 0, total)
    hi = np.clip(rec["hi"], 0, total)
    np.add.at(diff, lo, 1)
    np.add.at(diff, hi, -1)
    return np.cumsum(diff[:-1]) > 0


def read_journals(run_dir: str, total: int) -> Resumed:
    """Fold every journal under ``run_dir`` into one ``Resumed`` (same result on every rank)."""
    out = Resumed(total)
    done_keys = []
    for path in journal_files(run_dir):
        rec, torn = _valid_records(path)
        out.torn += torn
        out.records += len(rec)
        added = rec["lo"] >= total
        if added.any():
            done_keys.append(_read_added(path, rec[added], out.added))
            rec = rec[~added]
        with_value = (rec["length"] >= 0) & (rec["kind"] == DONE)
        plain = rec[~with_value]
        vals = rec[with_value]
        vpath = path[:-4] + ".val"
        vsize = os.path.getsize(vpath) if os.path.exists(vpath) else 0
        good = vals[(vals["hi"] + vals["length"] <= vsize) & (vals["lo"] < total)]
        for r in good.tolist():
            if r[4] == VK_STATE:
                out.state_logs.append((int(r[0]), vpath, int(r[1]), int(r[2])))
            elif r[4] != VK_DONE:
                out.values[int(r[0])] = (vpath, int(r[1]), int(r[2]), int(r[4]), int(r[6]))
        single = np.zeros(0, dtype=RECORD) if not len(good) else good.copy()
        single["hi"] = single["lo"] + 1
        done_runs = np.concatenate([plain[plain["kind"] == DONE], single])
        done = _mark(total, done_runs)
        ended = done | _mark(total, plain[plain["kind"] != START]) if len(plain) else done
        running = _running(path, total)
        started = running if isinstance(running, np.ndarray) else \
            _mark(total, plain[plain["kind"] == START])
        out.crashes += (started & ~ended).astype(np.int16)
        crashed = plain[(plain["kind"] == CRASHED) & (plain["lo"] < total)]
        np.add.at(out.crashes, crashed["lo"], 1)
        out.done |= done
    out.crashes[out.done] = 0
    if done_keys:
        out.added_done = distinct(np.concatenate(done_keys))
    return out


def _read_added(path: str, rec: np.ndarray, added: dict) -> np.ndarray:
    """Note the payloads of added tasks among one journal's records (those whose bytes are
    all in the value file and match their CRC) in ``added``; returns the keys done."""
    values = rec[(rec["kind"] == DONE) & (rec["vkind"] == VK_ADDED) & (rec["length"] >= 0)]
    if len(values):
        vpath = path[:-4] + ".val"
        size = os.path.getsize(vpath) if os.path.exists(vpath) else 0
        with open(vpath, "rb") if size else open(os.devnull, "rb") as f:
            for r in values[values["hi"] + values["length"] <= size].tolist():
                f.seek(r[1])
                if zlib.crc32(f.read(r[2])) == r[6]:
                    added[int(r[0])] = (vpath, int(r[1]), int(r[2]), int(r[6]))
    done = rec[(rec["kind"] == DONE) & (rec["length"] < 0)]
    return done["lo"].astype(np.int64)


def done_counts(run_dir: str, total: int) -> np.ndarray:
    """How many incarnations journaled each task as done (1 everywhere after a good resume:
    a task journaled done is never run again)."""
    counts = np.zeros(total, dtype=np.int64)
    for path in journal_files(run_dir):
        rec, _ = _valid_records(path)
        done = rec[rec["kind"] == DONE]
        marked = _mark(total, done[done["length"] < 0])
        singles = done[(done["length"] >= 0) & (done["lo"] < total)]["lo"]
        marked[singles] = True          # a value record and a state record: one task
        counts += marked
    return counts
