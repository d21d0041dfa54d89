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
* ``map_split(input, split, partitions, output, inputs)``: no Python sort, and no ``bytes``
  per line. The line boundaries (``line_spans``), each line's first 16 bytes as two
  big-endian uint64 (``line_keys``: one unaligned 8-byte load each from an overlapping view of
  the split, masked to the line's length), its partition (``partition_of``: partition p holds
  the lines in ``[splitter p-1, splitter p)``; the keys decide unless a line's key equals a
  splitter's, then ``bisect`` on its bytes), the lines ordered by their **sort keys**
  (``sort_keys``: bytes 0-14, then the length up to 16; ``longwords.prefix_order``, a quicksort
  of the first word and a ``lexsort`` of the rows tied on it), then grouped by partition
  (a stable ``argsort`` of the partition numbers in that order), gathered once and written to
  ``WORK/lines-SPLIT.txt``; returns the byte bounds of each partition. Each partition of a
  map file is thus a run sorted by the lines' first 15 bytes (lines longer than that which
  share them are in no particular order among themselves). Partitioning by the 16-byte keys
  alone put every code line indented by 16 spaces in one partition: one reducer took 0.20
  of the run.
* ``reduce_part(r, output, inputs)``: partition ``r`` of every map file, its lines sorted
  (``list.sort``, in C: timsort, which merges the maps' nearly sorted runs in 2-3x less time
  than it sorts the same lines in input order; the first version of the maps sorted each
  split fully with ``list.sort`` and doubled the sorting) and written with ``os.pwrite`` into
  ``OUTPUT/.sorted.txt.partial`` at its offset: the bytes of partitions ``0 .. r-1`` summed
  over the maps, known from the maps' bounds (every reducer depends on every map), so no plan
  task and no concatenation. Sorting the reducers' lines in numpy instead (``sort_keys``,
  the tied lines by ``longwords.order_ties``, one gather) was 2-3x slower than ``list.sort``
  and its ``join``: gathering bytes in sorted order costs more than Python's ``join`` of the
  lines, and duplicated long lines (licence texts) fall to ``order_ties``'s ``sorted``.
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
  prose). ``partition_of`` decides most lines by their first 8 bytes
  (one ``searchsorted``), then by the 16-byte keys, and the lines whose key equals a
  splitter's by the rest of their bytes 8 at a time (``_compare_rest``), their lengths and
  their positions: no ``bytes`` per line (code indented by 16 spaces: a fifth of its lines
  went to ``bisect`` before).
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
"""
from __future__ import annotations

import json
import os
import time

import numpy as np

import longwords as lw
import mapreduce as mr
from mpitiny.io.commit import atomic_output
from mpitiny.io.splits import open_splits

PARTIAL = ".sorted.txt.partial"


def split_lines(data: bytes) -> list:
    """The lines of ``data`` (see the module docstring)."""
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return lines


KEY_BYTES = 16              # bytes of a line compared per numpy round (two big-endian uint64)
_ALL_ONES = np.uint64(0xFFFFFFFFFFFFFFFF)


def line_spans(raw: np.ndarray) -> tuple:
    """``(starts, lens)`` of the lines of ``raw`` (uint8), lens without the ``\\n``; ``raw``
    must end with ``\\n`` (or be empty)."""
    ends = np.flatnonzero(raw == 10)
    starts = np.empty(len(ends), np.int64)
    starts[:1] = 0
    starts[1:] = ends[:-1] + 1
    return starts, ends - starts


def _windows(raw: np.ndarray) -> np.ndarray:
    """Element i = bytes i .. i+7 of ``raw`` as a big-endian uint64 (an overlapping view of a
    zero-padded copy: one unaligned load per key, no byte gathers)."""
    padded = np.zeros(len(raw) + 16, np.uint8)
    padded[:len(raw)] = raw
    return np.ndarray((len(raw) + 9,), ">u8", padded, 0, (1,))


def line_keys(windows: np.ndarray, starts: np.ndarray, lens: np.ndarray, offset: int = 0) -> tuple:
    """Bytes ``offset .. offset + 15`` of each line as two uint64 (big-endian order, zero past
    the line's end): comparing ``(k0, k1)`` compares those bytes as memcmp would."""
    keys = []
    for at in (offset, offset + 8):
        left = np.clip(lens - at, 0, 8).astype(np.uint64) << np.uint64(3)
        # indexing, not take: take would copy the whole overlapping view first
        k = windows[np.minimum(starts + at, len(windows) - 1)].astype(np.uint64)
        k &= ~(_ALL_ONES >> left)          # keep the first ``left`` bits (x >> 64 == 0)
        keys.append(k)
    return keys[0], keys[1]


def _lines_array(data) -> np.ndarray:
    """``data`` as uint8 with a final ``\\n`` (added when missing)."""
    raw = np.frombuffer(data, np.uint8) if isinstance(data, (bytes, bytearray)) else data
    if len(raw) and raw[-1] != 10:
        raw = np.concatenate([raw, np.array([10], np.uint8)])
    return raw


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


def prefix_key(line: bytes) -> list:
    """``line_keys`` of one line: its first 16 bytes, zero padded, as two big-endian ints."""
    head = line[:KEY_BYTES].ljust(KEY_BYTES, b"\0")
    return [int.from_bytes(head[:8], "big"), int.from_bytes(head[8:], "big")]


def sort_keys(lens: np.ndarray, k0: np.ndarray, k1: np.ndarray) -> tuple:
    """``(lo, hi)`` per line from its ``line_keys`` ``(k0, k1)``: bytes 0-7, and bytes 8-14
    then ``min(len, 16)`` in the last byte. Their unsigned order is the lines' byte order
    except between lines sharing their first 15 bytes and both longer than that (``hi`` ending
    in 16): a line ending inside the 15 bytes is a prefix of any line with the same key and a
    greater length."""
    hi = k1 & ~np.uint64(0xFF)
    hi |= np.minimum(lens, 16).astype(np.uint64)
    return k0, hi


def partition_of(raw: np.ndarray, starts: np.ndarray, lens: np.ndarray,
                 splitters: list, keys: tuple | None = None, positions=None,
                 windows: np.ndarray | None = None) -> np.ndarray:
    """The partition of each line: how many ``splitters`` (sorted ``(line, position)``; a line
    alone is at position -1) are at most ``(line, its position)`` (``positions``: None, every
    line at position 0). From the first 8 bytes (one ``searchsorted``) unless a splitter
    shares them; then from the 16-byte keys; for lines whose key equals a splitter's, by
    comparing the rest of their bytes 8 at a time (``_compare_rest``), then the lengths, then
    the positions. ``keys``: the lines' ``line_keys`` and ``windows`` (``_windows(raw)``) if
    already known."""
    splitters = [(x, -1) if isinstance(x, bytes) else x for x in splitters]
    windows = _windows(raw) if windows is None else windows
    k0, k1 = keys if keys is not None else line_keys(windows, starts, lens)
    first = np.array([prefix_key(x)[0] for x, _ in splitters], np.uint64)
    part = np.searchsorted(first, k0, "left")        # splitters whose first 8 bytes are less
    near = np.flatnonzero(np.searchsorted(first, k0, "right") != part)
    if len(near):                                    # a splitter shares the first 8 bytes
        pos = np.zeros(len(near), np.int64) if positions is None else positions.take(near)
        part[near] = _partition_near(windows, starts.take(near), lens.take(near), splitters,
                                     (k0.take(near), k1.take(near)), pos)
    return part


def _partition_near(windows: np.ndarray, starts: np.ndarray, lens: np.ndarray, splitters: list,
                    keys: tuple, positions: np.ndarray) -> np.ndarray:
    """``partition_of`` for lines whose first 8 bytes equal a splitter's."""
    k0, k1 = keys
    part = np.zeros(len(k0), np.intp)
    for line, at in splitters:
        s0, s1 = (np.uint64(x) for x in prefix_key(line))
        same = k0 == s0
        part += (k0 > s0) | (same & (k1 > s1))
        tied = np.flatnonzero(same & (k1 == s1))
        if len(tied):
            c = _compare_rest(windows, starts.take(tied), lens.take(tied), line)
            part[tied] += (c > 0) | ((c == 0) & (positions.take(tied) >= at))
    return part


def _compare_rest(windows: np.ndarray, starts: np.ndarray, lens: np.ndarray,
                  line: bytes) -> np.ndarray:
    """-1, 0 or 1 per line as it is below, equal to or above ``line``, for lines whose first
    ``KEY_BYTES`` (zero-padded) equal ``line``'s: their bytes 8 at a time from byte 16 (zero
    past a line's end) while they stay equal and ``line`` lasts, then the lengths (the shorter
    of two lines equal so far is a prefix of the other, zeros aside, and comes first)."""
    out = np.zeros(len(starts), np.int8)
    live = np.arange(len(starts))
    for at in range(KEY_BYTES, len(line), 8):
        want = np.uint64(int.from_bytes(line[at:at + 8].ljust(8, b"\0"), "big"))
        left = np.clip(lens.take(live) - at, 0, 8).astype(np.uint64) << np.uint64(3)
        k = windows[np.minimum(starts.take(live) + at, len(windows) - 1)].astype(np.uint64)
        k &= ~(_ALL_ONES >> left)
        out[live] = (k > want).astype(np.int8) - (k < want)
        live = live[k == want]
        if not len(live):
            return out
    out[live] = np.sign(lens.take(live) - len(line)).astype(np.int8)
    return out


TIES_SAMPLE = 8192          # keys map_order looks at to choose its way
TIED_BELOW = 0.25           # distinct share of those under which the keys are mostly ties


def map_order(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """An order of rows by ``(lo, hi)`` (rows equal on both in no particular order). When most
    keys are repeats (a sample of ``TIES_SAMPLE`` keys has under ``TIED_BELOW`` distinct
    ``lo``: short lines, indentation), two stable sorts, ``hi`` then ``lo`` (numpy's stable
    sort runs through equal keys): on a prose split of 1.6 M lines, 40 % of them ``"0"``,
    0.10 s where ``longwords.prefix_order`` (a quicksort of ``lo``, then the runs of equal
    ``lo`` by ``hi``) took 0.46 s and made its map the longest task of the run; 0.6-0.7x its
    time on splits of code and logs, 1.4x on multilingual ones, which take ``prefix_order``."""
    step = max(1, len(lo) // TIES_SAMPLE)
    seen = lo[::step]
    if len(seen) and len(np.unique(seen)) < TIED_BELOW * len(seen):
        order = np.argsort(hi, kind="stable")
        return order.take(np.argsort(lo.take(order), kind="stable"))
    return lw.prefix_order(lo, hi)


def map_split(input: str, split: int, partitions: int, output: str, inputs: dict) -> dict:
    """Split ``split``'s lines grouped by partition in one file (module docstring)."""
    (splitters,) = inputs.values()
    splitters = parse_splitters(splitters)
    if len(splitters) != partitions - 1:
        raise ValueError(f"{len(splitters)} splitters for {partitions} partitions")
    s = open_splits(input)
    raw = _lines_array(s.read_array(split))
    starts, lens = line_spans(raw)
    windows = _windows(raw)
    keys = line_keys(windows, starts, lens)
    part = partition_of(raw, starts, lens, splitters, keys, starts + mr.logical_starts(s)[split],
                        windows)
    order = map_order(*sort_keys(lens, *keys))
    order = order.take(np.argsort(part.take(order).astype(np.uint16), kind="stable"))
    sizes = np.bincount(part, weights=lens + 1, minlength=partitions).astype(np.int64)
    bounds = np.concatenate([[0], np.cumsum(sizes)]).tolist()
    grouped = mr.gather(raw, starts.take(order), lens.take(order) + 1)
    path = os.path.join(work_dir(output), f"lines-{split:07d}.txt")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(memoryview(grouped))
    os.replace(tmp, path)
    return {"split": split, "file": path, "bounds": bounds, "lines": len(starts)}


def _read_range(path: str, a: int, b: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(a)
        got = f.read(b - a)
    if len(got) != b - a:
        raise IOError(f"{path}: short read ({len(got)} of {b - a} bytes at {a})")
    return got


def reduce_part(r: int, output: str, inputs: dict) -> dict:
    """Partition ``r`` of every map file, sorted, written in place in the partial output."""
    maps = sorted((v for v in inputs.values() if isinstance(v, dict)), key=lambda m: m["split"])
    offset = sum(m["bounds"][r] for m in maps)
    lines: list = []
    for m in maps:                 # each piece ends with a newline: split alone, not joined
        if m["bounds"][r + 1] > m["bounds"][r]:
            lines += split_lines(_read_range(m["file"], m["bounds"][r], m["bounds"][r + 1]))
    lines.sort()                   # timsort: the maps' runs are sorted by their 15-byte keys
    n = len(lines)
    lines.append(b"")              # the final newline, without a copy of the whole output
    data = b"\n".join(lines) if n else b""
    os.makedirs(output, exist_ok=True)
    fd = os.open(os.path.join(output, PARTIAL), os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        if data:
            os.pwrite(fd, data, offset)
        os.fsync(fd)
    finally:
        os.close(fd)
    return {"part": r, "lines": n, "offset": offset, "bytes": len(data),
            "first": lines[0].hex() if n else None, "last": lines[n - 1].hex() if n else None}


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
