"""Shared helpers of the MapReduce jobs (wordcount, grep, distinct): see docs/mapreduce.md.

The pattern, in a dag.json (nothing but what the format already offers):

* ``map``: a split family over an ingested file (``"foreach": {"split": "{input}"}``); each
  instance reads its split, tokenizes, **combines** locally (counts per distinct word of the
  split) and **partitions** the result with ``partition_of(h1, R)`` into R parts, returned as
  one ``bytes`` value (``pack`` / ``unpack``: named numpy arrays per partition, no pickle).
* ``reduce``: a family ``{"r": {"range": [0, "{reducers}"]}}`` depending on the whole ``map``
  family; ``reduce[r]`` merges partition r of every map output (``merge_tables``).
* ``finish``: one task that concatenates the R disjoint tables, sorts and writes the output
  with ``atomic_output`` / ``atomic_h5``.

Tokens are identified by two independent 64-bit polynomial hashes (``h1``, ``h2``) plus their
length, computed for a whole split at once with numpy (``tokenize``); equal (h1) with unequal
(h2, length) is a detected collision, and the caller falls back to exact byte comparison
(``Counter``). Words never contain whitespace, so a table's words travel as one
``b"\\n"``-joined blob.
"""
from __future__ import annotations

import json
import struct
from collections import Counter

import numpy as np

WHITESPACE = b" \t\n\r\x0b\x0c"           # exactly what bytes.split() splits on
_WS = np.zeros(256, dtype=bool)
_WS[list(WHITESPACE)] = True

_P1 = np.uint64(0x100000001B3)             # odd multipliers: invertible modulo 2**64
_P2 = np.uint64(0x9E3779B97F4A7C15)
_POW_CACHE: dict = {}


def _inverse(p: int) -> int:
    return pow(p, -1, 1 << 64)


def _powers(p: np.uint64, n: int) -> tuple:
    """(p**j, p**-j) for j < n, modulo 2**64 (cached, grown by doubling)."""
    have = _POW_CACHE.get(int(p))
    if have is None or len(have[0]) < n:
        m = max(n, 1 << 16, 2 * (len(have[0]) if have else 0))
        fwd = np.full(m, p, dtype=np.uint64)
        fwd[0] = 1
        np.cumprod(fwd, out=fwd)
        inv = np.full(m, np.uint64(_inverse(int(p))), dtype=np.uint64)
        inv[0] = 1
        np.cumprod(inv, out=inv)
        have = (fwd, inv)
        _POW_CACHE[int(p)] = have
    return have[0][:n], have[1][:n]


def tokenize(arr: np.ndarray) -> tuple:
    """Token boundaries and hashes of a uint8 array: ``(starts, ends, h1, h2)``.

    A token is a maximal run of non-whitespace bytes (``bytes.split()``). ``h1``/``h2`` are
    polynomial hashes ``sum(b[j] * P**(j - start))`` modulo 2**64, from prefix sums, so they do
    not depend on where the token is.
    """
    n = len(arr)
    if n == 0:
        e = np.empty(0, np.int64)
        return e, e, e.astype(np.uint64), e.astype(np.uint64)
    ws = _WS[arr]
    edge = np.empty(n + 1, dtype=bool)
    edge[0] = not ws[0]
    np.not_equal(ws[1:], ws[:-1], out=edge[1:n])
    edge[n] = not ws[-1]
    bounds = np.flatnonzero(edge)                     # alternately starts and ends
    starts, ends = bounds[0::2], bounds[1::2]
    if len(starts) == 0:
        e = np.empty(0, np.int64)
        return e, e, e.astype(np.uint64), e.astype(np.uint64)
    vals = arr.astype(np.uint64)
    vals += np.uint64(1)                              # so that b"\0" counts
    hs = []
    for p in (_P1, _P2):
        fwd, inv = _powers(p, n + 1)
        c = np.empty(n + 1, dtype=np.uint64)
        c[0] = 0
        np.multiply(vals, fwd[:n], out=c[1:])
        np.cumsum(c, out=c)
        hs.append((c[ends] - c[starts]) * inv[starts])
    return starts, ends, hs[0], hs[1]


