"""Words of over 15 bytes ("long words") as numpy arrays: counted, merged, partitioned and
ranked with no Python object per word (issue 18: the map kernel for real text).

Words of at most 15 bytes are their own keys (``mapreduce``). Real text has many longer
tokens (URLs, paths, identifiers, UTF-8 words: 7-10 % of the tokens of the real corpora, half
the distinct words of a split). Counted as ``bytes`` with a ``Counter``, they took a third of
a map task and most of a reducer; here they stay arrays:

* ``LongWords``: distinct words with counts, each word as its **chunks**: its bytes cut in
  8-byte pieces, little-endian uint64, the last one zero-padded; every word's chunks end to
  end in one array (``chunks``), with the lengths, the counts and (when known) the hashes.
  Copying, comparing and hashing words then costs one numpy operation per 8 bytes, not per
  byte; the bytes end to end (``blob``) are made once, for the reducer's output. The map reads
  the chunks from the split (``chunk_values``: one unaligned 8-byte load per chunk from a
  zero-padded copy, ``padded``).
* **Hash.** A word's hash is ``sum(m(chunk[j]) * P**j)`` modulo 2**64 (``m`` mixes the bits
  of a chunk), then mixed (``_mix``), computed for every word at once from one product with
  the powers of P and ``np.add.reduceat`` per word: a polynomial hash over variable lengths
  with no loop.
* **Grouping** (``group``): a sort of the hashes (``hash_runs``: ``np.sort`` of the hashes'
  top bits with the row numbers packed into the low bits, 3-5x faster than ``argsort``);
  equal hashes are one word only if the lengths and every chunk are equal, which is checked
  for every word against the first of its group in one comparison over all the chunks. Rows
  that share only the top bits of their hashes fail the check and are grouped again by the
  whole hashes; on a 64-bit collision (never seen on the corpora) the words are counted with a
  ``Counter`` of ``bytes`` instead: the result is exact either way
  (``tests/test_wordcount_merge.py`` forces collisions). ``mapreduce.sum_keys`` orders its
  keys with ``hash_runs`` too.
* **Ranking** (``prefix_keys``, ``order_rows``): a long word's sort keys are its first 15
  bytes as ``mapreduce``'s two-word key; rows tied on count and those keys (words sharing a
  15-byte prefix) are ordered by their bytes: in C, each run of tied rows merge-sorted by
  comparing the words where they lie; without the kernel by 8-byte keys, then ``sorted`` on
  the rows those leave tied (``order_ties``).

``gather`` / ``copy_segments`` (copies of many byte segments) and ``chunk_bytes`` live here
and are used by every job: one ``memcpy`` per segment in the C kernel
(``mpitiny/kernels/_wordcount.c``) where it was built, numpy gathers otherwise (the same
bytes).
"""
from __future__ import annotations

import sys
from collections import Counter
from typing import NamedTuple

import numpy as np

from mpitiny import kernels

# the C kernel's segment copies (copy_segments, chunk_bytes); numpy's below give the same bytes
_C = kernels.load("_wordcount") if sys.byteorder == "little" else None

_ALL_ONES = np.uint64(0xFFFFFFFFFFFFFFFF)
_SIXTY_FOUR = np.uint64(64)
_THREE = np.uint64(3)
_ONE = np.uint64(1)
_P = np.uint64(0x9E3779B97F4A7C15)            # odd: invertible modulo 2**64
_M1 = np.uint64(0xBF58476D1CE4E5B9)           # splitmix64's finaliser
_M2 = np.uint64(0x94D049BB133111EB)
_LEN_MIX = np.uint64(0xD6E8FEB86659FD93)
_S30, _S27, _S31, _S32 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(32)
_PREFIX_HI = np.uint64((1 << 56) - 1)
_FIFTEEN = np.uint64(15 << 56)
KEY_BYTES = 15                                # mapreduce's: longer words are long words
_POW: list = []                     # [M2 * P**j, P**-j] for j < len, grown by doubling


