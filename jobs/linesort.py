"""Sort the lines of a text file by bytes, as ``LC_ALL=C sort`` does (jobs/linesort.json).

A line is an element of ``data.split(b"\\n")`` of the logical content (the ingested files end
to end), minus the empty one after a final newline; every output line ends with ``\\n`` (a
last line without one gets one, as with sort(1)); ``\\r`` of a CRLF stays part of its line.
Lines compare as unsigned bytes (Python's ``bytes`` order, memcmp then length). Equal lines
are equal bytes, so the output is one sequence of bytes: ``OUTPUT/sorted.txt``.

The text analogue of TeraSort (jobs/sort.py, whose records are 100 bytes): lines are of any
length, so partitions are byte ranges of the maps' sorted runs, and the output is one file
written in place by every reducer at its offset. No task sees all the input, and none runs
alone: the maps start at once (no sampling task before them), and the splitters come from
the maps.

* ``map_split(input, split, output, samples, piece, pieces)``: piece ``piece`` of ``pieces``
  (3) of the split, whole lines (``splitpieces.piece_bounds``: a map of prose's split of 1.6
  M short lines took 2.5-3x the others; with 2 pieces one still took 0.09-0.11 of a run on
  prose, with 3 0.06, at the same throughput: ``bench/results/ab-linesort-pieces3-s28.json``; the split is read once per thread for its pieces,
  ``splitpieces.read_split``), its line boundaries (``line_spans``), the lines' **full
  order** by bytes, equal lines by position (``sort_order``), the lines gathered once in that
  order (``gather_lines``) and written to ``WORK/lines-SPLIT-PIECE.txt``, a sorted run
  numbered ``split * pieces + piece`` (input order); returns its size, line count and
  ``samples`` points of it (``run_sample``).
  With the compiled line kernel (``mpitiny.kernels._lines``, ``mpitiny/kernels/_lines.c``):
  an SSE2 scan for the spans, a radix sort of 8-byte keys (bytes d..d+6 and how many bytes
  the line has from d on) that sorts runs of equal keys again from d + 7, and ``memcpy`` (one
  16-byte move for a short line) for the gather; without it (no compiler, or
  ``MPITINY_KERNELS=0``) numpy's ``flatnonzero``, Python's stable ``sorted`` of the lines and
  ``mapreduce.gather``: the same order, so the same map files.
* ``reduce_part(r, partitions, output, inputs)``: the splitters from the maps' points
  (``choose_splitters``, the same in every reducer), partition ``r``'s byte range in every
  map's run found by binary search on the run's bytes (``partition_bounds``, ``cut_run``:
  each probe the line holding the middle byte, on the file mapped read-only, ~25 probes per
  cut), the ranges merged (``merge_pieces``: the kernel's binary heap over the runs, its
  cursors keyed like the sort, so most comparisons are one integer compare; without the
  kernel ``list.sort``, whose timsort merges the runs, and a ``join``) straight from the
  mapped files and written with ``os.pwrite`` into ``OUTPUT/.sorted.txt.partial`` at its
  offset: the bytes before partition ``r`` in every run, which are the lower cuts
  themselves, so no plan task and no concatenation.
* **Splitters** are ``(line, run number)`` pairs, and a line of run ``s`` goes to partition
  ``bisect_right(splitters, (line, s))``: lines equal to a splitter fall on both sides of it
  by run. Equal lines are equal bytes, so the output does not change, but a line making up
  a large share of the input (the empty line: 23 % of the lines of the logs corpus, 14 % of
  prose, where ``"0"`` is another 12 %) does not land in one reducer. Each map cuts its
  sorted run at ``samples`` (128) even quantiles of its cost to a reducer, ``LINE_BYTES``
  (4) per line plus its bytes (``run_points``: the kernel's one scan of the run), and reports
  the line ending each stretch (its first ``SAMPLE_BYTES``, 64: any bytes are a valid
  splitter, a prefix of a line sorts before it) with the stretch's cost; the reducers sort
  all the points by ``(line, run number)`` and cut their summed costs evenly. A partition's
  cost is then off its share by at most one stretch per map (total / ``samples``). The cost per
  line is 4 bytes because a reducer's time follows its bytes (the kernel merge, ``pwrite``
  and the disk write): 2 M lines of 9.6 MB took 35 ms, 0.49 M lines of 35 MB 74 ms; with 16,
  as when the reducers split and joined Python ``bytes``, prose's reducers took 0.045-0.18
  s. Before (to 2026-12-06), a serial ``sample`` task read 26 splits and drew
  random lines (0.14-0.29 s, the other rank idle, before any map could start), and the
  splitters' positions were byte offsets, the maps cutting their runs by binary search and
  returning the bounds.
  Each reducer then writes its own bytes to disk (``sync_range``).
* ``validate(output, inputs)``: the parts' line counts against the maps', that the parts
  tile the file, the order across parts (each reducer reports its first and last line),
  truncates the partial file to its size (a longer one from an interrupted earlier run) and
  ``fsync``s it, renames it to ``sorted.txt``, removes the map files and writes
  ``OUTPUT/linesort.json``.

WORK is ``$MPITINY_RUN_DIR/linesort-maps`` (``OUTPUT/_work`` outside a run).

Measured (issue 18): docs/mapreduce.md, "linesort without a sampling task": CPU of all the
tasks 1.1-1.6x less than with the sampling task, the longest task 0.05-0.09 of half the CPU
(0.12-0.22 before); whole runs at load 2-5: 1.0-2.6x the one-process Python sort, the
longest task 0.05-0.11 of the span.
"""
from __future__ import annotations

