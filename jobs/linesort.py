"""Sort the lines of a text file by bytes, as ``LC_ALL=C sort`` does (jobs/linesort.json).

A line is an element of ``data.split(b"\\n")`` of the logical content (the ingested files end to
end), minus the empty one after a final newline; every output line ends with ``\\n`` (a last
line without one gets one, as with sort(1)); ``\\r`` of a CRLF stays part of its line. Lines
compare as unsigned bytes (Python's ``bytes`` order, memcmp then length). Equal lines are
equal bytes, so the output is one sequence of bytes: ``OUTPUT/sorted.txt``.

The text analogue of TeraSort (jobs/sort.py, whose records are 100 bytes): lines are of any
length, so partitions are byte ranges found by the maps, and the output is one file written
in place by every reducer at its offset.

* ``sample(input, partitions, samples, sample_splits)``: the lines holding ``samples`` random
  bytes (fixed seed) of ``sample_splits`` splits spread over the file, with their positions;
  the ``partitions - 1`` splitters ``[line hex, position]`` at even quantiles of the reducers'
  cost (see "Splitters"). Reading each split into one reused buffer and finding the drawn
  lines with ``bytes.rfind``/``find`` takes ~0.1 s for 26 splits of 8 MiB (a fresh ``bytes``
  per split cost 20 ms of page faults each).
* ``map_split(input, split, partitions, output, inputs)``: the line boundaries
  (``line_spans``), the lines' **full order** by bytes, equal lines by position
  (``sort_order``), the cut of that order at each splitter (``partition_cuts``: one binary
  search per splitter on ``(line, position)``, ~20 comparisons), the lines gathered once in
  that order (``gather_lines``) and written to ``WORK/lines-SPLIT.txt``; returns the byte
  bounds of each partition, each a sorted run. With the compiled line kernel
  (``mpitiny.kernels._lines``, ``mpitiny/kernels/_lines.c``): ``memchr`` for the spans, a
  radix sort of 8-byte keys (bytes d..d+6 and how many bytes the line has from d on) that
  sorts runs of equal keys again from d + 7, and ``memcpy`` for the gather; without it
  (no compiler, or ``MPITINY_KERNELS=0``) numpy's ``flatnonzero``, Python's stable
  ``sorted`` of the lines and ``mapreduce.gather``: the same order, so the same map files.
  Before the kernel, the maps ordered the lines by their first 15 bytes only (numpy keys,
  ``longwords.prefix_order``) and the reducers' ``list.sort`` finished the order.
* ``reduce_part(r, output, inputs)``: partition ``r`` of every map file read into one buffer,
  the runs merged (``merge_pieces``: the kernel's binary heap over the runs, its cursors
  keyed like the sort, so most comparisons are one integer compare; without the kernel
  ``list.sort``, whose timsort merges the runs, and a ``join``) and written with
  ``os.pwrite`` into ``OUTPUT/.sorted.txt.partial`` at its offset: the bytes of partitions
  ``0 .. r-1`` summed over the maps, known from the maps' bounds (every reducer depends on
  every map), so no plan task and no concatenation.
* **Splitters** are ``(line, position)`` pairs, the position being the line's byte offset in
  the logical content, and a line goes to the partition ``bisect_right(splitters, (line, its
  position))``: lines equal to a splitter fall on both sides of it by position. Equal lines
  are equal bytes, so the output does not change, but a line making up a large share of the
  input (the empty line: 23 % of the lines of the logs corpus, 14 % of prose, where ``"0"``
  is another 12 %) no longer lands in one reducer: with line splitters alone, prose's
  reducers held 0 to 3.17 M of its 8.3 M lines (one reducer empty, the longest 1.19 s against
  a mean of 0.58 s). The quantiles weigh each sampled line by its cost to a reducer,
  ``LINE_BYTES`` (16) plus its length (a line drawn by one of its bytes counts ``(16 + len +
  1) / (len + 1)``: per line, ``split``, ``sort`` and ``join``; per byte, the reads and
  writes): the partitions' costs are within 1.04x of their mean on prose, logs and code
  (drawing whole lines from the first MiB of 16 splits, with line splitters: 1.67x on
  prose). The maps cut their sorted lines at the splitters by binary search
  (``partition_cuts``), comparing ``(line, position)`` as tuples: ~20 comparisons per
  splitter, whatever the lines' shared prefixes (code indented by 16 spaces and more).
* ``validate(output, inputs)``: the parts' line counts against the maps', the order across
  parts (each reducer reports its first and last line), truncates the partial file to its
  size (a longer one from an interrupted earlier run), renames it to ``sorted.txt``, removes
  the map files and writes ``OUTPUT/linesort.json``.

WORK is ``$MPITINY_RUN_DIR/linesort-maps`` (``OUTPUT/_work`` outside a run).

Measured (issue 18, 2 ranks, 8 MiB splits, the five 210 MB corpora of bench/corpora.py, load
average 8-10 on 2 shared cores; ``bench/ab.py --repeat 2 mapreduce_bench.py --corpora``
against the commit before): the reducers' task time summed over a run fell by about half
(timsort merging the maps' runs), the longest task from 0.18-0.26 to 0.13-0.20 of the run,
but the whole job only by 0.96-1.33x (noise included): 0.75-1.5x the one-process
``list.sort`` (the bar is 2x). What is left is the maps (half of their time is the gather
of the lines' bytes: ``copy_segments``, faster than Python's ``split`` and ``join`` of the
same lines) and the serial ``sample`` task (0.5-0.9 s, the other rank idle).

Then (splitters with positions, cost-weighted quantiles, ``map_order``, the sample from one
buffer; 2026-12-06): CPU seconds of all the job's tasks run as functions in one process
(``time.process_time``, the trees alternating, two runs each, medians), against the commit
before, same ``sorted.txt``: generated 4.67 -> 4.90, prose 6.81 -> 5.28, logs 5.24 -> 4.65,
code 5.21 -> 4.54, multilingual 4.45 -> 4.19 (0.95-1.29x); the longest task over half the
CPU total (the least fraction of a 2-rank run it can be) 0.14-0.24 -> 0.13-0.16, a reducer
except on prose (its split of 1.6 M short lines; with 16 partitions code and logs reach
0.06-0.07, prose stays at 0.15-0.2). Whole runs at load 3-5 (``bench/ab.py --repeat 2``)
vary 0.4-1.4x the one-process ``list.sort`` for the same code, and are 0.46-0.83x ``LC_ALL=C
sort --parallel=1``: the 2x bar is not met. Per line, the job does what ``list.sort`` and
``join`` do (the reducers' ``split``, timsort merge and ``join``: ~0.3 us a line) plus the
maps' keys, order and byte gather (~0.35 us a line): two ranks only make up for the second.

With the line kernel (issue 10, 2026-12-06): per 8 MiB split of real text, one process, the
kernel's sort took 16-27 ms where ``list.sort`` of the split's ready-made ``bytes`` lines took
42-57 ms, the gather 5-7 ms. Whole ``mpiexec``, 2 ranks, 8 MiB, kernel on against
``MPITINY_KERNELS=0`` (``bench/ab.py --base . --base-env MPITINY_KERNELS=0 --this-env
MPITINY_KERNELS=1 --repeat 2 mapreduce_bench.py --corpora ...``, load average 2.8-8.2,
``bench/results/ab-lines-kernel.json``): 2.2-2.3x faster on code and logs, 1.7-1.8x on prose
and multilingual; x the one-process Python sort, medians: prose 1.31, logs 2.21, code 1.77,
multilingual 1.81 (per run 1.11-2.93); x ``LC_ALL=C sort --parallel=1`` 1.05-1.67. One run of
the bench alone at load 1.9-3.0 (``bench/results/mapreduce_corpora_lines_kernel.json``):
x Python 1.19 (prose), 1.53 (logs), 1.77 (code), 1.70 (multilingual); x GNU 0.91-1.18; a
second (load 3.0-3.3) 1.99, 1.28, 1.65, 1.78, x GNU 0.77-1.37. The 2x bar is not met (logs'
A/B median only). Where the time goes (prose, quiet, 2.39 s
whole): start-up and shutdown ~0.6 s, ``sample`` 0.14 s with the other rank idle, the maps
~64 ms each (sort ~20, writing the 8 MiB map file 7-25, spans and gather ~7, read ~4), the
reducers 125-165 ms each (reading the pieces ~20, the merge ~40, writing 26 MB into the new
output file 10-80 and its ``fsync`` ~17): the job writes the corpus twice (map files and
output), which on this machine costs ~3 ms per MB of new file pages, and the baseline once.
The fallback without the kernel is slower than the numpy maps it replaced (Python's ``sorted``
on every split: 0.69-0.94x the baseline here against 0.75-1.5x before).
"""
from __future__ import annotations

