"""What a run leaves behind, and how each rank writes its part without a per-task file.

Layout of a run directory (``--out``, default ``mpitiny-runs/<dag name>``)::

    summary.json              totals, wall time, tasks/s, per-rank counts, groups (rank 0)
    tasks.h5                  one logical table of every task: a virtual dataset over tasks/
    tasks/rank-00003.h5       rows of the tasks rank 3 finished: gid, status, attempt, rank,
                              start, end (Unix time), queued (when its batch was queued on
                              that rank), stolen, bytes_read (split reads), stdout/stderr
                              offsets in logs/; and ``samples``: psutil CPU %, RSS, I/O bytes
    results/rank-00003.jsonl  {"id": ..., "value": ...} for each fn task that returned non-None
    journal/                  per-rank journals of what finished, for resuming (io/journal.py)
    attempts/0001/            what an earlier incarnation wrote (tasks, results, failures,
                              logs, summary), kept when a rerun resumed the run
    failures/rank-00003.jsonl one JSON object per failed task, with its error in full
    logs/rank-00003.out|.err  stdout / stderr of rank 3's cmd tasks, appended one after another,
                              each behind a "### task ID (rank R, attempt A)" line; the offsets
                              of each task's part are in its row of the tasks table
    logs/rank-00003.fn.out|.fn.err  what rank 3's fn tasks printed (created when they print),
                              one after another, with no header; the byte offsets of each
                              task's part are in its row (``RankFiles.fn_out.size``)

A million tasks therefore make a handful of files per rank. Every file that is complete at the
end (HDF5 tables, summary.json) is written under a temporary name and renamed into place.
Row ``gid`` maps to a task id through the ``groups`` table (name, first gid, size, foreach
variables), in summary.json for DAGs of up to 1000 entries and always in tasks.h5; see
``groups_of`` and ``task_id``.
"""
from __future__ import annotations

import bisect
import json
import os
import socket
import struct
from typing import BinaryIO, Sequence, TextIO

import numpy as np

from mpitiny.io.commit import atomic_h5
from mpitiny.io.values import KIND_NAMES

DONE, FAILED, UPSTREAM_FAILED = 1, 2, 3
STATUS_NAMES = {DONE: "done", FAILED: "failed", UPSTREAM_FAILED: "upstream_failed"}
RECORD_DTYPE = np.dtype([
    ("gid", "<i8"), ("status", "i1"), ("attempt", "<i2"), ("rank", "<i4"), ("start", "<f8"), ("end", "<f8"),
    ("queued", "<f8"), ("stolen", "i1"), ("bytes_read", "<i8"),
    ("out_offset", "<i8"), ("out_length", "<i8"), ("err_offset", "<i8"), ("err_length", "<i8"),
])
_ROW = struct.Struct("<qbhidddbqqqqq")      # one RECORD_DTYPE row, for ``Records.add_one``
assert _ROW.size == RECORD_DTYPE.itemsize
SUBDIRS = ("tasks", "results", "failures", "logs", "spill")
RUN_FILES = ("summary.json", "tasks.h5", "trace.json", "progress.json")
RUN_ENTRIES = (*SUBDIRS, "journal", "attempts", *RUN_FILES, "report")
"""Everything of a run in its directory (what ``move_aside`` moves)."""


def rank_file(run_dir: str, sub: str, rank: int, ext: str) -> str:
    return os.path.join(run_dir, sub, f"rank-{rank:05d}{ext}")


def prepare(run_dir: str) -> None:
    """Create the run directory, clearing what an earlier run left in it (called by rank 0)."""
    os.makedirs(run_dir, exist_ok=True)
    for sub in (*SUBDIRS, "journal", "attempts"):
        path = os.path.join(run_dir, sub)
        if os.path.isdir(path):
            import shutil
            shutil.rmtree(path)
        if sub != "attempts":
            os.makedirs(path)
    for name in RUN_FILES:
        path = os.path.join(run_dir, name)
        if os.path.exists(path):
            os.remove(path)


