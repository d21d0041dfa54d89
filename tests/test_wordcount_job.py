"""jobs/wordcount.json on single edge-case inputs, and the demo (jobs/demo.sh) end to end.

The full matrix (grep, distinct, 1/2/4/8 ranks, a multi-file corpus) is in test_jobs.py.
"""
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
JOBS = ROOT / "jobs"
sys.path.insert(0, str(JOBS))
import longwords  # noqa: E402
import mapreduce as mr  # noqa: E402
import wordcount  # noqa: E402


def reference(data: bytes) -> bytes:
    rows = sorted(Counter(data.split()).items(), key=lambda kv: (-kv[1], kv[0]))
    return b"".join(w + b"\t" + str(n).encode() + b"\n" for w, n in rows)


EDGE_CASES = {
    "no_final_newline": b"a b\nc a\nlast line a",
    "one_huge_line": b"x " * 200000 + b"y",                    # 400 KB: one split, 7 chunks
    "crlf_tabs_unicode": "caf\u00e9 na\u00efve\tcaf\u00e9\r\n\u65e5\u672c \u65e5\u672c\r\n".encode() * 5000,
    "empty_lines": b"\n\n\na\n\n b \n\n" * 10000,
    "only_whitespace": b" \t\r\n\x0b\x0c" * 30000,
    "many_short_lines": b"".join(b"w%d w%d\n" % (i, i % 7) for i in range(50000)),
    "edge_bytes_and_lengths": None,                         # edge_words(): filled below
    "empty_splits": b"a b\n" + b" " * 200_000 + b"\n" + b"\t\n" * 70_000 + b"c a\n",
}


