"""Reading ingested inputs: ``open_splits(path).read(i)`` reads split i with one read.

(The layout that ``mpitiny ingest`` writes and this module reads: ``mpitiny.io.h5format``.)

Reading (``open_splits``) resolves each split to its chunk(s) (through the virtual dataset's
mapping to the shard files), learns the chunks' file addresses once from HDF5's chunk index
(``H5Dchunk_iter``), and reads a split with one ``pread`` of its valid bytes when its chunks
are contiguous in the file (always, for files ingest wrote), else with ``H5Dread_chunk`` per
chunk: no chunk cache, no selection machinery, no copy. Files are opened once per process and
cached (keyed by absolute path and dataset).

Opening checks the file before any task trusts it: that it is HDF5, that the group is one
ingest wrote (``_ingested_group``) and that the split table fits the data (``_check_table``),
so that a damaged or foreign file is one ``BadInput`` naming it, not a wrong result.
``count_splits`` does the same checks without opening the data (``mpitiny run`` counts a
split family's instances with it when it loads a dag.json).

The engine records the bytes each task read from splits: ``bytes_read()``, the total of valid
split bytes this process has handed out, read before and after the task.
"""
from __future__ import annotations

import atexit
import bisect
import os
import re
import zlib
from typing import Any

import numpy as np

from mpitiny.errors import BadInput
from mpitiny.io.h5format import (DEFAULT_DATASET, FORMATS, LAYOUT, SHARD_LAYOUT,
                                 SHARDS_SUFFIX, VERSION, error_reason, import_h5py,
                                 normalize_dataset)

#: Up to this many chunks per shard, a reader maps chunks to file addresses once (one pass over
#: HDF5's chunk index) and reads each split with one ``pread``; beyond, through H5Dread_chunk.
MAX_INDEXED_CHUNKS = 1 << 22


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


# ------------------------------------------------------------ opening and checking

def _as_str(value: Any) -> str:
    """An HDF5 string (attribute or table field: bytes, str or a 0-d array) as str."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray) and value.shape == ():
        return _as_str(value[()])
    return str(value)


def _oneline(err: BaseException) -> str:
    """An HDF5 error's text on one line (its messages span several)."""
    return " ".join(str(err).split())[:300] or type(err).__name__


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
    h5py = import_h5py()
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise BadInput("no such file", where=path) from None
    except (OSError, ValueError) as err:
        raise BadInput(f"cannot access: {error_reason(err)}", where=path) from None
    if os.path.isdir(path):
        raise BadInput("is a directory, not an HDF5 file", where=path)
    if st.st_size == 0:
        raise BadInput("is empty, not an HDF5 file", where=path)
    try:
        # No chunk cache: a split is read once, straight into the caller's buffer.
        return h5py.File(path, "r", rdcc_nbytes=0)
    except (OSError, ValueError) as err:
        raise _open_error(path, err) from None


def _ingested_group(f, path: str, dataset: str, layout: str = LAYOUT):
    """The ingest group ``dataset`` of open file ``f``, checked; BadInput otherwise."""
    h5py = import_h5py()
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


def count_splits(path: str, dataset: str = DEFAULT_DATASET) -> int:
    """The number of splits of an ingested dataset, once its split table has been checked
    (``_check_table``: 16 bytes per split are read; the data is not) and its shard files, if
    any, found."""
    dataset = normalize_dataset(dataset)
    with _open_h5(path) as f:
        g = _ingested_group(f, path, dataset)
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


# ------------------------------------------------------------------------ the reader

#: Valid split bytes handed to tasks by this process (read it with ``bytes_read``).
_BYTES_READ = [0]


def bytes_read() -> int:
    """Total valid split bytes handed to tasks by this process so far (by ``read_into``,
    ``read`` and ``read_array``); the engine reads it around each task to record the bytes
    the task read."""
    return _BYTES_READ[0]


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
        h5py = import_h5py()
        g = _ingested_group(self._file, self.path, self.dataset)
        self._group = g
        a = g.attrs
        try:
            self.format = _as_str(a["format"])
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
        self._crcs: np.ndarray | None = None
        data = g["data"]
        self._data = data
        extent = int(data.shape[0])
        c = self.chunk_bytes
        self._spans = np.maximum(1, -(-self.lengths // c))
        srcs = g.get("sources")
        self.sources: list[dict[str, Any]] = []
        if isinstance(srcs, h5py.Dataset):
            for row in srcs[()]:
                self.sources.append({"name": _as_str(row["name"]), "size": int(row["size"]),
                                     "offset": int(row["offset"])})
        shards = g.get("shards")
        self.shards: list[dict[str, Any]] = []
        if isinstance(shards, h5py.Dataset):
            for row in shards[()]:
                self.shards.append({"file": _as_str(row["file"]),
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
        """The file address of every chunk of ``seg`` (one pass over HDF5's chunk index);
        -1 where HDF5 must read the chunk itself (filtered, other size)."""
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
        if dset is None or not isinstance(dset, import_h5py().Dataset) or \
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
        _BYTES_READ[0] += n
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
        mv = buf.data           # a memoryview of the (contiguous, uint8) buffer
        got = 0
        try:
            while got < length:
                n = os.preadv(seg.fd, [mv[got:length]], address + got)
                if not n:
                    raise BadInput(f"split {i}: {seg.file} ends inside the split's chunk "
                                   "(truncated file?)", where=self.where)
                got += n
        except OSError as err:
            raise BadInput(f"split {i}: reading {seg.file} failed: {error_reason(err)}",
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
            _BYTES_READ[0] += n
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


# ------------------------------------------------------------ one open file per process

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
    for key, (_sig, s) in list(_CACHE.items()):
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