def move_aside(run_dir: str) -> str | None:
    """``--fresh``: move what a run left in ``run_dir`` (``RUN_ENTRIES``; other files stay) to
    a new sibling directory ``RUN_DIR.old-N`` (the first N free) and return its path; None if
    there was nothing to move. Nothing is deleted."""
    present = [name for name in RUN_ENTRIES if os.path.lexists(os.path.join(run_dir, name))]
    if not present:
        return None
    base = os.path.normpath(os.path.abspath(run_dir))
    n = 1
    while True:
        aside = f"{base}.old-{n}"
        try:
            os.mkdir(aside)
            break
        except FileExistsError:
            n += 1
    for name in present:
        os.replace(os.path.join(run_dir, name), os.path.join(aside, name))
    return aside


def prepare_resume(run_dir: str, previous: int) -> None:
    """Before incarnation ``previous + 1``: keep what incarnation ``previous`` wrote (tasks,
    results, failures, logs, summary) under ``attempts/NNNN/``, start those afresh, and drop
    its spill files (its kept values are in the journal)."""
    import shutil
    keep = os.path.join(run_dir, "attempts", f"{previous:04d}")
    if os.path.exists(keep):
        shutil.rmtree(keep)
    os.makedirs(keep)
    for name in (*SUBDIRS, *RUN_FILES):
        path = os.path.join(run_dir, name)
        if not os.path.exists(path):
            continue
        if name == "spill":
            shutil.rmtree(path)
        else:
            os.replace(path, os.path.join(keep, name))
    for sub in SUBDIRS:
        os.makedirs(os.path.join(run_dir, sub), exist_ok=True)


def attempt_dirs(run_dir: str) -> list:
    """Directories with results of a run, oldest first: earlier incarnations, then the last."""
    root = os.path.join(run_dir, "attempts")
    older = sorted(os.path.join(root, d) for d in os.listdir(root)) if os.path.isdir(root) else []
    return [*older, run_dir]