import ctypes
import errno
import json
import mmap
import os
import time

import numpy as np

import mapreduce as mr
from mpitiny.io.commit import atomic_output
from mpitiny.kernels import load
from splitpieces import piece_bounds, read_split, scratch

PARTIAL = ".sorted.txt.partial"
LINE_BYTES = 4             # the cost of a line to a reducer, in bytes of it (the samples' weights)
SAMPLE_BYTES = 64          # a sample point keeps this many bytes of its line

_KERNEL = load("_lines")


def split_lines(data: bytes) -> list:
    """The lines of ``data`` (see the module docstring)."""
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return lines


def line_spans(raw: np.ndarray, kernel=_KERNEL) -> tuple:
    """``(starts, lens)`` of the lines of ``raw`` (uint8), lens without the ``\\n``; ``raw``
    must end with ``\\n`` (or be empty). The kernel's SSE2 scan, or numpy."""
    if kernel is not None:
        n = kernel.count_lines(raw)
        starts, lens = np.empty(n, np.int64), np.empty(n, np.int64)
        kernel.line_spans(raw, starts, lens)
        return starts, lens
    ends = np.flatnonzero(raw == 10)
    starts = np.empty(len(ends), np.int64)
    starts[:1] = 0
    starts[1:] = ends[:-1] + 1
    return starts, ends - starts


def read_lines(input: str, split: int) -> np.ndarray:
    """Split ``split`` with a final ``\\n`` (added when missing), in this thread's reused
    buffer (``read_split``)."""
    buf, n = read_split(input, split)
    if n and buf[n - 1] != 10:
        buf[n] = 10
        n += 1
    return buf[:n]


def sort_order(raw: np.ndarray, starts: np.ndarray, lens: np.ndarray, kernel=_KERNEL) -> np.ndarray:
    """The line numbers ordered by the lines' bytes, equal lines by number: the kernel's radix
    sort, or Python's stable ``sorted`` of the lines (``kernel=None``); the same array."""
    if kernel is None:
        data = raw.tobytes()
        lines = [data[a:a + n] for a, n in zip(starts.tolist(), lens.tolist())]
        return np.array(sorted(range(len(lines)), key=lines.__getitem__), np.int64)
    order = np.empty(len(starts), np.int64)
    kernel.sort_lines(raw, np.ascontiguousarray(starts, np.int64),
                      np.ascontiguousarray(lens, np.int64), order,
                      scratch("sort", 32 * max(len(starts), 1) + 16))
    return order