def _powers(n: int) -> tuple:
    """``(M2 * P**j, P**-j)`` modulo 2**64 for j < n (``hash_chunks``' two multiplications of
    a chunk, by ``M2`` then by ``P**j``, as one)."""
    if not _POW or len(_POW[0]) < n:
        m = max(n, 1 << 16, 2 * len(_POW[0]) if _POW else 0)
        fwd = np.full(m, _P, np.uint64)
        inv = np.full(m, np.uint64(pow(int(_P), -1, 1 << 64)), np.uint64)
        fwd[0], inv[0] = _M2, 1
        _POW[:] = [np.cumprod(fwd), np.cumprod(inv)]
    return _POW[0][:n], _POW[1][:n]


class LongWords(NamedTuple):
    """Distinct words with their counts, as chunks (``hashes`` None: not computed yet)."""
    chunks: np.ndarray
    lens: np.ndarray
    counts: np.ndarray
    hashes: np.ndarray | None = None

    def first_chunks(self) -> tuple:
        """``(index of each word's first chunk, its number of chunks)``."""
        nch = n_chunks(self.lens)
        return np.cumsum(nch) - nch, nch

    def take(self, idx: np.ndarray) -> "LongWords":
        """The words ``idx``, in that order."""
        return LongWords(self.chunks.take(chunk_index(*self.first_chunks(), idx)),
                         self.lens.take(idx), self.counts.take(idx),
                         None if self.hashes is None else self.hashes.take(idx))

    def blob(self) -> np.ndarray:
        """The words' bytes end to end (uint8)."""
        first, nch = self.first_chunks()
        return chunk_bytes(self.chunks, first, nch, self.lens)

    def to_dict(self) -> Counter:
        """``{word bytes: count}``."""
        raw = self.blob().tobytes()
        ends = np.cumsum(self.lens).tolist()
        return Counter(dict(zip([raw[a:b] for a, b in zip([0] + ends[:-1], ends)],
                                self.counts.tolist())))

    def with_hashes(self) -> "LongWords":
        if self.hashes is not None:
            return self
        return self._replace(hashes=hash_chunks(self.chunks, self.lens))


NONE = LongWords(np.empty(0, np.uint64), np.empty(0, np.int64), np.empty(0, np.int64),
                 np.empty(0, np.uint64))


def n_chunks(lens: np.ndarray) -> np.ndarray:
    return (lens + 7) >> 3


def chunk_index(first: np.ndarray, nch: np.ndarray, idx=None) -> np.ndarray:
    """The indices of the chunks of the words ``idx`` (None: all), given every word's first
    chunk and number of chunks: ``first[i] .. first[i] + nch[i] - 1`` for each, end to end."""
    if idx is not None:
        first, nch = first.take(idx), nch.take(idx)
    at = np.arange(int(nch.sum()), dtype=np.int64)
    at += np.repeat(first - (np.cumsum(nch) - nch), nch)
    return at


def from_dict(words: dict) -> LongWords:
    """``LongWords`` of a ``{word: count}`` (with hashes)."""
    if not words:
        return NONE
    keys = list(words)
    chunks = np.frombuffer(b"".join(w.ljust((len(w) + 7) & ~7, b"\0") for w in keys), "<u8")
    return LongWords(chunks.astype(np.uint64), np.fromiter(map(len, keys), np.int64, len(keys)),
                     np.fromiter(words.values(), np.int64, len(keys))).with_hashes()


def padded(raw: np.ndarray, buffer: np.ndarray | None = None) -> tuple:
    """``(copy, at8)``: ``raw`` (uint8) copied into ``buffer`` (reused if large enough, else
    a new one) followed by 24 zero bytes, and ``at8``, a view of that copy as the uint64 at
    *every* byte offset (``at8[k]`` = bytes ``k .. k + 7``, little-endian; ``k`` up to
    ``len(raw) + 16``). Indexing ``at8`` with an index array (``at8[idx]``, not ``take``: 7x
    slower on unaligned items) gathers unaligned 8-byte loads at 4-5 ns each, 2.4x faster than
    two aligned gathers and a funnel shift."""
    n = len(raw)
    if buffer is None or len(buffer) < n + 24:
        buffer = np.empty(n + 24, np.uint8)
    buffer[:n] = raw
    buffer[n:n + 24] = 0
    return buffer, unaligned8(buffer, 0, n + 17)