import json
import os
import time

import numpy as np

import mapreduce as mr
from mpitiny.io.commit import atomic_output
from mpitiny.kernels import load
from mpitiny.io.splits import open_splits

PARTIAL = ".sorted.txt.partial"


_KERNEL = load("_lines")


def split_lines(data: bytes) -> list:
    """The lines of ``data`` (see the module docstring)."""
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return lines


def line_spans(raw: np.ndarray, kernel=_KERNEL) -> tuple:
    """``(starts, lens)`` of the lines of ``raw`` (uint8), lens without the ``\\n``; ``raw``
    must end with ``\\n`` (or be empty). The kernel's ``memchr`` loop, or numpy."""
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


def _lines_array(data) -> np.ndarray:
    """``data`` as uint8 with a final ``\\n`` (added when missing)."""
    raw = np.frombuffer(data, np.uint8) if isinstance(data, (bytes, bytearray)) else data
    if len(raw) and raw[-1] != 10:
        raw = np.concatenate([raw, np.array([10], np.uint8)])
    return raw


def sort_order(raw: np.ndarray, starts: np.ndarray, lens: np.ndarray, kernel=_KERNEL) -> np.ndarray:
    """The line numbers ordered by the lines' bytes, equal lines by number: the kernel's radix
    sort, or Python's stable ``sorted`` of the lines (``kernel=None``); the same array."""
    if kernel is None:
        data = raw.tobytes()
        lines = [data[a:a + n] for a, n in zip(starts.tolist(), lens.tolist())]
        return np.array(sorted(range(len(lines)), key=lines.__getitem__), np.int64)
    order = np.empty(len(starts), np.int64)
    kernel.sort_lines(raw, np.ascontiguousarray(starts, np.int64),
                      np.ascontiguousarray(lens, np.int64), order)
    return order