def gather_lines(raw: np.ndarray, starts: np.ndarray, lens: np.ndarray, order: np.ndarray,
                 kernel=_KERNEL) -> np.ndarray:
    """The lines in ``order``, each followed by ``\\n``, as one uint8 array."""
    if kernel is None:
        return mr.gather(raw, starts.take(order), lens.take(order) + 1)
    out = scratch("gather", int(lens.sum()) + len(lens))
    kernel.gather_lines(raw, starts, lens, order, out)
    return out


def run_points(run: np.ndarray, lines: int, points: int, kernel=_KERNEL) -> np.ndarray:
    """``(start, end, line number)`` rows of the lines of ``run`` (``lines`` ``\\n``-ended
    lines, uint8) that end ``points`` stretches of even cost (``LINE_BYTES`` per line plus its
    bytes): for k = 1..points the first line whose cost up to it reaches k / points of the
    total, once each. The kernel's one scan, or numpy (the same rows)."""
    if kernel is not None:
        out = np.empty(3 * points, np.int64)
        n = kernel.run_points(run, lines, points, LINE_BYTES, out)
        return out[:3 * n].reshape(n, 3)
    ends = np.flatnonzero(run == 10)
    if not len(ends):
        return np.empty((0, 3), np.int64)
    cost = LINE_BYTES * np.arange(1, len(ends) + 1) + ends + 1
    total = LINE_BYTES * len(ends) + len(run)
    at = np.unique(np.searchsorted(cost * points, total * np.arange(1, points + 1)))
    starts = np.concatenate([[0], ends[:-1] + 1]).take(at)
    return np.stack([starts, ends.take(at), at], axis=1)


def run_sample(run: np.ndarray, lines: int, points: int) -> list:
    """``[line hex, weight]`` at ``points`` even quantiles of the sorted run's cost (module
    docstring: "Splitters"): the line (its first ``SAMPLE_BYTES``) ending each stretch and
    the stretch's cost, so the weights add up to the run's cost."""
    if not lines or points < 1:
        return []
    rows = run_points(run, lines, points).tolist()
    out, before = [], 0
    for start, end, j in rows:
        cost = LINE_BYTES * (j + 1) + end + 1
        out.append([run[start:min(end, start + SAMPLE_BYTES)].tobytes().hex(), cost - before])
        before = cost
    return out


def choose_splitters(maps: list, partitions: int) -> list:
    """The ``partitions - 1`` splitters ``(line, run number)``, sorted: the maps' sample points
    in ``(line, run number)`` order, cut at even quantiles of their summed weights. Every reducer
    computes them from the same map outputs, so they agree; a process keeps the last ones
    (its next reducer of the run asks for the same)."""
    key = (partitions, tuple((m["run"], m["file"], m["bytes"], tuple(map(tuple, m["sample"])))
                             for m in maps))
    if _LAST_SPLITTERS and _LAST_SPLITTERS[0] == key:
        return _LAST_SPLITTERS[1]
    points = sorted((bytes.fromhex(h), m["run"], w) for m in maps for h, w in m["sample"])
    if not points:
        splitters = [(b"", 0)] * (partitions - 1)
    else:
        cum = np.cumsum([w for _, _, w in points])
        at = np.searchsorted(cum, cum[-1] * np.arange(1, partitions) / partitions)
        splitters = [points[j][:2] for j in np.minimum(at, len(points) - 1).tolist()]
    _LAST_SPLITTERS[:] = [key, splitters]
    return splitters


_LAST_SPLITTERS: list = []


def cut_run(run, line: bytes, upper: bool) -> int:
    """The byte offset in ``run`` (sorted ``\\n``-ended lines: bytes, mmap) of its first line
    ``> line`` (``upper``) or ``>= line``: a binary search on bytes, each probe the line that
    holds the middle byte (``rfind``/``find`` of ``\\n``)."""
    lo, hi = 0, len(run)
    while lo < hi:
        mid = (lo + hi) // 2
        a = run.rfind(b"\n", lo, mid) + 1 or lo
        e = run.find(b"\n", a)
        x = run[a:e]
        if x < line or (upper and x == line):
            lo = e + 1
        else:
            hi = a
    return lo