class Records:
    """Per-rank table of finished tasks, in bounded memory.

    Rows collect in a numpy buffer of ``capacity`` rows; when it is full they are appended to
    ``path`` (raw rows, ``tasks/rank-R.rows``) and the buffer starts over, so a rank that
    runs 10^7 tasks holds at most ``capacity`` rows in memory. ``write_rank_table`` turns
    file + buffer into the rank's HDF5 table at the end. Counts by status and the first start
    / last end are kept as rows come in.

    The row of one task that succeeded (a DAG's hand-off, on the critical path) can be
    ``hold``: a tuple appended, a fifth of ``add_one``'s cost; held rows join the buffer
    together (``settle``: ~4 µs of numpy for one row, ~0.27 µs a row for a thousand) once
    ``HOLD_ROWS`` wait, and before any other row and before anything reads the rows or
    their counts.
    """

    HOLD_ROWS = 256

    def __init__(self, rank: int = 0, path: str | None = None, capacity: int = 1 << 16) -> None:
        self.rank = rank
        self.path = path
        self.capacity = capacity
        self.rows = np.zeros(min(capacity, 1 << 12), dtype=RECORD_DTYPE)
        self.rows["rank"] = rank
        self._bytes = self.rows.data          # ``add_one``'s target, made once per buffer
        self.n = 0
        self.flushed = 0
        self.by_status = [0, 0, 0, 0]         # plain ints: ``add_one`` adds one per task
        self._first_start = np.inf
        self._last_end = -np.inf
        self.held: list = []      # (gid, start, end, attempt, queued, stolen) of DONE tasks

    def __len__(self) -> int:
        self.settle()
        return self.flushed + self.n

    @property
    def first_start(self) -> float:
        self.settle()
        return self._first_start

    @property
    def last_end(self) -> float:
        self.settle()
        return self._last_end

    def hold(self, gid: int, start: float, end: float, attempt: int, queued: float,
             stolen: bool) -> None:
        """The row of one task that succeeded, kept aside until ``settle``."""
        held = self.held
        held.append((gid, start, end, attempt, queued, stolen))
        if len(held) >= self.HOLD_ROWS:
            self.settle()

    def settle(self) -> None:
        """Put the held rows into the buffer, all at once."""
        held = self.held
        if not held:
            return
        self.held = []
        gid, start, end, attempt, queued, stolen = map(list, zip(*held))
        self.add_run(gid, DONE, start, end, attempt, queued, stolen)

    def _room(self, k: int) -> None:
        if self.n + k <= len(self.rows):
            return
        if self.path is not None and self.n + k > self.capacity:
            self.flush()
            if self.n + k <= len(self.rows):
                return
        grown = np.zeros(max(2 * len(self.rows), self.n + k), dtype=RECORD_DTYPE)
        grown["rank"] = self.rank
        grown[:self.n] = self.rows[:self.n]
        self.rows = grown
        self._bytes = grown.data

    def _account(self, block: np.ndarray) -> None:
        for status, k in enumerate(np.bincount(block["status"], minlength=4)[:4].tolist()):
            self.by_status[status] += k
        ran = block[block["status"] != UPSTREAM_FAILED]
        if len(ran):
            self._first_start = min(self._first_start, float(ran["start"].min()))
            self._last_end = max(self._last_end, float(ran["end"].max()))

    def flush(self) -> None:
        """Append the buffered rows to ``path`` and empty the buffer."""
        self.settle()
        if not self.n or self.path is None:
            return
        with open(self.path, "ab") as f:
            self.rows[:self.n].tofile(f)
        self.flushed += self.n
        self.rows[:self.n] = 0              # columns a row does not set must read 0
        self.n = 0
        self.rows["rank"] = self.rank

    def add_run(self, gids, status, starts, ends, attempt: int | Sequence[int] = 1,
                queued: float | Sequence[float] = 0.0, stolen: bool | Sequence[bool] = False,
                bytes_read=0, out=None, err=None) -> None:
        """Rows for tasks that ran (``status`` scalar or array, ``starts``/``ends`` sequences);
        ``queued``: when their batch was queued on this rank; ``stolen``: taken from another
        (``attempt``, ``queued``, ``stolen``: one for all, or one each);
        ``out`` / ``err``: ``(offsets, lengths)`` (sequences, arrays or scalars) of what each
        task wrote to its log (fn tasks: ``logs/rank-R.fn.out`` / ``.fn.err``), else 0."""
        if self.held:
            self.settle()
        k = len(gids)
        if k == 1 and out is None and err is None and type(starts) is list and \
                type(status) is int and type(attempt) is int and type(bytes_read) is int and \
                isinstance(queued, float) and isinstance(stolen, bool):
            self.add_one(int(gids[0]), status, starts[0], ends[0], attempt, queued=queued,
                         stolen=stolen, bytes_read=bytes_read)
            return
        self._room(k)
        block = self.rows[self.n:self.n + k]
        block["gid"] = gids
        block["status"] = status
        block["attempt"] = attempt
        block["start"] = starts
        block["end"] = ends
        block["queued"] = queued
        block["stolen"] = stolen
        block["bytes_read"] = bytes_read
        if out is not None:
            block["out_offset"], block["out_length"] = out
        if err is not None:
            block["err_offset"], block["err_length"] = err
        if type(starts) is list and type(ends) is list and isinstance(status, (int, np.integer)) and \
                status != UPSTREAM_FAILED and k:
            self.by_status[status] += k          # the common case, without numpy's overhead
            self._first_start = min(self._first_start, min(starts))
            self._last_end = max(self._last_end, max(ends))
        else:
            self._account(block)
        self.n += k

    def add_one(self, gid: int, status: int, start: float, end: float, attempt: int = 1,
                out: tuple = (0, 0), err: tuple = (0, 0), queued: float = 0.0,
                stolen: bool = False, bytes_read: int = 0) -> None:
        """The row of one task, in plain integers (a DAG's hand-off, a command): no numpy
        calls besides the row's store."""
        if self.held:
            self.settle()
        if self.n == len(self.rows):
            self._room(1)
        _ROW.pack_into(self._bytes, self.n * _ROW.size, gid, status, attempt, self.rank, start,
                       end, queued, stolen, bytes_read, out[0], out[1], err[0], err[1])
        self.by_status[status] += 1
        if status != UPSTREAM_FAILED:
            if start < self._first_start:
                self._first_start = start
            if end > self._last_end:
                self._last_end = end
        self.n += 1

    def blocks(self, rows_per_block: int = 1 << 20):
        """Every row, flushed ones first, as numpy blocks of bounded size."""
        self.settle()
        if self.flushed:
            assert self.path is not None
            with open(self.path, "rb") as f:
                left = self.flushed
                while left:
                    block = np.fromfile(f, dtype=RECORD_DTYPE, count=min(left, rows_per_block))
                    left -= len(block)
                    yield block
        if self.n:
            yield self.rows[:self.n]

    def in_memory(self) -> np.ndarray | None:
        """Every row in one array when none went to the raw rows file, else None."""
        self.settle()
        return None if self.flushed else self.rows[:self.n].copy()

    def remove_file(self) -> None:
        """Remove the raw rows file (once its rows are in the rank's table)."""
        if self.path is not None and os.path.exists(self.path):
            os.remove(self.path)

    def table(self) -> np.ndarray:
        """Every row in one array (for tests and small runs)."""
        parts = list(self.blocks())
        return np.concatenate(parts) if parts else np.zeros(0, dtype=RECORD_DTYPE)

    def counts(self) -> dict:
        self.settle()
        return {name: int(self.by_status[code]) for code, name in STATUS_NAMES.items()}