def hash_words(words: list) -> tuple:
    """``(h1, h2)`` of a list of words (no whitespace inside), as ``tokenize`` computes them."""
    if not words:
        e = np.empty(0, np.uint64)
        return e, e
    arr = np.frombuffer(b" ".join(words), dtype=np.uint8)
    _, _, h1, h2 = tokenize(arr)
    return h1, h2


def count_words_numpy(arr: np.ndarray):
    """Exact word counts of a uint8 array as ``(words list, counts, h1, h2)``, or None when
    the hashes collide (then count with ``Counter``)."""
    starts, ends, h1, h2 = tokenize(arr)
    if len(h1) == 0:
        return [], np.empty(0, np.int64), h1, h2
    uniq, first, inverse, counts = np.unique(h1, return_index=True, return_inverse=True,
                                             return_counts=True)
    # collision check: every token with the same h1 must have the same h2 and length
    if not (np.array_equal(h2, h2[first][inverse])
            and np.array_equal(ends - starts, (ends - starts)[first][inverse])):
        return None
    data = arr.tobytes() if not isinstance(arr, bytes) else arr
    s, e = starts[first].tolist(), ends[first].tolist()
    words = [data[a:b] for a, b in zip(s, e)]
    return words, counts.astype(np.int64), uniq, h2[first]


_MASK = np.array([(1 << (8 * k)) - 1 for k in range(8)], dtype=np.uint64)


def count_words_keys(arr: np.ndarray) -> tuple:
    """Exact ``(words, counts)`` with no hashing: a token of at most 7 bytes *is* its key
    (its bytes read as one little-endian uint64, masked, with the length in the top byte),
    counted with ``np.unique``; longer tokens go through ``Counter``."""
    n = len(arr)
    if n == 0:
        return [], np.empty(0, np.int64)
    ws = _WS[arr]
    edge = np.empty(n + 1, dtype=bool)
    edge[0] = not ws[0]
    np.not_equal(ws[1:], ws[:-1], out=edge[1:n])
    edge[n] = not ws[-1]
    b = np.flatnonzero(edge)
    starts, ends = b[0::2], b[1::2]
    lens = ends - starts
    pad = np.zeros(n + 8, np.uint8)
    pad[:n] = arr
    at = np.ndarray(shape=(n,), dtype="<u8", buffer=pad, strides=(1,))   # unaligned loads
    short = lens <= 7
    ls = lens[short]
    key = (at[starts[short]] & _MASK[ls]) | (ls.astype(np.uint64) << np.uint64(56))
    uniq, counts = np.unique(key, return_counts=True)
    raw = uniq.astype("<u8").view(np.uint8).tobytes()
    words = [raw[8 * i:8 * i + k] for i, k in enumerate((uniq >> np.uint64(56)).tolist())]
    data = arr.tobytes()
    c = Counter([data[a:e] for a, e in zip(starts[~short].tolist(), ends[~short].tolist())])
    words += list(c)
    return words, np.concatenate([counts.astype(np.int64),
                                  np.fromiter(c.values(), np.int64, len(c))])


_WS_TABLE = bytes(_WS.astype(np.uint8))     # bytes.translate: whitespace -> 1, else 0
_MASK9 = np.array([(1 << (8 * k)) - 1 for k in range(9)], dtype=np.uint64)
_HA = np.uint64(0x9E3779B97F4A7C15)          # bucket hash multipliers (any odd constants)
_HB = np.uint64(0xC2B2AE3D27D4EB4F)
KEY_BYTES = 15                               # tokens of at most this many bytes are keys