def partition_bounds(run, number: int, splitters: list, r: int) -> tuple:
    """Bytes ``[lo, hi)`` of partition ``r`` in ``run``, the sorted run numbered ``number``: a
    line ``x`` of it goes to ``bisect_right(splitters, (x, number))``, so the lines equal to
    a splitter ``(line, s)`` go after it when ``number >= s``, before it otherwise."""
    def cut(k: int) -> int:
        line, s = splitters[k]
        return cut_run(run, line, upper=number < s)
    lo = cut(r - 1) if r > 0 else 0
    hi = cut(r) if r < len(splitters) else len(run)
    return lo, hi


def work_dir(output: str) -> str:
    run = os.environ.get("MPITINY_RUN_DIR")
    return os.path.join(run, "linesort-maps") if run else os.path.join(output, "_work")


def map_split(input: str, split: int, output: str, samples: int = 128, piece: int = 0,
              pieces: int = 1) -> dict:
    """Piece ``piece`` of ``pieces`` of split ``split`` (``piece_bounds``), its lines sorted
    into one file, with ``samples`` points of its cost (module docstring). Its run number,
    ``split * pieces + piece``, orders the runs as the input does."""
    raw = read_lines(input, split)
    lo, hi = piece_bounds(raw, piece, pieces)
    raw = raw[lo:hi]
    starts, lens = line_spans(raw)
    order = sort_order(raw, starts, lens)
    grouped = gather_lines(raw, starts, lens, order)
    path = os.path.join(work_dir(output), f"lines-{split:07d}-{piece:04d}.txt")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(memoryview(grouped))
    os.replace(tmp, path)
    return {"split": split, "run": split * pieces + piece, "file": path, "bytes": len(grouped),
            "lines": len(starts), "sample": run_sample(grouped, len(starts), samples)}


def _open_run(m: dict):
    """Map ``m``'s file, mapped read-only (``b""`` when empty); its size is checked."""
    if not m["bytes"]:
        return b""
    with open(m["file"], "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size != m["bytes"]:
            raise IOError(f"{m['file']}: {size} bytes, the map wrote {m['bytes']}")
        return mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)


def merge_pieces(pieces: list, kernel=_KERNEL) -> tuple:
    """The lines of ``pieces`` (sorted runs of ``\\n``-ended lines, buffers) merged in bytes
    order: ``(data, lines)``. The kernel's heap merge, or ``list.sort`` of all the lines
    (timsort merges the runs) and a ``join`` (``kernel=None``); the same bytes."""
    if kernel is not None:
        out = scratch("merge", sum(len(p) for p in pieces))
        return out, kernel.merge_runs(pieces, out)
    lines = split_lines(b"".join(pieces)) if any(len(p) for p in pieces) else []
    lines.sort()
    n = len(lines)
    lines.append(b"")              # the final newline, without a copy of the whole output
    return (b"\n".join(lines) if n else b""), n


def _merge_part(maps: list, r: int, partitions: int) -> tuple:
    """Partition ``r`` of the maps' runs, merged: ``(offset in the output, data, lines)``."""
    splitters = choose_splitters(maps, partitions)
    runs = [_open_run(m) for m in maps]
    try:
        bounds = [partition_bounds(run, m["run"], splitters, r) for run, m in zip(runs, maps)]
        views = [memoryview(run)[lo:hi] for run, (lo, hi) in zip(runs, bounds) if hi > lo]
        try:
            data, n = merge_pieces(views)
        finally:
            for v in views:
                v.release()
    finally:
        for run in runs:
            if isinstance(run, mmap.mmap):
                run.close()
    return sum(lo for lo, _ in bounds), data, n