def edge_words(n: int = 30_000, seed: int = 4) -> bytes:
    """Words of 1, 7, 8, 9, 15, 16, 17 and 40 bytes made of 0x00, 0xff, 0x01 and letters (so
    the same first 8 or 15 bytes with different lengths), one word of 300 KB, in lines of
    1 to 3,000 words with every kind of whitespace."""
    rng = np.random.default_rng(seed)
    fills = [b"\x00", b"\xff", b"\x01", b"a", b"\xff\x00", b"ab\x00"]
    vocab = [(f * 40)[:k] for f in fills for k in (1, 7, 8, 9, 15, 16, 17, 40)]
    vocab += [b"\xff" * 8 + b"%d" % i for i in range(300)] + [b"y" * 300_000]
    seps = [b" ", b"\t", b"\r\n", b"\x0b", b"\x0c", b"\n", b"  "]
    out = []
    for i in rng.integers(0, len(vocab) - 1, n).tolist():
        out.append(vocab[i] + seps[int(rng.integers(0, 6 if rng.random() < 0.999 else 7))])
    out.insert(n // 2, vocab[-1] + b" ")
    return b"".join(out)


EDGE_CASES["edge_bytes_and_lengths"] = edge_words()


@pytest.mark.parametrize("case", sorted(EDGE_CASES))
@pytest.mark.parametrize("reducers", [1, 4])
def test_edge_cases_split_by_split(tmp_path, case, reducers):
    from mpitiny.io.ingestion import ingest
    from mpitiny.io.splits import open_splits
    (tmp_path / "in.txt").write_bytes(EDGE_CASES[case])
    h5 = str(tmp_path / "in.h5")
    ingest([str(tmp_path / "in.txt")], h5, chunk="64KiB")
    maps = {f"map[{i}]": wordcount.map_split(h5, i, reducers) for i in range(len(open_splits(h5)))}
    reds = {f"reduce[{r}]": wordcount.reduce_part(maps, r) for r in range(reducers)}
    wordcount.finish(str(tmp_path / "out"), reds)
    assert (tmp_path / "out" / "wordcount.tsv").read_bytes() == reference(EDGE_CASES[case])


@pytest.mark.mpi
def test_demo_script_small(tmp_path):
    """bash jobs/demo.sh 2 2 64KiB: generate, ingest, wordcount on 2 ranks, print top words."""
    env = dict(os.environ, DEMO_DIR=str(tmp_path), HYDRA_LAUNCHER="fork", HYDRA_RMK="user")
    proc = subprocess.run(["bash", str(JOBS / "demo.sh"), "2", "2", "64KiB"], env=env,
                          capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "MB/s" in proc.stdout and "top words" in proc.stdout
    corpus = (tmp_path / "corpus-2MB.txt").read_bytes()
    assert (tmp_path / "wordcount-out" / "wordcount.tsv").read_bytes() == reference(corpus)


@pytest.mark.parametrize("block", [16, 1000, 1 << 18])
@pytest.mark.parametrize("mode", ["default", "sorted_keys", "small_packs", "equal_hashes"])
def test_map_kernel_exact_on_edge_words(monkeypatch, block, mode):
    """The map kernel (``count_parts``) on words of 7/8/9/15/16/17 bytes of 0x00/0xff, cut in
    blocks of ``block`` bytes (words longer than a block, blocks with and without a zero byte):
    exact, whether its keys are ordered by packed hashes (default), by the keys themselves
    (``SORT_BELOW`` above every size), by packed hashes of few bits (``PACKED_ROWS`` 64: the
    whole hashes past 64 rows), or with every hash equal (the check fails: the exact sort)."""
    if mode == "sorted_keys":
        monkeypatch.setattr(mr, "SORT_BELOW", 1 << 40)
    elif mode == "small_packs":
        monkeypatch.setattr(longwords, "PACKED_ROWS", 64)
        monkeypatch.setattr(mr, "SORT_BELOW", 2)
    elif mode == "equal_hashes":
        monkeypatch.setattr(mr, "_HA", np.uint64(0))
        monkeypatch.setattr(mr, "_HB", np.uint64(0))
        monkeypatch.setattr(mr, "SORT_BELOW", 2)
    data = edge_words(n=4000, seed=block % 7) + b"\n" + EDGE_CASES["crlf_tabs_unicode"][:5000]
    for piece in (data, data.replace(b"\x00", b"z"), b"", b" \n", b"\x00", b"x" * 16):
        lo, hi, counts, long = mr.count_keys(piece, block=block)
        assert len(set(zip(lo.tolist(), hi.tolist()))) == len(lo)
        assert dict(zip(mr.keys_to_words(lo, hi), counts.tolist())) | long == Counter(piece.split())


@pytest.mark.parametrize("n", [0, 1, 2, 3000])
@pytest.mark.parametrize("packed", [True, False])
def test_hash_runs_orders_by_hash(n, packed):
    """``longwords.hash_runs``: a permutation of the rows ordered by their hashes' top bits
    (packed: the row numbers in the low bits) or whole hashes, with the runs of equal
    (top bits of) hashes marked; few distinct hashes, so long runs."""
    rng = np.random.default_rng(n)
    h = rng.integers(0, 50, n).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    order, new = longwords.hash_runs(h, packed)
    assert sorted(order.tolist()) == list(range(n))
    top = h.take(order) >> np.uint64(max(1, (n - 1).bit_length()) if packed else 0)
    assert (top[1:] >= top[:-1]).all()
    assert new.tolist() == ([True] + (top[1:] != top[:-1]).tolist())[:n]


@pytest.mark.parametrize("equal_hashes", [False, True])
def test_sum_keys_with_weights(monkeypatch, equal_hashes):
    """``sum_keys`` (the reducers' sums) on one- and two-word keys with weights: the sums of
    a ``Counter``, also when every hash is equal (the keys' own order then)."""
    if equal_hashes:
        monkeypatch.setattr(mr, "_HA", np.uint64(0))
        monkeypatch.setattr(mr, "_HB", np.uint64(0))
    rng = np.random.default_rng(9)
    lo = rng.integers(0, 300, 5000).astype(np.uint64) << np.uint64(40)
    hi = rng.integers(0, 3, 5000).astype(np.uint64)
    w = rng.integers(1, 1 << 40, 5000)
    want: Counter = Counter()
    for a, b, c in zip(lo.tolist(), hi.tolist(), w.tolist()):
        want[(a, b)] += c
    (klo, khi), sums = mr.sum_keys([lo, hi], w)
    assert dict(zip(zip(klo.tolist(), khi.tolist()), sums.tolist())) == want
    (k,), sums = mr.sum_keys([lo], w.astype(np.uint32))
    want1: Counter = Counter()
    for a, c in zip(lo.tolist(), w.astype(np.uint32).tolist()):
        want1[a] += c
    assert dict(zip(k.tolist(), sums.tolist())) == want1