def count_words_hash(data: bytes) -> tuple:
    """Exact ``(words, counts, h1, h2)`` with a numpy hash table (the default kernel).

    A token of at most 15 bytes *is* its key: two uint64 (bytes 0-7; bytes 8-14 with the
    length in the top byte), read with two unaligned loads. Tokens go to buckets
    ``hash(key) >> (64 - k)`` of a table of 2**k slots: every token writes its key into its
    slot (one scatter, the last writer wins), then a token counts in the table only if the
    slot holds *its* key. All tokens of one word land in one slot, so a word is either counted
    entirely in the table (``np.bincount`` of the slots) or entirely not; the tokens that lost
    their slot to another word and the tokens over 15 bytes are counted with ``Counter`` on
    their bytes. Exact by construction; no sort. ``h1``/``h2`` (``tokenize``'s polynomial
    hashes) are computed from the keys' bytes, or by ``hash_words`` for the Counter words.
    """
    n = len(data)
    ws = np.frombuffer(data.translate(_WS_TABLE), dtype=bool)
    if n == 0:
        return [], np.empty(0, np.int64), np.empty(0, np.uint64), np.empty(0, np.uint64)
    edge = np.empty(n + 1, dtype=bool)
    edge[0] = not ws[0]
    np.not_equal(ws[1:], ws[:-1], out=edge[1:n])
    edge[n] = not ws[-1]
    bounds = np.flatnonzero(edge)
    starts, ends = np.ascontiguousarray(bounds[0::2]), bounds[1::2]
    lens = ends - starts
    pad = np.zeros(n + 16, np.uint8)
    pad[:n] = np.frombuffer(data, np.uint8)
    at = np.ndarray(shape=(n + 8,), dtype="<u8", buffer=pad, strides=(1,))   # unaligned loads
    lo = at[starts]
    hi = at[starts + 8]
    lo &= _MASK9[np.minimum(lens, 8)]
    hi &= _MASK9[np.clip(lens - 8, 0, 7)]
    hi |= lens.astype(np.uint64) << np.uint64(56)
    k = min(20, max(10, len(lens).bit_length()))
    slot = (((lo * _HA) ^ (hi * _HB)) >> np.uint64(64 - k)).astype(np.intp)
    rep_lo = np.empty(1 << k, np.uint64)
    rep_hi = np.empty(1 << k, np.uint64)
    rep_lo[slot] = lo
    rep_hi[slot] = hi
    ok = rep_lo[slot] == lo
    ok &= rep_hi[slot] == hi
    ok &= lens <= KEY_BYTES
    cnt = np.bincount(slot[ok], minlength=1 << k)
    nz = np.flatnonzero(cnt)
    klo, khi, counts = rep_lo[nz], rep_hi[nz], cnt[nz].astype(np.int64)
    d = len(nz)
    klen = (khi >> np.uint64(56)).astype(np.intp)
    mat = np.empty((d, 17), np.uint8)                  # key bytes, "\n" at the word's length
    mat[:, :8] = klo.view(np.uint8).reshape(d, 8)
    mat[:, 8:16] = khi.view(np.uint8).reshape(d, 8)
    mat[np.arange(d), klen] = 10
    words = mat[np.arange(17) <= klen[:, None]].tobytes().split(b"\n")[:-1]
    v = mat[:, :KEY_BYTES].astype(np.uint64)
    v += np.uint64(1)
    v[np.arange(KEY_BYTES) >= klen[:, None]] = 0
    h1 = (v * _powers(_P1, KEY_BYTES)[0]).sum(axis=1, dtype=np.uint64)
    h2 = (v * _powers(_P2, KEY_BYTES)[0]).sum(axis=1, dtype=np.uint64)
    rest = np.flatnonzero(~ok)
    if len(rest):
        c = Counter([data[a:b] for a, b in zip(starts[rest].tolist(), ends[rest].tolist())])
        more = list(c)
        m1, m2 = hash_words(more)
        words += more
        counts = np.concatenate([counts, np.fromiter(c.values(), np.int64, len(more))])
        h1, h2 = np.concatenate([h1, m1]), np.concatenate([h2, m2])
    return words, counts, h1, h2


