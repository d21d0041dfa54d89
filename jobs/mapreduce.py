"""Shared helpers of the MapReduce jobs (wordcount, grep, distinct): see docs/mapreduce.md.

The pattern, in a dag.json (nothing but what the format already offers):

* ``map``: a split family over an ingested file (``"foreach": {"split": "{input}"}``); each
  instance reads its split, tokenizes, **combines** locally (counts per distinct word of the
  split) and **partitions** the result with ``partition_of`` into R tables, returned as
  ``mpitiny.Parts`` of R ``pack_table`` blobs (grep's outputs use the generic ``pack`` /
  ``unpack``: named numpy arrays, no pickle).
* ``reduce``: a family ``{"r": {"range": [0, "{reducers}"]}}`` with ``"part": "{r}"``,
  depending on the whole ``map`` family; ``reduce[r]`` reads and merges table r of every map
  output (``KeyCounter``) and writes its words ranked (``ranked_tsv``); wordcount's C kernel
  does both in one call from the packed tables (``reduce_run``: ``wordcount._compiled_run``).
* ``finish``: one task that concatenates the R disjoint tables, ranks them (``ranked_rows``)
  and writes the output with ``atomic_output`` / ``atomic_h5``.

Wordcount's words are their own keys (``count_parts``): a word of at most 15 bytes is two
uint64 holding its bytes and length (``lo``, ``hi``), and a word of at most 8 bytes whose
last byte is not zero is its ``lo`` alone (its length is where its last nonzero byte is), so
a table (``_table``) is flat arrays: ``short``, ``lo``, ``hi`` and their counts. Equal keys
are equal words, so counting and merging compare no bytes. Keys are counted and summed by
**sorting**, not by hash tables (numpy's sort of uint64 is vectorised, ~5 ns a key): the short
words' ``lo`` by ``np.sort``, the two-word keys by a sort of a hash of the key with the row
number packed into its low bits, checked against the keys (``sum_keys``, ``_key_runs``).
Longer words ("long words": a third to a half of the distinct words of real text) stay numpy
arrays of 8-byte chunks, grouped by a hash and checked chunk for chunk (``longwords``:
``LongWords`` in a table as ``long``, ``long_lens``, ``long_counts``, ``long_hashes``).
``tokenize`` / ``hash_words`` (two 64-bit polynomial hashes per token) serve the ``numpy``
kernel.

The map's counting (``count_parts``) is compiled C where it was built
(``mpitiny/kernels/_wordcount.c``, ``COMPILED``; ``compiled_parts``): one pass over the split
tokenises it and counts its words in a hash table, and the table's arrays are made from the
distinct words only, already grouped by partition and with the long words' hashes
(``count_tables``: the map's tables are slices; ``split_parts``' sorts and ``hash_chunks``
took a fifth of a map task on the code corpus). Without it (no compiler,
``MPITINY_KERNELS=0``) the numpy form below gives the same words and counts
(``tests/test_wordcount_kernel.py``).
"""
from __future__ import annotations

import json
import re
import struct
import sys
from collections import Counter

import numpy as np

import longwords as lw
from longwords import copy_segments, gather  # noqa: F401  (the jobs' names for them)
from mpitiny import kernels

# the C map kernel (it writes little-endian arrays), or None: numpy's form, the same tables
COMPILED = kernels.load("_wordcount") if sys.byteorder == "little" else None

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
    """Exact word counts of a uint8 array as ``(words list, counts)``, or None when the
    hashes collide (then count with ``Counter``)."""
    starts, ends, h1, h2 = tokenize(arr)
    if len(h1) == 0:
        return [], np.empty(0, np.int64)
    uniq, first, inverse, counts = np.unique(h1, return_index=True, return_inverse=True,
                                             return_counts=True)
    # collision check: every token with the same h1 must have the same h2 and length
    if not (np.array_equal(h2, h2[first][inverse])
            and np.array_equal(ends - starts, (ends - starts)[first][inverse])):
        return None
    data = arr.tobytes() if not isinstance(arr, bytes) else arr
    s, e = starts[first].tolist(), ends[first].tolist()
    words = [data[a:b] for a, b in zip(s, e)]
    return words, counts.astype(np.int64)


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


_NINE = np.uint8(9)                          # whitespace is 32 or 9-13
_THIRTY_TWO = np.uint64(32)
_ONE = np.uint64(1)
_BYTE_BOUNDS = np.array([1 << (8 * j) for j in range(1, 8)], np.uint64)   # 256 ** j
_HA = np.uint64(0x9E3779B97F4A7C15)          # slot hash multipliers (any odd constants)
_HB = np.uint64(0xC2B2AE3D27D4EB4F)
_HC = np.uint64(0xD6E8FEB86659FD93)          # partition hash multiplier (independent of the slots)
KEY_BYTES = 15                               # words of at most this many bytes are their own keys
_LEN_SHIFT = np.uint64(56)


# --------------------------------------------------------------------------- exact keys
# A word of at most 15 bytes *is* its key: two uint64, ``lo`` = bytes 0-7 and ``hi`` = bytes
# 8-14 with the length in the top byte (zero-padded, little-endian). Equal keys <=> equal words,
# so counting, merging and partitioning never compare bytes; a word becomes ``bytes`` again
# only in ``keys_to_words`` / ``ranked_order`` (the output). Longer words stay numpy arrays
# of 8-byte chunks (``longwords``).

def group_keys(lo: np.ndarray, hi: np.ndarray, weights=None) -> tuple:
    """Sum ``weights`` (default 1 each) per distinct key: ``(lo, hi, sums)``, exact
    (``sum_keys``)."""
    (klo, khi), sums = sum_keys([lo, hi], weights)
    return klo, khi, sums