def gather_lines(raw: np.ndarray, starts: np.ndarray, lens: np.ndarray, order: np.ndarray,
                 kernel=_KERNEL) -> np.ndarray:
    """The lines in ``order``, each followed by ``\\n``, as one uint8 array."""
    if kernel is None:
        return mr.gather(raw, starts.take(order), lens.take(order) + 1)
    out = np.empty(int(lens.sum()) + len(lens), np.uint8)
    kernel.gather_lines(raw, starts, lens, order, out)
    return out


def partition_cuts(raw: np.ndarray, starts: np.ndarray, lens: np.ndarray, order: np.ndarray,
                   positions: np.ndarray, splitters: list) -> list:
    """For each splitter ``(line, position)`` (sorted), how many lines of ``order`` (sorted by
    bytes, then position) come before it: a binary search comparing ``(line, position)``
    pairs, so partition p is ``order[cuts[p-1]:cuts[p]]``, the lines with ``bisect_right(
    splitters, (line, position)) == p``."""
    cuts, lo = [], 0
    for splitter in splitters:
        hi = len(order)
        while lo < hi:
            mid = (lo + hi) // 2
            k = int(order[mid])
            a = int(starts[k])
            if (raw[a:a + int(lens[k])].tobytes(), int(positions[k])) < splitter:
                lo = mid + 1
            else:
                hi = mid
        cuts.append(lo)
    return cuts


def work_dir(output: str) -> str:
    run = os.environ.get("MPITINY_RUN_DIR")
    return os.path.join(run, "linesort-maps") if run else os.path.join(output, "_work")


LINE_BYTES = 16            # the cost of a line to a reducer, in bytes of it (sample's weights)


