"""The compiled line kernels (mpitiny/kernels/_lines.c) against their Python forms and plain
Python, and linesort and grep run as jobs with the kernel and without it (MPITINY_KERNELS=0).

Each kernel function has a Python form in jobs/linesort.py or jobs/grep.py (``kernel=None``)
that must give the same value: the line order (bytes, then line number), the line spans, the
gathered lines, the merge of sorted runs and grep's candidate lines. Hypothesis draws lines
of bytes that matter to the order (NUL, 0x01, 0xff, ``\\r``, space, letters) at the lengths
where the kernel's 7-byte keys change (0-30), plus equal lines, long shared prefixes and
UTF-8; the edge inputs (empty lines, CRLF, no final newline, NULs, very long lines, all-equal
lines) are checked against ``sorted`` and ``re.search`` per line. The jobs run on 1, 2 and 4
ranks, under each setting, byte for byte against one-process references.
"""
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]
JOBS = ROOT / "jobs"
sys.path.insert(0, str(JOBS))
import grep  # noqa: E402
import linesort  # noqa: E402
from mpitiny.kernels import load  # noqa: E402
from test_linesort_edges import ingest_files  # noqa: E402

KERNEL = load("_lines")
needs_kernel = pytest.mark.skipif(KERNEL is None, reason="mpitiny.kernels._lines not built "
                                                         "(or MPITINY_KERNELS=0)")

BYTES = b"\x00\x01\xff\r a b"
line = st.one_of(
    st.binary(max_size=30).map(lambda b: bytes(BYTES[x % len(BYTES)] for x in b)),
    st.integers(0, 40).map(lambda n: b" " * n + b"x"),
    st.sampled_from([b"", b"0", "файл Datei".encode(), b"\xd1\x84\xd0\xb0", b"a" * 7, b"a" * 8,
                     b"a" * 14 + b"\x00", b"a" * 15]),
)


def _raw(lines: list) -> np.ndarray:
    return np.frombuffer(b"".join(x + b"\n" for x in lines), np.uint8)


def _edge_cases() -> dict:
    return {
        "empty": [],
        "empty_lines": [b""] * 100 + [b"x"] + [b""] * 50,
        "crlf": [b"b\r", b"a\r", b"a", b"\r", b"a\r\r"] * 20,
        "nul": [b"\x00", b"", b"\x00\x00", b"a\x00b", b"a", b"\x00\xff"] * 30,
        "long": [b"y" * 150_000, b"y" * 149_999 + b"z", b"y" * 150_000 + b"\x00", b"y"],
        "utf8": [w.encode() for w in ["файл", "Datei", "fichier", "日本語", "مل", "café"]] * 9,
        "all_equal": [b"same line"] * 500,
        "shared_prefix": [b" " * 64 + bytes([i % 7, i % 3]) for i in range(300)],
        "prefix_chain": [b"a" * i for i in range(200, -1, -1)],
        "many_short": [b"%d" % (i % 37) for i in range(70_000)],
    }


# ------------------------------------------------------------------------------ linesort
def _check_order(lines: list) -> None:
    raw = _raw(lines)
    starts, lens = linesort.line_spans(raw, kernel=None)
    want = sorted(range(len(lines)), key=lambda i: (lines[i], i))
    assert linesort.sort_order(raw, starts, lens, kernel=None).tolist() == want
    if KERNEL is None:
        return
    ks, kl = linesort.line_spans(raw, kernel=KERNEL)
    assert ks.tolist() == starts.tolist() and kl.tolist() == lens.tolist()
    order = linesort.sort_order(raw, starts, lens, kernel=KERNEL)
    assert order.tolist() == want
    got = linesort.gather_lines(raw, starts, lens, order, kernel=KERNEL)
    assert got.tobytes() == linesort.gather_lines(raw, starts, lens, order, kernel=None).tobytes()
    assert got.tobytes() == b"".join(lines[i] + b"\n" for i in want)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(line, max_size=120))
def test_sort_order_kernel_equals_python(lines):
    _check_order(lines)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(line, max_size=40), max_size=7))