SORT_BELOW = 2048      # fewer keys than this are ordered by the keys themselves (no hash)


def sum_keys(cols: list, weights=None) -> tuple:
    """Sum ``weights`` (default 1 each) per distinct key made of the uint64 arrays ``cols``
    (one or two): ``(distinct cols, int64 sums)``, exact, by sorting (``_key_runs``)."""
    n = len(cols[0])
    if n == 0:
        return [np.asarray(c, np.uint64)[:0] for c in cols], np.empty(0, np.int64)
    order, ordered, new = _key_runs(cols)
    cuts = new.nonzero()[0]
    if weights is None:
        sums = np.diff(cuts, append=n)
    else:
        sums = np.add.reduceat(weights.take(order).astype(np.int64, copy=False), cuts)
    return [col.take(cuts) for col in ordered], sums


def _key_runs(cols: list) -> tuple:
    """``(order, the cols in that order, where each run of equal keys begins)``: the rows
    ordered by a 64-bit hash of their key (``longwords.hash_runs``: a ``np.sort`` with the row
    numbers packed in), kept if its runs are exactly the runs of equal keys; otherwise
    (a collision in the hash's top bits, fewer than ``SORT_BELOW`` or more than
    ``longwords.PACKED_ROWS`` rows) ordered by the keys (``argsort``, ``prefix_order``)."""
    n = len(cols[0])
    if SORT_BELOW <= n <= lw.PACKED_ROWS:
        h = cols[0] * _HA
        if len(cols) > 1:
            h ^= cols[1] * _HB
        h ^= h >> _THIRTY_TWO
        order, new = lw.hash_runs(h)
        ordered = [col.take(order) for col in cols]
        if np.array_equal(_changes(ordered), new[1:]):
            return order, ordered, new
    order = np.argsort(cols[0]) if len(cols) == 1 else lw.prefix_order(cols[0], cols[1])
    ordered = [col.take(order) for col in cols]
    return order, ordered, np.concatenate([[True], _changes(ordered)])


def _changes(ordered: list) -> np.ndarray:
    """Whether each row's key differs from the one before it (n - 1 bools)."""
    change = ordered[0][1:] != ordered[0][:-1]
    for col in ordered[1:]:
        change |= col[1:] != col[:-1]
    return change


BLOCK_BYTES = 256 << 10        # count_parts tokenizes block by block: its arrays stay in cache
_WS_RE = re.compile(b"[" + re.escape(WHITESPACE) + b"]")


def count_keys(data, block: int = BLOCK_BYTES) -> tuple:
    """Exact counts of the words of ``data`` (``bytes``, or a uint8 array: a split as read,
    not copied): ``(lo, hi, counts, long)``, ``long`` a ``Counter`` of the words over 15 bytes
    (the map kernel of ``kernel="hash"``; ``count_parts`` without joining its parts)."""
    short, short_counts, lo, hi, counts, long = count_parts(data, block)
    return (*join_parts(short, short_counts, lo, hi, counts), long.to_dict())


def join_parts(short, short_counts, lo, hi, counts) -> tuple:
    """``(lo, hi, counts)`` of the short words (their ``hi`` made again) then the others."""
    return (np.concatenate([short, lo]), np.concatenate([_short_hi(short), hi]),
            np.concatenate([short_counts, counts]).astype(np.int64))


def count_parts(data, block: int = BLOCK_BYTES, compiled=True) -> tuple:
    """``count_keys`` in the parts of a table (``_table``): ``(short, short_counts, lo, hi,
    counts, long)``, the short words (at most 8 bytes, the last not zero) by their ``lo`` alone,
    ``long`` a ``longwords.LongWords``.

    With the C kernel (``COMPILED``: ``mpitiny/kernels/_wordcount.c``, ``compiled_parts``;
    ``compiled`` another such module) the data is tokenised and counted in one pass and the
    parts are its distinct words; the numpy form below (``compiled=None``, no kernel built,
    or ``MPITINY_KERNELS=0``) gives the same words and counts (in another order within each
    array).

    Data over two blocks is tokenized a block at a time (cut at whitespace, so no word is
    cut): the token arrays of a block stay in the cache (``_block_keys``). The keys are then
    counted once for the whole of ``data``, by sorting (numpy's sort of uint64 is vectorised:
    an 8 MiB split's 0.6-1 M short words in 6 ms, where hash tables per block and their sum
    took 12-16 ms): the short words' ``lo`` by ``np.sort`` (``_count_short``), the two-word
    keys and the long words by a sort of their hashes with the row numbers packed in
    (``longwords.hash_runs``), checked against the keys."""
    if compiled is True:
        compiled = COMPILED
    if compiled is not None and len(data) < KERNEL_BYTES:
        return compiled_parts(data, compiled)
    n = len(data)
    cuts, a = [], 0
    while not cuts or a < n:                   # one block at least (empty data: one empty)
        cut = _WS_RE.search(data, a + block) if n - a > 2 * block else None
        cuts.append((a, cut.start() if cut else n))
        a = cuts[-1][1]
    global _padded
    _padded, _ = lw.padded(np.frombuffer(data, np.uint8), _padded)
    blocks = [_block_keys(_padded, a, b) for a, b in cuts]
    long = _count_long(blocks)
    short, short_counts = _count_short(
        np.concatenate([t[0] for t in blocks]) if len(blocks) > 1 else blocks[0][0])
    lo, hi, counts = group_keys(np.concatenate([t[1] for t in blocks]),
                                np.concatenate([t[2] for t in blocks]))
    if any(t[4] for t in blocks):      # a block with a zero byte: its short words are in both
        return key_parts(*group_keys(*join_parts(short, short_counts, lo, hi, counts)), long)
    return short, short_counts, lo, hi, counts, long


