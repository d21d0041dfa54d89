"""grep as MapReduce over an ingested HDF5 file (jobs/grep.json, docs/mapreduce.md).

A line is what ``data.split(b"\\n")`` gives (a final newline ends the last line; ``\\r`` of a
CRLF stays part of the line); it matches when ``re.search(pattern, line)`` does, ``pattern``
being a Python regular expression on bytes (the parameter's UTF-8 bytes).

The output is the matches in input order, so it is the maps' outputs end to end: no task
handles all of them (before, one ``finish`` task formatted every match, up to a third of a
run on real logs, with the other ranks idle).

* ``map_part(input, split, pattern, output, piece, pieces)``: piece ``piece`` of ``pieces``
  (4) of the split, whole lines (``splitpieces``: the split is read once per thread for all
  its pieces); finds its matching lines (candidate lines holding one of the pattern's
  required literals, ``candidate_lines``, then ``re.search`` on each through ``map``, the
  matches kept with ``itertools.compress``: no Python loop per line), maps each
  to its source file and byte offset in it (``sources`` of the ingested file: the source
  holding the line's first byte), formats its ``grep.tsv`` rows and writes them, with the
  columns of ``grep.h5``, to a part file in the run's work directory
  (``sortedruns.work_dir``). Returns a small description: split, piece, rows, bytes,
  matches per source.
* **Pieces**: matches cluster (the code corpus's ``def f(self`` in 7 of 26 splits), and
  with one map per 8 MiB split the maps of those splits took 13-20 ms, the others 3-5, in
  runs of ~0.1 s from the first task to the last: a map was 0.09-0.18 of that span. A
  rank's first map also pays the cold costs (the buffer's first pages, the first read, the
  part directory, and with two ``foreach`` variables the file's open: ``mpitiny run`` opens
  a split family's file before its first task only when ``split`` is the family's one
  variable).
* ``plan(input, output, inputs, writers)``: checks that every piece of every split has its
  description once (``_check_complete``: an aggregation tree over the first ``splits`` map
  instances would miss pieces); prefix sums of the parts' sizes give every part
  its place in the outputs; creates ``grep.tsv`` at its final size and ``grep.h5`` with
  contiguous, allocated datasets (``sortedruns.contiguous_datasets``) under temporary names,
  writes ``grep-counts.tsv`` (``source<TAB>matches`` for every input file) under a temporary
  name, and cuts the parts into ``writers`` ranges of about equal bytes.
* ``write(inputs, m)``: copies range ``m``'s parts into the outputs with ``os.pwrite`` at
  their offsets (``line_ends`` shifted by the range's first line byte), then ``fsync``.
* ``commit(output, inputs)``: renames the three files into place, removes the parts.

Candidate lines: the compiled line kernel (``mpitiny.kernels._lines.find_line_spans``,
mpitiny/kernels/_lines.c) scans the split once for all the literals (SSE2: each literal's
first and last byte tested at 16 positions at a time, then ``memcmp``; the scan goes on from
the next line after a hit), on the piece of the split's buffer (no copy to ``bytes``),
and makes the candidate lines' ``bytes`` (``span_lines``); without it (no compiler,
``MPITINY_KERNELS=0``) ``bytes.find`` of each literal over a ``bytes`` copy, one pass per
literal, and a slice per line. Both give the same spans, and every candidate
is checked with ``re.search``, so the matches are those of ``re.search`` per line for any
pattern. On the multilingual corpus (``(файл|Datei|fichier)``: three literals, the first a
Cyrillic one whose bytes are common there) the three ``find`` passes took ~14 ms of a 30 ms
map per 8 MiB split. Per 8 MiB split (splits 0, 5, 12, 20, one process, best of 3, load
2.3): the kernel's scan 1.7 ms against 13.0 ms for the ``find`` passes on multilingual, 2.3
against 12.4 (logs), 1.8 against 9.9 (prose), 1.2 against 6.3 (code), the same spans.

The aggregation-tree variant (``mapreduce.py tree ... --fn grep:merge --finish-fn
grep:finish``, over a copy of grep.json whose map family has the one variable ``split``:
the tree's literal deps ``map[i]`` name one variable) concatenates the parts' descriptions
in the tree and runs plan, one write and commit in its ``finish``. ``map_split`` (matches
packed in the value, no file) and ``grep_bytes`` are the split-level kernel for other uses.
"""
from __future__ import annotations

import os
import re
import time
from itertools import compress

import numpy as np

import mapreduce as mr
import sortedruns
import splitpieces
from mpitiny.io.splits import open_splits
from mpitiny.kernels import load

_KERNEL = load("_lines")

_RX: dict = {}
_LITERALS: dict = {}


def _regex(pattern: str):
    rx = _RX.get(pattern)
    if rx is None:
        rx = _RX[pattern] = re.compile(pattern.encode("utf-8", "surrogateescape"))
    return rx