def count_words(arr, kernel: str = "hash") -> tuple:
    """Exact ``(words, counts, h1, h2)`` of one split (``arr``: uint8 array or bytes).

    ``kernel="hash"`` (the default: see docs/mapreduce.md for measurements) is
    ``count_words_hash``; ``"counter"`` counts with
    ``Counter(data.split())`` and hashes only the distinct words; ``"numpy"`` tokenizes and
    hashes every token with numpy and falls back to Counter on a collision; ``"keys"`` uses
    exact uint64 keys for tokens of up to 7 bytes (``count_words_keys``).
    """
    if kernel == "hash":
        return count_words_hash(arr if isinstance(arr, bytes) else arr.tobytes())
    if kernel == "keys":
        a = np.frombuffer(arr, np.uint8) if isinstance(arr, bytes) else arr
        words, counts = count_words_keys(a)
        h1, h2 = hash_words(words)
        return words, counts, h1, h2
    if kernel == "numpy":
        got = count_words_numpy(np.frombuffer(arr, np.uint8) if isinstance(arr, bytes) else arr)
        if got is not None:
            return got
    data = arr if isinstance(arr, bytes) else arr.tobytes()
    c = Counter(data.split())
    words = list(c)
    h1, h2 = hash_words(words)
    return words, np.fromiter(c.values(), np.int64, len(words)), h1, h2


def partition_of(h1: np.ndarray, reducers: int) -> np.ndarray:
    """The hash partitioner: partition of each key, from its h1 (the same on every rank)."""
    return ((h1 >> np.uint64(17)) % np.uint64(reducers)).astype(np.int64)


# --------------------------------------------------------------------------- packing
def pack(parts: list) -> bytes:
    """One ``bytes`` from a list of partitions, each a dict name -> numpy array or bytes."""
    meta, blobs, pos = [], [], 0
    for part in parts:
        entry = {}
        for name, value in part.items():
            if isinstance(value, (bytes, bytearray)):
                raw, desc = value, ["bytes"]
            else:
                a = np.ascontiguousarray(value)
                raw, desc = memoryview(a).cast("B") if a.size else b"", [a.dtype.str, list(a.shape)]
            entry[name] = [pos, raw.nbytes if isinstance(raw, memoryview) else len(raw)] + desc
            blobs.append(raw)
            pos += entry[name][1]
        meta.append(entry)
    head = json.dumps(meta).encode()
    return b"".join([struct.pack("<Q", len(head)), head, *blobs])


def unpack(blob, which=None) -> list:
    """The partitions of ``pack``'s output (arrays are read-only views); ``which``: only
    those partition indices (others are None)."""
    mv = memoryview(blob)
    (hlen,) = struct.unpack_from("<Q", mv, 0)
    meta = json.loads(bytes(mv[8:8 + hlen]))
    base = 8 + hlen
    out = []
    for k, entry in enumerate(meta):
        if which is not None and k not in which:
            out.append(None)
            continue
        part = {}
        for name, (pos, n, *desc) in entry.items():
            raw = mv[base + pos: base + pos + n]
            if desc[0] == "bytes":
                part[name] = bytes(raw)
            else:
                part[name] = np.frombuffer(raw, dtype=np.dtype(desc[0])).reshape(desc[1])
        out.append(part)
    return out


def table(words: list, counts, h1, h2) -> dict:
    """A word table as a packable dict (words joined by newlines: they hold no whitespace)."""
    counts = np.asarray(counts, np.int64)
    if len(counts) and counts.max() < (1 << 32):        # fewer bytes to move
        counts = counts.astype(np.uint32)
    return {"words": b"\n".join(words), "counts": counts,
            "h1": np.asarray(h1, np.uint64), "h2": np.asarray(h2, np.uint64)}


def table_words(t: dict) -> list:
    return t["words"].split(b"\n") if len(t["counts"]) else []


def split_table(words: list, counts, h1, h2, reducers: int) -> list:
    """Partition one table into ``reducers`` tables by ``partition_of``."""
    h1, h2, counts = np.asarray(h1, np.uint64), np.asarray(h2, np.uint64), np.asarray(counts)
    if reducers == 1:
        return [table(words, counts, h1, h2)]
    part = partition_of(h1, reducers)
    order = np.argsort(part, kind="stable")
    cuts = np.searchsorted(part[order], np.arange(reducers + 1)).tolist()
    ws = [words[i] for i in order.tolist()]
    c, a, b = counts[order], h1[order], h2[order]
    return [table(ws[cuts[r]:cuts[r + 1]], c[cuts[r]:cuts[r + 1]], a[cuts[r]:cuts[r + 1]],
                  b[cuts[r]:cuts[r + 1]]) for r in range(reducers)]


