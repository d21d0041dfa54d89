"""The C map kernel (``mpitiny/kernels/_wordcount.c``) against the numpy form it replaces:
the same word tables (every word and count, every kind of key, the long words' chunks and
hashes) on random bytes (whitespace runs, NULs, UTF-8, tokens over 64 KiB, empty input, no
final whitespace) and on the edge files of the other job tests; its segment copies against
numpy's; and the wordcount job exact on 1, 2 and 4 ranks with the kernels on and off."""
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]
JOBS = ROOT / "jobs"
sys.path.insert(0, str(JOBS))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import longwords as lw  # noqa: E402
import mapreduce as mr  # noqa: E402
from test_jobs import edge_files  # noqa: E402
from test_wordcount_job import EDGE_CASES  # noqa: E402
from test_wordcount_merge import real_shapes  # noqa: E402

from mpitiny import kernels  # noqa: E402

C = kernels.load("_wordcount")
needs_kernel = pytest.mark.skipif(C is None, reason="the C kernel is not built (no compiler)")


def canonical(parts: tuple) -> dict:
    """``count_parts``' parts as sorted lists (the two forms order their arrays differently)."""
    short, short_counts, lo, hi, counts, long = parts
    long = long.with_hashes()
    first, nch = long.first_chunks()
    words = [long.chunks[a:a + k].tobytes() for a, k in zip(first.tolist(), nch.tolist())]
    return {"short": sorted(zip(short.tolist(), short_counts.tolist())),
            "two": sorted(zip(lo.tolist(), hi.tolist(), counts.tolist())),
            "long": sorted(zip(words, long.lens.tolist(), long.counts.tolist(),
                               long.hashes.tolist()))}


def words_of(parts: tuple) -> Counter:
    """``{word: count}`` of parts, through the table format (``table_rows``)."""
    words, counts = mr.table_rows(mr._table(*parts))
    return Counter(dict(zip(words, counts.tolist())))


def check_same(data: bytes) -> None:
    got = mr.count_parts(np.frombuffer(data, np.uint8), compiled=C)
    want = mr.count_parts(data, compiled=None)
    assert canonical(got) == canonical(want)
    assert words_of(got) == Counter(data.split())
    assert C.count(data)[-1] == len(data.split())


TOKEN_BYTES = st.sampled_from([b"a", b"\x00", b"\xff", b"\x85", b"\xa0", b"\x1c", b"z",
                               "\u00e9".encode(), "\u65e5".encode(), b"\x01"])
WHITESPACE = st.sampled_from([b" ", b"\t", b"\n", b"\r", b"\x0b", b"\x0c", b"\r\n", b"   "])


@st.composite
def texts(draw) -> bytes:
    """Tokens of 1-40 bytes (some repeated), a few over 64 KiB, between whitespace runs; the
    text may begin with a token and end without whitespace."""
    vocab = draw(st.lists(st.lists(TOKEN_BYTES, min_size=1, max_size=40).map(b"".join),
                          min_size=1, max_size=30))
    if draw(st.booleans()):
        vocab.append(draw(TOKEN_BYTES) * draw(st.integers(64 << 10, 70 << 10)))
    picks = draw(st.lists(st.integers(0, len(vocab) - 1), max_size=300))
    out = [draw(WHITESPACE) if draw(st.booleans()) else b""]
    for i in picks:
        out += [vocab[i], draw(WHITESPACE)]
    if picks and draw(st.booleans()):
        out.pop()
    return b"".join(out)


@needs_kernel
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts())
def test_kernel_tables_equal_numpy_on_random_text(data):
    check_same(data)


@needs_kernel
@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=3000))
def test_kernel_tables_equal_numpy_on_random_bytes(data):
    check_same(data)


@needs_kernel
@pytest.mark.parametrize("name", sorted(EDGE_CASES))
def test_kernel_tables_equal_numpy_on_edge_cases(name):
    check_same(EDGE_CASES[name])


@needs_kernel
def test_kernel_tables_equal_numpy_on_edge_files_and_real_shapes():
    check_same(b"".join(edge_files().values()))
    check_same(real_shapes(seed=9, words=50_000))
    check_same(b"")
    check_same(b" \t\n")
    check_same(b"x" * (3 << 16))                           # one token over 64 KiB, nothing else


@needs_kernel
def test_kernel_grows_its_table_and_reuses_it():
    """Far more distinct words than the first table's slots; then a small input again (the
    workspace is reused) and a call from a thread while none other runs."""
    many = b" ".join(b"w%x" % i for i in range(300_000)) + b" w1 w2"
    check_same(many)
    check_same(b"b a b")
    import threading
    done = []
    t = threading.Thread(target=lambda: done.append(words_of(mr.compiled_parts(many, C))))
    t.start()
    t.join()
    assert done[0] == Counter(many.split())


@needs_kernel
def test_kernel_takes_any_contiguous_buffer_and_refuses_others():
    data = np.frombuffer(b"ab cd ab\x00", np.uint8)
    assert words_of(mr.compiled_parts(memoryview(data.tobytes()), C)) == Counter([b"ab", b"cd", b"ab\x00"])
    assert words_of(mr.compiled_parts(data[::2], C)) == Counter(data[::2].tobytes().split())
    with pytest.raises(TypeError):
        C.count("text")