_padded = np.empty(0, np.uint8)     # count_parts' copy of the data (lw.padded), reused
KERNEL_BYTES = 1 << 32              # the C kernel's counts are 32-bit: larger data goes to numpy


def compiled_parts(data, compiled) -> tuple:
    """``count_parts`` by the C kernel: one pass over ``data`` (``bytes`` or a uint8 array,
    not copied) counts its words in a hash table; the parts come out as arrays of the
    distinct words (first occurrence first), the long words as their chunks (hashed here,
    ``longwords.hash_chunks``), so no numpy work here is proportional to the tokens."""
    return _compiled_arrays(data, compiled, 1)[0]


def _compiled_arrays(data, compiled, reducers: int) -> tuple:
    """``(parts, bounds)``: the C kernel's parts (``compiled_parts``), grouped by partition,
    and ``bounds``, a 4 x (reducers + 1) array of where each partition begins in the short
    words, the two-word keys, the long words and the long words' chunks."""
    if not isinstance(data, (bytes, bytearray)):
        data = np.ascontiguousarray(data)
    (short, short_counts, lo, hi, counts, chunks, lens, long_counts, hashes, bounds,
     _) = compiled.count(data, reducers)
    long = lw.LongWords(_u64(chunks), _i64(lens), _i64(long_counts), _u64(hashes))
    return ((_u64(short), _i64(short_counts), _u64(lo), _u64(hi), _i64(counts), long),
            _i64(bounds).reshape(4, reducers + 1))


def count_tables(data, kernel: str, reducers: int) -> list:
    """``split_parts(count_split(data, kernel), reducers)``: with the C kernel (``kernel``
    "hash"), the kernel partitions its words itself (the same tables: it emits each
    partition's words in the order of their first occurrence, as ``split_parts``' stable sort
    leaves them) and the tables are slices of its arrays."""
    if kernel != "hash" or COMPILED is None or reducers == 1 or len(data) >= KERNEL_BYTES:
        return split_parts(count_split(data, kernel), reducers)
    (short, short_counts, lo, hi, counts, long), at = _compiled_arrays(data, COMPILED, reducers)
    tables = []
    for r in range(reducers):
        sa, sb, sc, sd = (slice(*at[k, r:r + 2]) for k in range(4))
        tables.append(_table(short[sa], short_counts[sa], lo[sb], hi[sb], counts[sb],
                             lw.LongWords(long.chunks[sd], long.lens[sc], long.counts[sc],
                                          long.hashes[sc])))
    return tables


def _u64(raw: bytes) -> np.ndarray:
    return np.frombuffer(raw, "<u8")


def _i64(raw: bytes) -> np.ndarray:
    return np.frombuffer(raw, "<i8")


def _count_short(keys: np.ndarray) -> tuple:
    """``(distinct keys, counts)`` of one-word keys, 0 left out (``_block_keys`` puts 0 for
    the tokens that are not short words), by sorting ``keys`` in place."""
    keys.sort()
    n = len(keys)
    if n == 0:
        return keys, np.empty(0, np.int64)
    new = np.empty(n, bool)
    new[0] = keys[0] != 0
    np.not_equal(keys[1:], keys[:-1], out=new[1:])
    cuts = new.nonzero()[0]
    return keys.take(cuts), np.diff(cuts, append=n)


def _count_long(blocks: list) -> lw.LongWords:
    """The words over 15 bytes of all the blocks (``_block_keys``' lengths, chunks and hashes
    of each), counted together (``longwords.count``)."""
    found = [t[3] for t in blocks if len(t[3][0])]
    if not found:
        return lw.NONE
    lens, values, hashes = (np.concatenate([f[k] for f in found]) for k in range(3))
    return lw.count(values, hashes, lens)


def key_parts(lo, hi, counts, long) -> tuple:
    """``count_parts``'s parts of keys ``lo``, ``hi`` with their ``counts`` and the long words
    (a ``{word: count}`` or ``LongWords``)."""
    if not isinstance(long, lw.LongWords):
        long = lw.from_dict(long or {})
    lo, hi = np.asarray(lo, np.uint64), np.asarray(hi, np.uint64)
    counts = np.asarray(counts, np.int64)
    short = hi == _short_hi(lo)
    return lo[short], counts[short], lo[~short], hi[~short], counts[~short], long