def _group_sorted(h1, h2, lens, counts):
    """``(first, sums)`` grouping entries by h1 with one sort, or None if an h1 collides."""
    order = np.argsort(h1)
    hs = h1[order]
    new = np.empty(len(hs), bool)
    new[:1] = True
    np.not_equal(hs[1:], hs[:-1], out=new[1:])
    cuts = np.flatnonzero(new)
    first = order[cuts]
    group = np.cumsum(new) - 1                          # group of each sorted entry
    if not (np.array_equal(h2[order], h2[first][group]) and
            np.array_equal(lens[order], lens[first][group])):
        return None
    return first, np.add.reduceat(counts[order], cuts) if len(cuts) else counts[:0]


def _group_hashed(h1, h2, lens, counts):
    """``(first, sums)`` grouping entries by h1 with a hash table (``np.bincount``, no sort),
    or None if an h1 collides. Entries whose slot another h1 took are grouped by a sort."""
    n = len(h1)
    k = min(18, max(10, n.bit_length()))             # <= 2 MiB per array: stays in cache
    slot = ((h1 * _HA) >> np.uint64(64 - k)).astype(np.intp)
    rep = np.empty(1 << k, np.uint64)
    rep[slot] = h1
    ok = rep[slot] == h1                                # the slot is this entry's h1's
    idx = np.flatnonzero(ok)
    s = slot[idx]
    for other in (h2, lens):                            # same h1 => same h2 and length
        v = other[idx]
        rep[s] = v
        if not np.array_equal(rep[s], v):
            return None
    where = np.empty(1 << k, np.intp)
    where[s] = idx                                      # one entry of each slot
    sums = np.bincount(s, weights=counts[idx], minlength=1 << k)
    used = np.flatnonzero(np.bincount(s, minlength=1 << k))
    first, total = where[used], sums[used].astype(np.int64)
    rest = np.flatnonzero(~ok)
    if len(rest):
        got = _group_sorted(h1[rest], h2[rest], lens[rest], counts[rest])
        if got is None:
            return None
        first = np.concatenate([first, rest[got[0]]])
        total = np.concatenate([total, got[1]])
    return first, total


def merge_tables(tables: list) -> tuple:
    """Sum word tables: ``(words, counts, h1, h2)``; exact (falls back to bytes on a
    collision of h1).

    Entries are grouped by h1 with a hash table (``_group_hashed``: scatter, check, bincount;
    no sort); the words are split out of the tables' joined blobs only for one entry of each
    distinct h1 (the length check uses the separator positions).
    """
    tables = [t for t in tables if t is not None and len(t["counts"])]
    if not tables:
        e = np.empty(0, np.uint64)
        return [], np.empty(0, np.int64), e, e
    h1 = np.concatenate([t["h1"] for t in tables])
    h2 = np.concatenate([t["h2"] for t in tables])
    counts = np.concatenate([t["counts"] for t in tables]).astype(np.int64, copy=False)
    blob = b"\n".join(t["words"] for t in tables)
    sep = np.flatnonzero(np.frombuffer(blob, np.uint8) == 10)
    starts = np.concatenate([[0], sep + 1])
    ends = np.concatenate([sep, [len(blob)]])
    if len(starts) != len(h1):
        raise ValueError(f"word tables hold {len(starts)} words for {len(h1)} counts")
    lens = (ends - starts).astype(np.uint64)
    got = _group_hashed(h1, h2, lens, counts) if len(tables) > 1 else \
        (np.arange(len(h1)), counts)                    # one table: its words are distinct
    if got is not None:
        first, sums = got
        words = [blob[a:b] for a, b in zip(starts[first].tolist(), ends[first].tolist())]
        return words, sums, h1[first], h2[first]
    c: Counter = Counter()
    for t in tables:
        c.update(dict(zip(table_words(t), t["counts"].tolist())))
    words = list(c)
    a, b = hash_words(words)
    return words, np.fromiter(c.values(), np.int64, len(words)), a, b