try:
    from re import _parser as _sre_parse        # Python 3.11+
except ImportError:                                 # pragma: no cover
    import sre_parse as _sre_parse  # type: ignore[no-redef]


def required_literals(pattern: str) -> list | None:
    """Byte strings one of which every match of ``pattern`` contains (None: none known), read
    from the parsed pattern: a run of literal characters, or one such run from each branch of
    an alternation, at any depth of plain groups; the longest shortest one is kept. Nothing
    under a case-insensitive flag, and nothing holding a newline (a line never does)."""
    parsed = _sre_parse.parse(pattern.encode("utf-8", "surrogateescape"))
    if parsed.state.flags & re.IGNORECASE:
        return None
    found = _literals(list(parsed))
    if not found or min(map(len, found)) < 2 or any(b"\n" in x for x in found):
        return None
    return found


def _literals(items: list) -> list | None:
    best: list | None = None
    run: list = []

    def keep(candidate):
        nonlocal best
        if candidate and (best is None or min(map(len, candidate)) > min(map(len, best))):
            best = candidate

    for op, arg in items + [(None, None)]:
        if op is _sre_parse.LITERAL:
            run.append(arg)
            continue
        keep([bytes(run)] if run else None)
        run = []
        if op is _sre_parse.SUBPATTERN and not arg[1] & re.IGNORECASE:
            keep(_literals(list(arg[3])))
        elif op is _sre_parse.BRANCH:
            alts = [_literals(list(alt)) for alt in arg[1]]
            if all(alts):
                keep([x for alt in alts for x in alt])
    return best


def _candidate_lines(data: bytes, literals: list) -> list:
    """Start and end of every line of ``data`` that contains one of ``literals``, in order."""
    spans = set()
    for lit in literals:
        at = data.find(lit)
        while at >= 0:
            end = data.find(b"\n", at)
            end = len(data) if end < 0 else end
            spans.add((data.rfind(b"\n", 0, at) + 1, end))
            at = data.find(lit, end + 1)
    return sorted(spans)


def candidate_spans(data, literals: list, kernel=_KERNEL) -> list:
    """``_candidate_lines`` of ``data`` (bytes or a uint8 array): the kernel's one-pass scan
    for all the literals at once (``find_line_spans``), or ``bytes.find`` of each; the same
    list."""
    if kernel is None:
        return _candidate_lines(data if isinstance(data, bytes) else bytes(data), literals)
    return _span_array(data, literals, kernel).tolist()