def _block_keys(buffer: np.ndarray, a: int, b: int) -> tuple:
    """The tokens of bytes ``a:b`` of ``buffer`` (``longwords.padded``: bytes after ``b`` are
    read, never kept), uncounted: ``(short, lo, hi, long, mixed)``.

    Token boundaries come from a whitespace mask (byte 32, or 9-13 as one unsigned
    ``- 9 < 5``: 5x faster than ``bytes.translate``) and one ``!=`` of neighbours. A token's
    first 8 bytes (``lo``) are one unaligned 8-byte load at its start (``longwords.padded``)
    masked to its length (a ``take`` from a table of masks, ``mode="clip"``: 0 for the words
    over 8 bytes, whose ``lo`` is kept before).

    In a block with no zero byte, a word of at most 8 bytes *is* its ``lo`` (its length is
    where its last nonzero byte is): ``short`` is every token's ``lo``, 0 for the tokens over
    8 bytes (no word's ``lo`` is 0; ``_count_short`` leaves 0 out). The tokens of 9-15 bytes
    are the two-word keys ``lo``, ``hi`` (``hi`` = bytes 8-14 and the length in the top
    byte); those over 15 bytes are their lengths, chunks and hashes (``longwords``). A block
    with a zero byte returns every token as a two-word key (``mixed``)."""
    n = b - a
    e = np.empty(0, np.uint64)
    if n == 0:
        return e, e, e, _NO_LONG, False
    raw = buffer[a:b]
    ws = raw == 32
    ws |= (raw - _NINE) < 5
    edge = np.empty(n + 1, dtype=bool)
    edge[0] = not ws[0]
    np.not_equal(ws[1:], ws[:-1], out=edge[1:n])
    edge[n] = not ws[-1]
    bounds = edge.nonzero()[0].reshape(-1, 2)
    starts = bounds[:, 0].copy()               # contiguous: used three times
    lens = bounds[:, 1] - starts
    at8 = lw.unaligned8(buffer, a, n + 17)
    lo = at8[starts]
    if raw.min() == 0:
        lo &= _KEEP.take(lens, mode="clip")
        return (e, *_two_word_keys(at8, starts, lens, lo), True)
    over = (lens > 8).nonzero()[0]
    two = _two_word_keys(at8, starts.take(over), lens.take(over), lo.take(over))
    lo &= _KEEP_SHORT.take(lens, mode="clip")
    return lo, *two, False


_KEEP = np.array([(1 << (8 * k)) - 1 for k in range(9)], np.uint64)     # the first k bytes
_KEEP_SHORT = np.append(_KEEP, np.uint64(0))      # ... and none for the words over 8 bytes
_LEN_TOP = np.arange(KEY_BYTES + 1, dtype=np.uint64) << _LEN_SHIFT


_NO_LONG = (np.empty(0, np.int64), np.empty(0, np.uint64), np.empty(0, np.uint64))


def _two_word_keys(at8, starts, lens, lo) -> tuple:
    """``_block_keys``'s two-word keys ``(lo, hi)`` of the given tokens (``lo``: their first
    8 bytes), and the lengths, chunks and hashes of those over 15 bytes (left out of the keys:
    ``longwords``)."""
    long = _NO_LONG
    is_long = lens > KEY_BYTES
    if is_long.any():
        idx = is_long.nonzero()[0]
        keep = (~is_long).nonzero()[0]
        long_lens = lens.take(idx)
        values = lw.chunk_values(at8, starts.take(idx), long_lens)
        long = (long_lens, values, lw.hash_chunks(values, long_lens))
        starts, lens, lo = starts.take(keep), lens.take(keep), lo.take(keep)
    hi = at8[starts + 8]
    hi &= _KEEP.take(lens - 8, mode="clip")                    # bytes 8-14: keep len - 8
    hi |= _LEN_TOP.take(lens)
    return lo, hi, long


def _short_hi(lo: np.ndarray) -> np.ndarray:
    """``hi`` of words of at most 8 bytes with no zero byte: their length (the place of the
    last nonzero byte of ``lo``) in the top byte."""
    length = np.searchsorted(_BYTE_BOUNDS, lo, side="right").view(np.uint64)
    return (length + _ONE) << _LEN_SHIFT


def words_to_keys(words: list, counts) -> tuple:
    """``count_keys``'s ``(lo, hi, counts, long)`` for distinct ``words`` and their counts."""
    counts = np.asarray(counts, np.int64)
    is_long = np.fromiter((len(w) > KEY_BYTES for w in words), bool, len(words))
    short = [w for w, x in zip(words, is_long) if not x]
    mat = np.zeros((len(short), 16), np.uint8)
    if short:
        mat[:, :15] = np.frombuffer(b"".join(w.ljust(15, b"\0") for w in short),
                                    np.uint8).reshape(-1, 15)
        mat[:, 15] = [len(w) for w in short]
    keys = mat.view("<u8")
    long = Counter(dict((w, int(c)) for w, c, x in zip(words, counts.tolist(), is_long) if x))
    return (np.ascontiguousarray(keys[:, 0]), np.ascontiguousarray(keys[:, 1]),
            counts[~is_long], long)


def keys_to_words(lo: np.ndarray, hi: np.ndarray) -> list:
    """The words of keys, as ``bytes`` (a matrix of key bytes with ``\\n`` after each word,
    masked and split in one go)."""
    d = len(lo)
    if d == 0:
        return []
    klen = (hi >> _LEN_SHIFT).astype(np.intp)
    mat = np.empty((d, 17), np.uint8)
    mat[:, :8] = np.asarray(lo, "<u8").view(np.uint8).reshape(d, 8)
    mat[:, 8:16] = np.asarray(hi, "<u8").view(np.uint8).reshape(d, 8)
    mat[np.arange(d), klen] = 10
    return mat[np.arange(17) <= klen[:, None]].tobytes().split(b"\n")[:-1]


def count_words_hash(data) -> tuple:
    """Exact ``(words, counts)`` with the numpy hash table (``count_keys``)."""
    lo, hi, counts, long = count_keys(data)
    return (keys_to_words(lo, hi) + list(long),
            np.concatenate([counts, np.fromiter(long.values(), np.int64, len(long))]))