def test_merge_kernel_equals_python(runs):
    pieces_bytes = [b"".join(x + b"\n" for x in sorted(r)) for r in runs]
    buf = bytearray(b"".join(pieces_bytes))
    view, pieces, at = memoryview(buf), [], 0
    for p in pieces_bytes:
        pieces.append(view[at:at + len(p)])
        at += len(p)
    want = b"".join(x + b"\n" for x in sorted(x for r in runs for x in r))
    data, n = linesort.merge_pieces(pieces, kernel=None)
    assert bytes(data) == want and n == sum(map(len, runs))
    if KERNEL is not None:
        data, n = linesort.merge_pieces(pieces, kernel=KERNEL)
        assert bytes(data) == want and n == sum(map(len, runs))
    if n:
        assert linesort.edge_lines(data) == (want[:want.find(b"\n")],
                                             want[want.rfind(b"\n", 0, len(want) - 1) + 1:-1])


@pytest.mark.parametrize("case", list(_edge_cases()))
def test_sort_order_edge_cases(case):
    _check_order(_edge_cases()[case])


@needs_kernel
def test_kernel_refuses_bad_arguments():
    raw = _raw([b"ab", b"c"])
    starts, lens = linesort.line_spans(raw)
    with pytest.raises(ValueError, match="outside the data"):
        KERNEL.sort_lines(raw, starts, lens + 10, np.empty(2, np.int64))
    with pytest.raises(ValueError, match="one length"):
        KERNEL.sort_lines(raw, starts, lens[:1], np.empty(2, np.int64))
    with pytest.raises(ValueError, match="is no line"):
        KERNEL.gather_lines(raw, starts, lens, np.array([0, 5]), np.empty(10, np.uint8))
    with pytest.raises(ValueError, match="more needed"):
        KERNEL.gather_lines(raw, starts, lens, np.array([0, 1]), np.empty(4, np.uint8))
    assert KERNEL.gather_lines(raw, starts, lens, np.array([1, 0]), np.empty(5, np.uint8)) == 5
    with pytest.raises(ValueError, match="does not end with a newline"):
        KERNEL.merge_runs([b"a\n", b"b"], bytearray(3))
    with pytest.raises(ValueError, match="needed"):
        KERNEL.merge_runs([b"a\n", b"b\n"], bytearray(3))
    with pytest.raises(ValueError, match="newline"):
        KERNEL.find_line_spans(b"a\nb", [b"a\nb"], np.empty(8, np.int64))
    for bad in ([0, 4], [2, 1], [-1, 1]):
        with pytest.raises(ValueError, match="not within the data"):
            KERNEL.span_lines(b"abc", np.array(bad, np.int64))
    with pytest.raises(ValueError, match="int64 pairs"):
        KERNEL.span_lines(b"abc", np.array([0], np.int64))
    assert KERNEL.span_lines(b"abc", np.array([0, 3, 1, 1], np.int64)) == [b"abc", b""]


@needs_kernel
@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200).map(lambda b: bytes(b"\na\x00\xff"[x % 4] for x in b)))
def test_line_spans_kernel_equals_numpy(data):
    """The SSE2 scan: newlines at every place in and across 16-byte blocks, a tail shorter
    than a block, no final newline (its last bytes are no line), arrays too short."""
    ends = [i for i, c in enumerate(data) if c == 10]
    assert KERNEL.count_lines(data) == len(ends)
    raw = np.frombuffer(data, np.uint8)
    ws, wl = linesort.line_spans(raw, kernel=None)
    starts, lens = np.full(len(ends), -1, np.int64), np.full(len(ends), -1, np.int64)
    assert KERNEL.line_spans(raw, starts, lens) == len(ends)
    assert starts.tolist() == ws.tolist() and lens.tolist() == wl.tolist()
    short = max(0, len(ends) - 3)
    s2, l2 = np.empty(short, np.int64), np.empty(short, np.int64)
    assert KERNEL.line_spans(raw, s2, l2) == short
    assert s2.tolist() == ws[:short].tolist() and l2.tolist() == wl[:short].tolist()


