"""Inputs for tiny tasks: files packed into HDF5 so that one task reads one chunk.

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

Reading (``open_splits``) resolves each split to its chunk(s) (through the virtual dataset's
mapping to the shard files), learns the chunks' file addresses once from HDF5's chunk index
(``H5Dchunk_iter``), and reads a split with one ``pread`` of its valid bytes when its chunks
are contiguous in the file (always, for files ingest wrote), else with ``H5Dread_chunk`` per
chunk: no chunk cache, no selection machinery, no copy. Files are opened once per process and
cached (keyed by absolute path and dataset).
"""
from __future__ import annotations

import atexit
import bisect
import os
import re
import time
import traceback
import uuid
import zlib
from decimal import Decimal, InvalidOperation
from typing import Any, Sequence

import numpy as np

from mpitiny.errors import BadInput, InternalError, MpitinyError

LAYOUT = "mpitiny-splits"
SHARD_LAYOUT = "mpitiny-splits-shard"
VERSION = 1
DEFAULT_DATASET = "/text"
DEFAULT_CHUNK = 8 << 20
MIN_CHUNK = 64 << 10
MAX_CHUNK = 256 << 20
MAX_RECORD = 1 << 30
#: Up to this many chunks per shard, a reader maps chunks to file addresses once (one pass over
#: HDF5's chunk index) and reads each split with one ``pread``; beyond, through H5Dread_chunk.
MAX_INDEXED_CHUNKS = 1 << 22
FORMATS = ("text", "binary", "records")
SHARDS_SUFFIX = ".shards"
#: Source names/sizes are also written as attributes (for ``h5dump -A``) up to this many files;
#: the ``sources`` dataset always has them.
MAX_SOURCE_ATTRS = 1000
_SHARD_NAME = "part-{:05d}.h5"
_SHARD_FILE = re.compile(r"part-\d{5}\.h5")
# HDF5 >= 1.10 can read what we write (the HDF5 2.0 of the wheel would default to newer
# object versions that 1.x tools cannot open).
_LIBVER = ("v110", "v110")
_SCAN_BLOCK = 1 << 20


def _h5py():
    import h5py
    return h5py


def _version() -> str:
    try:
        from importlib.metadata import version
        return version("mpitiny")
    except Exception:          # not installed as a distribution
        return "?"


# ------------------------------------------------------------------------------ parsing

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
    try:
        value = Decimal(m.group(1)) * _UNITS[m.group(2).lower()]
    except InvalidOperation:
        raise ValueError(f"{text!r} is not a size") from None
    if value != value.to_integral_value():
        raise ValueError(f"{text!r} is not a whole number of bytes")
    return int(value)


def _human(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} bytes"


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


def parse_spec(spec: Any, dataset: str | None = None) -> tuple:
    """``"data.h5:/text"`` -> ``("data.h5", "/text")``; ``"data.h5"`` -> default dataset.

    The file and the dataset are separated by the last ``":/"``; ``dataset`` (if given)
    overrides the one in the string.
    """
    if isinstance(spec, os.PathLike):
        spec = os.fspath(spec)
    if not isinstance(spec, str) or not spec:
        raise BadInput(f"{spec!r}: expected FILE.h5 or FILE.h5:/dataset")
    path, ds = spec, DEFAULT_DATASET
    at = spec.rfind(":/")
    if at > 0:
        path, ds = spec[:at], spec[at + 1:]
    if dataset is not None:
        ds = dataset
    return path, normalize_dataset(ds)


# ------------------------------------------------------------------------------- inputs

def list_inputs(inputs: Sequence[str]) -> list:
    """``[(name, path, size)]`` of the input files in order; a directory stands for its
    regular files sorted by name (not recursive). BadInput for anything unusable."""
    if not inputs:
        raise BadInput("ingest: no input files given (mpitiny ingest INPUT... -o OUT.h5)")
    out = []
    for given in inputs:
        try:
            st = os.stat(given)
        except FileNotFoundError:
            raise BadInput("no such file or directory", where=f"input {given}") from None
        except PermissionError:
            raise BadInput("cannot access: permission denied", where=f"input {given}") from None
        except (OSError, ValueError) as err:
            raise BadInput(f"cannot access: {_reason(err)}", where=f"input {given}") from None
        if os.path.isdir(given):
            try:
                names = sorted(os.listdir(given))
            except OSError as err:
                raise BadInput(f"cannot list the directory: {_reason(err)}",
                               where=f"input {given}") from None
            files = [os.path.join(given, n) for n in names
                     if os.path.isfile(os.path.join(given, n))]
            if not files:
                raise BadInput("the directory has no files", where=f"input {given}")
            for f in files:
                out.append(_check_file(f, os.stat(f)))
        else:
            out.append(_check_file(given, st))
    return out


def _check_file(name: str, st: os.stat_result) -> tuple:
    import stat as _stat
    if not _stat.S_ISREG(st.st_mode):
        raise BadInput("not a regular file", where=f"input {name}")
    try:
        with open(name, "rb") as f:
            f.read(1)
    except PermissionError:
        raise BadInput("cannot read the file: permission denied", where=f"input {name}") from None
    except OSError as err:
        raise BadInput(f"cannot read the file: {_reason(err)}", where=f"input {name}") from None
    return name, os.path.abspath(name), st.st_size


def _reason(err: BaseException) -> str:
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return " ".join(str(err).split())[:200] or type(err).__name__


class _Concat:
    """The input files as one logical byte stream (read with ``readinto(pos, buffer)``)."""

    def __init__(self, files: Sequence[tuple]) -> None:
        self.names = [f[0] for f in files]
        self.paths = [f[1] for f in files]
        self.sizes = [int(f[2]) for f in files]
        self.starts = [0]
        for s in self.sizes:
            self.starts.append(self.starts[-1] + s)
        self.total = self.starts[-1]
        self._open: tuple | None = None        # (index, file object)

    def _file(self, k: int):
        if self._open is None or self._open[0] != k:
            self.close()
            try:
                self._open = (k, open(self.paths[k], "rb", buffering=0))
            except OSError as err:
                raise BadInput(f"cannot read the file: {_reason(err)}",
                               where=f"input {self.names[k]}") from None
        return self._open[1]

    def readinto(self, pos: int, buf) -> int:
        """Fill ``buf`` (a writable memoryview) from logical position ``pos``; returns the count."""
        mv = memoryview(buf).cast("B")
        want = min(len(mv), self.total - pos)
        done = 0
        while done < want:
            at = pos + done
            k = bisect.bisect_right(self.starts, at) - 1
            while self.sizes[k] == 0:
                k += 1
            local = at - self.starts[k]
            n = min(want - done, self.sizes[k] - local)
            f = self._file(k)
            f.seek(local)
            got = 0
            while got < n:
                r = f.readinto(mv[done + got:done + n])
                if not r:
                    raise BadInput(f"the file became shorter while it was read "
                                   f"(expected {self.sizes[k]} bytes)",
                                   where=f"input {self.names[k]}")
                got += r
            done += n
        return done

    def byte_at(self, pos: int) -> int:
        b = bytearray(1)
        self.readinto(pos, b)
        return b[0]

    def find_newline(self, pos: int) -> int:
        """Position of the first ``\\n`` at or after ``pos``, or -1."""
        buf = bytearray(_SCAN_BLOCK)
        while pos < self.total:
            n = self.readinto(pos, buf)
            j = buf.find(b"\n", 0, n)
            if j >= 0:
                return pos + j
            pos += n
        return -1

    def close(self) -> None:
        if self._open is not None:
            self._open[1].close()
            self._open = None