def count_words(arr, kernel: str = "hash") -> tuple:
    """Exact ``(words, counts)`` of one split (``arr``: uint8 array or bytes).

    ``kernel="hash"`` (the default: see docs/mapreduce.md for measurements) is
    ``count_words_hash``; ``"counter"`` is ``Counter(data.split())``; ``"numpy"`` tokenizes
    and hashes every token with numpy and falls back to Counter on a collision; ``"keys"``
    uses exact uint64 keys for tokens of up to 7 bytes (``count_words_keys``).
    """
    if kernel == "hash":
        return count_words_hash(arr)
    if kernel == "keys":
        return count_words_keys(np.frombuffer(arr, np.uint8) if isinstance(arr, bytes) else arr)
    if kernel == "numpy":
        got = count_words_numpy(np.frombuffer(arr, np.uint8) if isinstance(arr, bytes) else arr)
        if got is not None:
            return got
    c = Counter(arr.split() if isinstance(arr, bytes) else arr.tobytes().split())
    return list(c), np.fromiter(c.values(), np.int64, len(c))


def count_split(data, kernel: str = "hash") -> tuple:
    """``count_parts`` of one split with any kernel (``hash`` makes keys directly)."""
    if kernel == "hash":
        return count_parts(data)
    return key_parts(*words_to_keys(*count_words(data, kernel)))


def partition_of(lo: np.ndarray, reducers: int) -> np.ndarray:
    """The hash partitioner: partition of each key by its first 8 bytes ``lo`` (the same on
    every rank, and for a short word's ``lo`` alone as for its two-word key): the top 32 bits
    of ``lo * C`` scaled to ``reducers`` by a multiply and a shift (no uint64 modulo: 5x
    slower)."""
    return ((((lo * _HC) >> _THIRTY_TWO) * np.uint64(reducers)) >> _THIRTY_TWO).view(np.intp)


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


def key_table(lo, hi, counts, long=None) -> dict:
    """A word table as a packable dict (``_table``) of the keys ``lo``, ``hi`` and their
    ``counts``, and the long words with their counts."""
    return _table(*key_parts(lo, hi, counts, long))


def _table(short, short_counts, lo, hi, counts, long) -> dict:
    """The table dict: ``short`` = the ``lo`` of the words of at most 8 bytes whose last byte
    is not zero (their ``hi`` is ``_short_hi(lo)``: not stored, half the bytes), then the other
    keys ``lo``, ``hi``; counts as ``uint16`` or ``uint32`` when they fit (fewer bytes to
    move); the long words (``LongWords``, or a ``{word: count}``) end to end with their
    lengths, counts and hashes (a reducer then hashes no chunk again)."""
    top = max(short_counts.max(initial=0), counts.max(initial=0))
    width = np.uint16 if top < (1 << 16) else np.uint32 if top < (1 << 32) else np.int64
    if not isinstance(long, lw.LongWords):
        long = lw.from_dict(long or {})
    long = long.with_hashes()
    return {"short": short, "short_counts": short_counts.astype(width), "lo": lo, "hi": hi,
            "counts": counts.astype(width), "long": long.chunks, "long_lens": long.lens,
            "long_counts": long.counts, "long_hashes": long.hashes}


_TABLE_HEAD = struct.Struct("<7q")  # short, other, long words; long chunks, nbytes, nparts, width
_COUNT_TYPES = {2: "<u2", 4: "<u4", 8: "<i8"}


def pack_table(t: dict, nbytes: int = 0, nparts: int = 1) -> bytes:
    """One word table as ``bytes``: a fixed 56-byte header (numbers of short, other and long
    words, the long words' chunks, the input bytes it counts, how many partitions the maps
    made, the count width), then ``short``, ``lo``, ``hi``, ``short_counts``, ``counts``,
    ``long_counts``, ``long_lens``, ``long_hashes`` and the long words' chunks. A reducer
    unpacks thousands of these, so no JSON (``pack``) here: ~4 µs instead of ~18."""
    return b"".join(table_pieces(t, nbytes, nparts))


def part_bytes(part) -> bytes:
    """A part of a map output as bytes: ``table_pieces``' buffers joined (a map function
    called directly, not through the runtime), or the bytes given."""
    return b"".join(part) if isinstance(part, tuple) else part


def table_pieces(t: dict, nbytes: int = 0, nparts: int = 1) -> tuple:
    """``pack_table``'s bytes as the buffers that make them, end to end, not joined: a map's
    part of ``mpitiny.Parts`` (the runtime copies them straight to where the value goes)."""
    counts, short_counts = t["counts"], t["short_counts"]
    head = _TABLE_HEAD.pack(len(short_counts), len(counts), len(t["long_counts"]), len(t["long"]),
                            nbytes, nparts, counts.dtype.itemsize)
    return (head, *(memoryview(np.ascontiguousarray(a)).cast("B") for a in (
        t["short"], t["lo"], t["hi"], short_counts, counts.astype(short_counts.dtype, copy=False),
        t["long_counts"].astype("<i8", copy=False), t["long_lens"].astype("<i8", copy=False),
        t["long_hashes"], t["long"])))


def unpack_table(blob) -> dict:
    """``pack_table``'s table (arrays are read-only views of ``blob``), with ``nbytes`` and
    ``nparts`` as ints."""
    ns, n, nlong, long_chunks, nbytes, nparts, width = _TABLE_HEAD.unpack_from(blob, 0)
    at = _TABLE_HEAD.size
    count_type = _COUNT_TYPES[width]
    t = {"nbytes": nbytes, "nparts": nparts}
    for name, dtype, size in (("short", "<u8", ns), ("lo", "<u8", n), ("hi", "<u8", n),
                              ("short_counts", count_type, ns), ("counts", count_type, n),
                              ("long_counts", "<i8", nlong), ("long_lens", "<i8", nlong),
                              ("long_hashes", "<u8", nlong), ("long", "<u8", long_chunks)):
        t[name] = np.frombuffer(blob, dtype, size, at)
        at += t[name].itemsize * size
    return t


