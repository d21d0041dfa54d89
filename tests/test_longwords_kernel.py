"""The map kernel's unaligned loads (``longwords.padded``, ``chunk_values``) and the long
words' hash (``hash_chunks``) against plain Python: any byte (NUL, 0xff), words of 1-40 bytes
and 300 KB, at every alignment, words straddling blocks, a reused buffer holding other
bytes."""
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "jobs"))
import longwords as lw  # noqa: E402
import mapreduce as mr  # noqa: E402

MASK = (1 << 64) - 1


def ref_chunks(word: bytes) -> list:
    """A word's 8-byte pieces as little-endian ints, the last zero-padded."""
    padded = word + b"\0" * (-len(word) % 8)
    return [int.from_bytes(padded[k:k + 8], "little") for k in range(0, len(padded), 8)]


def ref_hash(word: bytes) -> int:
    """``hash_chunks``' hash of one word, as its docstring defines it, with Python ints."""
    p, m1, m2 = int(lw._P), int(lw._M1), int(lw._M2)
    h = 0
    for j, c in enumerate(ref_chunks(word)):
        x = (c * m1) & MASK
        x ^= x >> 32
        h = (h + x * m2 * pow(p, j, 1 << 64)) & MASK
    h ^= (len(word) * int(lw._LEN_MIX)) & MASK
    for shift, mul in ((30, int(lw._M1)), (27, int(lw._M2)), (31, None)):
        h ^= h >> shift
        if mul is not None:
            h = (h * mul) & MASK
    return h


def random_bytes(rng, n: int) -> bytes:
    return bytes(rng.choice(np.frombuffer(b"\x00\xff\x01a\x80 ", np.uint8), n))


def test_padded_loads_every_offset():
    rng = np.random.default_rng(2)
    for n in (0, 1, 7, 8, 9, 100):
        raw = np.frombuffer(random_bytes(rng, n), np.uint8)
        stale = np.full(n + 64, 0xAB, np.uint8)
        buffer, at8 = lw.padded(raw, stale)
        assert buffer is stale
        tail = raw.tobytes() + b"\0" * 24
        assert at8[np.arange(n + 17)].tolist() == [
            int.from_bytes(tail[k:k + 8], "little") for k in range(n + 17)]


@pytest.mark.parametrize("lengths", [[16, 17, 23, 24, 25, 40], [300_000], [16] * 50 + [1000]])
def test_chunk_values_and_hash_match_python(lengths):
    rng = np.random.default_rng(len(lengths))
    words = [random_bytes(rng, k) for k in lengths]
    text, starts = b"", []
    for w in words:                                  # every alignment: 0-7 bytes in between
        text += b" " * int(rng.integers(1, 9))
        starts.append(len(text))
        text += w
    _, at8 = lw.padded(np.frombuffer(text, np.uint8))
    lens = np.array(lengths, np.int64)
    values = lw.chunk_values(at8, np.array(starts, np.int64), lens)
    assert values.tolist() == [c for w in words for c in ref_chunks(w)]
    assert lw.hash_chunks(values, lens).tolist() == [ref_hash(w) for w in words]


@pytest.mark.parametrize("block", [9, 16, 33, 1 << 18])
def test_count_parts_with_a_reused_buffer(block):
    """Words of 1-40 bytes and 300 KB of NUL/0xff/UTF-8, CRLF, cut in blocks of ``block``
    bytes, counted after a larger input left other bytes in the reused buffer: exact."""
    rng = np.random.default_rng(block)
    vocab = [random_bytes(rng, k) for k in range(1, 41)] + ["\u65e5\u672c\u8a9e".encode(), b"y" * 300_000]
    vocab = [w.replace(b" ", b"b") for w in vocab]
    seps = [b" ", b"\r\n", b"\t", b"\n", b"\x0b\x0c"]
    mr.count_keys(b"\xff" * 700_000, block=block)
    for words in (2000, 50):
        pick = rng.integers(0, len(vocab) - 1, words).tolist() + [len(vocab) - 1]
        data = b"".join(vocab[i] + seps[i % 5] for i in pick)
        lo, hi, counts, long = mr.count_keys(data, block=block)
        got = dict(zip(mr.keys_to_words(lo, hi), counts.tolist())) | long
        assert got == Counter(data.split())


def test_chunk_bytes_matches_python():
    """Words of 0-40 bytes and 300 KB of any byte, from chunks anywhere in a pool, in any
    order: their bytes end to end (the words of 0 bytes add none)."""
    rng = np.random.default_rng(5)
    lengths = [0, 1, 7, 8, 9, 15, 16, 17, 40, 0, 300_000] + rng.integers(0, 41, 300).tolist()
    words = [random_bytes(rng, k) for k in lengths]
    pool = [c for w in words for c in ref_chunks(w)]
    nch = np.array([len(ref_chunks(w)) for w in words], np.int64)
    first = np.cumsum(nch) - nch
    order = rng.permutation(len(words))
    got = lw.chunk_bytes(np.array(pool, np.uint64), first[order], nch[order],
                         np.array(lengths, np.int64)[order])
    assert got.tobytes() == b"".join(words[i] for i in order)


needs_kernel = pytest.mark.skipif(lw._C is None, reason="the C kernel is not built (no compiler)")