@settings(max_examples=150, deadline=None)
@given(st.lists(line, max_size=150), st.integers(1, 40))
def test_run_points_kernel_equals_numpy(lines, points):
    """A sorted run's points (the maps' sample): the kernel's scan and numpy give the same
    rows; the last line is always one; the weights of ``run_sample`` add up to the run's
    cost and its lines are the run's lines (cut to ``SAMPLE_BYTES``)."""
    run = _raw(sorted(lines))
    want = linesort.run_points(run, len(lines), points, kernel=None)
    if KERNEL is not None:
        assert linesort.run_points(run, len(lines), points, kernel=KERNEL).tolist() == want.tolist()
    sample = linesort.run_sample(run, len(lines), points)
    if not lines:
        assert sample == []
        return
    assert want[-1].tolist()[1:] == [len(run) - 1, len(lines) - 1] and len(want) <= points
    assert sum(w for _, w in sample) == len(run) + linesort.LINE_BYTES * len(lines)
    cut = linesort.SAMPLE_BYTES
    for (h, _), (a, e, j) in zip(sample, want.tolist()):
        assert bytes.fromhex(h) == sorted(lines)[j][:cut] == run[a:e].tobytes()[:cut]


@needs_kernel
def test_run_points_refuses_a_wrong_line_count():
    with pytest.raises(ValueError, match="has 2 lines, not 3"):
        KERNEL.run_points(b"a\nb\n", 3, 4, 4, np.empty(12, np.int64))
    with pytest.raises(ValueError, match="points >= 1"):
        KERNEL.run_points(b"a\nb\n", 2, 0, 4, np.empty(12, np.int64))


@needs_kernel
def test_sort_with_scratch_reused_and_too_small():
    """``sort_lines``' scratch: the same order as without it, reused by calls of other sizes
    (what the maps do), and one clear error when it is too small."""
    scratch = np.empty(32 * 400 + 16, np.uint8)
    rng = np.random.default_rng(5)
    for n in (300, 0, 400, 17):
        lines = [bytes(rng.integers(0, 4, int(rng.integers(0, 20))).tolist()) for _ in range(n)]
        raw = _raw(lines)
        starts, lens = linesort.line_spans(raw)
        order = np.empty(n, np.int64)
        KERNEL.sort_lines(raw, starts, lens, order, scratch[:32 * max(n, 1) + 16])
        assert order.tolist() == sorted(range(n), key=lambda i: (lines[i], i))
    with pytest.raises(ValueError, match="scratch has"):
        KERNEL.sort_lines(raw, starts, lens, order, scratch[:32 * 17])


# ------------------------------------------------------------------------------ grep
PATTERNS = [r"(файл|Datei|fichier)", r"\b(error|warning)s?\b", r"ab+c|^xx$", r"\r$",
            r"(?<=a)\x00", r"a\x00b", r"\bdef [a-z_]+\(self"]


def _grep_reference(data: bytes, pattern: str) -> tuple:
    rx = re.compile(pattern.encode())
    offsets, lines, pos = [], [], 0
    parts = data.split(b"\n")
    if parts[-1] == b"":
        parts.pop()
    for x in parts:
        if rx.search(x):
            offsets.append(pos)
            lines.append(x)
        pos += len(x) + 1
    return offsets, lines


@settings(max_examples=200, deadline=None)
@given(st.lists(line, max_size=60), st.sampled_from(PATTERNS), st.booleans())
def test_grep_kernel_equals_python(lines, pattern, final_newline):
    words = [b"error", b"warnings", b"Datei", "файл".encode(), b"abbc", b"xx", b"def f(self"]
    lines = [x + words[i % len(words)] if i % 3 == 0 else x for i, x in enumerate(lines)]
    data = b"\n".join(lines) + (b"\n" if final_newline and lines else b"")
    want = _grep_reference(data, pattern)
    assert grep.grep_bytes(data, pattern) == want
    assert grep.grep_bytes(np.frombuffer(data, np.uint8), pattern) == want
    literals = grep.required_literals(pattern)
    if literals is not None:
        spans = grep._candidate_lines(data, literals)
        assert grep.candidate_spans(data, literals, kernel=None) == spans
        want_lines = grep.candidate_lines(data, literals, kernel=None)
        assert want_lines == ([a for a, _ in spans], [data[a:b] for a, b in spans])
        if KERNEL is not None:
            got = grep.candidate_spans(np.frombuffer(data, np.uint8), literals, kernel=KERNEL)
            assert [tuple(x) for x in got] == spans
            assert grep.candidate_lines(np.frombuffer(data, np.uint8), literals,
                                        kernel=KERNEL) == want_lines