def _fixed_unit(chunk: int, fmt: str, record: int) -> tuple:
    """(payload bytes of a full split, chunks it spans) for binary and records:N."""
    if fmt == "binary":
        return chunk, 1
    k = -(-record // chunk)
    return (k * chunk // record) * record, k


def part_bounds(src: _Concat, parts: int, chunk: int, fmt: str, record: int) -> list:
    """``parts + 1`` logical offsets cutting the input into contiguous parts at record
    boundaries (text: line starts; binary/records: full-split multiples, so that the splits
    do not depend on the number of parts)."""
    total = src.total
    bounds = [0]
    for r in range(1, parts):
        t = total * r // parts
        if fmt == "text":
            if t > 0 and src.byte_at(t - 1) != 0x0A:
                j = src.find_newline(t)
                t = total if j < 0 else j + 1
        else:
            unit = _fixed_unit(chunk, fmt, record)[0]
            t = t // unit * unit
        bounds.append(max(t, bounds[-1]))
    bounds.append(total)
    return bounds


# ------------------------------------------------------------------------------- packing

class _Window:
    """A sliding window over logical bytes ``[base, base + n)`` of the input."""

    def __init__(self, src: _Concat, lo: int, hi: int, capacity: int) -> None:
        self.src, self.hi = src, hi
        self.buf = bytearray(capacity)
        self.mv = memoryview(self.buf)
        self.base, self.n = lo, 0

    def ensure(self, keep: int, end: int) -> None:
        """Make ``[keep, min(end, hi))`` present (bytes before ``keep`` may be dropped)."""
        end = min(end, self.hi)
        if end <= self.base + self.n:
            return
        shift = keep - self.base
        if shift > 0:
            self.mv[:self.n - shift] = self.mv[shift:self.n]
            self.n -= shift
            self.base = keep
        need = end - self.base
        if need > len(self.buf):
            size = max(need, 2 * len(self.buf))
            new = bytearray(size)
            new[:self.n] = self.mv[:self.n]
            self.mv.release()
            self.buf, self.mv = new, memoryview(new)
        room = min(len(self.buf), self.hi - self.base) - self.n
        self.n += self.src.readinto(self.base + self.n, self.mv[self.n:self.n + room])

    def find_newline(self, keep: int, start: int) -> int:
        """Absolute position of the first ``\\n`` at or after ``start`` before ``hi``, else -1."""
        while True:
            self.ensure(keep, start + 1)
            j = self.buf.find(b"\n", start - self.base, self.n)
            if j >= 0:
                return self.base + j
            start = self.base + self.n
            if start >= self.hi:
                return -1
            self.ensure(keep, start + len(self.buf))


def _pack_text(src: _Concat, lo: int, hi: int, chunk: int, writer: "_SplitWriter") -> None:
    # Room for a split plus at least 32 MiB read ahead: the bytes moved when the window slides
    # (less than one split) stay small against the bytes read.
    win = _Window(src, lo, hi, chunk + max(chunk, 32 << 20))
    pos = lo
    while pos < hi:
        cap = chunk
        while True:
            if pos + cap >= hi:                   # all that is left fits
                win.ensure(pos, hi)
                length = hi - pos
                break
            win.ensure(pos, pos + cap)
            i = pos - win.base
            j = win.buf.rfind(b"\n", i, i + cap)
            if j >= 0:
                length = j + 1 - i
                break
            # The first line is longer than the capacity: give it as many chunks as it needs
            # (and fill the rest of its last chunk with whole lines, if any fit).
            e = win.find_newline(pos, pos + cap)
            line = (hi if e < 0 else e + 1) - pos
            cap = -(-line // chunk) * chunk
        i = pos - win.base
        writer.add(win.mv[i:i + length])
        pos += length


def _pack_fixed(src: _Concat, lo: int, hi: int, chunk: int, fmt: str, record: int,
                writer: "_SplitWriter") -> None:
    payload, k = _fixed_unit(chunk, fmt, record)
    buf = bytearray(k * chunk)
    mv = memoryview(buf)
    pos = lo
    while pos < hi:
        n = min(payload, hi - pos)
        src.readinto(pos, mv[:n])
        writer.add(mv[:n])
        pos += n


class _SplitWriter:
    """Writes splits into ``group/data`` with direct chunk writes; keeps the split table."""

    def __init__(self, group, chunk: int) -> None:
        self.chunk = chunk
        self.ds = group.create_dataset("data", shape=(0,), maxshape=(None,), chunks=(chunk,),
                                       dtype="u1", fillvalue=0)
        self.dsid = self.ds.id
        self.pad = np.zeros(chunk, dtype=np.uint8)
        self.nchunks = 0
        self.alloc = 0
        self.offsets: list = []
        self.lengths: list = []
        self.crcs: list = []

    def add(self, view: memoryview) -> None:
        length = len(view)
        c = self.chunk
        k = max(1, -(-length // c))
        if self.nchunks + k > self.alloc:
            self.alloc = max(self.nchunks + k, 2 * self.alloc, 16)
            self.ds.resize((self.alloc * c,))
        self.crcs.append(zlib.crc32(view))
        base = self.nchunks * c
        for j in range(k):
            a = j * c
            b = min(length, a + c)
            if b - a == c:
                self.dsid.write_direct_chunk((base + a,), view[a:b])
            else:
                self.pad[:b - a] = np.frombuffer(view[a:b], dtype=np.uint8)
                self.pad[b - a:] = 0
                self.dsid.write_direct_chunk((base + a,), self.pad)
        self.offsets.append(base)
        self.lengths.append(length)
        self.nchunks += k

    def finish(self, group) -> tuple:
        self.ds.resize((self.nchunks * self.chunk,))
        table = np.empty((len(self.offsets), 2), dtype=np.int64)
        table[:, 0] = self.offsets
        table[:, 1] = self.lengths
        crcs = np.asarray(self.crcs, dtype=np.uint32)
        group.create_dataset("splits", data=table)
        group.create_dataset("checksums", data=crcs)
        return table, crcs


def _new_file(path: str):
    h5py = _h5py()
    # Chunks of at least 64 KiB start on 4 KiB boundaries of the file (page-aligned reads).
    return h5py.File(path, "w", libver=_LIBVER, alignment_threshold=MIN_CHUNK,
                     alignment_interval=4096)


def _write_part(path: str, dataset: str, src: _Concat, lo: int, hi: int, chunk: int,
                fmt: str, record: int, shard: dict | None = None) -> tuple:
    """Pack logical bytes ``[lo, hi)`` into ``path`` (a new file); returns (splits, crcs)."""
    try:
        with _new_file(path) as f:
            group = f.create_group(dataset)
            writer = _SplitWriter(group, chunk)
            if fmt == "text":
                _pack_text(src, lo, hi, chunk, writer)
            else:
                _pack_fixed(src, lo, hi, chunk, fmt, record, writer)
            table, crcs = writer.finish(group)
            if shard is not None:
                group.attrs["layout"] = SHARD_LAYOUT
                group.attrs["version"] = VERSION
                for key, value in shard.items():
                    group.attrs[key] = value
                group.attrs["chunk_bytes"] = chunk
    finally:
        src.close()
    return table, crcs


def _write_meta(f, group, plan: dict, table: np.ndarray, crcs: np.ndarray,
                shards: list) -> None:
    """The split table, checksums, sources, shards and attributes of the main file."""
    h5py = _h5py()
    if "splits" not in group:
        group.create_dataset("splits", data=table)
        group.create_dataset("checksums", data=crcs)
    files = plan["files"]
    str_t = h5py.string_dtype()
    src = np.empty(len(files), dtype=[("name", object), ("size", "<i8"), ("offset", "<i8")])
    offset = 0
    for k, (name, _path, size) in enumerate(files):
        src[k] = (name, size, offset)
        offset += size
    group.create_dataset("sources", data=src.astype(
        [("name", str_t), ("size", "<i8"), ("offset", "<i8")]))
    sh = np.empty(len(shards), dtype=[("file", object), ("first_split", "<i8"),
                                      ("n_splits", "<i8"), ("data_offset", "<i8"),
                                      ("data_bytes", "<i8")])
    for k, row in enumerate(shards):
        sh[k] = row
    group.create_dataset("shards", data=sh.astype(
        [("file", str_t), ("first_split", "<i8"), ("n_splits", "<i8"),
         ("data_offset", "<i8"), ("data_bytes", "<i8")]))
    a = group.attrs
    a["layout"] = LAYOUT
    a["version"] = VERSION
    a["format"] = plan["format"]
    a["record_size"] = plan["record"]
    a["chunk_bytes"] = plan["chunk"]
    a["total_bytes"] = plan["total"]
    a["n_splits"] = len(table)
    a["writers"] = plan["ranks"]
    a["created_by"] = f"mpitiny {_version()} ingest"
    if len(files) <= MAX_SOURCE_ATTRS:
        a.create("source_names", data=[f[0] for f in files], dtype=str_t)
        a["source_sizes"] = np.asarray([f[2] for f in files], dtype=np.int64)
    else:
        a["source_names"] = f"{len(files)} files: see the dataset {group.name}/sources"
    group["data"].attrs["chunk_bytes"] = plan["chunk"]


# ------------------------------------------------------------------------------- ingest

def _plan(inputs: Sequence[str], output: str, dataset: str, chunk: Any, fmt: Any,
          ranks: int) -> dict:
    """Check everything (rank 0) and decide where each rank's part begins and ends."""
    chunk_bytes = parse_chunk(chunk)
    fmt_name, record = parse_format(fmt)
    dataset = normalize_dataset(dataset)
    if not isinstance(output, str) or not output:
        raise BadInput("ingest: missing -o OUTPUT.h5")
    files = list_inputs(inputs)
    out_abs = os.path.abspath(output)
    if os.path.isdir(out_abs):
        raise BadInput("is a directory (give the name of the .h5 file to write)",
                       where=f"output {output}")
    out_dir = os.path.dirname(out_abs)
    if not os.path.isdir(out_dir):
        what = "is not a directory" if os.path.exists(out_dir) else "does not exist"
        raise BadInput(f"{out_dir} {what}", where=f"output {output}")
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise BadInput(f"the directory {out_dir} is not writable", where=f"output {output}")
    shard_dir = out_abs + SHARDS_SUFFIX
    if os.path.lexists(shard_dir):
        if os.path.islink(shard_dir) or not os.path.isdir(shard_dir) or any(
                not _SHARD_FILE.fullmatch(n) for n in os.listdir(shard_dir)):
            raise BadInput(f"{shard_dir} exists and is not a shard directory that ingest "
                           "wrote (only part-NNNNN.h5 files); move it away first",
                           where=f"output {output}")
    for name, path, _size in files:
        if path == out_abs or (os.path.exists(out_abs) and os.path.samefile(path, out_abs)):
            raise BadInput("is also an input file", where=f"output {output}")
    if fmt_name == "records":
        for name, _path, size in files:
            if size % record:
                raise BadInput(f"{size} bytes is not a whole number of {record}-byte records "
                               f"(--format records:{record})", where=f"input {name}")
    src = _Concat(files)
    try:
        bounds = part_bounds(src, ranks, chunk_bytes, fmt_name, record)
    finally:
        src.close()
    tmp = os.path.join(out_dir, f".{os.path.basename(out_abs)}.tmp-{uuid.uuid4().hex[:12]}")
    try:
        os.mkdir(tmp)
    except OSError as err:
        raise BadInput(f"cannot write in {out_dir}: {_reason(err)}",
                       where=f"output {output}") from None
    return {"files": files, "output": output, "out_abs": out_abs, "dataset": dataset,
            "chunk": chunk_bytes, "format": fmt_name, "record": record, "total": src.total,
            "bounds": bounds, "ranks": ranks, "tmp": tmp}


def _remove_shards(shard_dir: str) -> None:
    """Remove a shard directory that ingest made (only ``part-NNNNN.h5`` files, then the dir)."""
    if not os.path.isdir(shard_dir) or os.path.islink(shard_dir):
        return
    for name in os.listdir(shard_dir):
        if _SHARD_FILE.fullmatch(name):
            try:
                os.unlink(os.path.join(shard_dir, name))
            except OSError:
                pass
    try:
        os.rmdir(shard_dir)
    except OSError:
        pass


def _cleanup(tmp: str) -> None:
    _remove_shards(os.path.join(tmp, "old-shards"))
    _remove_shards(os.path.join(tmp, "shards"))
    for name in ("data.h5",):
        try:
            os.unlink(os.path.join(tmp, name))
        except OSError:
            pass
    try:
        os.rmdir(tmp)
    except OSError:
        pass


def _as_error(exc: BaseException) -> MpitinyError:
    if isinstance(exc, MpitinyError):
        return exc
    if isinstance(exc, OSError):
        where = exc.filename if isinstance(exc.filename, str) else None
        return BadInput(f"ingest: {_reason(exc)}", where=where)
    return InternalError(f"ingest failed: {type(exc).__name__}: {exc}\n{traceback.format_exc()}")


def _pack_error(error: MpitinyError | None):
    """An error as plain data, to send to the other ranks."""
    if error is None:
        return None
    return type(error).__name__, error.exit_code, error.message, error.where


def _unpack_error(data) -> MpitinyError:
    kind, code, message, where = data
    err = (InternalError if kind == "InternalError" else BadInput)(message, where=where)
    err.exit_code = code
    return err


def _agree(comm, error: MpitinyError | None) -> None:
    """Every rank raises the same error if any rank has one (first by rank), else returns."""
    everyone = [_pack_error(error)] if comm is None else comm.allgather(_pack_error(error))
    for r, e in enumerate(everyone):
        if e is None:
            continue
        if error is not None and (comm is None or r == comm.Get_rank()):
            raise error
        raise _unpack_error(e)


def ingest(inputs: Sequence[str], output: str, dataset: str = DEFAULT_DATASET,
           chunk: Any = DEFAULT_CHUNK, fmt: str = "text", comm=None) -> dict:
    """Pack ``inputs`` into ``output`` (see the module docstring); returns a summary dict.

    With ``comm`` (an mpi4py communicator of more than one rank), every rank of ``comm`` must
    call this: rank r packs the r-th part into ``<output>.shards/part-r.h5`` and rank 0 writes
    ``output`` with a virtual dataset over the shards. Any bad input raises the same
    ``BadInput`` on every rank.
    """
    t0 = time.perf_counter()
    size = 1 if comm is None else comm.Get_size()
    rank = 0 if comm is None else comm.Get_rank()
    plan = error = None
    if rank == 0:
        try:
            plan = _plan(inputs, output, dataset, chunk, fmt, size)
        except Exception as exc:
            error = _as_error(exc)
    if comm is not None and size > 1:
        # Rank 0's verdict, whatever it is, reaches every rank: all go on or all raise.
        plan, err = comm.bcast((plan, _pack_error(error)), root=0)
        if err is not None and error is None:
            error = _unpack_error(err)
    if error is not None:
        raise error

    if size == 1:
        try:
            summary = _ingest_serial(plan)
        except BaseException as exc:
            _cleanup(plan["tmp"])
            if isinstance(exc, Exception):
                raise _as_error(exc) from None
            raise
        summary["seconds"] = time.perf_counter() - t0
        return summary

    # Every rank writes its shard; then they agree on success before rank 0 links them.
    result = None
    error = None
    shard_dir = os.path.join(plan["tmp"], "shards")
    try:
        if rank == 0:
            os.makedirs(shard_dir, exist_ok=True)
    except Exception as exc:
        error = _as_error(exc)
    comm.Barrier()
    if error is None:
        try:
            os.makedirs(shard_dir, exist_ok=True)
            lo, hi = plan["bounds"][rank], plan["bounds"][rank + 1]
            src = _Concat(plan["files"])
            result = _write_part(os.path.join(shard_dir, _SHARD_NAME.format(rank)),
                                 plan["dataset"], src, lo, hi, plan["chunk"], plan["format"],
                                 plan["record"], shard={"rank": rank, "part_start": lo,
                                                        "part_end": hi})
        except Exception as exc:
            error = _as_error(exc)
    try:
        _agree(comm, error)
    except MpitinyError:
        comm.Barrier()
        if rank == 0:
            _cleanup(plan["tmp"])
        raise
    results = comm.gather(result, root=0)
    summary = None
    error = None
    if rank == 0:
        try:
            summary = _link_shards(plan, results)
        except Exception as exc:
            _cleanup(plan["tmp"])
            error = _as_error(exc)
    summary, err = comm.bcast((summary, _pack_error(error)), root=0)
    if err is not None:
        raise error if error is not None else _unpack_error(err)
    summary["seconds"] = time.perf_counter() - t0
    return summary


def _summary(plan: dict, table: np.ndarray, stored: int) -> dict:
    return {"output": plan["output"], "dataset": plan["dataset"], "splits": int(len(table)),
            "bytes": int(plan["total"]), "stored_bytes": int(stored),
            "chunk_bytes": plan["chunk"], "format": plan["format"],
            "record_size": plan["record"], "files": len(plan["files"]),
            "ranks": plan["ranks"]}


def _ingest_serial(plan: dict) -> dict:
    tmp_file = os.path.join(plan["tmp"], "data.h5")
    src = _Concat(plan["files"])
    with _new_file(tmp_file) as f:
        group = f.create_group(plan["dataset"])
        writer = _SplitWriter(group, plan["chunk"])
        try:
            if plan["format"] == "text":
                _pack_text(src, 0, plan["total"], plan["chunk"], writer)
            else:
                _pack_fixed(src, 0, plan["total"], plan["chunk"], plan["format"],
                            plan["record"], writer)
        finally:
            src.close()
        table, crcs = writer.finish(group)
        stored = writer.nchunks * plan["chunk"]
        _write_meta(f, group, plan, table, crcs, [(".", 0, len(table), 0, stored)])
    out = plan["out_abs"]
    os.replace(tmp_file, out)
    # A previous multi-rank ingest to the same name left shards that nothing refers to now.
    _remove_shards(out + SHARDS_SUFFIX)
    _cleanup(plan["tmp"])
    return _summary(plan, table, stored)


def _link_shards(plan: dict, results: list) -> dict:
    """Rank 0: the main file (virtual ``data`` over the shards), then install both."""
    h5py = _h5py()
    chunk = plan["chunk"]
    out = plan["out_abs"]
    rel_dir = os.path.basename(out) + SHARDS_SUFFIX
    tables, crcs, shards = [], [], []
    data_offset = 0
    first = 0
    sources = []
    for r, (table, crc) in enumerate(results):
        n_bytes = int((table[:, 0] + np.maximum(1, -(-table[:, 1] // chunk)) * chunk).max()) \
            if len(table) else 0
        shifted = table.copy()
        shifted[:, 0] += data_offset
        tables.append(shifted)
        crcs.append(crc)
        rel = f"{rel_dir}/{_SHARD_NAME.format(r)}"
        shards.append((rel, first, len(table), data_offset, n_bytes))
        if n_bytes:
            sources.append((rel, data_offset, n_bytes))
        data_offset += n_bytes
        first += len(table)
    table = np.concatenate(tables) if tables else np.zeros((0, 2), np.int64)
    crc = np.concatenate(crcs) if crcs else np.zeros(0, np.uint32)
    tmp_file = os.path.join(plan["tmp"], "data.h5")
    with _new_file(tmp_file) as f:
        group = f.create_group(plan["dataset"])
        if data_offset:
            layout = h5py.VirtualLayout(shape=(data_offset,), dtype=np.uint8)
            for rel, at, n in sources:
                layout[at:at + n] = h5py.VirtualSource(rel, plan["dataset"] + "/data",
                                                       shape=(n,), dtype=np.uint8)
            group.create_virtual_dataset("data", layout, fillvalue=0)
        else:
            group.create_dataset("data", shape=(0,), maxshape=(None,), chunks=(chunk,),
                                 dtype="u1", fillvalue=0)
        _write_meta(f, group, plan, table, crc, shards)
    # Install: first remove the old output (a crash from here on leaves no complete-looking
    # file), then the shard directory, then the main file (one rename).
    shard_dir = out + SHARDS_SUFFIX
    try:
        os.unlink(out)
    except FileNotFoundError:
        pass
    if os.path.lexists(shard_dir):
        os.rename(shard_dir, os.path.join(plan["tmp"], "old-shards"))
    os.rename(os.path.join(plan["tmp"], "shards"), shard_dir)
    os.rename(tmp_file, out)
    _cleanup(plan["tmp"])
    return _summary(plan, table, data_offset)


def mpi_comm_if_launched():
    """COMM_WORLD if this process was started by an MPI launcher, else None (no MPI import)."""
    launched = any(v in os.environ for v in ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE",
                                             "PMIX_RANK", "MPI_LOCALNRANKS"))
    if not launched:
        return None
    from mpi4py import MPI
    return MPI.COMM_WORLD


# ------------------------------------------------------------------------------- reading

def _open_error(path: str, err: BaseException) -> BadInput:
    text = " ".join(str(err).split())
    low = text.lower()
    if "signature not found" in low:
        what = "not an HDF5 file"
    elif "truncated file" in low:
        m = re.search(r"eof = (\d+).*stored_eof = (\d+)", text)
        extra = f" ({m.group(1)} bytes of the {m.group(2)} HDF5 expects)" if m else ""
        what = f"truncated HDF5 file{extra}: an interrupted copy or write?"
    elif isinstance(err, PermissionError) or "permission denied" in low:
        what = "cannot read the file: permission denied"
    else:
        what = f"cannot open as HDF5: {text[:300]}"
    return BadInput(what, where=path)


def _open_h5(path: str):
    h5py = _h5py()
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise BadInput("no such file", where=path) from None
    except (OSError, ValueError) as err:
        raise BadInput(f"cannot access: {_reason(err)}", where=path) from None
    if os.path.isdir(path):
        raise BadInput("is a directory, not an HDF5 file", where=path)
    if st.st_size == 0:
        raise BadInput("is empty, not an HDF5 file", where=path)
    try:
        # No chunk cache: a split is read once, straight into the caller's buffer.
        return h5py.File(path, "r", rdcc_nbytes=0)
    except (OSError, ValueError) as err:
        raise _open_error(path, err) from None


def _group(f, path: str, dataset: str, layout: str = LAYOUT):
    """The ingest group ``dataset`` of open file ``f``, checked; BadInput otherwise."""
    h5py = _h5py()
    where = f"{path}:{dataset}"
    try:
        obj = f.get(dataset)
    except Exception as err:          # a damaged object header
        raise BadInput(f"cannot read {dataset}: {' '.join(str(err).split())[:200]}",
                       where=where) from None
    if obj is None:
        top = ", ".join("/" + k for k in list(f.keys())[:10]) or "nothing"
        raise BadInput(f"no dataset {dataset} in the file (at the top level: {top})",
                       where=where)
    if isinstance(obj, h5py.Dataset):
        parent = dataset.rsplit("/", 1)[0] or "/"
        hint = f" (did you mean {parent}?)" if parent != "/" and dataset.endswith(
            ("/data", "/splits", "/checksums")) else ""
        raise BadInput(f"not an ingested dataset: {dataset} is an HDF5 dataset; give the group "
                       f"that mpitiny ingest wrote{hint}", where=where)
    if not isinstance(obj, h5py.Group):
        raise BadInput(f"not an ingested dataset: {dataset} is not an HDF5 group", where=where)
    found = obj.attrs.get("layout")
    if isinstance(found, bytes):
        found = found.decode("utf-8", "replace")
    if found != layout:
        if found == SHARD_LAYOUT:
            raise BadInput("is a shard of a multi-rank ingest: open the main file that refers "
                           "to it", where=where)
        raise BadInput(f"not an ingested dataset: {dataset} has no layout='{layout}' "
                       "attribute (write it with mpitiny ingest)", where=where)
    version = obj.attrs.get("version", 0)
    if int(version) > VERSION:
        raise BadInput(f"written by a newer mpitiny (layout version {int(version)}; this one "
                       f"reads {VERSION})", where=where)
    for name in ("data", "splits"):
        if not isinstance(obj.get(name), h5py.Dataset):
            raise BadInput(f"damaged ingested dataset: {dataset}/{name} is missing",
                           where=where)
    splits = obj["splits"]
    if splits.ndim != 2 or splits.shape[1] != 2 or splits.dtype.kind not in "iu":
        raise BadInput(f"damaged ingested dataset: {dataset}/splits has shape {splits.shape} "
                       f"and type {splits.dtype} (expected (n, 2) integers)", where=where)
    return obj


BYTES_READ = [0]    # valid split bytes handed to tasks by this process (for the task trace)


def count_splits(path: str, dataset: str = DEFAULT_DATASET) -> int:
    """The number of splits of an ingested dataset, once its split table has been checked
    (``_check_table``: 16 bytes per split are read; the data is not) and its shard files, if
    any, found."""
    dataset = normalize_dataset(dataset)
    with _open_h5(path) as f:
        g = _group(f, path, dataset)
        n = int(g["splits"].shape[0])
        if n <= _MAX_CHECKED_SPLITS:
            _check_table(g, path, dataset, g["splits"][()])
        data = g["data"]
        if data.is_virtual:
            base = os.path.dirname(os.path.abspath(path))
            for vs in data.virtual_sources():
                name = vs.file_name
                if name != "." and not os.path.exists(os.path.join(base, name)):
                    raise BadInput(f"shard file {name} is missing (it was written next to "
                                   f"{os.path.basename(path)}; move {os.path.basename(path)}"
                                   f"{SHARDS_SUFFIX}/ together with it)",
                                   where=f"{path}:{dataset}")
        return n


#: Above this many splits (a 1 GiB table) ``count_splits`` does not read the table.
_MAX_CHECKED_SPLITS = 1 << 26


def _check_table(g, path: str, dataset: str, table) -> tuple:
    """Check an ingested group's ``data``, ``chunk_bytes`` and split table against each other:
    every split starts on a chunk boundary after the previous split's chunks and ends inside
    ``data``. Returns ``(chunk_bytes, table as int64)``; BadInput naming the first bad split."""
    where = f"{path}:{dataset}"

    def damaged(what: str) -> BadInput:
        return BadInput(f"damaged ingested dataset: {what}", where=where)

    data = g["data"]
    if data.ndim != 1 or data.dtype != np.uint8:
        raise damaged(f"{dataset}/data has shape {data.shape} and type {data.dtype} "
                      "(expected 1-D uint8)")
    try:
        chunk = int(g.attrs["chunk_bytes"])
    except (KeyError, OSError, ValueError, TypeError) as err:
        raise damaged(f"attribute chunk_bytes: {_oneline(err)}") from None
    if chunk <= 0:
        raise damaged(f"attribute chunk_bytes is {chunk} (expected a positive size)")
    table = np.ascontiguousarray(table, dtype=np.int64)
    extent = int(data.shape[0])
    if len(table):
        off, length = table[:, 0], table[:, 1]
        checks = (
            (off < 0, "has a negative offset {o}"),
            (length < 0, "has a negative length {n}"),
            (off % chunk != 0, "starts at byte {o}, not a multiple of the chunk size "
                               f"({chunk})"),
            ((off > extent) | (length > extent - off),       # no int64 overflow
             "(bytes {o}..{e}) ends beyond the end of " f"{dataset}/data ({extent} bytes)"),
        )
        # The end of each split's chunks, from values clipped into data (the others are
        # reported above, at a position no later than any overlap they cause).
        o, n = np.clip(off, 0, extent), np.clip(length, 0, extent)
        ends = o + np.maximum(1, -(-n // chunk)) * chunk
        first = None
        for bad, text in checks:
            hit = np.flatnonzero(bad)
            if hit.size and (first is None or hit[0] < first[0]):
                first = (int(hit[0]), text)
        order = np.flatnonzero(o[1:] < ends[:-1])
        if order.size and (first is None or order[0] + 1 < first[0]):
            i = int(order[0]) + 1
            what = "overlaps split" if off[i] > off[i - 1] else "does not come after split"
            raise damaged(f"split {i} (offset {int(off[i])}) {what} {i - 1} (offset "
                          f"{int(off[i - 1])}, {int(ends[i - 1] - off[i - 1])} bytes of chunks)")
        if first is not None:
            i, text = first
            o, n = int(off[i]), int(length[i])
            raise damaged(f"split {i} " + text.format(o=o, n=n, e=o + n))
    return chunk, table


class _Segment:
    """A piece of ``data`` (logical ``[start, stop)``) stored in one chunked dataset."""

    __slots__ = ("start", "stop", "file", "dset", "src_start", "dsid", "fast", "h5file", "fd",
                 "addr")

    def __init__(self, start, stop, file, dset, src_start):
        self.start, self.stop = start, stop
        self.file, self.dset, self.src_start = file, dset, src_start
        self.dsid = None
        self.fast = False
        self.h5file = None
        self.fd = -1
        self.addr = None        # file address of each chunk (-1: use HDF5), built on first read


class Splits:
    """An ingested dataset, open for reading: ``len(s)``, ``s.read(i)``, ``s.read_array(i)``.

    Attributes: ``path`` (absolute), ``dataset``, ``format`` ("text", "binary" or
    "records"), ``record_size`` (N of records:N, else 0), ``chunk_bytes``, ``total_bytes``
    (logical content), ``sources`` (list of dicts name/size/offset), ``offsets`` and
    ``lengths`` (numpy arrays, per split), ``shards`` (list of dicts file/first_split/
    n_splits). ``chunk_reads`` counts the chunk reads done so far.
    """

    def __init__(self, path: str, dataset: str = DEFAULT_DATASET) -> None:
        self.path = os.path.abspath(path)
        self.dataset = normalize_dataset(dataset)
        self.where = f"{self.path}:{self.dataset}"
        self._file = _open_h5(self.path)
        try:
            self._load()
        except BaseException:
            self.close()
            raise
        self.chunk_reads = 0
        self._scratch: np.ndarray | None = None

    def _load(self) -> None:
        h5py = _h5py()
        g = _group(self._file, self.path, self.dataset)
        self._group = g
        a = g.attrs
        try:
            self.format = _text(a["format"])
            self.record_size = int(a["record_size"])
            self.chunk_bytes = int(a["chunk_bytes"])
            self.total_bytes = int(a["total_bytes"])
            table = g["splits"][()]
        except (KeyError, OSError, ValueError, TypeError) as err:
            raise BadInput(f"damaged ingested dataset: {_oneline(err)}",
                           where=self.where) from None
        if self.format not in FORMATS or self.chunk_bytes <= 0:
            raise BadInput(f"damaged ingested dataset: format={self.format!r}, "
                           f"chunk_bytes={self.chunk_bytes}", where=self.where)
        _, self._table = _check_table(g, self.path, self.dataset, table)
        self.offsets = self._table[:, 0]
        self.lengths = self._table[:, 1]
        self._n = len(self._table)
        self._crcs = None
        data = g["data"]
        self._data = data
        extent = int(data.shape[0])
        c = self.chunk_bytes
        self._spans = np.maximum(1, -(-self.lengths // c))
        srcs = g.get("sources")
        self.sources = []
        if isinstance(srcs, h5py.Dataset):
            for row in srcs[()]:
                self.sources.append({"name": _text(row["name"]), "size": int(row["size"]),
                                     "offset": int(row["offset"])})
        shards = g.get("shards")
        self.shards = []
        if isinstance(shards, h5py.Dataset):
            for row in shards[()]:
                self.shards.append({"file": _text(row["file"]),
                                    "first_split": int(row["first_split"]),
                                    "n_splits": int(row["n_splits"])})
        # Where each part of data lives: the dataset itself, or the virtual sources.
        self._segments = []
        if data.is_virtual:
            base = os.path.dirname(self.path)
            for vs in data.virtual_sources():
                (vlo,), (vhi,) = vs.vspace.get_select_bounds()
                src = vs.src_space
                slo = 0 if src.get_select_type() == h5py.h5s.SEL_ALL else \
                    src.get_select_bounds()[0][0]
                name = vs.file_name
                file = self.path if name == "." else (
                    name if os.path.isabs(name) else os.path.join(base, name))
                self._segments.append(_Segment(int(vlo), int(vhi) + 1, file, vs.dset_name,
                                               int(slo)))
            self._segments.sort(key=lambda s: s.start)
        elif extent > 0:
            seg = _Segment(0, extent, self.path, data.name, 0)
            self._attach(seg, self._file, data)
            self._segments.append(seg)
        self._starts = [s.start for s in self._segments]

    def _attach(self, seg: _Segment, h5file, dset) -> None:
        seg.h5file = h5file
        seg.dsid = dset.id
        plist = dset.id.get_create_plist()
        seg.fast = (dset.chunks == (self.chunk_bytes,) and plist.get_nfilters() == 0
                    and dset.dtype == np.uint8)
        seg.dset = dset
        if seg.fast:
            try:
                seg.fd = os.open(seg.file, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            except OSError:
                seg.fd = -1

    def _index_chunks(self, seg: _Segment) -> None:
        """The file address of every chunk of ``seg`` (one pass over HDF5's chunk index,
        ~1 us per chunk); -1 where HDF5 must read the chunk itself (filtered, other size)."""
        c = self.chunk_bytes
        n = int(seg.dset.shape[0]) // c
        addr = np.full(n, -1, dtype=np.int64)
        if seg.fd >= 0 and n <= MAX_INDEXED_CHUNKS and hasattr(seg.dsid, "chunk_iter"):
            def visit(info):
                k = info.chunk_offset[0] // c
                if info.size == c and info.filter_mask == 0 and 0 <= k < n:
                    addr[k] = info.byte_offset
            try:
                seg.dsid.chunk_iter(visit)
            except Exception:          # an older HDF5: read through HDF5 instead
                addr[:] = -1
        seg.addr = addr

    def _open_segment(self, seg: _Segment) -> None:
        if seg.file == self.path:
            dset = self._file.get(seg.dset)
            f = self._file
        else:
            if not os.path.exists(seg.file):
                raise BadInput(f"shard file {seg.file} is missing (it was written next to "
                               f"{os.path.basename(self.path)}; move "
                               f"{os.path.basename(self.path)}{SHARDS_SUFFIX}/ together with "
                               "it)", where=self.where)
            f = _open_h5(seg.file)
            dset = f.get(seg.dset)
        if dset is None or not isinstance(dset, _h5py().Dataset) or \
                int(dset.shape[0]) < seg.src_start + (seg.stop - seg.start):
            raise BadInput(f"damaged shard: {seg.file} has no dataset {seg.dset} of at least "
                           f"{seg.src_start + seg.stop - seg.start} bytes", where=self.where)
        self._attach(seg, f, dset)

    # -- the public reading API
    def __len__(self) -> int:
        return self._n

    def __repr__(self) -> str:
        return (f"<Splits {self.where}: {self._n} splits, {self.total_bytes} bytes, "
                f"{self.format}, chunk {self.chunk_bytes}>")

    def _index(self, i: Any) -> int:
        if isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer)):
            raise BadInput(f"split index must be an integer, not {type(i).__name__} {i!r}",
                           where=self.where)
        i = int(i)
        if not 0 <= i < self._n:
            have = f"0..{self._n - 1}" if self._n else "none: the dataset is empty"
            raise BadInput(f"split {i} is out of range (the file has {self._n} splits: "
                           f"{have})", where=self.where)
        return i

    def span_bytes(self, i: int) -> int:
        """Bytes of the chunk(s) split ``i`` occupies: the buffer size ``read_into`` needs."""
        return int(self._spans[self._index(i)]) * self.chunk_bytes

    def prefetch(self, i: int) -> None:
        """Start reading split ``i`` in a background thread; the next read of ``i`` takes it.

        The runtime calls this for the next split of a chunk while the current task runs, so
        the disk works while Python computes (the reads are ``preadv`` calls, which release the
        GIL). At most a few splits are held; a read of another split does not wait for them.
        """
        import concurrent.futures
        import threading
        i = self._index(i)
        held = self.__dict__.setdefault("_prefetched", {})
        if i in held or len(held) >= 4:
            return
        if "_prefetcher" not in self.__dict__:
            self._prefetcher = concurrent.futures.ThreadPoolExecutor(1, "mpitiny-prefetch")
            self._read_lock = threading.Lock()

        def load(i=i):
            buf = np.empty(self.span_bytes(i), dtype=np.uint8)
            return buf, self._read_locked(i, buf)
        held[i] = self._prefetcher.submit(load)

    def _take_prefetched(self, i: int):
        held = self.__dict__.get("_prefetched")
        if not held or i not in held:
            return None
        return held.pop(i).result()

    def _read_locked(self, i: int, buf) -> int:
        with self._read_lock:
            return self._read_into(i, buf, False)

    def read_into(self, i: int, out, verify: bool = False) -> int:
        """Read split ``i`` into ``out`` (writable, at least ``span_bytes(i)`` bytes); returns
        the number of valid bytes at the start of ``out``."""
        i = self._index(i)
        got = self._take_prefetched(i)
        if got is not None:
            buf, n = got
            np.frombuffer(out, dtype=np.uint8)[:n] = buf[:n]
            if verify:
                self._verify_one(i, buf[:n])
        elif "_read_lock" in self.__dict__:
            with self._read_lock:
                n = self._read_into(i, out, verify)
        else:
            n = self._read_into(i, out, verify)
        BYTES_READ[0] += n
        return n

    def _read_into(self, i: int, out, verify: bool) -> int:
        off, length = int(self._table[i, 0]), int(self._table[i, 1])
        c = self.chunk_bytes
        k = int(self._spans[i])
        if type(out) is np.ndarray and out.dtype == np.uint8 and out.ndim == 1 and \
                out.flags.c_contiguous and out.flags.writeable:
            buf = out
        else:
            try:
                buf = np.frombuffer(out, dtype=np.uint8)     # a view: contiguous, writable
            except (TypeError, ValueError, BufferError) as err:
                raise ValueError(f"read_into: out must be a contiguous writable buffer "
                                 f"({err})") from None
            if not buf.flags.writeable:
                raise ValueError("read_into: out is read-only")
        if len(buf) < k * c:
            raise ValueError(f"read_into: the buffer has {len(buf)} bytes; split {i} needs "
                             f"{k * c} (span_bytes)")
        if length:
            at = bisect.bisect_right(self._starts, off) - 1
            seg = self._segments[at] if at >= 0 else None
            if seg is None or off + length > seg.stop:
                self._read_slow(off, length, buf)
            else:
                if seg.dsid is None:
                    self._open_segment(seg)
                local = off - seg.start + seg.src_start
                if seg.fast and local % c == 0:
                    if seg.addr is None:
                        self._index_chunks(seg)
                    k0 = local // c
                    a = int(seg.addr[k0])
                    if a >= 0 and (k == 1 or bool((seg.addr[k0:k0 + k] - a == np.arange(
                            0, k * c, c)).all())):
                        # The split's chunks are contiguous in the file: one read.
                        self._pread(seg, a, buf, length, i)
                    else:
                        try:
                            for j in range(k):
                                seg.dsid.read_direct_chunk((local + j * c,),
                                                           out=buf[j * c:(j + 1) * c])
                        except (OSError, ValueError, RuntimeError) as err:
                            raise BadInput(f"split {i}: reading chunk at byte {local} of "
                                           f"{seg.file} failed: {_oneline(err)}",
                                           where=self.where) from None
                    self.chunk_reads += k
                else:
                    try:
                        seg.dset.read_direct(buf, np.s_[local:local + length], np.s_[0:length])
                    except (OSError, ValueError, RuntimeError) as err:
                        raise BadInput(f"split {i}: reading failed: {_oneline(err)}",
                                       where=self.where) from None
                    self.chunk_reads += k
        if verify:
            self._verify_one(i, buf[:length])
        return length

    def _pread(self, seg: _Segment, address: int, buf: np.ndarray, length: int, i: int) -> None:
        mv = memoryview(buf)
        got = 0
        try:
            while got < length:
                n = os.preadv(seg.fd, [mv[got:length]], address + got)
                if not n:
                    raise BadInput(f"split {i}: {seg.file} ends inside the split's chunk "
                                   "(truncated file?)", where=self.where)
                got += n
        except OSError as err:
            raise BadInput(f"split {i}: reading {seg.file} failed: {_reason(err)}",
                           where=self.where) from None

    def _read_slow(self, off: int, length: int, buf: np.ndarray) -> None:
        try:
            self._data.read_direct(buf, np.s_[off:off + length], np.s_[0:length])
        except (OSError, ValueError, RuntimeError) as err:
            raise BadInput(f"reading bytes {off}..{off + length} failed: {_oneline(err)}",
                           where=self.where) from None

    def read_array(self, i: int, verify: bool = False) -> np.ndarray:
        """Split ``i`` as a new numpy array: uint8 of its valid bytes, or (n, N) for records:N."""
        got = self._take_prefetched(self._index(i))
        if got is not None:
            buf, n = got
            BYTES_READ[0] += n
            if verify:
                self._verify_one(self._index(i), buf[:n])
        else:
            buf = np.empty(self.span_bytes(i), dtype=np.uint8)
            n = self.read_into(i, buf, verify=verify)
        arr = buf[:n]
        if self.format == "records" and self.record_size:
            arr = arr.reshape(-1, self.record_size)
        return arr

    def read(self, i: int, verify: bool = False) -> bytes:
        """The valid bytes of split ``i`` (whole records) as ``bytes``."""
        need = self.span_bytes(i)
        if self._scratch is None or len(self._scratch) < need:
            self._scratch = np.empty(need, dtype=np.uint8)
        n = self.read_into(i, self._scratch, verify=verify)
        return self._scratch[:n].tobytes()

    def checksum(self, i: int) -> int:
        """The stored CRC32 of split ``i``."""
        i = self._index(i)
        if self._crcs is None:
            ck = self._group.get("checksums")
            if ck is None or ck.shape != (self._n,):
                raise BadInput("damaged ingested dataset: no checksums for every split",
                               where=self.where)
            self._crcs = np.asarray(ck[()], dtype=np.uint32)
        return int(self._crcs[i])

    def _verify_one(self, i: int, data) -> None:
        stored = self.checksum(i)
        got = zlib.crc32(data)
        if got != stored:
            raise BadInput(f"split {i}: CRC32 mismatch (stored {stored:08x}, read {got:08x}): "
                           "the data is damaged", where=self.where)

    def close(self) -> None:
        pool = self.__dict__.pop("_prefetcher", None)
        if pool is not None:
            pool.shutdown(wait=True)
            self.__dict__.pop("_prefetched", None)
            self.__dict__.pop("_read_lock", None)
        for seg in getattr(self, "_segments", ()):
            if seg.h5file is not None and seg.h5file is not self._file:
                try:
                    seg.h5file.close()
                except Exception:
                    pass
            seg.h5file = seg.dsid = None
            if seg.fd >= 0:
                try:
                    os.close(seg.fd)
                except OSError:
                    pass
                seg.fd = -1
        if getattr(self, "_file", None) is not None:
            try:
                self._file.close()
            except Exception:
                pass
            self._file = None
        self._group = self._data = None

    def __enter__(self) -> "Splits":
        return self

    def __exit__(self, *exc) -> None:
        close_splits(self)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray) and value.shape == ():
        return _text(value[()])
    return str(value)


def _oneline(err: BaseException) -> str:
    return " ".join(str(err).split())[:300] or type(err).__name__


_CACHE: dict = {}


def _close_all_at_exit() -> None:
    # Close cached files while h5py is still whole: h5py objects that outlive it to the end
    # of interpreter shutdown can crash it (seen with gc.freeze(), which mpitiny run calls).
    close_splits()


atexit.register(_close_all_at_exit)


def _signature(path: str) -> tuple:
    st = os.stat(path)
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def open_splits(spec: Any, dataset: str | None = None) -> Splits:
    """The ``Splits`` of ``"data.h5:/text"`` (or ``"data.h5"``: dataset /text), opened once
    per process: later calls return the cached object while the file is unchanged."""
    path, ds = parse_spec(spec, dataset)
    key = (os.path.abspath(path), ds)
    hit = _CACHE.get(key)
    try:
        sig = _signature(key[0])
    except (OSError, ValueError):
        sig = None
    if hit is not None:
        if hit[0] == sig:
            return hit[1]
        _CACHE.pop(key, None)
        hit[1].close()
    splits = Splits(key[0], ds)
    if sig is not None:
        _CACHE[key] = (sig, splits)
    return splits


def close_splits(splits: Splits | None = None) -> None:
    """Close one cached ``Splits`` (or all of them)."""
    for key, (sig, s) in list(_CACHE.items()):
        if splits is None or s is splits:
            _CACHE.pop(key, None)
            s.close()
    if splits is not None:
        splits.close()


def read_split(spec: Any, i: int, verify: bool = False) -> bytes:
    """``open_splits(spec).read(i)``: the valid bytes of split ``i``."""
    return open_splits(spec).read(i, verify=verify)


def verify(spec: Any, dataset: str | None = None) -> dict:
    """Check an ingested dataset completely: the table, every shard, every split's CRC32 and
    record boundaries. Returns a summary dict; raises BadInput at the first problem."""
    path, ds = parse_spec(spec, dataset)
    s = Splits(path, ds)
    try:
        c = s.chunk_bytes
        n = len(s)
        off, length, span = s.offsets, s.lengths, s._spans
        where = s.where
        if n:
            if (off % c).any():
                i = int(np.flatnonzero(off % c)[0])
                raise BadInput(f"split {i} does not start on a chunk boundary", where=where)
            ends = off + span * c
            if (off[1:] < ends[:-1]).any():
                i = int(np.flatnonzero(off[1:] < ends[:-1])[0]) + 1
                raise BadInput(f"split {i} overlaps split {i - 1}", where=where)
            if (length == 0).any():
                raise BadInput(f"split {int(np.flatnonzero(length == 0)[0])} is empty",
                               where=where)
        if int(length.sum()) != s.total_bytes:
            raise BadInput(f"the splits hold {int(length.sum())} bytes but total_bytes is "
                           f"{s.total_bytes}", where=where)
        if s.sources and sum(x["size"] for x in s.sources) != s.total_bytes:
            raise BadInput("the source sizes do not add up to total_bytes", where=where)
        if s.format == "records" and s.record_size and (length % s.record_size).any():
            raise BadInput("a split does not hold a whole number of records", where=where)
        buf = np.empty(int(span.max()) * c if n else 0, dtype=np.uint8)
        for i in range(n):
            k = s.read_into(i, buf, verify=True)
            if s.format == "text" and i < n - 1 and buf[k - 1] != 0x0A:
                raise BadInput(f"split {i} does not end with a whole line", where=where)
        return {"path": s.path, "dataset": s.dataset, "splits": n, "bytes": s.total_bytes,
                "chunk_bytes": c, "format": s.format, "record_size": s.record_size,
                "shards": len(s.shards), "ok": True}
    finally:
        s.close()


def logical_content(spec: Any, dataset: str | None = None) -> bytes:
    """The concatenation of every split's valid bytes (= the inputs, concatenated). For tests
    and small files: it holds everything in memory."""
    s = open_splits(spec, dataset)
    return b"".join(s.read(i) for i in range(len(s)))


# ------------------------------------------------------------------------------ the CLI

def ingest_command(inputs: Sequence[str], output: str | None, dataset: str, chunk: str,
                   fmt: str) -> tuple:
    """``mpitiny ingest``: (summary, rank). MPI is used only under an MPI launcher."""
    comm = mpi_comm_if_launched()
    if comm is not None and comm.Get_size() == 1:
        comm = None
    summary = ingest(list(inputs), output or "", dataset=dataset, chunk=chunk, fmt=fmt,
                     comm=comm)
    return summary, (0 if comm is None else comm.Get_rank())


def describe(summary: dict) -> str:
    mbps = summary["bytes"] / 1e6 / summary["seconds"] if summary.get("seconds") else 0.0
    rec = f"records:{summary['record_size']}" if summary["format"] == "records" else \
        summary["format"]
    files = summary["files"]
    return (f"{summary['output']}:{summary['dataset']}: {summary['splits']} splits, "
            f"{summary['bytes']:,} bytes from {files} file{'s' if files != 1 else ''} "
            f"({rec}, {_human(summary['chunk_bytes'])} chunks, "
            f"{summary['stored_bytes']:,} bytes stored) by {summary['ranks']} "
            f"rank{'s' if summary['ranks'] != 1 else ''} in {summary['seconds']:.2f} s "
            f"({mbps:.0f} MB/s)")