class RankFiles:
    """The files one rank appends to during a run.

    ``fn_out`` / ``fn_err``: the streams fn tasks print to (``logs/rank-R.fn.out`` / ``.fn.err``,
    opened on the first write); their ``size`` is the byte offset where the next write lands,
    so ``size`` before and after a task gives its part of the file."""

    def __init__(self, run_dir: str, rank: int) -> None:
        self.run_dir = run_dir
        self.rank = rank
        self.host = socket.gethostname()
        self.results_path = rank_file(run_dir, "results", rank, ".jsonl")
        self.failures_path = rank_file(run_dir, "failures", rank, ".jsonl")
        self.out_path = rank_file(run_dir, "logs", rank, ".out")
        self.err_path = rank_file(run_dir, "logs", rank, ".err")
        self._results: TextIO | None = None
        self._binary: BinaryIO | None = None
        self._failures: TextIO | None = None
        self._out_fd = -1
        self._err_fd = -1
        self.failures_seen: list = []
        self.fn_out = _LazyFile(rank_file(run_dir, "logs", rank, ".fn.out"))
        self.fn_err = _LazyFile(rank_file(run_dir, "logs", rank, ".fn.err"))
        self._streams: tuple = ()
        self._fault_log = None

    def result(self, task_id: str, kind: int, data: bytes) -> None:
        """One task's return value: JSON inline; bytes and numpy arrays (``.npy``) in
        ``results/rank-R.bin``, the line giving their offset and length there."""
        if self._results is None:
            self._results = open(self.results_path, "a", encoding="utf-8", buffering=1 << 20)
        if kind == 0:
            self._results.write('{"id": %s, "value": %s}\n' % (json.dumps(task_id), data.decode()))
            return
        if self._binary is None:
            self._binary = open(rank_file(self.run_dir, "results", self.rank, ".bin"), "ab")
        offset = self._binary.tell()
        self._binary.write(data)
        self._results.write(json.dumps({"id": task_id, "type": KIND_NAMES[kind],
                                        "file": os.path.basename(self._binary.name),
                                        "offset": offset, "length": len(data)}) + "\n")

    def flush_results(self) -> None:
        """Hand buffered result lines (and their binary values) to the OS."""
        if self._results is not None:
            if self._binary is not None:
                self._binary.flush()
            self._results.flush()

    def flush(self) -> None:
        """Hand everything buffered to the OS (results, what fn tasks printed)."""
        self.flush_results()
        for stream in self._streams:
            stream.flush()

    def failure(self, record: dict) -> None:
        if self._failures is None:
            self._failures = open(self.failures_path, "a", encoding="utf-8")
        self._failures.write(json.dumps(record) + "\n")
        self._failures.flush()
        if len(self.failures_seen) < 20:
            self.failures_seen.append(record)

    def python_streams(self) -> tuple:
        """``(fn_out, fn_err)``: text streams for what fn tasks print (to be ``sys.stdout`` and
        ``sys.stderr`` during the run); the files appear only if something is written."""
        self._streams = (self.fn_out, self.fn_err)
        return self._streams

    def fault_log(self):
        """``logs/rank-R.err`` as a file object for ``faulthandler`` (crash tracebacks)."""
        if self._fault_log is None:
            self._fault_log = open(self.err_path, "ab", buffering=0)
        return self._fault_log

    def log_fds(self) -> tuple:
        if self._out_fd < 0:
            flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
            self._out_fd = os.open(self.out_path, flags, 0o644)
            self._err_fd = os.open(self.err_path, flags, 0o644)
        return self._out_fd, self._err_fd

    def close(self) -> None:
        for f in (self._results, self._binary, self._failures):
            if f is not None:
                f.close()
        self._binary = None
        for fd in (self._out_fd, self._err_fd):
            if fd >= 0:
                os.close(fd)
        for stream in self._streams:
            stream.close()
        self._streams = ()
        self._results = self._failures = None
        self._out_fd = self._err_fd = -1


