"""The layout of ingested inputs, shared by their writer (``ingestion``) and reader (``splits``).

A tiny task pays off only if the block it reads keeps the disk near full speed (8 MB random
reads reach ~88 % of sequential throughput). ``mpitiny ingest`` therefore packs input files
into an HDF5 dataset whose chunks are the unit of work, and ``open_splits`` reads one split
with one chunk-sized read. The layout is documented for users in ``docs/data.md``; in short,
under the dataset group (default ``/text``)::

    data        1-D uint8, chunked (chunk = --chunk bytes), length a multiple of the chunk.
                Split k starts on a chunk boundary and covers ceil(length / chunk) chunks
                (one, unless a single record is longer than a chunk); the bytes after its
                last record up to the chunk end are zero padding.
                With N > 1 ingest ranks: a virtual dataset over <output>.shards/part-R.h5.
    splits      (n, 2) int64: [offset in data, length] of each split's valid bytes.
    checksums   (n,) uint32: zlib CRC32 of each split's valid bytes.
    sources     table (name, size, offset): the input files in order; offset = where the
                file starts in the logical content (the concatenation of all inputs).
    shards      table (file, first_split, n_splits, data_offset, data_bytes) of the shard
                files (one row, file ".", for a single-rank ingest).
    attributes  layout="mpitiny-splits", version, format (text|binary|records),
                record_size, chunk_bytes, total_bytes, n_splits, source_names,
                source_sizes, writers, created_by.

The logical content -- the concatenation, in split order, of every split's valid bytes -- is
exactly the concatenation of the input files in the order given, whatever the number of
ranks that ingested them; only where splits begin and end may differ.

This module holds the layout's constants, the parsing of the user's words for it (sizes,
``--chunk``, ``--format``, dataset names) and ``error_reason`` for one-line error messages.
"""
from __future__ import annotations

import re
from types import ModuleType
from typing import Any

from mpitiny.errors import BadInput

LAYOUT = "mpitiny-splits"
SHARD_LAYOUT = "mpitiny-splits-shard"
VERSION = 1
DEFAULT_DATASET = "/text"
DEFAULT_CHUNK = 8 << 20
MIN_CHUNK = 64 << 10
MAX_CHUNK = 256 << 20
MAX_RECORD = 1 << 30
FORMATS = ("text", "binary", "records")
SHARDS_SUFFIX = ".shards"


def import_h5py() -> ModuleType:
    """h5py, imported on first use (so that importing mpitiny.io's modules stays cheap)."""
    import h5py
    return h5py


_SIZE = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([A-Za-z]*)\s*")
_UNITS = {"": 1, "b": 1,
          "k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20, "g": 1 << 30,
          "gib": 1 << 30, "t": 1 << 40, "tib": 1 << 40,
          "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}


def parse_size(text: Any) -> int:
    """``"8MiB"`` -> 8388608. K/M/G and KiB/MiB/GiB are powers of 1024, KB/MB/GB of 1000."""
    if isinstance(text, bool):
        raise ValueError(f"{text!r} is not a size")
    if isinstance(text, int):
        return text
    m = _SIZE.fullmatch(str(text))
    if m is None or m.group(2).lower() not in _UNITS:
        raise ValueError(f"{text!r} is not a size (examples: 8MiB, 100KiB, 1G, 65536)")
    from decimal import Decimal, InvalidOperation
    try:
        value = Decimal(m.group(1)) * _UNITS[m.group(2).lower()]
    except InvalidOperation:
        raise ValueError(f"{text!r} is not a size") from None
    if value != value.to_integral_value():
        raise ValueError(f"{text!r} is not a whole number of bytes")
    return int(value)


def parse_chunk(text: Any) -> int:
    """``--chunk``: a size between 64 KiB and 256 MiB (BadInput otherwise)."""
    try:
        n = parse_size(text)
    except ValueError as err:
        raise BadInput(f"--chunk: {err}") from None
    if not MIN_CHUNK <= n <= MAX_CHUNK:
        raise BadInput(f"--chunk {text}: {n} bytes is out of range (64KiB .. 256MiB)")
    return n


def parse_format(text: Any) -> tuple:
    """``--format``: ``"text"`` -> ("text", 0), ``"records:16"`` -> ("records", 16)."""
    s = str(text).strip()
    if s in ("text", "binary"):
        return s, 0
    kind, sep, n = s.partition(":")
    if kind == "records" and sep:
        try:
            size = parse_size(n)
        except ValueError:
            size = -1
        if 1 <= size <= MAX_RECORD:
            return "records", size
        raise BadInput(f"--format {text}: the record size must be a whole number of bytes "
                       f"from 1 to {MAX_RECORD} (records:N)")
    raise BadInput(f"--format {text!r}: expected text, binary or records:N (N bytes per record)")


def normalize_dataset(name: Any) -> str:
    """``"text"`` or ``"/text/"`` -> ``"/text"``; BadInput for ``"/"``, ``""``, ``"a//b"``."""
    if not isinstance(name, str):
        raise BadInput(f"dataset {name!r}: must be a string such as /text")
    path = "/" + name.strip("/")
    parts = path[1:].split("/")
    if path == "/" or any(p in ("", ".", "..") for p in parts) or not name.isprintable():
        raise BadInput(f"dataset {name!r}: must be an HDF5 group path such as /text "
                       "(not the root, no empty, '.' or '..' parts)")
    return path


def error_reason(err: BaseException) -> str:
    """Why an operation failed, for a one-line message: an OSError's strerror (without the
    file name, which the message gives itself), else the exception's text on one line."""
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return " ".join(str(err).split())[:200] or type(err).__name__
