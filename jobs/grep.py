"""grep as MapReduce over an ingested HDF5 file (jobs/grep.json, docs/mapreduce.md).

A line is what ``data.split(b"\\n")`` gives (a final newline ends the last line; ``\\r`` of a
CRLF stays part of the line); it matches when ``re.search(pattern, line)`` does, ``pattern``
being a Python regular expression on bytes (the parameter's UTF-8 bytes).

* ``map_split(input, split, pattern)``: the matching lines of one split, with their offsets in
  the logical content (the input files end to end), packed into one ``bytes``.
* ``merge(inputs)``: a node of the aggregation tree (concatenation, in split order).
* ``finish(output, inputs)``: maps each match to its source file and byte offset in it
  (``sources`` of the ingested file) and writes ``OUTPUT/grep.tsv`` (``source<TAB>offset<TAB>
  line`` per match, in input order), ``OUTPUT/grep-counts.tsv`` (``source<TAB>matches`` for
  every input file) and ``OUTPUT/grep.h5``.
"""
from __future__ import annotations

import os
import re
import time

import numpy as np

import mapreduce as mr
from mpitiny.io.commit import atomic_h5, atomic_output
from mpitiny.io.splits import open_splits

_ID = re.compile(r"\[(-?\d+)\]$")
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


def grep_bytes(data: bytes, pattern: str) -> tuple:
    """``(offsets, lines)`` of the lines of ``data`` that match ``pattern``: the lines that
    hold one of its ``required_literals`` (found with ``bytes.find``, in C), each checked
    with ``re.search``; every line when the pattern has none."""
    search = _regex(pattern).search
    literals = _LITERALS.get(pattern, False)
    if literals is False:
        literals = _LITERALS[pattern] = required_literals(pattern)
    if literals is not None:
        offsets, lines = [], []
        for a, b in _candidate_lines(data, literals):
            line = data[a:b]
            if search(line):
                offsets.append(a)
                lines.append(line)
        return offsets, lines
    offsets, lines, pos = [], [], 0
    parts = data.split(b"\n")
    if parts and parts[-1] == b"":
        parts.pop()
    for line in parts:
        if search(line):
            offsets.append(pos)
            lines.append(line)
        pos += len(line) + 1
    return offsets, lines


def _pack_matches(offsets, lines: list) -> bytes:
    lens = np.fromiter(map(len, lines), np.int64, len(lines))
    return mr.pack([{"offsets": np.asarray(offsets, np.int64), "lens": lens,
                     "lines": b"".join(lines)}])


def _unpack_matches(blob) -> tuple:
    p = mr.unpack(blob)[0]
    ends = np.cumsum(p["lens"]).tolist()
    starts = [0] + ends[:-1]
    text = p["lines"]
    return p["offsets"], [text[a:b] for a, b in zip(starts, ends)]


def map_split(input: str, split: int, pattern: str) -> bytes:
    s = open_splits(input)
    start = int(mr.logical_starts(s)[split])
    offsets, lines = grep_bytes(s.read(split), pattern)
    return _pack_matches(np.asarray(offsets, np.int64) + start, lines)


def _in_order(inputs: dict) -> list:
    """Input values sorted by the index of their instance id (``map[12]``, ``tree[3]``)."""
    def key(item):
        m = _ID.search(item[0])
        return int(m.group(1)) if m else -1
    return [v for _, v in sorted(inputs.items(), key=key)]


def merge(inputs: dict) -> bytes:
    """Concatenate the inputs' matches in order (an aggregation tree node)."""
    offs, lines = [], []
    for blob in _in_order(inputs):
        o, l = _unpack_matches(blob)
        offs.append(o)
        lines += l
    return _pack_matches(np.concatenate(offs) if offs else np.empty(0, np.int64), lines)


def finish(input: str, output: str, inputs: dict) -> dict:
    offsets, lines = _unpack_matches(merge(inputs))
    offsets = np.asarray(offsets, np.int64)
    order = np.argsort(offsets, kind="stable")     # merge order is input order already
    offsets, lines = offsets[order], [lines[i] for i in order.tolist()]
    sources = open_splits(input).sources
    names = [src["name"] for src in sources]
    starts = np.array([src["offset"] for src in sources], np.int64)
    which = np.searchsorted(starts, offsets, side="right") - 1
    local = offsets - starts[which] if len(offsets) else offsets
    counts = np.bincount(which, minlength=len(names)) if len(which) else np.zeros(len(names), int)
    name_b = [n.encode("utf-8", "surrogateescape") for n in names]
    with atomic_output(os.path.join(output, "grep.tsv")) as f:
        f.write(b"".join(b"%s\t%d\t%s\n" % (name_b[w], o, line)
                         for w, o, line in zip(which.tolist(), local.tolist(), lines)))
    with atomic_output(os.path.join(output, "grep-counts.tsv")) as f:
        f.write(b"".join(b"%s\t%d\n" % (n, c) for n, c in zip(name_b, counts.tolist())))
    with atomic_h5(os.path.join(output, "grep.h5")) as f:
        f["source"] = which.astype(np.int64)
        f["offset"] = local.astype(np.int64)
        f["line_ends"] = np.cumsum([len(x) for x in lines], dtype=np.int64)
        f["lines"] = np.frombuffer(b"".join(lines), np.uint8)
        f["source_names"] = np.array(name_b, dtype=object) if names else np.empty(0, "S1")
        f["source_counts"] = counts.astype(np.int64)
    return {"matches": len(lines), "per_source": dict(zip(names, counts.tolist())),
            "finished": time.time()}