def table_keys(t: dict) -> tuple:
    """``(lo, hi, counts)`` of all the (not long) words of a table, the short ones first."""
    return join_parts(t["short"], t["short_counts"], t["lo"], t["hi"], t["counts"])


def table_longwords(t: dict) -> lw.LongWords:
    """The long words of a table with their counts and hashes (views of its arrays)."""
    return lw.LongWords(t["long"], t["long_lens"], t["long_counts"], t.get("long_hashes"))


def table_long(t: dict) -> dict:
    """The long words of a table with their counts, as ``{word: count}``."""
    return dict(table_longwords(t).to_dict()) if len(t["long_counts"]) else {}


def table_rows(t: dict) -> tuple:
    """``(words, counts)`` of a table (the long words last)."""
    long = table_long(t)
    lo, hi, counts = table_keys(t)
    return (keys_to_words(lo, hi) + list(long),
            np.concatenate([counts, np.fromiter(long.values(), np.int64, len(long))]))


def ranked_rows(tables: list) -> tuple:
    """``(words, counts)`` of disjoint word tables, by count descending, then word bytes.

    One ``np.lexsort``: a short word's bytes in order are its byte-swapped ``lo`` then ``hi``
    (zero padded, the length last, so a word sorts before the words it is a prefix of); a long
    word's key is its first 15 bytes, and its rank among the long words is the last sort key
    (0 for the short words, which sort before the long words they are a prefix of). 45,000
    words: 6 ms, against 54 ms for ``sorted`` over ``(word, count)`` pairs."""
    keys = [table_keys(t) for t in tables]
    lo = np.concatenate([k[0] for k in keys] or [np.empty(0, np.uint64)])
    hi = np.concatenate([k[1] for k in keys] or [np.empty(0, np.uint64)])
    counts = np.concatenate([k[2] for k in keys] + [t["long_counts"].astype(np.int64) for t in tables])
    long: dict = {}
    for t in tables:
        long.update(table_long(t))
    words = keys_to_words(lo, hi) + list(long)
    tie = np.zeros(len(words), np.int64)
    if long:
        rank = {w: i + 1 for i, w in enumerate(sorted(long))}
        llo, lhi, _, _ = words_to_keys([w[:KEY_BYTES] for w in long], np.zeros(len(long)))
        lo = np.concatenate([lo, llo])
        hi = np.concatenate([hi, lhi])
        tie[len(words) - len(long):] = [rank[w] for w in long]
    order = np.lexsort((tie, hi.byteswap(), lo.byteswap(), -counts))
    return [words[i] for i in order.tolist()], counts[order]


def ranked_arrays(t: dict) -> tuple:
    """``ranked_rows`` of one table without a Python object per word: ``(words, word_lens,
    counts, lo, hi)`` in rank order, ``words`` the word bytes end to end (uint8), ``lo``/``hi``
    the byte-swapped keys of the first 15 bytes (the sort keys after the count; equal for a
    15-byte word and the long words it begins, which only their bytes order:
    ``longwords.order_rows``)."""
    blob, starts, lens, counts, lo, hi = ranked_order(t)
    return gather(blob, starts, lens), lens, counts, lo, hi


def ranked_order(t: dict) -> tuple:
    """``ranked_arrays`` with the words left where they are: ``(blob, starts, lens, counts,
    lo, hi)``, word i of the ranking being ``blob[starts[i]:][:lens[i]]``. The words' bytes
    come from their 8-byte chunks (``_ranking``, ``longwords.chunk_bytes``)."""
    pool, first, nch, lens, counts, lo, hi, order = _ranking(t)
    blob = lw.chunk_bytes(pool, first, nch, lens)
    starts = np.cumsum(lens) - lens
    return (blob, starts.take(order), lens.take(order), counts.take(order), lo.take(order),
            hi.take(order))


def ranked_tsv(t: dict) -> tuple:
    """``tsv_lines`` of ``ranked_order``, made from the words' chunks with no copy of the
    words in between: ``(lines, line_lens, word_lens, counts, lo, hi)`` in rank order. Each
    line is two pieces of chunks (``longwords.chunk_bytes``, one gather per 8 bytes): its
    word's, and those of its ``\t count \n`` (``_count_tails``, a row of 3 chunks). Word by
    word, then line by line, took 2-3x the time (a gather per byte, twice). With the C
    kernel one pass writes the lines (``tsv_lines``: the pieces and their gather took a third
    of a reducer on the code corpus)."""
    pool, first, nch, lens, counts, lo, hi, order = _ranking(t)
    if lw._C is not None:
        lines, line_lens = lw._C.tsv_lines(pool.view(np.uint8), 8 * first, lens, counts, order)
        return (np.frombuffer(lines, np.uint8), _i64(line_lens), lens.take(order),
                counts.take(order), lo.take(order), hi.take(order))
    lens, counts = lens.take(order), counts.take(order)
    n = len(order)
    digits = np.searchsorted(_POWERS_OF_TEN, counts, side="right") + 1
    tails = _count_tails(counts, digits)
    pieces = np.empty((3, 2 * n), np.int64)             # first chunk, chunks, bytes
    pieces[0, 0::2] = first.take(order)
    pieces[0, 1::2] = np.arange(len(pool), len(pool) + 3 * n, 3)
    pieces[1, 0::2] = nch.take(order)
    pieces[2, 0::2] = lens
    pieces[2, 1::2] = digits + 2
    pieces[1, 1::2] = lw.n_chunks(pieces[2, 1::2])
    lines = lw.chunk_bytes(np.concatenate([pool, tails.view(np.uint64).reshape(-1)]), *pieces)
    return lines, lens + digits + 2, lens, counts, lo.take(order), hi.take(order)


