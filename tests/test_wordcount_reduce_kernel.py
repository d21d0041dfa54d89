"""The C reducer and merge (``reduce_run``, ``merge_rows`` of ``mpitiny/kernels/_wordcount.c``)
against the numpy forms they replace (``wordcount._numpy_run``, ``sortedruns._numpy_rows``):
the same run files and merged rows, byte for byte, and the same figures, on the map tables of
real-shaped text, of the job tests' edge cases, of random words (NULs, 0xff, shared 15-byte
and 200-byte prefixes, counts over 2**16 and 2**32), of no words; exact when the long words'
hashes all collide; their errors; two threads at once."""
import os
import sys
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "jobs"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import mapreduce as mr  # noqa: E402
import sortedruns  # noqa: E402
import wordcount  # noqa: E402
from test_jobs import edge_files  # noqa: E402
from test_wordcount_job import EDGE_CASES  # noqa: E402
from test_wordcount_merge import real_shapes  # noqa: E402

from mpitiny import kernels  # noqa: E402

C = kernels.load("_wordcount")
pytestmark = pytest.mark.skipif(C is None, reason="the C kernel is not built (no compiler)")


def map_tables(data: bytes, pieces: int, reducers: int) -> list:
    """Map outputs of ``data`` cut at whitespace into about ``pieces`` pieces: per piece, the
    ``reducers`` packed tables of ``wordcount.map_split``."""
    cuts, at = [0], 0
    for k in range(1, pieces):
        at = max(at, len(data) * k // pieces)
        while at < len(data) and data[at:at + 1] not in b" \t\n\r\x0b\x0c":
            at += 1
        cuts.append(at)
    cuts.append(len(data))
    return [[mr.pack_table(t, b - a if k == 0 else 0, reducers)
             for k, t in enumerate(mr.count_tables(data[a:b], "hash", reducers))]
            for a, b in zip(cuts[:-1], cuts[1:])]


def both_runs(tmp_path, inputs: dict, r: int) -> tuple:
    """``(numpy's run file, its figures), (the kernel's ...)`` of reducer ``r``."""
    got = []
    for name, run in (("numpy", wordcount._numpy_run), ("kernel", wordcount._compiled_run)):
        path = str(tmp_path / f"{name}-{r}.bin")
        info, nbytes, nparts = run(inputs, r, path)
        got.append((Path(path).read_bytes(), info["rows"], info["line_bytes"],
                    info["word_bytes"], nbytes, nparts))
    return got[0], got[1]


def run_rows(path: str) -> list:
    run = sortedruns.Run(path)
    return [(run.word(i), int(run.counts[i])) for i in range(len(run))]


def check_reducers(tmp_path, maps: list, reducers: int, data: bytes | None = None) -> None:
    """Every reducer's run the same from both; with ``data``, the words of ``data`` ranked."""
    rows = []
    for r in range(reducers):
        inputs = {f"map[{i}]": m[r] for i, m in enumerate(maps)}
        numpy_run, kernel_run = both_runs(tmp_path, inputs, r)
        assert kernel_run == numpy_run
        rows += run_rows(str(tmp_path / f"kernel-{r}.bin"))
    if data is not None:
        assert sorted(rows, key=lambda wc: (-wc[1], wc[0])) == \
            sorted(Counter(data.split()).items(), key=lambda wc: (-wc[1], wc[0]))


@pytest.mark.parametrize("reducers", [1, 3])
def test_same_run_as_numpy_on_real_shapes(tmp_path, reducers):
    data = real_shapes(seed=3, words=40_000)
    check_reducers(tmp_path, map_tables(data, 7, reducers), reducers, data)


@pytest.mark.parametrize("name", sorted(EDGE_CASES))
def test_same_run_as_numpy_on_edge_cases(tmp_path, name):
    data = EDGE_CASES[name]
    check_reducers(tmp_path, map_tables(data, 5, 2), 2, data)


def test_same_run_as_numpy_on_edge_files(tmp_path):
    data = b"".join(edge_files().values())
    check_reducers(tmp_path, map_tables(data, 4, 2), 2, data)


def test_no_tables_and_no_words(tmp_path):
    assert both_runs(tmp_path, {}, 0)[1][1:] == (0, 0, 0, 0, 1)
    check_reducers(tmp_path, map_tables(b" \n\t ", 2, 2), 2)
    assert run_rows(str(tmp_path / "kernel-1.bin")) == []


def table_of(words: dict) -> bytes:
    """One packed table of ``{word: count}`` (counts of any size: 2-, 4- or 8-byte counts)."""
    lo, hi, counts, long = mr.words_to_keys(list(words), list(words.values()))
    return mr.pack_table(mr.key_table(lo, hi, counts, long), 100, 1)


PREFIXES = [b"", b"a" * 15, b"\x00" * 8, b"\xff" * 14, b"p" * 200, b"https://example.org/"]
PIECE = st.binary(min_size=0, max_size=3).map(lambda b: b.replace(b" ", b"_"))
WORDS = st.builds(lambda p, s: (p + s) or b"x", st.sampled_from(PREFIXES), PIECE)
COUNTS = st.one_of(st.integers(1, 5), st.integers(4000, 70_000), st.integers(1, 1 << 40))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.dictionaries(WORDS, COUNTS, max_size=60), max_size=5))
def test_same_run_as_numpy_on_random_words(tmp_path_factory, tables):
    tmp_path = tmp_path_factory.mktemp("random")
    inputs = {f"map[{i}]": table_of(t) for i, t in enumerate(tables)}
    numpy_run, kernel_run = both_runs(tmp_path, inputs, 0)
    assert kernel_run == numpy_run
    total: Counter = Counter()
    for t in tables:
        total.update(t)
    assert run_rows(str(tmp_path / "kernel-0.bin")) == \
        sorted(total.items(), key=lambda wc: (-wc[1], wc[0]))