def reduce_part(r: int, partitions: int, output: str, inputs: dict) -> dict:
    """Partition ``r`` of every map's run, merged, written in place in the partial output."""
    maps = sorted((v for v in inputs.values() if isinstance(v, dict)), key=lambda m: m["run"])
    if not 0 <= r < partitions:
        raise ValueError(f"reduce_part: partition {r} of {partitions}")
    offset, data, n = _merge_part(maps, r, partitions)
    os.makedirs(output, exist_ok=True)
    fd = os.open(os.path.join(output, PARTIAL), os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        if len(data):
            os.pwrite(fd, data, offset)
        sync_range(fd, offset, len(data))
    finally:
        os.close(fd)
    first, last = edge_lines(data) if n else (None, None)
    return {"part": r, "lines": n, "offset": offset, "bytes": len(data),
            "first": first.hex() if n else None, "last": last.hex() if n else None}


def _libc_sync_file_range():
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (AttributeError, OSError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    return fn


_SYNC_FILE_RANGE = _libc_sync_file_range()
_SYNC_WAIT_WRITE_WAIT = 1 | 2 | 4      # SYNC_FILE_RANGE_WAIT_BEFORE | _WRITE | _WAIT_AFTER


def sync_range(fd: int, offset: int, length: int) -> None:
    """Write bytes ``[offset, offset + length)`` of ``fd`` to disk and wait: Linux's
    ``sync_file_range``, else ``fsync``. A reducer's ``fsync`` wrote every dirty page of the
    shared output, the other reducers' too, so the last ones waited for the first ones'
    bytes (0.06 -> 0.2 s on code); ``validate``'s ``fsync`` then finds clean pages."""
    if _SYNC_FILE_RANGE is None:
        os.fsync(fd)
    elif length and _SYNC_FILE_RANGE(fd, offset, length, _SYNC_WAIT_WRITE_WAIT) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS, errno.ESPIPE):
            raise OSError(err, f"sync_file_range: {os.strerror(err)}")
        os.fsync(fd)


def edge_lines(data) -> tuple:
    """The first and the last line of ``data`` (``\\n``-ended lines, any buffer), reading
    only as far as their newlines."""
    view, size, k = memoryview(data).cast("B"), len(data), 4096
    while True:
        head = bytes(view[:k])
        tail = bytes(view[max(0, size - 1 - k):size - 1])
        i, j = head.find(b"\n"), tail.rfind(b"\n")
        if (i >= 0 and j >= 0) or k >= size:
            return head[:i], tail[j + 1:]
        k *= 2


def validate(output: str, inputs: dict, keep_work: bool = False) -> dict:
    """Check counts and order across parts; rename the output into place (module docstring)."""
    maps = [v for k, v in inputs.items() if k.startswith("map")]
    parts = sorted((v for k, v in inputs.items() if k.startswith("reduce")), key=lambda v: v["part"])
    problems = []
    lines = sum(m["lines"] for m in maps)
    if sum(p["lines"] for p in parts) != lines:
        problems.append(f"{sum(p['lines'] for p in parts)} lines written, {lines} read")
    last = None
    for p in parts:
        if p["first"] is None:
            continue
        if last is not None and bytes.fromhex(p["first"]) < last:
            problems.append(f"part {p['part']} begins before the end of the part before it")
        last = bytes.fromhex(p["last"])
    at = 0
    for p in parts:
        if p["offset"] != at:
            problems.append(f"part {p['part']} is at byte {p['offset']}, not {at}")
        at += p["bytes"]
    size = at
    partial = os.path.join(output, PARTIAL)
    if not parts or not os.path.exists(partial):     # no lines at all: no reducer wrote
        os.makedirs(output, exist_ok=True)
        open(partial, "ab").close()
    if problems:
        raise RuntimeError("linesort validation failed: " + "; ".join(problems))
    fd = os.open(partial, os.O_WRONLY)
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(partial, os.path.join(output, "sorted.txt"))
    if not keep_work:
        for m in maps:
            try:
                os.remove(m["file"])
            except FileNotFoundError:
                pass
    report = {"lines": lines, "bytes": size, "parts": len(parts), "valid": True,
              "finished": time.time()}
    with atomic_output(os.path.join(output, "linesort.json")) as f:
        f.write(json.dumps(report).encode() + b"\n")
    return report
