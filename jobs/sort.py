"""TeraSort over an ingested HDF5 file of 100-byte records (jobs/sort.json, docs/sort.md).

A record is 100 bytes; its key is the first 10 bytes, compared as unsigned bytes (memcmp).

* ``sample(input, partitions, samples, sample_splits)``: reads up to ``sample_splits`` splits
  spread over the file, takes ``samples`` keys at random (fixed seed) and returns the
  ``partitions - 1`` splitter keys, an (R-1, 10) uint8 array (range partitioner).
* ``map_split(input, split, partitions, inputs)``: one split -> its records grouped by
  partition (partition p holds keys in ``[splitter[p-1], splitter[p])``), written to one file
  ``WORK/map-SPLIT.bin``; returns JSON: the file, the byte bounds of each partition in it, the
  record count and the order-independent checksum of the split's records. Its batch form
  ``map_splits`` does a chunk of consecutive splits at once, into one file.
* ``reduce_part(r, output, inputs)``: reads partition ``r`` of every map file (in split order),
  sorts it stably by the 10-byte key and writes ``OUTPUT/part-R.bin`` (atomic_output).
* ``check_part(r, output)`` (teravalidate, per part): reads ``part-R.bin`` back, checks that it
  is in key order, returns its count, checksum, first and last key.
* ``validate(output, inputs)``: checks the order across parts, compares count and checksum
  with the input's (summed by the maps), writes ``OUTPUT/validate.json``, removes the map
  files; raises (the task fails, the run exits 1) if anything is wrong.

Defaults (jobs/sort.json): R = 24 partitions, the sample from 8 splits. With R = 8 on 200
MB of teragen records (2 ranks, 8 MiB splits), a reducer sorted 25 MB in 180-390 ms, 0.12-0.17
of the run from the first task to the last, and the reducers took 1.4-1.7 s together; with
24, 25-26 ms each and 0.6 s together (a smaller sort is faster per record), the whole run
1.6-1.9 s instead of 2.6-2.9, the longest task the sample (85-110 ms, 0.05-0.09; 120-300
ms from 16 splits). Load average 3-4, so these figures are rough.

WORK is ``$MPITINY_RUN_DIR/sort-maps`` (``OUTPUT/_work`` outside a run): it must be on a file
system every rank sees (it is, on one node; on a cluster put the run directory on a shared FS).

The checksum of a record set is the sum (mod 2**64) and the xor of a 64-bit hash of every record
(splitmix64 chained over its twelve 8-byte words and last 4 bytes): independent of order, and a
changed, lost or duplicated record changes it.
"""
from __future__ import annotations

import json
import os
import time

import numpy as np

import longwords as lw
from mpitiny import with_batch
from mpitiny.io.commit import atomic_output
from mpitiny.io.splits import open_splits

RECORD = 100
KEY = 10
_U64 = np.uint64


# ------------------------------------------------------------------------------------------------
# keys and checksums

def keys_of(recs: np.ndarray) -> np.ndarray:
    """The keys of (n, 100) records as an (n,) ``S10`` array (numpy compares those as memcmp)."""
    return np.ascontiguousarray(recs[:, :KEY]).view("S10").ravel()


def sort_order(recs: np.ndarray) -> np.ndarray:
    """Indices that sort ``recs`` stably by key: bytes 0-8 as big-endian u64, then bytes 8-10
    (``longwords.prefix_order``: a quicksort of the first, a stable ``lexsort`` of the rows
    that tie on it; ``np.lexsort`` of both took 3-4 times as long)."""
    first = np.ascontiguousarray(recs[:, 0:8]).view(">u8").ravel().astype(np.uint64)
    rest = np.ascontiguousarray(recs[:, 8:10]).view(">u2").ravel()
    return lw.prefix_order(first, rest, stable=True)


def _mix(z: np.ndarray) -> np.ndarray:
    z ^= z >> _U64(30)
    z *= _U64(0xBF58476D1CE4E5B9)
    z ^= z >> _U64(27)
    z *= _U64(0x94D049BB133111EB)
    z ^= z >> _U64(31)
    return z