def unaligned8(buffer: np.ndarray, at: int, n: int) -> np.ndarray:
    """The uint64 at byte offsets ``at .. at + n - 1`` of ``buffer`` (uint8; ``at + n + 7``
    bytes at least), as a strided view."""
    return np.ndarray(shape=(n,), dtype="<u8", buffer=buffer, offset=at, strides=(1,))


def chunk_values(at8: np.ndarray, starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """The chunks of the words ``starts[i]:starts[i] + lens[i]`` of a buffer whose 8-byte
    loads are ``at8`` (``padded``), end to end, the last of each zero-padded."""
    nch = n_chunks(lens)
    ends = np.cumsum(nch)
    at = np.arange(0, 8 * int(ends[-1]) if len(ends) else 0, 8, dtype=np.int64)
    at += np.repeat(starts - 8 * (ends - nch), nch)
    values = at8[at]
    ends -= 1
    values[ends] &= ~(_ALL_ONES << ((lens - 8 * (nch - 1)).view(np.uint64) << _THREE))
    return values


def hash_chunks(values: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """The hash of every word of ``lens`` bytes whose chunks are ``values``: ``sum(m(chunk[j])
    * P**j)`` as ``P**-first * (sum over the word of m(chunk[g]) * P**g)``, the length mixed
    in. ``m`` (multiply, xor-shift, multiply) makes every bit of a chunk reach every bit: the
    plain sum of chunks times powers of P modulo 2**64 lets a difference in the top bytes of
    two chunks cancel with probability 1/256 (it did on the code corpus: ``"\\x{0636}\\x{064A}",``
    and ``"\\x{0634}\\x{0647}",``)."""
    if not len(lens):
        return np.empty(0, np.uint64)
    nch = n_chunks(lens)
    first = np.cumsum(nch) - nch
    m2_fwd, inv = _powers(len(values))
    mixed = values * _M1                       # every bit of a chunk into its low bits, so
    mixed ^= mixed >> _S32                     # that high bytes cannot cancel out modulo 2**64
    mixed *= m2_fwd                            # * M2, then * P**g
    h = np.add.reduceat(mixed, first)
    h *= inv.take(first)
    h ^= lens.view(np.uint64) * _LEN_MIX
    return _mix(h)


def _mix(h: np.ndarray) -> np.ndarray:
    h ^= h >> _S30
    h *= _M1
    h ^= h >> _S27
    h *= _M2
    h ^= h >> _S31
    return h


def group(values: np.ndarray, hashes: np.ndarray, lens: np.ndarray, weights=None):
    """Group words by their bytes: ``(first word of each group, sum of ``weights`` (default 1)
    per group)``, or None when two different words share a hash. The rows are ordered by
    ``hash_runs`` (rows whose hashes share only their top bits fall in one run and fail the
    check: then again by the whole hashes)."""
    got = _group_runs(values, hashes, lens, weights, True)
    return _group_runs(values, hashes, lens, weights, False) if got is None else got


def _group_runs(values, hashes, lens, weights, packed: bool):
    """``group`` with the rows in ``hash_runs(hashes, packed)``'s order."""
    n = len(hashes)
    order, new = hash_runs(hashes, packed)
    cuts = new.nonzero()[0]
    reps = order.take(cuts)
    sizes = np.diff(cuts, append=n)
    rep_of = np.empty(n, np.intp)
    rep_of[order] = np.repeat(reps, sizes)
    if not _same_words(values, lens, rep_of):
        return None
    return reps, sizes if weights is None else np.add.reduceat(weights.take(order), cuts)


PACKED_ROWS = 1 << 20      # hash_runs packs the row numbers into the hashes up to this many
_IOTA: list = [np.arange(1 << 16, dtype=np.uint64)]     # 0, 1, 2, ... grown by doubling


def _iota(n: int) -> np.ndarray:
    """``np.arange(n, dtype=np.uint64)``, a view of one cached array."""
    if len(_IOTA[0]) < n:
        _IOTA[0] = np.arange(max(n, 2 * len(_IOTA[0])), dtype=np.uint64)
    return _IOTA[0][:n]


def hash_runs(h: np.ndarray, packed: bool = True) -> tuple:
    """``(order, new)``: an order of the rows by their 64-bit hashes ``h`` and, along it,
    where each run of equal hashes begins (bool). Up to ``PACKED_ROWS`` rows (``packed``), by
    ``np.sort`` of one uint64 per row: the top bits of its hash with the row's number in the
    ``b = bits(n - 1)`` low bits (numpy's sort of uint64 is vectorised: 3-5x faster than
    ``argsort``); the runs are then the runs of equal top ``64 - b`` bits, which the caller
    checks against the keys. Otherwise by ``argsort`` of the whole hashes."""
    n = len(h)
    if packed and 0 < n <= PACKED_ROWS:
        bits = np.uint64(max(1, (n - 1).bit_length()))
        low = (_ONE << bits) - _ONE
        key = h & ~low
        key |= _iota(n)
        key.sort()
        order = (key & low).view(np.intp)
        key >>= bits
    else:
        order = np.argsort(h)
        key = h.take(order)
    new = np.empty(n, bool)
    new[:1] = True
    np.not_equal(key[1:], key[:-1], out=new[1:])
    return order, new


def _same_words(values: np.ndarray, lens: np.ndarray, rep_of: np.ndarray) -> bool:
    """Whether every word ``i`` has the bytes of word ``rep_of[i]``: the same length, and
    every chunk equal to the chunk at the same place in ``rep_of[i]`` (one gather and one
    comparison over all the chunks)."""
    if not np.array_equal(lens.take(rep_of), lens):
        return False
    nch = n_chunks(lens)
    first = np.cumsum(nch) - nch
    at = np.repeat(first.take(rep_of) - first, nch)
    at += np.arange(len(values))
    return bool(np.array_equal(values.take(at), values))


def count(values: np.ndarray, hashes: np.ndarray, lens: np.ndarray) -> LongWords:
    """The distinct words among words of ``lens`` bytes with chunks ``values`` and hashes
    ``hashes``, with their counts."""
    if not len(lens):
        return NONE
    return _grouped(LongWords(values, lens, np.ones(len(lens), np.int64), hashes), None)


def merge(parts: list) -> LongWords:
    """The sum of ``LongWords`` (a word in several of them once, its counts summed)."""
    parts = [p for p in parts if len(p.lens)]
    if not parts:
        return NONE
    if len(parts) == 1 and parts[0].hashes is not None:
        return parts[0]
    lens = np.concatenate([p.lens for p in parts])
    chunks = np.concatenate([p.chunks for p in parts])
    hashes = (np.concatenate([p.hashes for p in parts])
              if all(p.hashes is not None for p in parts) else hash_chunks(chunks, lens))
    counts = np.concatenate([p.counts for p in parts]).astype(np.int64)
    return _grouped(LongWords(chunks, lens, counts, hashes), parts)


def _grouped(words: LongWords, parts) -> LongWords:
    """``words`` (with hashes) grouped: the first of each group with the sum of its counts
    (``parts`` None: every count is 1); on a hash collision, the same from a ``Counter`` of
    ``bytes`` (of ``words``, or of each of ``parts``)."""
    got = group(words.chunks, words.hashes, words.lens, None if parts is None else words.counts)
    if got is None:
        total: Counter = Counter()
        for p in [words] if parts is None else parts:
            raw = p.blob().tobytes()
            ends = np.cumsum(p.lens).tolist()
            for a, b, c in zip([0] + ends[:-1], ends, p.counts.tolist()):
                total[raw[a:b]] += c
        return from_dict(total)
    reps, sums = got
    return words.take(reps)._replace(counts=sums.astype(np.int64))


def prefix_keys(words: LongWords) -> tuple:
    """``mapreduce``'s two-word key ``(lo, hi)`` of the first 15 bytes of each word (all over
    15 bytes long): bytes 0-7, then bytes 8-14 with 15 in the top byte."""
    first, _ = words.first_chunks()
    hi = words.chunks.take(first + 1) & _PREFIX_HI
    hi |= _FIFTEEN
    return words.chunks.take(first), hi


def order_rows(counts: np.ndarray, lo: np.ndarray, hi: np.ndarray, words_of,
               words: tuple | None = None) -> np.ndarray:
    """The order of rows of distinct words by count descending, then word bytes: ``(-count,
    lo, hi)`` (``key_order``; ``lo``, ``hi``: byte-swapped prefix keys, so unsigned order is
    byte order); the rows tied on all three (words sharing their first 15 bytes and their
    count) are ordered by their bytes: with the C kernel and ``words`` (``(buf uint8, starts,
    lens)``: row i's word is ``buf[starts[i]:][:lens[i]]``) by a merge sort of each run of
    tied rows comparing the words in place (``order_ties`` took a fifth of a reducer and of a
    merge on the real corpora); otherwise by ``order_ties`` (``words_of(rows)`` gives the
    words of those rows end to end, uint8)."""
    if _C is not None and words is not None:
        keys = (_int64(counts), np.ascontiguousarray(lo, np.uint64),
                np.ascontiguousarray(hi, np.uint64))
        where = (np.ascontiguousarray(words[0], np.uint8), _int64(words[1]), _int64(words[2]))
        merged = _C.merge_order(*keys, MERGE_RUNS, *where)      # a merge's runs: ties too
        if merged is not None:
            return np.frombuffer(merged, np.int64)
        order = key_order(counts, lo, hi)
        _C.order_ties(order, *keys, *where)
        return order
    order = key_order(counts, lo, hi)
    k = [a.take(order) for a in (counts, lo, hi)]
    same = (k[0][1:] == k[0][:-1]) & (k[1][1:] == k[1][:-1]) & (k[2][1:] == k[2][:-1])
    if not same.any():
        return order
    at = np.flatnonzero(np.concatenate([[False], same]) | np.concatenate([same, [False]]))
    group_of = np.cumsum(np.concatenate([[True], ~same]))[at]
    rows = order.take(at)
    tied, lens = words_of(rows)
    order[at] = rows.take(order_ties(group_of, tied, lens))
    return order


MERGE_RUNS = 64     # rows that are at most this many ordered runs are merged, not sorted


def key_order(counts: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """``np.lexsort((hi, lo, -counts))`` in about a third of its time: a quicksort of ``lo``,
    the runs of equal ``lo`` ordered by ``hi`` (a ``lexsort`` of those rows only), then a
    stable sort by count descending (``_stable_descending``). Rows that are a few runs in
    that order end to end (a merge task's: the reducers' sorted runs) are merged by the C
    kernel instead (``merge_order``: 3 passes for 8 runs, no sort)."""
    if _C is not None and lo.dtype == np.uint64 and hi.dtype == np.uint64:
        got = _C.merge_order(_int64(counts), np.ascontiguousarray(lo),
                             np.ascontiguousarray(hi), MERGE_RUNS)
        if got is not None:
            return np.frombuffer(got, np.int64)
    order = prefix_order(lo, hi)
    return order.take(_stable_descending(counts.take(order)))


def prefix_order(lo: np.ndarray, hi: np.ndarray, stable: bool = False) -> np.ndarray:
    """An order of rows by ``(lo, hi)`` (``lo`` uint64; unsigned order): a quicksort of
    ``lo``, then the runs of equal ``lo`` by ``hi`` (a ``lexsort`` of those rows only). Rows
    equal on both keep no particular order, or their input order if ``stable`` (then it is
    ``np.lexsort((hi, lo))`` in a third of its time: jobs/sort.py). Also used by
    jobs/linesort.py's maps."""
    order = np.argsort(lo)
    sorted_lo = lo.take(order)
    same = sorted_lo[1:] == sorted_lo[:-1]
    if same.any():
        at = np.flatnonzero(np.concatenate([[False], same]) | np.concatenate([same, [False]]))
        run = np.cumsum(np.concatenate([[True], ~same])).take(at)
        rows = order.take(at)
        tied_hi = hi.take(rows)
        sub = None if stable else _order_in_runs(run, tied_hi)
        if sub is None:
            sub = np.lexsort((rows, tied_hi, run) if stable else (tied_hi, run))
        order[at] = rows.take(sub)
    return order


def _order_in_runs(run: np.ndarray, h: np.ndarray):
    """An order of rows by ``(run, h)`` (``run`` non-decreasing, from 1; ``h`` uint64): the
    rows' ranks by ``h`` (one ``argsort``) under their run in one uint64 each, sorted
    (``np.sort``); rows equal on both in no particular order. A two-key ``lexsort`` of these
    rows (a third of a reducer's) took 2/3 of ``prefix_order``. None if the two do not fit in
    64 bits."""
    n = len(h)
    bits = max(1, (n - 1).bit_length())
    if int(run[-1]).bit_length() + bits > 64:
        return None
    by_h = np.argsort(h)
    key = run.astype(np.uint64) << np.uint64(bits)
    key[by_h] |= _iota(n)
    key.sort()
    key &= (_ONE << np.uint64(bits)) - _ONE
    return by_h.take(key.view(np.intp))


def _stable_descending(counts: np.ndarray) -> np.ndarray:
    """A stable ``argsort`` of ``-counts``: radix sorts on 16-bit digits (numpy's stable sort
    of uint16), least significant first, for counts below 2**32."""
    top = int(counts.max(initial=0))
    down = top - counts
    if top >= 1 << 32:
        return np.argsort(down, kind="stable")
    order = np.argsort(down.astype(np.uint16), kind="stable")
    if top >= 1 << 16:
        order = order.take(np.argsort((down.take(order) >> 16).astype(np.uint16), kind="stable"))
    return order


TIE_KEYS = 4        # 8-byte keys after the first 15 bytes that order tied rows before sorted()


def order_ties(group_of: np.ndarray, tied: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """The order of tied rows by ``(group_of, word bytes)`` (rows sharing their first 15
    bytes within a group; jobs/linesort.py's lines too): a ``np.lexsort`` on the group and
    the next ``TIE_KEYS`` 8-byte pieces of the words from byte 15 on (zero past a word's
    end, byte-swapped); the rows those leave tied (a zero byte, or 47 bytes in common) by
    ``sorted`` on their bytes."""
    _, at8 = padded(tied)
    at = np.cumsum(lens) - lens
    keys = []
    for k in range(TIE_KEYS):
        left = np.clip(lens - (KEY_BYTES + 8 * k), 0, 8).view(np.uint64)
        piece = at8[np.minimum(at + KEY_BYTES + 8 * k, len(tied))]
        piece &= ~(_ALL_ONES << (left << _THREE))
        keys.append(piece.byteswap())
    sub = np.lexsort((*reversed(keys), group_of))
    cols = [a.take(sub) for a in (group_of, *keys)]
    same = np.ones(len(sub) - 1, bool)
    for col in cols:
        same &= col[1:] == col[:-1]
    if not same.any():
        return sub
    where = np.flatnonzero(np.concatenate([[False], same]) | np.concatenate([same, [False]]))
    rows = sub.take(where)
    raw = tied.tobytes()
    firsts, ends = at.take(rows).tolist(), (at + lens).take(rows).tolist()
    key = [(g, raw[a:b]) for g, a, b in zip(group_of.take(rows).tolist(), firsts, ends)]
    sub[where] = rows.take(sorted(range(len(rows)), key=key.__getitem__))
    return sub


def chunk_bytes(pool: np.ndarray, first: np.ndarray, nch: np.ndarray,
                lens: np.ndarray) -> np.ndarray:
    """Words end to end (uint8), word i being the first ``lens[i]`` bytes of the chunks
    ``pool[first[i]:first[i] + nch[i]]`` (``nch[i]`` = ``n_chunks(lens[i])``): with the C
    kernel one ``memcpy`` per word; in numpy the chunks gathered (one ``take`` per 8 bytes),
    then the bytes to keep picked by a boolean mask, all ones but in each word's last chunk
    (one ``take`` from ``_KEEP`` per word; a mask made per chunk was 8% slower, one made by
    broadcasting a comparison over (chunks, 8) 3x)."""
    if _C is not None:
        return np.frombuffer(_C.chunk_bytes(np.ascontiguousarray(pool, "<u8"), _int64(first),
                                            _int64(lens)), np.uint8)
    full = nch > 0
    if not full.all():
        first, nch, lens = first[full], nch[full], lens[full]
    ends = np.cumsum(nch)
    chunks = pool.take(chunk_index(first, nch))
    keep = np.full(len(chunks), _ALL_KEPT)
    ends -= 1
    keep[ends] = _KEEP.take(lens - 8 * (nch - 1))
    return chunks.view(np.uint8)[keep.view(np.bool_)]


_ALL_KEPT = np.uint64(0x0101010101010101)                                # 8 bytes of 1
_KEEP = np.array([(1 << (8 * k)) // 255 for k in range(9)], np.uint64)   # k bytes of 1


def gather(blob: np.ndarray, starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """``blob[starts[i]:starts[i] + lens[i]]`` for every i, end to end (``copy_segments``)."""
    out = np.empty(int(lens.sum()), np.uint8)
    copy_segments(out, None, blob, starts, lens)
    return out


GATHER_BYTES = 1 << 19     # bytes copied per numpy gather: its int64 index stays in cache
_STEPS = np.arange(GATHER_BYTES, dtype=np.int64)


def copy_segments(dst: np.ndarray, dst_starts, src: np.ndarray, src_starts: np.ndarray,
                  lens: np.ndarray) -> None:
    """``dst[dst_starts[i]:][:lens[i]] = src[src_starts[i]:][:lens[i]]`` for every i
    (``dst_starts`` None: end to end from 0): with the C kernel one ``memcpy`` per segment
    (``dst`` and ``src`` contiguous uint8); in numpy gathers of about ``GATHER_BYTES`` at a
    time (one index array over all the bytes costs its first-touch page faults: 8 bytes of
    index per byte copied)."""
    if (_C is not None and dst.flags.c_contiguous and dst.dtype == np.uint8
            and src.dtype == np.uint8):
        _C.copy_segments(dst, None if dst_starts is None else _int64(dst_starts),
                         np.ascontiguousarray(src), _int64(src_starts), _int64(lens))
        return
    ends = np.cumsum(lens)
    at = 0
    while at < len(lens):
        first = int(ends[at - 1]) if at else 0
        to = max(at + 1, int(np.searchsorted(ends, first + GATHER_BYTES)))
        ln = lens[at:to]
        total = int(ends[to - 1]) - first
        if total:
            steps = _STEPS[:total] if total <= GATHER_BYTES else np.arange(total)
            rel = np.cumsum(ln) - ln
            src_at = np.repeat(src_starts[at:to] - rel, ln) + steps
            if dst_starts is None:
                dst[first:first + total] = src.take(src_at)
            else:
                dst[np.repeat(dst_starts[at:to] - rel, ln) + steps] = src.take(src_at)
        at = to


def _int64(a) -> np.ndarray:
    return np.ascontiguousarray(a, np.int64)
