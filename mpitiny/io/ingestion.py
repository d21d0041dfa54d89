"""``mpitiny ingest``: packing input files into HDF5 (the layout: ``mpitiny.io.h5format``).

Alone (or under ``mpiexec -n 1``) ingest packs the inputs into one file. Under an MPI launcher
with N > 1 ranks it uses every rank without parallel HDF5 (the h5py wheel has none):

1. Rank 0 checks the options and the inputs (``_plan``) and cuts the logical content into N
   contiguous parts at record boundaries (``part_bounds``: text at line starts; binary and
   records:N at multiples of a full split, so that the splits do not depend on N).
2. Rank r packs part r into its own shard file, ``<output>.shards/part-0000r.h5``.
3. Once every rank has succeeded (``_agree``: one ``allgather``), rank 0 writes ``<output>``,
   whose ``data`` is a virtual dataset mapping the shards' ``data`` end to end, and whose
   split table is the shards' tables, shifted (``_link_shards``).

Packing (``_pack_text``, ``_pack_fixed``) cuts the logical content into splits of at most one
chunk of whole records (more chunks only for a record longer than a chunk) and writes each
with direct chunk writes (``_SplitWriter``). Everything is written in a temporary directory
next to the output and moved into place at the end, so a failed ingest leaves the old output
(or nothing); a bad input raises the same ``BadInput`` on every rank. ``docs/data.md`` says
this for users.
"""
from __future__ import annotations

import bisect
import os
import re
import time
import traceback
import uuid
import zlib
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from mpitiny.errors import BadInput, InternalError, MpitinyError
from mpitiny.io.h5format import (DEFAULT_CHUNK, DEFAULT_DATASET, LAYOUT, MIN_CHUNK,
                                 SHARD_LAYOUT, SHARDS_SUFFIX, VERSION, error_reason,
                                 import_h5py, normalize_dataset, parse_chunk, parse_format)
from mpitiny.mpienv import mpi_comm_if_launched

if TYPE_CHECKING:
    from mpi4py import MPI

#: Source names/sizes are also written as attributes (for ``h5dump -A``) up to this many files;
#: the ``sources`` dataset always has them.
MAX_SOURCE_ATTRS = 1000
_SHARD_NAME = "part-{:05d}.h5"
_SHARD_FILE = re.compile(r"part-\d{5}\.h5")
# HDF5 >= 1.10 can read what we write (the HDF5 2.0 of the wheel would default to newer
# object versions that 1.x tools cannot open).
_LIBVER = ("v110", "v110")
_SCAN_BLOCK = 1 << 20


def _version() -> str:
    try:
        from importlib.metadata import version
        return version("mpitiny")
    except Exception:          # not installed as a distribution
        return "?"


def _human(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} bytes"


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
            raise BadInput(f"cannot access: {error_reason(err)}",
                           where=f"input {given}") from None
        if os.path.isdir(given):
            try:
                names = sorted(os.listdir(given))
            except OSError as err:
                raise BadInput(f"cannot list the directory: {error_reason(err)}",
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
        raise BadInput(f"cannot read the file: {error_reason(err)}",
                       where=f"input {name}") from None
    return name, os.path.abspath(name), st.st_size



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
                raise BadInput(f"cannot read the file: {error_reason(err)}",
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
    h5py = import_h5py()
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
    h5py = import_h5py()
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
    for _name, path, _size in files:
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
        raise BadInput(f"cannot write in {out_dir}: {error_reason(err)}",
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
        return BadInput(f"ingest: {error_reason(exc)}", where=where)
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
           chunk: Any = DEFAULT_CHUNK, fmt: str = "text",
           comm: MPI.Comm | None = None) -> dict:
    """Pack ``inputs`` into ``output`` (see the module docstring); returns a summary dict.

    With ``comm`` (an mpi4py communicator of more than one rank), every rank of ``comm`` must
    call this: rank r packs the r-th part into ``<output>.shards/part-r.h5`` and rank 0 writes
    ``output`` with a virtual dataset over the shards. Any bad input raises the same
    ``BadInput`` on every rank.
    """
    t0 = time.perf_counter()
    if comm is not None and comm.Get_size() == 1:
        comm = None
    plan = _agreed_plan(inputs, output, dataset, chunk, fmt, comm)
    if comm is None:
        try:
            summary = _ingest_serial(plan)
        except BaseException as exc:
            _cleanup(plan["tmp"])
            if isinstance(exc, Exception):
                raise _as_error(exc) from None
            raise
    else:
        summary = _ingest_parallel(plan, comm)
    summary["seconds"] = time.perf_counter() - t0
    return summary


def _agreed_plan(inputs: Sequence[str], output: str, dataset: str, chunk: Any, fmt: Any,
                 comm: MPI.Comm | None) -> dict:
    """Rank 0's plan (``_plan``) on every rank of ``comm``, or its error raised on every rank."""
    size = 1 if comm is None else comm.Get_size()
    plan: dict | None = None
    error: MpitinyError | None = None
    if comm is None or comm.Get_rank() == 0:
        try:
            plan = _plan(inputs, output, dataset, chunk, fmt, size)
        except Exception as exc:
            error = _as_error(exc)
    if comm is not None:
        # Rank 0's verdict, whatever it is, reaches every rank: all go on or all raise.
        plan, err = comm.bcast((plan, _pack_error(error)), root=0)
        if err is not None and error is None:
            error = _unpack_error(err)
    if error is not None:
        raise error
    assert plan is not None        # rank 0 made one, or every rank raised its error above
    return plan


def _ingest_parallel(plan: dict, comm: MPI.Comm) -> dict:
    """Every rank writes its shard; once all have, rank 0 links them (``_link_shards``)."""
    rank = comm.Get_rank()
    result = None
    error: MpitinyError | None = None
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
    results = comm.gather(result, root=0)      # a list on rank 0, None elsewhere
    summary = None
    error = None
    if rank == 0:
        try:
            summary = _link_shards(plan, results or [])
        except Exception as exc:
            _cleanup(plan["tmp"])
            error = _as_error(exc)
    agreed, err = comm.bcast((summary, _pack_error(error)), root=0)
    if err is not None:
        raise error if error is not None else _unpack_error(err)
    return agreed


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
    h5py = import_h5py()
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
    """The line ``mpitiny ingest`` prints: what it wrote, from what, and how fast."""
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