def record_hashes(recs: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each record of an (n, 100) uint8 array."""
    words = recs[:, :96].view("<u8")                  # (n, 12)
    tail = recs[:, 96:100].view("<u4").ravel().astype(_U64)
    h = np.full(len(recs), 0x9E3779B97F4A7C15, _U64)
    for j in range(12):
        h ^= words[:, j]
        _mix(h)
    h ^= tail
    return _mix(h)


def checksum(recs: np.ndarray, block: int = 1 << 18) -> dict:
    """``{"count", "sum", "xor"}`` of the records (sum and xor as hex strings)."""
    s, x = _U64(0), _U64(0)
    for a in range(0, len(recs), block):
        h = record_hashes(recs[a:a + block])
        s += np.add.reduce(h, dtype=_U64)
        x ^= np.bitwise_xor.reduce(h) if len(h) else _U64(0)
    return {"count": int(len(recs)), "sum": f"{int(s):016x}", "xor": f"{int(x):016x}"}


def combine(parts) -> dict:
    """The checksum of a union of record sets from theirs."""
    s = x = n = 0
    for p in parts:
        n += p["count"]
        s = (s + int(p["sum"], 16)) & 0xFFFFFFFFFFFFFFFF
        x ^= int(p["xor"], 16)
    return {"count": n, "sum": f"{s:016x}", "xor": f"{x:016x}"}


def _records(input: str, split: int) -> np.ndarray:
    s = open_splits(input)
    if s.format != "records" or s.record_size != RECORD:
        raise ValueError(f"{input}: not ingested with --format records:{RECORD} "
                         f"(format {s.format}, record size {s.record_size})")
    return s.read_array(split).reshape(-1, RECORD)


def work_dir(output: str) -> str:
    run = os.environ.get("MPITINY_RUN_DIR")
    return os.path.join(run, "sort-maps") if run else os.path.join(output, "_work")


# ------------------------------------------------------------------------------------------------
# tasks

def sample(input: str, partitions: int, samples: int = 100_000, sample_splits: int = 16,
           seed: int = 0) -> np.ndarray:
    """The ``partitions - 1`` splitter keys, an (R-1, 10) uint8 array, sorted."""
    if partitions < 1:
        raise ValueError(f"partitions must be >= 1, not {partitions}")
    s = open_splits(input)
    n = len(s)
    picks = sorted({(i * n) // min(n, max(1, sample_splits)) for i in range(min(n, max(1, sample_splits)))})
    per = max(1, -(-samples // len(picks)))
    rng = np.random.default_rng(seed)
    keys = []
    for i in picks:
        recs = _records(input, i)
        if len(recs):
            take = rng.choice(len(recs), min(per, len(recs)), replace=False)
            keys.append(keys_of(recs[np.sort(take)]))
    if not keys:                                       # no records sampled: any splitters do
        return np.zeros((partitions - 1, KEY), np.uint8)
    keys = np.sort(np.concatenate(keys))
    cut = keys[(np.arange(1, partitions) * len(keys)) // partitions]
    return np.frombuffer(cut.tobytes(), np.uint8).reshape(-1, KEY).copy()


def _map_records(recs: np.ndarray, split: int, partitions: int, output: str,
                 inputs: dict) -> dict:
    """``map_split``'s work on the records of split ``split`` (and, batched, those after it)."""
    (splitters,) = inputs.values()
    splitters = np.asarray(splitters, np.uint8).reshape(-1, KEY)
    if len(splitters) != partitions - 1:
        raise ValueError(f"{len(splitters)} splitters for {partitions} partitions")
    part = np.searchsorted(keys_of(splitters), keys_of(recs), side="right") if len(splitters) \
        else np.zeros(len(recs), np.intp)
    order = np.argsort(part, kind="stable")            # keeps input order inside a partition
    counts = np.bincount(part, minlength=partitions)
    bounds = np.concatenate([[0], np.cumsum(counts)]) * RECORD
    path = os.path.join(work_dir(output), f"map-{split:06d}.bin")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"                  # renamed whole; no fsync: a map file is
    with open(tmp, "wb") as f:                          # scratch, rewritten if the run is redone
        f.write(recs[order].data)
    os.replace(tmp, path)
    return {"split": split, "file": path, "bounds": bounds.tolist(), **checksum(recs)}


def _map_args(input: str, split: int, partitions: int, output: str, inputs: dict) -> tuple:
    return input, split, partitions, output, inputs


def map_splits(calls: list) -> list:
    """``map_split`` of a chunk of consecutive splits in one call (its batch form,
    ``mpitiny.with_batch``): their records, in split order, are grouped by partition with
    one stable sort into one file, ``map-FIRST.bin``. The first split's value names it and
    counts all its records; the others' name no file and count none. Splits that are not
    consecutive and ascending run one by one: reducers read the map files in split order, so
    that records of equal keys stay in input order."""
    wanted = [_map_args(*args, **kwargs) for args, kwargs in calls]
    input, first, partitions, output, _ = wanted[0]
    splits = [w[1] for w in wanted]
    if splits != list(range(first, first + len(splits))) or \
            any(w[0] != input or w[2:4] != (partitions, output) for w in wanted):
        return [map_split(*w) for w in wanted]
    recs = np.concatenate([_records(input, s) for s in splits])
    whole = _map_records(recs, first, partitions, output, wanted[0][4])
    empty = {"file": None, "bounds": [0] * (partitions + 1), **checksum(recs[:0])}
    return [whole] + [{"split": s, **empty} for s in splits[1:]]


@with_batch(map_splits)
def map_split(input: str, split: int, partitions: int, output: str, inputs: dict) -> dict:
    """Group split ``split``'s records by partition into one file; see the module docstring."""
    return _map_records(_records(input, split), split, partitions, output, inputs)


def reduce_part(r: int, output: str, inputs: dict) -> dict:
    """Partition ``r`` of every map file, sorted by key, to ``OUTPUT/part-R.bin``."""
    maps = sorted(inputs.values(), key=lambda m: m["split"])
    total = sum(m["bounds"][r + 1] - m["bounds"][r] for m in maps)
    buf = np.empty(total, np.uint8)
    pos = 0
    for m in maps:
        a, b = m["bounds"][r], m["bounds"][r + 1]
        if b > a:
            with open(m["file"], "rb") as f:
                f.seek(a)
                got = f.readinto(memoryview(buf)[pos:pos + b - a])
            if got != b - a:
                raise IOError(f"{m['file']}: short read ({got} of {b - a} bytes at {a})")
            pos += b - a
    recs = buf.reshape(-1, RECORD)
    order = sort_order(recs)
    path = os.path.join(output, f"part-{r:05d}.bin")
    with atomic_output(path) as f:
        for a in range(0, len(order), 1 << 18):          # in blocks: one extra copy at a time
            f.write(recs[order[a:a + (1 << 18)]].data)
    return {"part": r, "records": len(recs), "file": path}


def check_part(r: int, output: str, block: int = 1 << 20) -> dict:
    """teravalidate of one part file: order inside it, count, checksum, first and last key."""
    path = os.path.join(output, f"part-{r:05d}.bin")
    size = os.path.getsize(path)
    if size % RECORD:
        raise ValueError(f"{path}: {size} bytes is not a whole number of {RECORD}-byte records")
    sums, first, last, bad = [], None, None, []
    with open(path, "rb") as f:
        for a in range(0, size // RECORD, block):
            recs = np.frombuffer(f.read(min(block, size // RECORD - a) * RECORD),
                                 np.uint8).reshape(-1, RECORD)
            k = keys_of(recs)
            if last is not None and len(k) and k[0] < last:
                bad.append(a)
            down = np.flatnonzero(k[1:] < k[:-1])
            if len(down):
                bad.append(a + int(down[0]) + 1)
            if len(k):
                first = k[0] if first is None else first
                last = k[-1]
            sums.append(checksum(recs))
    out = {"part": r, **combine(sums), "unordered_at": bad[:1],
           "first": None if first is None else first.ljust(KEY, b"\0").hex(),
           "last": None if last is None else last.ljust(KEY, b"\0").hex()}
    return out


def validate(output: str, inputs: dict, keep_work: bool = False) -> dict:
    """Global order and permutation check; writes ``OUTPUT/validate.json``."""
    maps = sorted((v for k, v in inputs.items() if k.startswith("map[")), key=lambda m: m["split"])
    parts = sorted((v for k, v in inputs.items() if k.startswith("check[")), key=lambda c: c["part"])
    errors = []
    for c in parts:
        if c["unordered_at"]:
            errors.append(f"part-{c['part']:05d}.bin: out of order at record {c['unordered_at'][0]}")
    prev = None
    for c in parts:
        if c["first"] is None:
            continue
        if prev is not None and bytes.fromhex(c["first"]) < bytes.fromhex(prev[1]):
            errors.append(f"part-{c['part']:05d}.bin starts before part-{prev[0]:05d}.bin ends")
        prev = (c["part"], c["last"])
    want, got = combine(maps), combine(parts)
    if want != got:
        errors.append(f"output is not a permutation of the input: input {want}, output {got}")
    result = {"ok": not errors, "errors": errors, "input": want, "output": got,
              "parts": len(parts), "splits": len(maps),
              "part_records": [c["count"] for c in parts], "checked": time.time()}
    with atomic_output(os.path.join(output, "validate.json"), "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    if errors:
        raise AssertionError("teravalidate failed: " + "; ".join(errors[:5]))
    if not keep_work:
        t = time.perf_counter()
        files = [m["file"] for m in maps if m["file"] is not None]
        for path in files:
            try:
                os.remove(path)
            except FileNotFoundError:
                pass
        try:
            os.rmdir(os.path.dirname(files[0])) if files else None
        except OSError:
            pass
        result["cleanup_seconds"] = round(time.perf_counter() - t, 3)
    return {k: v for k, v in result.items() if k != "part_records"}


# ------------------------------------------------------------------------------------------------
# helpers for tests and tools

def read_output(output: str) -> bytes:
    """The part files of ``output`` end to end."""
    names = sorted(n for n in os.listdir(output) if n.startswith("part-") and n.endswith(".bin"))
    return b"".join(open(os.path.join(output, n), "rb").read() for n in names)