def logical_starts(splits) -> np.ndarray:
    """Offset of each split's first byte in the logical content (the inputs end to end)."""
    lengths = np.asarray(splits.lengths, np.int64)
    return np.concatenate([[0], np.cumsum(lengths)[:-1]]) if len(lengths) else lengths


# --------------------------------------------------------------------------- aggregation tree
def tree_tasks(leaf: str, n: int, fanin: int, fn: str, prefix: str = "tree") -> tuple:
    """Plain tasks of an aggregation tree over ``leaf[0] .. leaf[n-1]``: ``(tasks, root id)``.

    Level 1 node ``tree1.k`` depends on ``leaf[k*fanin] .. leaf[k*fanin + fanin - 1]`` (literal
    element-wise deps), level L+1 on ``fanin`` nodes of level L, up to one root. Each node
    calls ``fn`` with ``inputs`` = its children's outputs.
    """
    if fanin < 2:
        raise ValueError("fanin must be at least 2")
    level, ids, tasks = 1, [f"{leaf}[{i}]" for i in range(n)], []
    while len(ids) > 1 or level == 1:
        nxt = []
        for k in range(0, len(ids), fanin):
            tid = f"{prefix}{level}.{k // fanin}"
            tasks.append({"id": tid, "fn": fn, "deps": ids[k:k + fanin]})
            nxt.append(tid)
        ids, level = nxt, level + 1
    return tasks, ids[0]


def tree_dag(dag: dict, n: int, fanin: int, fn: str, leaf: str = "map", finish: str = "finish",
             drop: tuple = (), params: dict | None = None) -> dict:
    """``dag`` with ``finish`` fed by an aggregation tree over the ``n`` instances of ``leaf``
    instead of by the tasks in ``drop`` (or by ``leaf`` as a whole)."""
    out = dict(dag, params=dict(dag.get("params", {}), **(params or {})))
    tasks = [t for t in dag["tasks"] if t["id"] not in drop]
    nodes, root = tree_tasks(leaf, n, fanin, fn)
    for t in tasks:
        if t["id"] == finish:
            t["deps"] = [root]
    out["tasks"] = tasks + nodes
    out["description"] = (dag.get("description", "") +
                          f" [aggregation tree: fan-in {fanin} over {n} splits]").strip()
    return out


def _main(argv=None) -> int:
    """python jobs/mapreduce.py tree JOB.json --input DATA.h5 --fn MOD:FN -o OUT.json ..."""
    import argparse
    from mpitiny.io.h5data import open_splits
    ap = argparse.ArgumentParser(prog="mapreduce.py tree", description=(
        "Write a dag.json whose finish task is fed by an aggregation tree of plain tasks "
        "over the map family (for one given ingested file)."))
    ap.add_argument("cmd", choices=["tree"])
    ap.add_argument("dag")
    ap.add_argument("--input", required=True, help="the ingested file (its split count)")
    ap.add_argument("--fn", required=True, help="the tree node function, e.g. grep:merge")
    ap.add_argument("--fanin", type=int, default=8)
    ap.add_argument("--leaf", default="map")
    ap.add_argument("--finish", default="finish")
    ap.add_argument("--drop", action="append", default=[], help="task ids to remove")
    ap.add_argument("--param", "-p", action="append", default=[], help="NAME=JSON default")
    ap.add_argument("-o", "--output", required=True)
    a = ap.parse_args(argv)
    with open(a.dag) as f:
        dag = json.load(f)
    params = {"input": a.input}
    for p in a.param:
        k, _, v = p.partition("=")
        try:
            params[k] = json.loads(v)
        except ValueError:
            params[k] = v
    new = tree_dag(dag, len(open_splits(a.input)), a.fanin, a.fn, a.leaf, a.finish,
                   tuple(a.drop), params)
    from mpitiny.io.commit import write_atomic
    write_atomic(a.output, json.dumps(new, indent=1).encode() + b"\n")
    print(f"{a.output}: {len(new['tasks'])} tasks (tree fan-in {a.fanin})")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