def tied_words(seed: int) -> tuple:
    """Distinct words sharing 15-40-byte prefixes (NUL and 0xff after them; the 15-byte
    prefixes themselves too), counts 1-3: many rows tied on (count, first 15 bytes)."""
    rng = np.random.default_rng(seed)
    stems = [b"q" * 15, b"q" * 16, b"r" * 22, b"q" * 14 + b"\xff", b"\x00" * 15]
    words = {stems[rng.integers(len(stems))] + random_bytes(rng, int(rng.integers(0, 12)))
             for _ in range(3000)}
    words = sorted(words)
    rng.shuffle(words)
    return words, rng.integers(1, 4, len(words))


@needs_kernel
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_order_rows_c_ties_equal_python(seed, monkeypatch):
    """``order_rows`` with the words in place (the C kernel's ``order_ties``, a merge sort of
    each run of tied rows) gives Python's order by (-count, bytes), and the numpy tie-break
    (``order_ties`` on the gathered words) gives the same rows."""
    words, counts = tied_words(seed)
    blob = np.frombuffer(b"".join(words), np.uint8)
    lens = np.array([len(w) for w in words], np.int64)
    starts = np.cumsum(lens) - lens
    cut = np.frombuffer(b"".join(w[:15].ljust(16, b"\0") for w in words), ">u8").reshape(-1, 2)
    lo = np.ascontiguousarray(cut[:, 0]).astype(np.uint64)
    hi = np.ascontiguousarray(cut[:, 1]).astype(np.uint64)
    counts = counts.astype(np.int64)

    def words_of(rows):
        return lw.gather(blob, starts.take(rows), lens.take(rows)), lens.take(rows)
    got = lw.order_rows(counts, lo, hi, words_of, (blob, starts, lens))
    want = sorted(range(len(words)), key=lambda i: (-counts[i], words[i]))
    assert got.tolist() == want
    assert lw.order_rows(counts, lo, hi, words_of).tolist() == want


@needs_kernel
def test_order_ties_refuses_rows_outside():
    one = np.zeros(1, np.int64)
    with pytest.raises(IndexError):
        lw._C.order_ties(np.array([1], np.int64), one, one.view(np.uint64), one.view(np.uint64),
                         np.zeros(4, np.uint8), one, np.array([5], np.int64))


@needs_kernel
def test_tsv_lines_equal_numpy(monkeypatch):
    """``ranked_tsv`` with the C kernel's ``tsv_lines`` equals its numpy form, on a table with
    short, two-word and long words and counts of 1 to 20 digits."""
    words, counts = tied_words(4)
    words = words + [b"a", b"bc", b"0123456789abc", b"\xff" * 8]
    counts = np.concatenate([counts, [10 ** 18, 99, 100, 7]]).astype(np.int64)
    table = mr.unpack_table(mr.pack_table(mr.key_table(*mr.words_to_keys(words, counts))))
    got = mr.ranked_tsv(table)
    monkeypatch.setattr(lw, "_C", None)
    want = mr.ranked_tsv(table)
    for a, b in zip(got, want):
        assert a.tolist() == b.tolist()
    rows = sorted(zip(words, counts.tolist()), key=lambda wc: (-wc[1], wc[0]))
    assert got[0].tobytes() == b"".join(b"%s\t%d\n" % wc for wc in rows)


@needs_kernel
@pytest.mark.parametrize("reducers", [1, 2, 16, 300])
def test_kernel_partitions_equal_split_parts(reducers):
    """``count_tables`` (the kernel partitions its words and hashes its long words) gives
    the tables of ``split_parts`` over the numpy form's partitioning and hashes, byte for
    byte once packed."""
    rng = np.random.default_rng(reducers)
    data = b" ".join(random_bytes(rng, int(k)).replace(b" ", b"x")
                     for k in rng.integers(1, 40, 5000)) + b" " + b"y" * 70_000
    got = mr.count_tables(data, "hash", reducers)
    parts = mr.count_parts(data)
    long = parts[5]
    parts = (*parts[:5], long._replace(hashes=lw.hash_chunks(long.chunks, long.lens)))
    want = mr.split_parts(parts, reducers)
    assert [mr.pack_table(t) for t in got] == [mr.pack_table(t) for t in want]


@needs_kernel
@pytest.mark.parametrize("runs", [1, 5, 64])
def test_merge_order_breaks_ties_by_words(runs):
    """Rows that are sorted runs by (-count, word bytes), many tied on their first 15 bytes:
    ``merge_order`` given the words merges them into Python's order (no tie pass after it);
    ``order_rows`` takes that path; a word outside its buffer is refused."""
    words, counts = tied_words(runs)
    counts = counts.astype(np.int64)
    groups = np.array_split(np.arange(len(words)), runs)
    rows = [i for g in groups for i in sorted(g.tolist(), key=lambda i: (-counts[i], words[i]))]
    words, counts = [words[i] for i in rows], counts[rows]
    blob = np.frombuffer(b"".join(words), np.uint8)
    lens = np.array([len(w) for w in words], np.int64)
    starts = np.cumsum(lens) - lens
    cut = np.frombuffer(b"".join(w[:15].ljust(16, b"\0") for w in words), ">u8").reshape(-1, 2)
    lo, hi = (np.ascontiguousarray(cut[:, k]).astype(np.uint64) for k in (0, 1))
    want = sorted(range(len(words)), key=lambda i: (-counts[i], words[i]))
    merged = lw._C.merge_order(counts, lo, hi, lw.MERGE_RUNS, blob, starts, lens)
    assert np.frombuffer(merged, np.int64).tolist() == want
    assert lw.order_rows(counts, lo, hi, None, (blob, starts, lens)).tolist() == want
    with pytest.raises(IndexError):
        lw._C.merge_order(counts, lo, hi, lw.MERGE_RUNS, blob[:-1], starts, lens)