class _LazyFile:
    """A text stream that opens its file on the first write (and closes it with flush at exit).

    Text is written as UTF-8 (``errors="replace"``) to a buffered binary file in append mode;
    ``size`` is the byte offset where the next write lands: the file's size when it was
    opened (or made) plus every byte written since, buffered or not."""

    encoding = "utf-8"
    errors = "replace"

    def __init__(self, path: str) -> None:
        self.path = path
        self._f: BinaryIO | None = None
        try:
            self.size = os.path.getsize(path)
        except OSError:
            self.size = 0

    def write(self, text: str) -> int:
        data = text.encode("utf-8", "replace")
        if self._f is None:
            self._f = open(self.path, "ab", buffering=1 << 16)
            self.size = self._f.tell()
        self._f.write(data)
        self.size += len(data)
        return len(text)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if self._f is not None:
            self._f.flush()

    def isatty(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


SAMPLE_DTYPE = np.dtype([("time", "<f8"), ("cpu_percent", "<f4"), ("rss", "<i8"),
                         ("read_bytes", "<i8"), ("write_bytes", "<i8")])


def write_rank_table(run_dir: str, rank: int, records: "Records | np.ndarray",
                     samples: Sequence = ()) -> str:
    """A rank's rows (its ``Records``, or the rows themselves, which another rank sent) as
    ``tasks/rank-R.h5`` (dataset ``tasks``; its psutil samples as ``samples``), written
    atomically, block by block; the raw rows file of ``records`` is removed."""
    path = rank_file(run_dir, "tasks", rank, ".h5")
    blocks = records.blocks() if isinstance(records, Records) else [records]
    total = len(records)
    with atomic_h5(path) as f:
        f.create_dataset("samples", data=np.array(list(samples), dtype=SAMPLE_DTYPE))
        table = f.create_dataset("tasks", shape=(total,), dtype=RECORD_DTYPE,
                                 chunks=(max(1, min(total, 1 << 16)),) if total else None)
        at = 0
        for block in blocks:
            table[at:at + len(block)] = block
            at += len(block)
        f.attrs["rank"] = rank
        f.attrs["status_codes"] = json.dumps(STATUS_NAMES)
    if isinstance(records, Records):
        records.remove_file()
    return path


def write_virtual_table(run_dir: str, sizes: list, dag=None) -> str:
    """``tasks.h5``: dataset ``tasks``, a virtual dataset over every rank's table in rank order,
    and dataset ``groups`` (name, first gid, size, foreach variables as JSON) to name rows."""
    import h5py
    total = int(sum(sizes))
    path = os.path.join(run_dir, "tasks.h5")
    layout = h5py.VirtualLayout(shape=(total,), dtype=RECORD_DTYPE)
    at = 0
    for rank, n in enumerate(sizes):
        if n:
            src = h5py.VirtualSource(os.path.join("tasks", f"rank-{rank:05d}.h5"), "tasks",
                                     shape=(n,))
            layout[at:at + n] = src
            at += n
    with atomic_h5(path, libver="latest") as f:
        f.create_virtual_dataset("tasks", layout, fillvalue=None)
        f.attrs["status_codes"] = json.dumps(STATUS_NAMES)
        if dag is not None:
            table = dag.group_table()
            dt = np.dtype([("name", h5py.string_dtype()), ("first", "<i8"), ("size", "<i8"),
                           ("vars", h5py.string_dtype()), ("kind", h5py.string_dtype()),
                           ("ids", h5py.string_dtype())])
            rows = np.empty(len(table), dtype=dt)
            rows["name"] = [g["name"] for g in table]
            rows["first"] = [g["first"] for g in table]
            rows["size"] = [g["size"] for g in table]
            rows["vars"] = [json.dumps(g["vars"]) for g in table]
            rows["kind"] = [g["kind"] for g in table]
            rows["ids"] = ["\n".join(g["ids"]) if "ids" in g else "" for g in table]
            f.create_dataset("groups", data=rows)
    return path


def read_tasks(run_dir: str) -> np.ndarray:
    """Every task row of a finished run (reads the per-rank tables)."""
    import h5py
    parts = []
    tdir = os.path.join(run_dir, "tasks")
    for name in sorted(os.listdir(tdir)):
        if name.endswith(".h5"):
            with h5py.File(os.path.join(tdir, name), "r") as f:
                parts.append(f["tasks"][()])
    return np.concatenate(parts) if parts else np.zeros(0, dtype=RECORD_DTYPE)


def read_results(run_dir: str) -> dict:
    """``{task id: return value}`` of every fn task of a finished run that returned non-None."""
    out: dict = {}
    for rdir in (os.path.join(d, "results") for d in attempt_dirs(run_dir)):
        for name in sorted(os.listdir(rdir)) if os.path.isdir(rdir) else ():
            if name.endswith(".jsonl"):
                _read_result_lines(os.path.join(rdir, name), out)
    return out


def _read_result_lines(path: str, out: dict) -> None:
    """Add one results file's values to ``out`` (a torn last line, from a killed run, is
    skipped: its task was not journaled as done, so it ran again)."""
    from mpitiny.io.values import decode
    rdir = os.path.dirname(path)
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.endswith("\n"):
                break
            rec = json.loads(line)
            if "type" in rec:
                with open(os.path.join(rdir, rec["file"]), "rb") as b:
                    b.seek(rec["offset"])
                    data = b.read(rec["length"])
                out[rec["id"]] = decode(KIND_NAMES.index(rec["type"]), data)
            else:
                out[rec["id"]] = rec["value"]


def groups_of(run_dir: str) -> list:
    """The gid -> id table of a finished run: from summary.json, or tasks.h5 for large DAGs."""
    with open(os.path.join(run_dir, "summary.json"), encoding="utf-8") as f:
        groups = json.load(f)["groups"]
    if isinstance(groups, list):
        return groups
    import h5py
    with h5py.File(os.path.join(run_dir, "tasks.h5"), "r") as f:
        rows = f["groups"][()]
    kinds = "kind" in (rows.dtype.names or ())        # older tables have no kind column
    ids = "ids" in (rows.dtype.names or ())           # nor ids of listed tasks
    return [{"name": r["name"].decode(), "first": int(r["first"]), "size": int(r["size"]),
             "vars": json.loads(r["vars"]), **({"kind": r["kind"].decode()} if kinds else {}),
             **({"ids": r["ids"].decode().split("\n")} if ids and r["ids"] else {})}
            for r in rows]


def task_id(groups: list, gid: int) -> str:
    """The task id of ``gid`` from ``groups_of(run_dir)`` (no DAG file needed)."""
    from mpitiny.dag.model import format_value
    firsts = [g["first"] for g in groups]
    g = groups[bisect.bisect_right(firsts, gid) - 1]
    if not g["first"] <= gid < g["first"] + g["size"]:
        raise KeyError(gid)
    if "ids" in g:
        return g["ids"][gid - g["first"]]
    if not g["vars"]:
        return g["name"]
    i = gid - g["first"]
    vals = []
    for _, spec in reversed(g["vars"]):
        values = range(*spec["range"]) if "range" in spec else spec["values"]
        i, pos = divmod(i, len(values))
        vals.append(values[pos])
    return "%s[%s]" % (g["name"], ",".join(format_value(v) for v in reversed(vals)))


def gid_of(groups: list, tid: str) -> int:
    """The gid of task id ``tid`` (inverse of ``task_id``); KeyError if the run has no such task."""
    from mpitiny.dag.model import format_value
    name, _, rest = tid.partition("[")
    for g in groups:
        if "ids" in g:
            if not rest and name in g["ids"]:
                return g["first"] + g["ids"].index(name)
            continue
        if g["name"] != name:
            continue
        if not g["vars"]:
            if rest:
                raise KeyError(tid)
            return g["first"]
        if not rest.endswith("]"):
            raise KeyError(tid)
        parts = rest[:-1].split(",")
        if len(parts) != len(g["vars"]):
            raise KeyError(tid)
        index = 0
        for part, (_, spec) in zip(parts, g["vars"]):
            values = range(*spec["range"]) if "range" in spec else spec["values"]
            if "range" in spec:
                try:
                    pos = values.index(int(part))
                except ValueError:
                    raise KeyError(tid) from None
            else:
                matches = [k for k, v in enumerate(values) if format_value(v) == part]
                if not matches:
                    raise KeyError(tid)
                pos = matches[0]
            index = index * len(values) + pos
        return g["first"] + index
    raise KeyError(tid)


def describe_task(run_dir: str, tid: str) -> dict:
    """Everything a run kept about one task: its row (status, rank, attempt, start, end),
    error, result, stdout and stderr (of a fn task from ``logs/rank-R.fn.out`` / ``.fn.err``,
    of a cmd task from ``.out`` / ``.err``). A row of the last incarnation that says the task
    was done before (cached: done, attempt 0) gives way to the row of the earlier incarnation
    that ran it, read with that incarnation's logs, results and failures (``attempts/NNNN/``;
    ``run`` and ``dir`` then say which)."""
    groups = groups_of(run_dir)
    gid = gid_of(groups, tid)
    kind = _group_of(groups, gid).get("kind", "cmd")
    dirs = attempt_dirs(run_dir)
    chosen = None
    for where in reversed(dirs):                     # the last incarnation first
        row = _task_row(where, gid)
        if row is None:
            continue
        if chosen is None:
            chosen = (where, row)
        if int(row["attempt"]) > 0 or int(row["status"]) != DONE:
            chosen = (where, row)                    # it ran (or was skipped) there
            break
    if chosen is None:
        return {"id": tid, "gid": gid, "status": "not finished"}
    where, row = chosen
    rank = int(row["rank"])
    out = {"id": tid, "gid": gid, "kind": kind,
           "status": STATUS_NAMES.get(int(row["status"]), "?"),
           "rank": rank, "attempt": int(row["attempt"]), "start": float(row["start"]),
           "end": float(row["end"]), "seconds": float(row["end"] - row["start"])}
    if where != run_dir:
        out["run"] = int(os.path.basename(where))
        out["dir"] = os.path.relpath(where, run_dir)
    prefix = ".fn" if kind == "fn" else ""
    for key, ext, off, length in (("stdout", ".out", "out_offset", "out_length"),
                                  ("stderr", ".err", "err_offset", "err_length")):
        if row[length] > 0:
            path = rank_file(where, "logs", rank, prefix + ext)
            if os.path.exists(path):
                with open(path, "rb") as f:
                    f.seek(int(row[off]))
                    out[key] = f.read(int(row[length])).decode("utf-8", "replace")
    needle = json.dumps(tid)
    for sub, key in (("failures", "error"), ("results", "result")):
        path = rank_file(where, sub, rank, ".jsonl")
        if not os.path.exists(path):
            continue
        with open(path, encoding="utf-8") as f:
            for line in f:
                if needle in line and line.endswith("\n"):
                    rec = json.loads(line)
                    if rec.get("id") == tid:
                        out[key] = rec["error"] if sub == "failures" else rec["value"] \
                            if "value" in rec else \
                            f"<{rec['type']}: {rec['length']} bytes in {sub}/{rec['file']}>"
    return out


def _group_of(groups: list, gid: int) -> dict:
    firsts = [g["first"] for g in groups]
    return groups[bisect.bisect_right(firsts, gid) - 1]


def _task_row(where: str, gid: int):
    """The row of task ``gid`` in the task tables under ``where`` (``tasks/rank-R.h5``, or the
    raw ``.rows`` a killed incarnation left), the latest ending if several; None if none."""
    import h5py
    tdir = os.path.join(where, "tasks")
    best = None
    for name in sorted(os.listdir(tdir)) if os.path.isdir(tdir) else ():
        path = os.path.join(tdir, name)
        if name.endswith(".h5"):
            with h5py.File(path, "r") as f:
                rows = f["tasks"][()]
        elif name.endswith(".rows"):
            raw = np.fromfile(path, dtype=np.uint8)
            rows = raw[:len(raw) // RECORD_DTYPE.itemsize * RECORD_DTYPE.itemsize] \
                .view(RECORD_DTYPE)
        else:
            continue
        hits = rows[rows["gid"] == gid]
        for row in hits:
            if best is None or row["end"] >= best["end"]:
                best = row.copy()
    return best


def read_log_tail(path: str, offset: int, length: int, limit: int = 4000) -> str:
    """The last ``limit`` bytes of the ``length`` bytes a task wrote at ``offset`` of a log."""
    if length <= 0:
        return ""
    start = offset + max(0, length - limit)
    with open(path, "rb") as f:
        f.seek(start)
        return f.read(offset + length - start).decode("utf-8", "replace").rstrip()