def test_many_words_sharing_long_prefixes(tmp_path):
    """Thousands of long words equal on their first 15 bytes and up to 300 more (the radix
    sort's deepest levels and its merge sort), some counts equal, some not."""
    rng = np.random.default_rng(2)
    words = {}
    for _ in range(3000):
        depth = int(rng.integers(15, 320))
        words[b"q" * depth + bytes(rng.integers(0, 3, int(rng.integers(0, 4))).tolist())] = \
            int(rng.integers(1, 4))
    blobs = [table_of(dict(list(words.items())[k::3])) for k in range(3)]
    numpy_run, kernel_run = both_runs(tmp_path, dict(enumerate(blobs)), 0)
    assert kernel_run == numpy_run
    assert run_rows(str(tmp_path / "kernel-0.bin")) == \
        sorted(words.items(), key=lambda wc: (-wc[1], wc[0]))


@pytest.mark.parametrize("collide", ["all", "by_length"])
def test_exact_when_long_word_hashes_collide(tmp_path, collide):
    """The kernel groups long words by their tables' hashes and compares their bytes: with
    every hash equal (or equal per length) the sums are still exact."""
    data = real_shapes(seed=9, words=8_000)
    maps = map_tables(data, 4, 1)
    forged = []
    for (blob,) in maps:
        t = mr.unpack_table(blob)
        hashes = (np.zeros_like(t["long_hashes"]) if collide == "all"
                  else t["long_lens"].astype(np.uint64))
        forged.append(mr.pack_table(dict(t, long_hashes=hashes), t["nbytes"], 1))
    assert any(len(mr.unpack_table(b)["long_lens"]) for b in forged)
    path = tmp_path / "run.bin"
    with open(path, "wb") as f:
        C.reduce_run(forged, f.fileno())
    assert run_rows(str(path)) == sorted(Counter(data.split()).items(),
                                         key=lambda wc: (-wc[1], wc[0]))


def test_errors(tmp_path):
    good = table_of({b"a": 1, b"b" * 20: 2})
    with open(tmp_path / "f", "wb") as f:
        for bad in (good[:-8], good + b"\0" * 8, b"", good[:56]):
            with pytest.raises(ValueError, match="table 1 .* is not a mapreduce.pack_table blob"):
                C.reduce_run([good, bad], f.fileno())
        with pytest.raises(TypeError):
            C.reduce_run(5, f.fileno())
        with pytest.raises(TypeError):
            C.reduce_run([good, None], f.fileno())
    with open(tmp_path / "f", "rb") as f, pytest.raises(OSError):
        C.reduce_run([good], f.fileno())                           # not open for writing