def _span_array(data, literals: list, kernel=_KERNEL) -> np.ndarray:
    """``candidate_spans`` as an (n, 2) int64 array."""
    if kernel is None:
        spans = _candidate_lines(data if isinstance(data, bytes) else bytes(data), literals)
        return np.array(spans, np.int64).reshape(len(spans), 2)
    least = min(map(len, literals))
    out = np.empty(2 * (len(data) // (least + 1) + 2), np.int64)
    n = kernel.find_line_spans(data, literals, out)
    return out[:2 * n].reshape(n, 2)


def candidate_lines(data, literals: list, kernel=_KERNEL) -> tuple:
    """``(starts, lines)`` of the candidate lines (``candidate_spans``): the lines as
    ``bytes``, made by the kernel (``span_lines``) or by a slice of a ``bytes`` copy each."""
    spans = _span_array(data, literals, kernel)
    if kernel is not None:
        return spans[:, 0].tolist(), kernel.span_lines(data, spans)
    whole = data if isinstance(data, bytes) else bytes(data)
    return spans[:, 0].tolist(), [whole[a:b] for a, b in spans.tolist()]


def grep_bytes(data, pattern: str) -> tuple:
    """``(offsets, lines)`` of the lines of ``data`` (bytes or a uint8 array) that match
    ``pattern``: the lines that hold one of its ``required_literals`` (``candidate_spans``),
    each checked with ``re.search``; every line when the pattern has none."""
    search = _regex(pattern).search
    literals = _LITERALS.get(pattern, False)
    if literals is False:
        literals = _LITERALS[pattern] = required_literals(pattern)
    if literals is not None:
        starts, lines = candidate_lines(data, literals)
        hits = list(map(search, lines))
        return list(compress(starts, hits)), list(compress(lines, hits))
    view = memoryview(data).cast("B") if not isinstance(data, bytes) else data
    offsets, lines, pos = [], [], 0
    parts = bytes(view).split(b"\n")
    if parts and parts[-1] == b"":
        parts.pop()
    for line in parts:
        if search(line):
            offsets.append(pos)
            lines.append(line)
        pos += len(line) + 1
    return offsets, lines


def map_split(input: str, split: int, pattern: str) -> bytes:
    """The matching lines of one split with their offsets in the logical content, packed."""
    s = open_splits(input)
    start = int(mr.logical_starts(s)[split])
    offsets, lines = grep_bytes(s.read(split), pattern)
    lens = np.fromiter(map(len, lines), np.int64, len(lines))
    return mr.pack([{"offsets": np.asarray(offsets, np.int64) + start, "lens": lens,
                     "lines": b"".join(lines)}])


_PART_HEAD = np.dtype("<i8")


def _sources(splits) -> tuple:
    names = [src["name"].encode("utf-8", "surrogateescape") for src in splits.sources]
    starts = np.array([src["offset"] for src in splits.sources], np.int64)
    return names, starts


def map_part(input: str, split: int, pattern: str, output: str, piece: int = 0,
             pieces: int = 1) -> dict:
    """Piece ``piece`` of ``pieces`` of split ``split`` (whole lines, ``splitpieces``; the
    split read once per thread for all its pieces): its matches as ``grep.tsv`` rows and
    ``grep.h5`` columns in a part file (none when it has no match); its description (see the
    module docstring)."""
    s = open_splits(input)
    buf, n = splitpieces.read_split(input, split)
    lo, hi = splitpieces.piece_bounds(buf[:n], piece, pieces)
    start = int(mr.logical_starts(s)[split]) + lo
    offsets, lines = grep_bytes(buf[lo:hi], pattern)
    value = {"split": split, "piece": piece, "pieces": pieces, "input": input, "file": None,
             "rows": len(lines), "tsv_bytes": 0, "line_bytes": 0, "counts": []}
    if not lines:
        return value
    names, starts = _sources(s)
    offsets = np.asarray(offsets, np.int64) + start
    which = np.searchsorted(starts, offsets, side="right") - 1
    local = offsets - starts.take(which)
    tsv = b"".join([b"%s\t%d\t%s\n" % (names[w], o, line)
                    for w, o, line in zip(which.tolist(), local.tolist(), lines)])
    text = b"".join(lines)
    counts = np.bincount(which)
    path = os.path.join(sortedruns.work_dir(output, "grep-parts"),
                        f"part-{split:07d}-{piece:04d}.bin")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(np.array([len(lines), len(tsv), len(text)], _PART_HEAD).tobytes())
        for column in (which, local, np.fromiter(map(len, lines), np.int64, len(lines))):
            f.write(np.ascontiguousarray(column, _PART_HEAD).tobytes())
        f.write(tsv)
        f.write(text)
    os.replace(tmp, path)
    nonzero = np.flatnonzero(counts)
    return {**value, "file": path, "tsv_bytes": len(tsv), "line_bytes": len(text),
            "counts": [[int(k), int(counts[k])] for k in nonzero]}


def _read_part(path: str) -> dict:
    raw = np.fromfile(path, np.uint8)
    rows, tsv_bytes, line_bytes = raw[:24].view(_PART_HEAD).tolist()
    cols = raw[24:24 + 24 * rows].view(_PART_HEAD)
    at = 24 + 24 * rows
    return {"source": cols[:rows], "offset": cols[rows:2 * rows],
            "line_lens": cols[2 * rows:], "tsv": raw[at:at + tsv_bytes],
            "lines": raw[at + tsv_bytes:at + tsv_bytes + line_bytes]}


def _parts(inputs: dict) -> list:
    """The maps' descriptions in split order (from map instances or tree nodes' lists)."""
    found = []
    for value in inputs.values():
        if isinstance(value, list):
            found += value
        elif isinstance(value, dict) and "split" in value:
            found.append(value)
    return sorted(found, key=lambda v: (v["split"], v.get("piece", 0)))


def _check_complete(parts: list, splits: int, where: str) -> None:
    """Every piece of every split has its description, once (an aggregation tree built over
    the first ``splits`` map instances would miss pieces: an error, not a shorter output)."""
    pieces = {p.get("pieces", 1) for p in parts} or {1}
    have = [(p["split"], p.get("piece", 0)) for p in parts]
    each = min(pieces)
    if len(pieces) != 1 or have != [(i, k) for i in range(splits) for k in range(each)]:
        raise ValueError(f"grep {where}: the map outputs are {len(have)} pieces of "
                         f"{sorted(pieces)} per split, not every piece of the input's "
                         f"{splits} splits once (a tree dag over the splits needs "
                         "--param pieces=1)")


def merge(inputs: dict) -> list:
    """An aggregation-tree node: its children's part descriptions, in split order."""
    return _parts(inputs)


def plan(input: str, output: str, inputs: dict, writers: int = 8) -> dict:
    """Places of the parts in the outputs, the outputs created at their size under temporary
    names, ``writers`` ranges of parts (see the module docstring)."""
    import h5py
    splits = open_splits(input)
    parts = _parts(inputs)
    _check_complete(parts, len(splits), "plan")
    parts = [p for p in parts if p["rows"]]
    names, _ = _sources(splits)
    counts = np.zeros(len(names), np.int64)
    for p in parts:
        for k, n in p["counts"]:
            counts[k] += n
    base = {key: np.concatenate([[0], np.cumsum([p[key] for p in parts], dtype=np.int64)])
            for key in ("rows", "tsv_bytes", "line_bytes")}
    files = {"tsv": sortedruns.temporary_name(os.path.join(output, "grep.tsv")),
             "h5": sortedruns.temporary_name(os.path.join(output, "grep.h5")),
             "counts_tsv": sortedruns.temporary_name(os.path.join(output, "grep-counts.tsv"))}
    os.makedirs(output, exist_ok=True)
    with open(files["tsv"], "wb") as f:
        f.truncate(int(base["tsv_bytes"][-1]))
    with open(files["counts_tsv"], "wb") as f:
        f.write(b"".join(b"%s\t%d\n" % (n, c) for n, c in zip(names, counts.tolist())))
    rows, line_bytes = int(base["rows"][-1]), int(base["line_bytes"][-1])
    with h5py.File(files["h5"], "w") as f:
        offsets = sortedruns.contiguous_datasets(
            f, [("source", np.int64, rows), ("offset", np.int64, rows),
                ("line_ends", np.int64, rows), ("lines", np.uint8, line_bytes)])
        f["source_names"] = np.array(names, dtype=object) if names else np.empty(0, "S1")
        f["source_counts"] = counts
    tsv_ends = base["tsv_bytes"][1:]
    cuts = np.searchsorted(tsv_ends, [tsv_ends[-1] * k // writers for k in range(1, writers)]
                           if len(parts) else [], side="right").tolist()
    bounds = [0] + cuts + [len(parts)] * (writers - len(cuts))
    return {**files, "offsets": offsets, "matches": rows,
            "per_source": [[n.decode("utf-8", "surrogateescape"), c]
                           for n, c in zip(names, counts.tolist())],
            "parts": [[p["file"], int(base["rows"][i]), int(base["tsv_bytes"][i]),
                       int(base["line_bytes"][i])] for i, p in enumerate(parts)],
            "ranges": [[bounds[m], bounds[m + 1]] for m in range(writers)]}


def write(inputs: dict, m: int = 0) -> dict:
    """Copy range ``m`` of the plan's parts into the outputs at their offsets."""
    return _write_range(inputs["plan"], m)


def _write_range(p: dict, m: int) -> dict:
    first, end = p["ranges"][m] if m < len(p["ranges"]) else (0, 0)
    if first >= end:
        return {"write": m, "parts": 0}
    got = [_read_part(p["parts"][i][0]) for i in range(first, end)]
    _, rows0, tsv0, lines0 = p["parts"][first]
    column = {k: np.concatenate([g[k] for g in got]) for k in got[0]}
    off = p["offsets"]
    fd = os.open(p["tsv"], os.O_WRONLY)
    try:
        os.pwrite(fd, memoryview(column["tsv"]), tsv0)
        os.fsync(fd)
    finally:
        os.close(fd)
    fd = os.open(p["h5"], os.O_WRONLY)
    try:
        for name in ("source", "offset"):
            os.pwrite(fd, column[name].astype("<i8").tobytes(), off[name] + 8 * rows0)
        line_ends = lines0 + np.cumsum(column["line_lens"], dtype=np.int64)
        os.pwrite(fd, line_ends.astype("<i8").tobytes(), off["line_ends"] + 8 * rows0)
        if len(column["lines"]):
            os.pwrite(fd, memoryview(column["lines"]), off["lines"] + lines0)
        os.fsync(fd)
    finally:
        os.close(fd)
    return {"write": m, "parts": end - first, "rows": len(line_ends)}


def commit(output: str, inputs: dict) -> dict:
    """Rename the outputs into place, remove the parts; the run's summary."""
    p = inputs["plan"]
    for key, name in (("tsv", "grep.tsv"), ("h5", "grep.h5"), ("counts_tsv", "grep-counts.tsv")):
        os.replace(p[key], os.path.join(output, name))
    for file, *_ in p["parts"]:
        try:
            os.remove(file)
        except FileNotFoundError:
            pass
    return {"matches": p["matches"], "per_source": dict(p["per_source"]),
            "finished": time.time()}


def finish(output: str, inputs: dict) -> dict:
    """The aggregation tree's root: plan, one write and commit in one task."""
    parts = _parts(inputs)
    if not parts:
        raise ValueError("grep finish: no map outputs")
    p = plan(parts[0]["input"], output, {"parts": parts}, writers=1)
    _write_range(p, 0)
    return commit(output, {"plan": p})