def segment_copies(words: list, placed: bool) -> tuple:
    """``gather``, ``copy_segments`` and ``chunk_bytes`` of ``words`` (reversed, placed at an
    offset or end to end, from chunks), as bytes."""
    src = np.frombuffer(b"".join(words) + b"tail", np.uint8)
    lens = np.array([len(w) for w in words], np.int64)
    starts = np.cumsum(lens) - lens
    order = np.arange(len(words))[::-1].copy()
    gathered = lw.gather(src, starts[order], lens[order]).tobytes()
    dst = np.zeros(len(src) + 10, np.uint8)
    lw.copy_segments(dst, (starts + 10) if placed else None, src, starts, lens)
    long = lw.from_dict(Counter(w for w in words if w))
    first, nch = long.first_chunks()
    return gathered, dst.tobytes(), lw.chunk_bytes(long.chunks, first, nch, long.lens).tobytes()


@needs_kernel
@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=50), st.booleans())
def test_segment_copies_equal_numpy(words, placed):
    got = segment_copies(words, placed)
    saved, lw._C = lw._C, None
    try:
        want = segment_copies(words, placed)
    finally:
        lw._C = saved
    assert got == want
    at = 10 if placed else 0
    assert got[0] == b"".join(words[::-1])
    assert got[1] == b"\0" * at + b"".join(words) + b"\0" * (14 - at)
    assert got[2] == b"".join(Counter(w for w in words if w))


@needs_kernel
def test_segment_copies_refuse_out_of_bounds():
    src = np.zeros(8, np.uint8)
    with pytest.raises(IndexError):
        C.copy_segments(np.zeros(4, np.uint8), None, src, np.array([6], np.int64),
                        np.array([4], np.int64))
    with pytest.raises(IndexError):
        C.chunk_bytes(np.zeros(1, np.uint64), np.array([0], np.int64), np.array([9], np.int64))


@needs_kernel
@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(0, 2)),
                         max_size=30), max_size=12), st.integers(1, 20))
def test_merge_order_of_sorted_runs(runs, max_runs):
    """``merge_order`` orders rows that are sorted runs end to end as ``np.lexsort((hi, lo,
    -counts))`` does (equal keys kept in their order), or refuses (None) when there are more
    runs than ``max_runs``; ``key_order`` gives the same keys either way."""
    rows = [sorted(r, key=lambda t: (-t[0], t[1], t[2])) for r in runs]
    flat = [t for r in rows for t in r]
    counts = np.array([t[0] for t in flat], np.int64)
    lo = np.array([t[1] << 62 for t in flat], np.uint64)          # unsigned order matters
    hi = np.array([t[2] for t in flat], np.uint64)
    got = C.merge_order(counts, lo, hi, max_runs)
    want = np.lexsort((hi, lo, -counts))
    descents = sum(1 for a, b in zip(flat, flat[1:])
                   if (-b[0], b[1], b[2]) < (-a[0], a[1], a[2]))
    if descents + 1 > max_runs and flat:
        assert got is None
    else:
        assert np.frombuffer(got, np.int64).tolist() == want.tolist()
    order = lw.key_order(counts, lo, hi)
    for a in (counts, lo, hi):
        assert a.take(order).tolist() == a.take(want).tolist()
    order[:1] = 0                                                  # order_rows writes into it


def ref_tsv(data: bytes) -> bytes:
    rows = sorted(Counter(data.split()).items(), key=lambda kv: (-kv[1], kv[0]))
    return b"".join(b"%s\t%d\n" % kv for kv in rows)


@pytest.fixture(scope="module")
def kernel_corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("kcorpus")
    data = real_shapes(seed=11, words=60_000) + b"".join(edge_files().values()) + \
        EDGE_CASES["edge_bytes_and_lengths"]
    (d / "in.txt").write_bytes(data)
    subprocess.run([sys.executable, "-m", "mpitiny", "ingest", "in.txt", "-o", "data.h5",
                    "--chunk", "64KiB"], cwd=d, check=True, capture_output=True)
    return d / "data.h5", ref_tsv(data)


def test_kernels_off_means_the_numpy_forms():
    code = "import mapreduce, longwords; assert mapreduce.COMPILED is None and longwords._C is None"
    env = dict(os.environ, MPITINY_KERNELS="0", PYTHONPATH=str(JOBS))
    subprocess.run([sys.executable, "-c", code], env=env, check=True)
    if C is not None:
        env["MPITINY_KERNELS"] = "1"
        subprocess.run([sys.executable, "-c", code.replace("is None and", "is not None and")
                        .replace("_C is None", "_C is not None")], env=env, check=True)


@pytest.mark.mpi
@pytest.mark.parametrize("kernels_on", ["1", "0"])
@pytest.mark.parametrize("n", [1, 2, 4])
def test_wordcount_job_exact_with_and_without_kernels(python_module, kernel_corpus, tmp_path, n,
                                                      kernels_on):
    h5, want = kernel_corpus
    out = tmp_path / "out"
    proc = python_module(n, "mpitiny", "run", str(JOBS / "wordcount.json"), "--param",
                         f"input={h5}", "--param", f"output={out}", "--out", str(tmp_path / "run"),
                         env={"PYTHONPATH": str(JOBS), "MPITINY_KERNELS": kernels_on}, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (out / "wordcount.tsv").read_bytes() == want
    assert os.path.exists(out / "wordcount.h5")