def test_two_threads_at_once(tmp_path):
    """Calls that find the process's workspace in use make their own: the same runs."""
    data = real_shapes(seed=4, words=30_000)
    blobs = [m[0] for m in map_tables(data, 6, 1)]
    with open(tmp_path / "want", "wb") as f:
        C.reduce_run(blobs, f.fileno())
    want = (tmp_path / "want").read_bytes()
    errors = []

    def work(k: int) -> None:
        try:
            for j in range(8):
                path = tmp_path / f"t{k}-{j}"
                with open(path, "wb") as f:
                    C.reduce_run(blobs, f.fileno())
                assert path.read_bytes() == want
        except BaseException as e:          # noqa: BLE001 (reported below)
            errors.append(e)
    threads = [threading.Thread(target=work, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and not any(t.is_alive() for t in threads)


def test_reduce_sorted_uses_the_kernel(tmp_path, monkeypatch):
    """``reduce_sorted`` takes the kernel's path where it was built, numpy's with
    ``REDUCE_RUN`` None: the same value and run file."""
    monkeypatch.setenv("MPITINY_RUN_DIR", str(tmp_path / "run"))
    data = real_shapes(seed=6, words=10_000)
    maps = map_tables(data, 3, 2)
    inputs = {f"map[{i}]": m for i, m in enumerate(maps)}       # whole map outputs: tree form
    assert wordcount.REDUCE_RUN is not None
    got = wordcount.reduce_sorted(str(tmp_path), inputs, 1, 2)
    run = Path(got["file"]).read_bytes()
    monkeypatch.setattr(wordcount, "REDUCE_RUN", None)
    assert wordcount.reduce_sorted(str(tmp_path), inputs, 1, 2) == got
    assert Path(got["file"]).read_bytes() == run
    assert not [n for n in os.listdir(tmp_path / "run" / "wordcount-runs") if ".tmp" in n]


def merge_inputs(tmp_path, data: bytes, reducers: int, mergers: int, monkeypatch) -> dict:
    """The reducers' values and the plan of ``data`` (wordcount.json's tasks, in a process)."""
    monkeypatch.setenv("MPITINY_RUN_DIR", str(tmp_path / "run"))
    maps = map_tables(data, 5, reducers)
    out = str(tmp_path / "out")
    reds = {f"reduce[{r}]": wordcount.reduce_sorted(out, {i: m[r] for i, m in enumerate(maps)},
                                                    r, mergers) for r in range(reducers)}
    return dict(reds, plan=wordcount.plan(out, reds, mergers))


def merge_parts(inputs: dict, m: int) -> list:
    """``(run, a, b)`` of merge ``m``: its rows of each run (as ``merge_range`` finds them)."""
    got = []
    original = sortedruns._write_rows
    try:
        sortedruns._write_rows = lambda *args: None
        real = sortedruns._compiled_rows
        sortedruns._compiled_rows = lambda parts: got.extend(parts) or real(parts)
        wordcount.merge(inputs, m)
    finally:
        sortedruns._write_rows = original
        sortedruns._compiled_rows = real
    return got


@pytest.mark.parametrize("reducers,mergers", [(1, 1), (4, 3), (7, 8)])
def test_merge_rows_same_as_numpy(tmp_path, monkeypatch, reducers, mergers):
    data = real_shapes(seed=8, words=30_000) + EDGE_CASES["edge_bytes_and_lengths"]
    inputs = merge_inputs(tmp_path, data, reducers, mergers, monkeypatch)
    rows = 0
    for m in range(mergers):
        parts = merge_parts(inputs, m)
        got, want = sortedruns._compiled_rows(parts), sortedruns._numpy_rows(parts)
        assert [a.tobytes() for a in got] == [np.asarray(a).tobytes() for a in want]
        rows += len(got[3])
    assert rows == len(set(data.split()))


def test_merge_rows_errors(tmp_path, monkeypatch):
    inputs = merge_inputs(tmp_path, real_shapes(seed=1, words=5_000), 2, 1, monkeypatch)
    parts = merge_parts(inputs, 0)
    good = [(run.counts[a:b], run.line_ends[a:b], run.word_ends[a:b],
             run.lines[run.line_start(a):run.line_start(b)], run.line_start(a), run.word_start(a))
            for run, a, b in parts]
    assert C.merge_rows([]) == (bytearray(), bytearray(), b"", b"")
    backwards = list(good[0])
    backwards[0] = np.ascontiguousarray(good[0][0][::-1])        # counts not descending
    with pytest.raises(ValueError, match="not in order"):
        C.merge_rows([good[1], tuple(backwards)])
    short = list(good[0])
    short[3] = good[0][3][:-1]                                  # lines shorter than their ends
    with pytest.raises(ValueError, match="run 1: its arrays do not describe its lines"):
        C.merge_rows([good[1], tuple(short)])
    with pytest.raises(TypeError, match="merge_rows: a run is"):
        C.merge_rows([good[0][:5]])


def test_prefix_keys_are_mapreduce_keys():
    """The merges' sort keys made from the words are the reducers' keys (``ranked_tsv``'s
    ``lo``, ``hi``): words of 1 to 40 bytes, with NULs and 0xff."""
    data = EDGE_CASES["edge_bytes_and_lengths"] + real_shapes(seed=2, words=3_000)
    table = mr.merge_tables([mr.unpack_table(m[0]) for m in map_tables(data, 2, 1)])
    lines, line_lens, word_lens, _, lo, hi = mr.ranked_tsv(table)
    starts = np.cumsum(line_lens) - line_lens
    got = sortedruns._prefix_keys(lines, starts, word_lens)
    assert np.array_equal(got[0], lo) and np.array_equal(got[1], hi)