def sample(input: str, partitions: int, samples: int = 20_000, sample_splits: int = 64,
           seed: int = 0) -> list:
    """The ``partitions - 1`` splitters ``[line hex, position]``, sorted (module docstring:
    "Splitters"): the lines holding ``samples`` random bytes (fixed seed) of ``sample_splits``
    splits spread over the input, with their positions (byte offset in the logical content);
    the splitters cut them at even quantiles of the reducers' cost, ``LINE_BYTES`` per line
    plus its bytes (a line drawn by one of its bytes counts ``(LINE_BYTES + len + 1) / (len +
    1)``)."""
    if partitions < 1:
        raise ValueError(f"partitions must be >= 1, not {partitions}")
    s = open_splits(input)
    n = len(s)
    k = min(n, max(1, sample_splits))
    picks = sorted({(i * n) // k for i in range(k)})
    per = max(1, -(-samples // max(1, len(picks))))
    rng = np.random.default_rng(seed)
    base = mr.logical_starts(s)
    rows: list = []
    buf = bytearray(max((s.span_bytes(i) for i in picks), default=0))   # one buffer, touched once
    for i in picks:
        n = s.read_into(i, buf)
        for at in (rng.integers(0, n, per).tolist() if n else ()):
            first = buf.rfind(b"\n", 0, at) + 1
            end = buf.find(b"\n", first, n)
            rows.append((bytes(buf[first:end if end >= 0 else n]), int(base[i]) + first))
    if not rows:
        return [[b"".hex(), -1]] * (partitions - 1)
    rows.sort()
    lens = np.array([len(line) for line, _ in rows], np.float64)
    cost = np.cumsum((LINE_BYTES + lens + 1) / (lens + 1))
    at = np.searchsorted(cost, cost[-1] * np.arange(1, partitions) / partitions)
    return [[rows[j][0].hex(), rows[j][1]] for j in np.minimum(at, len(rows) - 1).tolist()]


def parse_splitters(values: list) -> list:
    """``sample``'s splitters as ``(line bytes, position)``; a splitter given as a hex string
    alone has position -1 (before every line equal to it)."""
    return [(bytes.fromhex(v), -1) if isinstance(v, str) else (bytes.fromhex(v[0]), int(v[1]))
            for v in values]


def map_split(input: str, split: int, partitions: int, output: str, inputs: dict) -> dict:
    """Split ``split``'s lines sorted, cut into partitions, in one file (module docstring)."""
    (splitters,) = inputs.values()
    splitters = parse_splitters(splitters)
    if len(splitters) != partitions - 1:
        raise ValueError(f"{len(splitters)} splitters for {partitions} partitions")
    s = open_splits(input)
    raw = _lines_array(s.read_array(split))
    starts, lens = line_spans(raw)
    order = sort_order(raw, starts, lens)
    cuts = partition_cuts(raw, starts, lens, order, starts + mr.logical_starts(s)[split],
                          splitters)
    ends = np.cumsum(lens.take(order) + 1)
    bounds = [0] + [int(ends[c - 1]) if c else 0 for c in cuts] + [int(ends[-1]) if len(ends) else 0]
    grouped = gather_lines(raw, starts, lens, order)
    path = os.path.join(work_dir(output), f"lines-{split:07d}.txt")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(memoryview(grouped))
    os.replace(tmp, path)
    return {"split": split, "file": path, "bounds": bounds, "lines": len(starts)}


def _read_ranges(maps: list, r: int) -> tuple:
    """Partition ``r`` of every map file into one buffer: ``(buffer, [memoryview per piece])``."""
    sizes = [m["bounds"][r + 1] - m["bounds"][r] for m in maps]
    buf = bytearray(sum(sizes))
    view, pieces, at = memoryview(buf), [], 0
    for m, size in zip(maps, sizes):
        if not size:
            continue
        with open(m["file"], "rb") as f:
            f.seek(m["bounds"][r])
            got = f.readinto(view[at:at + size])
        if got != size:
            raise IOError(f"{m['file']}: short read ({got} of {size} bytes at {m['bounds'][r]})")
        pieces.append(view[at:at + size])
        at += size
    return buf, pieces


def merge_pieces(buf: bytearray, pieces: list, kernel=_KERNEL) -> tuple:
    """The lines of ``pieces`` (sorted runs of ``\n``-ended lines, views of ``buf``) merged in
    bytes order: ``(data, lines)``. The kernel's heap merge, or ``list.sort`` of all the lines
    (timsort merges the runs) and a ``join`` (``kernel=None``); the same bytes."""
    if kernel is not None:
        out = bytearray(len(buf))
        return out, kernel.merge_runs(pieces, out)
    lines = split_lines(bytes(buf)) if buf else []
    lines.sort()
    n = len(lines)
    lines.append(b"")              # the final newline, without a copy of the whole output
    return (b"\n".join(lines) if n else b""), n


def reduce_part(r: int, output: str, inputs: dict) -> dict:
    """Partition ``r`` of every map file, merged, written in place in the partial output."""
    maps = sorted((v for v in inputs.values() if isinstance(v, dict)), key=lambda m: m["split"])
    offset = sum(m["bounds"][r] for m in maps)
    data, n = merge_pieces(*_read_ranges(maps, r))
    os.makedirs(output, exist_ok=True)
    fd = os.open(os.path.join(output, PARTIAL), os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        if data:
            os.pwrite(fd, data, offset)
        os.fsync(fd)
    finally:
        os.close(fd)
    first = data[:data.find(b"\n")] if n else None
    last = data[data.rfind(b"\n", 0, len(data) - 1) + 1:-1] if n else None
    return {"part": r, "lines": n, "offset": offset, "bytes": len(data),
            "first": bytes(first).hex() if n else None, "last": bytes(last).hex() if n else None}


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
    size = sum(p["bytes"] for p in parts)
    partial = os.path.join(output, PARTIAL)
    if not parts or not os.path.exists(partial):     # no lines at all: no reducer wrote
        os.makedirs(output, exist_ok=True)
        open(partial, "ab").close()
    if problems:
        raise RuntimeError("linesort validation failed: " + "; ".join(problems))
    os.truncate(partial, size)
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