def _ranking(t: dict) -> tuple:
    """A table's words as chunks, and their ranking: ``(pool, first, nch, lens, counts, lo,
    hi, order)``. Word i (in table order: the short and two-word keys, then the long words)
    is the first ``lens[i]`` bytes of ``pool[first[i]:][:nch[i]]`` (a key's ``lo``, ``hi``, a
    long word's ``LongWords`` chunks); ``lo``/``hi`` are the byte-swapped keys of the first
    15 bytes; ``order`` ranks the words by count descending, then bytes
    (``longwords.order_rows``)."""
    lo, hi, counts = table_keys(t)
    long = table_longwords(t)
    d = len(lo)
    lens = np.concatenate([(hi >> _LEN_SHIFT).astype(np.int64), long.lens])
    pool = np.concatenate([np.stack([lo, hi], axis=1).reshape(-1), long.chunks])
    first = np.concatenate([np.arange(0, 2 * d, 2), 2 * d + long.first_chunks()[0]])
    nch = lw.n_chunks(lens)
    long_lo, long_hi = lw.prefix_keys(long)
    counts = np.concatenate([counts, long.counts.astype(np.int64)])
    lo = np.concatenate([lo, long_lo]).byteswap()
    hi = np.concatenate([hi, long_hi]).byteswap()
    order = lw.order_rows(counts, lo, hi, lambda rows: (
        lw.chunk_bytes(pool, first.take(rows), nch.take(rows), lens.take(rows)), lens.take(rows)),
        (pool.view(np.uint8), 8 * first, lens))
    return pool, first, nch, lens, counts, lo, hi, order


_POWERS_OF_TEN = 10 ** np.arange(1, 19, dtype=np.int64)


def tsv_lines(words: np.ndarray, word_lens: np.ndarray, counts: np.ndarray,
              word_starts=None) -> tuple:
    """``word<TAB>count\n`` per row (``b"%s\t%d\n"``, counts >= 0) built with numpy:
    ``(lines uint8, line_lens)``; word i is ``words[word_starts[i]:][:word_lens[i]]`` (None:
    the words end to end). Each line is two segments gathered in one pass (``gather``): its
    word, and its ``\t count \n`` from a row of ``_count_tails``."""
    n = len(counts)
    digits = np.searchsorted(_POWERS_OF_TEN, counts, side="right") + 1
    line_lens = word_lens + digits + 2
    if word_starts is None:
        word_starts = np.cumsum(word_lens) - word_lens
    size = int((word_starts + word_lens).max(initial=0))
    source = np.concatenate([words[:size], _count_tails(counts, digits).reshape(-1)])
    seg_starts = np.empty(2 * n, np.int64)
    seg_starts[0::2] = word_starts
    seg_starts[1::2] = np.arange(size, size + _TAIL * n, _TAIL)
    seg_lens = np.empty(2 * n, np.int64)
    seg_lens[0::2] = word_lens
    seg_lens[1::2] = digits + 2
    return gather(source, seg_starts, seg_lens), line_lens


_TAIL = 24          # bytes per row of _count_tails: a tab, up to 20 digits, a newline


def _count_tails(counts: np.ndarray, digits: np.ndarray) -> np.ndarray:
    """An (n, ``_TAIL``) uint8 matrix whose row i begins with ``\t`` + decimal counts[i] +
    ``\n`` (``digits[i] + 2`` bytes; the others are not set). The k-th digit from the right
    is written for the rows whose count has more than k digits only."""
    n = len(counts)
    tails = np.empty((n, _TAIL), np.uint8)
    flat = tails.reshape(-1)
    row = np.arange(0, _TAIL * n, _TAIL)
    flat[row] = 9
    at = row + digits                                   # the last digit of each row
    flat[at + 1] = 10
    rest = counts.astype(np.int64)
    flat[at] = 48 + rest % 10
    rest //= 10
    for _ in range(1, int(digits.max(initial=1))):
        live = (rest > 0).nonzero()[0]
        at, rest = at.take(live) - 1, rest.take(live)
        flat[at] = 48 + rest % 10
        rest //= 10
    return tails


def split_table(lo, hi, counts, long, reducers: int) -> list:
    """One split's counts as ``reducers`` tables (``split_parts``)."""
    return split_parts(key_parts(lo, hi, counts, long), reducers)


def split_parts(parts: tuple, reducers: int) -> list:
    """``count_parts``'s parts as ``reducers`` tables, by ``partition_of``: each kind of key
    ordered by partition once (one stable sort of small integers, one ``take`` per array),
    then sliced."""
    if reducers == 1:
        return [_table(*parts)]
    short, short_counts, lo, hi, counts, long = parts
    a, at_a = _by_partition(partition_of(short, reducers), reducers)
    b, at_b = _by_partition(partition_of(lo, reducers), reducers)
    c, at_c = _by_partition(partition_of(long.with_hashes().hashes, reducers), reducers)
    short, short_counts = short.take(a), short_counts.take(a)
    lo, hi, counts = lo.take(b), hi.take(b), counts.take(b)
    long = long.take(c)
    at_chunk = np.concatenate([[0], np.cumsum(lw.n_chunks(long.lens))]).take(at_c)
    tables = []
    for r in range(reducers):
        sa, sb, sc = slice(*at_a[r:r + 2]), slice(*at_b[r:r + 2]), slice(*at_c[r:r + 2])
        tables.append(_table(short[sa], short_counts[sa], lo[sb], hi[sb], counts[sb],
                             lw.LongWords(long.chunks[at_chunk[r]:at_chunk[r + 1]],
                                          long.lens[sc], long.counts[sc], long.hashes[sc])))
    return tables


