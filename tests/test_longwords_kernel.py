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
