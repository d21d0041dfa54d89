"""grep as MapReduce over an ingested HDF5 file (jobs/grep.json, docs/mapreduce.md).

A line is what ``data.split(b"\\n")`` gives (a final newline ends the last line; ``\\r`` of a
CRLF stays part of the line); it matches when ``re.search(pattern, line)`` does, ``pattern``
being a Python regular expression on bytes (the parameter's UTF-8 bytes).

The output is the matches in input order, so it is the maps' outputs end to end: no task
handles all of them (before, one ``finish`` task formatted every match, up to a third of a
run on real logs, with the other ranks idle).

* ``map_part(input, split, pattern, output)``: finds the split's matching lines (candidate
  lines holding one of the pattern's required literals, ``candidate_spans``, then
  ``re.search`` on each), maps each
  to its source file and byte offset in it (``sources`` of the ingested file: the source
  holding the line's first byte), formats its ``grep.tsv`` rows and writes them, with the
  columns of ``grep.h5``, to a part file in the run's work directory
  (``sortedruns.work_dir``). Returns a small description: rows, bytes, matches per source.
* ``plan(input, output, inputs, writers)``: prefix sums of the parts' sizes give every part
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
the next line after a hit), on the array the runtime read (``read_array``: no copy to
``bytes``); without it (no compiler, ``MPITINY_KERNELS=0``) ``bytes.find`` of each literal
over a ``bytes`` copy, one pass per literal. Both give the same spans, and every candidate
is checked with ``re.search``, so the matches are those of ``re.search`` per line for any
pattern. On the multilingual corpus (``(файл|Datei|fichier)``: three literals, the first a
Cyrillic one whose bytes are common there) the three ``find`` passes took ~14 ms of a 30 ms
map per 8 MiB split. Per 8 MiB split (splits 0, 5, 12, 20, one process, best of 3, load
2.3): the kernel's scan 1.7 ms against 13.0 ms for the ``find`` passes on multilingual, 2.3
against 12.4 (logs), 1.8 against 9.9 (prose), 1.2 against 6.3 (code), the same spans.

The aggregation-tree variant (``mapreduce.py tree ... --fn grep:merge --finish-fn
grep:finish``) concatenates the parts' descriptions in the tree and runs plan, one write and
commit in its ``finish``. ``map_split`` (matches packed in the value, no file) and
``grep_bytes`` are the split-level kernel for other uses.
"""
from __future__ import annotations

import os
import re
import time

import numpy as np

import mapreduce as mr
import sortedruns
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
    least = min(map(len, literals))
    out = np.empty(2 * (len(data) // (least + 1) + 2), np.int64)
    n = kernel.find_line_spans(data, literals, out)
    return out[:2 * n].reshape(n, 2).tolist()


def grep_bytes(data, pattern: str) -> tuple:
    """``(offsets, lines)`` of the lines of ``data`` (bytes or a uint8 array) that match
    ``pattern``: the lines that hold one of its ``required_literals`` (``candidate_spans``),
    each checked with ``re.search``; every line when the pattern has none."""
    search = _regex(pattern).search
    literals = _LITERALS.get(pattern, False)
    if literals is False:
        literals = _LITERALS[pattern] = required_literals(pattern)
    view = memoryview(data).cast("B") if not isinstance(data, bytes) else data
    if literals is not None:
        offsets, lines = [], []
        for a, b in candidate_spans(data, literals):
            line = bytes(view[a:b])
            if search(line):
                offsets.append(a)
                lines.append(line)
        return offsets, lines
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


def map_part(input: str, split: int, pattern: str, output: str) -> dict:
    """Split ``split``'s matches as ``grep.tsv`` rows and ``grep.h5`` columns in a part file
    (none when it has no match); its description (see the module docstring)."""
    s = open_splits(input)
    start = int(mr.logical_starts(s)[split])
    offsets, lines = grep_bytes(s.read_array(split), pattern)
    value = {"split": split, "input": input, "file": None, "rows": len(lines),
             "tsv_bytes": 0, "line_bytes": 0, "counts": []}
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
    path = os.path.join(sortedruns.work_dir(output, "grep-parts"), f"part-{split:07d}.bin")
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
    return sorted(found, key=lambda v: v["split"])


def merge(inputs: dict) -> list:
    """An aggregation-tree node: its children's part descriptions, in split order."""
    return _parts(inputs)


def plan(input: str, output: str, inputs: dict, writers: int = 8) -> dict:
    """Places of the parts in the outputs, the outputs created at their size under temporary
    names, ``writers`` ranges of parts (see the module docstring)."""
    import h5py
    parts = [p for p in _parts(inputs) if p["rows"]]
    names, _ = _sources(open_splits(input))
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