def _by_partition(of: np.ndarray, reducers: int) -> tuple:
    """``(order of the entries by partition, where each partition begins and ends)``."""
    small = of.astype(np.uint8 if reducers <= 256 else np.int64)
    order = np.argsort(small, kind="stable")
    return order, np.concatenate([[0], np.cumsum(np.bincount(small, minlength=reducers))])


class _Pending:
    """Tables' keys of one kind (``ncols`` uint64 columns) and their counts, kept as they come
    (views) and summed by ``sum_keys`` when asked, or when they hold more than ``limit`` rows
    (and twice the rows of the last sum): the memory stays bounded by the distinct keys."""

    def __init__(self, ncols: int, limit: int) -> None:
        self.ncols, self.limit = ncols, limit
        self.parts: list = []
        self.rows = 0
        self.sums = 0                    # times the parts were summed before the end

    def add(self, cols: list, counts: np.ndarray) -> None:
        if not len(counts):
            return
        self.parts.append((cols, counts))
        self.rows += len(counts)
        if self.rows > self.limit:
            self.parts = [self.result()]
            self.rows = len(self.parts[0][1])
            self.limit = max(self.limit, 2 * self.rows)
            self.sums += 1

    def result(self) -> tuple:
        """``(distinct key columns, int64 sums)`` of every row added."""
        if len(self.parts) == 1 and self.sums:
            return self.parts[0]
        cols = [np.concatenate([p[0][j] for p in self.parts] or [np.empty(0, np.uint64)])
                for j in range(self.ncols)]
        counts = np.concatenate([p[1] for p in self.parts] or [np.empty(0, np.int64)])
        return sum_keys(cols, counts)


PENDING_ROWS = 1 << 21     # keys of one kind a KeyCounter keeps before summing them (memory)
LONG_PENDING = 1 << 20     # long words a KeyCounter keeps before summing them (memory)


class KeyCounter:
    """Running sums of word tables (the reducer's state): the short words' keys (one uint64)
    and the two-word keys, each kept as the tables' arrays and summed by sorting
    (``_Pending``, ``sum_keys``: an 8-reducer share of a 200 MB corpus in a few ms, where a
    hash table grown by doubling took 60 ms); the long words' tables kept (views) and summed
    at the end (``longwords.merge``), or when they hold over ``LONG_PENDING`` words."""

    def __init__(self, pending: int = PENDING_ROWS) -> None:
        self.short = _Pending(1, pending)
        self.two = _Pending(2, pending)
        self.long: list = []
        self.long_pending = 0

    def add_tables(self, tables: list) -> "KeyCounter":
        """Add word tables (``key_table`` dicts, e.g. ``unpack_table``'s views)."""
        for t in tables:
            if t is None:
                continue
            self.short.add([t["short"]], t["short_counts"])
            self.two.add([t["lo"], t["hi"]], t["counts"])
            if len(t["long_counts"]):
                self.long.append(table_longwords(t))
                self.long_pending += len(t["long_counts"])
        if self.long_pending > LONG_PENDING:
            self.long = [lw.merge(self.long)]
            self.long_pending = len(self.long[0].lens)
        return self

    def add(self, lo: np.ndarray, hi: np.ndarray, counts: np.ndarray) -> None:
        """Add ``counts[j]`` to key ``(lo[j], hi[j])`` for every j."""
        self.add_tables([key_table(lo, hi, counts)])

    def table(self) -> dict:
        """The sums as one table (``_table``)."""
        (short,), short_sums = self.short.result()
        (lo, hi), sums = self.two.result()
        return _table(short, short_sums, lo, hi, sums, lw.merge(self.long))


def merge_tables(tables: list) -> dict:
    """The sum of word tables, as one table."""
    return KeyCounter().add_tables(tables).table()


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
             drop: tuple = (), params: dict | None = None, finish_fn: str | None = None) -> dict:
    """``dag`` with ``finish`` fed by an aggregation tree over the ``n`` instances of ``leaf``
    instead of by the tasks in ``drop`` (or by ``leaf`` as a whole). With ``finish_fn``, only
    ``leaf`` is kept and the root feeds a new task ``finish`` calling ``finish_fn(output)``
    (wordcount.json, whose reducers write sorted runs: ``--finish-fn wordcount:finish``)."""
    out = dict(dag, params=dict(dag.get("params", {}), **(params or {})))
    if finish_fn:
        drop = tuple(t["id"] for t in dag["tasks"] if t["id"] != leaf)
    tasks = [t for t in dag["tasks"] if t["id"] not in drop]
    if finish_fn:
        tasks.append({"id": finish, "fn": finish_fn, "args": ["{output}"]})
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
    from mpitiny.io.splits import open_splits
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
    ap.add_argument("--finish-fn", help="keep only the leaf family; the root feeds a new task "
                                        "'finish' calling this function with {output}")
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
                   tuple(a.drop), params, a.finish_fn)
    from mpitiny.io.commit import write_atomic
    write_atomic(a.output, json.dumps(new, indent=1).encode() + b"\n")
    print(f"{a.output}: {len(new['tasks'])} tasks (tree fan-in {a.fanin})")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
