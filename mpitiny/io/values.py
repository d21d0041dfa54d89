"""How task values are encoded as bytes: in the result windows, spill files, journals and
the run's results.

Kinds of values: JSON values, ``bytes``/``bytearray``/``memoryview``, numpy arrays of plain
(non-object) dtypes, stored in ``.npy`` format (no pickle), and ``Parts``: a list of byte
strings stored end to end after a table of their offsets, so that a reader that wants only
part p reads that part's bytes and nothing else (``parts_span``).
"""
from __future__ import annotations

import io
import json
import struct

import numpy as np

KIND_JSON, KIND_BYTES, KIND_NUMPY, KIND_PARTS = 0, 1, 2, 3
KIND_NAMES = ("json", "bytes", "npy", "parts")


class Parts(list):
    """A task's return value made of parts (each ``bytes``-like, or a tuple of ``bytes``-like
    buffers that are the part end to end: never joined in this process), of which a child may
    read just one: ``return mpitiny.Parts([part0, part1, ...])``; a child whose dag.json entry
    has ``"part": P`` gets ``bytes`` of part P, any other child the whole ``Parts``."""


class Pieces(list):
    """An encoded value as byte buffers (``memoryview``, format ``B``) end to end, not joined:
    a ``Parts`` value's offset table, then its parts' buffers. The window, the journal and the
    spill file take the pieces one by one (a map's output of megabytes was copied once more,
    into fresh pages, to join them: ``encode_pieces``); ``nbytes`` is their total length."""

    def __init__(self, buffers) -> None:
        super().__init__(v for v in (memoryview(b).cast("B") for b in buffers) if len(v))
        self.nbytes = sum(len(v) for v in self)

    def join(self) -> bytes:
        return b"".join(self)


def size_of(data) -> int:
    """The length in bytes of an encoded value: ``bytes`` or ``Pieces``."""
    return data.nbytes if isinstance(data, Pieces) else len(data)


def buffers_of(data) -> list:
    """An encoded value (``bytes`` or ``Pieces``) as a list of buffers, end to end."""
    return data if isinstance(data, Pieces) else [data]


def encode(value) -> tuple[int, bytes]:
    """``(kind, bytes)`` of a task's return value; TypeError for what cannot be kept."""
    if isinstance(value, Parts):
        return KIND_PARTS, encode_parts(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return KIND_BYTES, bytes(value)
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            raise TypeError("numpy arrays of Python objects cannot be kept (no pickling)")
        buf = io.BytesIO()
        np.save(buf, value, allow_pickle=False)
        return KIND_NUMPY, buf.getvalue()
    return KIND_JSON, json.dumps(value, default=_json_default).encode()


def encode_parts(parts) -> bytes:
    """``[count, offset 0 .. offset count]`` (uint64) then the parts end to end."""
    return _parts_pieces(parts).join()


def encode_pieces(value) -> tuple:
    """``encode``, a ``Parts`` value as ``Pieces`` (its buffers, not joined)."""
    if isinstance(value, Parts):
        return KIND_PARTS, _parts_pieces(value)
    return encode(value)


def _parts_pieces(parts) -> Pieces:
    offsets, end, buffers = [0], 0, []
    for p in parts:
        for b in p if isinstance(p, tuple) else (p,):
            end += memoryview(b).nbytes
            buffers.append(b)
        offsets.append(end)
    return Pieces([struct.pack(f"<{len(offsets) + 1}Q", len(parts), *offsets), *buffers])


def parts_span(head: bytes, part: int, where: str) -> tuple:
    """``(start, end)`` of part ``part`` in an encoded Parts value whose first bytes are
    ``head``: at least its count, and its ``parts_head_bytes(part)`` first bytes when the part
    exists (a value that holds part ``part`` is that long)."""
    count = int(np.frombuffer(head, "<u8", 1)[0])
    if not 0 <= part < count:
        raise ValueError(f"part {part} of {where} was asked for, but it has {count} parts "
                         f"(0 to {count - 1})")
    lo, hi = np.frombuffer(head, "<u8", 2, 8 * (part + 1)).tolist()
    base = 8 * (count + 2)
    return base + lo, base + hi


def parts_spans(heads: list, part: int, size: int, wheres: list) -> list:
    """``parts_span`` of each head, parsed together when there are many and all are ``size``
    bytes long (a shorter head is a value without part ``part``: ``parts_span`` says so)."""
    if len(heads) < 8 or part < 0 or any(len(h) != size for h in heads):
        return [parts_span(h, part, w) for h, w in zip(heads, wheres)]
    words = np.frombuffer(b"".join(heads), "<u8").reshape(len(heads), part + 3)
    start, end = part_spans_of_rows(words[:, [0, part + 1, part + 2]], part,
                             lambda j: parts_span(heads[j], part, wheres[j]))
    return list(zip(start.tolist(), end.tolist()))


def part_spans_of_rows(words: np.ndarray, part: int, fail) -> tuple:
    """``parts_span`` of many Parts values at once: ``words`` holds a row per value (its count
    of parts, then the offsets where part ``part`` starts and ends); ``fail(j)`` raises for
    value j, the first that has no part ``part``. Returns the arrays of starts and ends."""
    count = words[:, 0].astype(np.int64)
    bad = np.flatnonzero(count <= part)
    if len(bad):
        fail(int(bad[0]))
    base = 8 * (count + 2)
    return base + words[:, 1].astype(np.int64), base + words[:, 2].astype(np.int64)


def parts_head_bytes(part: int) -> int:
    """Bytes at the start of an encoded Parts value that hold its count and the offsets of
    part ``part`` (its start and end)."""
    return 8 * (part + 3)


def decode(kind: int, data: bytes):
    """The value that ``encode`` turned into ``(kind, data)``."""
    if kind == KIND_BYTES:
        return data
    if kind == KIND_PARTS:
        count = int(np.frombuffer(data, "<u8", 1)[0])
        offsets = np.frombuffer(data, "<u8", count + 1, 8).tolist()
        base = 8 * (count + 2)
        return Parts(data[base + a:base + b] for a, b in zip(offsets, offsets[1:]))
    if kind == KIND_NUMPY:
        return np.load(io.BytesIO(data), allow_pickle=False)
    return json.loads(data)


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not a JSON value")