@needs_kernel
def test_grep_kernel_literal_at_every_offset():
    """A literal at each position of a 16-byte block, across the ends of blocks and of the
    data (the SIMD loop's tail), and in a line of 100 KB."""
    for lit in [b"ab", "файл".encode(), b"fichier", b"x" * 40]:
        for at in range(0, 70):
            data = b"." * at + lit + b"\n" + b"-" * (at % 17)
            got = grep.candidate_spans(data, [lit], kernel=KERNEL)
            assert [tuple(x) for x in got] == grep._candidate_lines(data, [lit])
    big = b"q" * 100_000 + b"fichier" + b"q" * 5 + b"\nfichier\n"
    assert grep.candidate_spans(big, [b"fichier"], kernel=KERNEL) == [[0, 100_012],
                                                                       [100_013, 100_020]]


# ------------------------------------------------------------------------------ the jobs
FILES = {
    "a.txt": b"".join(b"line %d %s\n" % (i % 37, b"error" if i % 11 == 0 else b"")
                      for i in range(30000)),
    "b_empty_lines.txt": b"\n" * 20000 + b"x\n" * 300,
    "c_crlf_utf8.txt": "файл Datei\r\nfichier café\r\n日本語\r\n".encode() * 2000,
    "d_nul.txt": b"\x00\n\x00\x00\na\x00b error\n\x00\xff\n" * 3000,
    "e_long.txt": b"y" * 150_000 + b"\n" + b"y" * 149_999 + b"z\n",
    "f_equal.txt": b"same line\n" * 8000,
    "g_no_newline.txt": b"last line without a newline fichier",
    "h_joined.txt": b" runs into this file's first line\n" + b"tail\n" * 10,
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return ingest_files(tmp_path_factory.mktemp("lines"), FILES)


def _logical() -> bytes:
    return b"".join(FILES.values())


def _sorted_reference() -> bytes:
    lines = _logical().split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return b"".join(x + b"\n" for x in sorted(lines))


def _grep_tsv_reference(pattern: str) -> bytes:
    starts, pos = [], 0
    for data in FILES.values():
        starts.append(pos)
        pos += len(data)
    names = list(FILES)
    rows = []
    for off, x in zip(*_grep_reference(_logical(), pattern)):
        k = max(i for i, s in enumerate(starts) if s <= off)
        rows.append(b"%s\t%d\t%s\n" % (names[k].encode(), off - starts[k], x))
    return b"".join(rows)


@pytest.mark.mpi
@pytest.mark.parametrize("kernels", ["1", "0"])
@pytest.mark.parametrize("n", [1, 2, 4])
def test_linesort_job_with_and_without_kernel(python_module, corpus, tmp_path, n, kernels):
    out = tmp_path / "out"
    proc = python_module(n, "mpitiny", "run", str(JOBS / "linesort.json"), "--param",
                         f"input={corpus}", "--param", f"output={out}", "--param",
                         "partitions=5", "--out", str(tmp_path / "run"),
                         env={"PYTHONPATH": str(JOBS), "MPITINY_KERNELS": kernels}, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (out / "sorted.txt").read_bytes() == _sorted_reference()


@pytest.mark.mpi
@pytest.mark.parametrize("kernels", ["1", "0"])
@pytest.mark.parametrize("n", [1, 2, 4])
def test_grep_job_with_and_without_kernel(python_module, corpus, tmp_path, n, kernels):
    pattern = r"(файл|fichier)|\berror$|^\x00\x00"
    out = tmp_path / "out"
    proc = python_module(n, "mpitiny", "run", str(JOBS / "grep.json"), "--param",
                         f"input={corpus}", "--param", f"output={out}", "--param",
                         f"pattern={pattern}", "--out", str(tmp_path / "run"),
                         env={"PYTHONPATH": str(JOBS), "MPITINY_KERNELS": kernels}, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    want = _grep_tsv_reference(pattern)
    assert want.count(b"\n") > 4000
    assert (out / "grep.tsv").read_bytes() == want

