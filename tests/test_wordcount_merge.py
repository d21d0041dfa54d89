"""Wordcount without a serial tail (jobs/sortedruns.py) and grep's literal prefilter: exact
outputs against one-process Python on corpora of real-text shapes (long tokens sharing long
prefixes with equal counts, UTF-8, CRLF, binary bytes, many distinct words), as functions and
under MPI on 1, 2 and 4 ranks."""
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
JOBS = ROOT / "jobs"
sys.path.insert(0, str(JOBS))
import grep  # noqa: E402
import mapreduce as mr  # noqa: E402
import wordcount  # noqa: E402


def ref_tsv(data: bytes) -> bytes:
    rows = sorted(Counter(data.split()).items(), key=lambda kv: (-kv[1], kv[0]))
    return b"".join(b"%s\t%d\n" % kv for kv in rows)


def real_shapes(seed: int = 5, words: int = 60_000) -> bytes:
    """Long tokens that share 15, 20 and 40-byte prefixes (paths, URLs) with equal counts,
    15-byte words that begin longer ones, UTF-8, CRLF, NUL / 0xff / 0x85 / 0xa0 bytes, and
    many distinct words."""
    rng = np.random.default_rng(seed)
    prefixes = [b"/usr/share/doc/", b"https://example.org/a/b/c/", b"x" * 40, b"abcdefghijklmno"]
    vocab = [p + b"%d" % i for p in prefixes for i in range(300)] + prefixes
    vocab += ["caf\u00e9 \u65e5\u672c\u8a9e \u0444\u0430\u0439\u043b".encode().split()[i % 3] + b"%d" % i
              for i in range(2000)]
    vocab += [b"w%x" % i for i in range(20_000)] + [b"a\x00b", b"\xff\xfe", b"z\x85z", b"\xa0"]
    pick = rng.integers(0, len(vocab), words)
    seps = [b" ", b"\t", b"\r\n", b"\n", b"  "]
    return b"".join(vocab[i] + seps[j] for i, j in zip(pick.tolist(),
                                                       rng.integers(0, 5, words).tolist()))


def test_tsv_lines_is_printf():
    rng = np.random.default_rng(1)
    words = [bytes(rng.integers(0, 256, k, dtype=np.uint8)) for k in rng.integers(1, 40, 500)]
    counts = np.concatenate([rng.integers(1, 10, 250), 10 ** rng.integers(0, 18, 248), [0, 9]])
    blob = np.frombuffer(b"".join(words), np.uint8)
    lens = np.fromiter(map(len, words), np.int64)
    lines, line_lens = mr.tsv_lines(blob, lens, counts.astype(np.int64))
    want = [b"%s\t%d\n" % wc for wc in zip(words, counts.tolist())]
    assert lines.tobytes() == b"".join(want)
    assert line_lens.tolist() == [len(x) for x in want]


@pytest.mark.parametrize("gather_bytes", [1, 7, 1 << 19])
def test_gather_copies_every_segment(monkeypatch, gather_bytes):
    import longwords
    monkeypatch.setattr(longwords, "GATHER_BYTES", gather_bytes)
    monkeypatch.setattr(longwords, "_STEPS", np.arange(gather_bytes, dtype=np.int64))
    rng = np.random.default_rng(2)
    blob = rng.integers(0, 256, 5000, dtype=np.uint8)
    starts = rng.integers(0, 4000, 300)
    lens = rng.integers(0, 1000, 300)
    got = mr.gather(blob, starts, lens).tobytes()
    assert got == b"".join(blob[a:a + k].tobytes() for a, k in zip(starts, lens))


def test_ranked_arrays_match_ranked_rows():
    data = real_shapes(words=20_000)
    table = mr._table(*mr.count_split(data))
    words, lens, counts, _, _ = mr.ranked_arrays(table)
    want_words, want_counts = mr.ranked_rows([table])
    assert words.tobytes() == b"".join(want_words)
    assert lens.tolist() == [len(w) for w in want_words]
    assert counts.tolist() == want_counts.tolist()


@pytest.mark.parametrize("low_bits", [False, True])
@pytest.mark.parametrize("top", [3, 70_000, 1 << 33])
def test_key_order_is_lexsort(top, low_bits):
    """``longwords.key_order`` (quicksort of lo, one argsort of its tied runs by run and the
    top bits of hi, radix sorts of the counts in 16-bit digits) orders rows as
    ``np.lexsort((hi, lo, -counts))`` does, for counts of one, two and more 16-bit digits,
    with many equal ``lo``, and ``hi`` that differ in their top or in their lowest bits only
    (the argsort cannot tell those apart: ``lexsort`` then)."""
    import longwords
    rng = np.random.default_rng(top % 97)
    for n in (0, 1, 7, 5000):
        counts = rng.integers(0, top, n)
        lo = rng.integers(0, 40, n).astype(np.uint64) << np.uint64(58)
        shift = 0 if low_bits else 63 - int(rng.integers(0, 3))
        hi = rng.integers(0, 5, n).astype(np.uint64) << np.uint64(shift)
        want, got = np.lexsort((hi, lo, -counts)), longwords.key_order(counts, lo, hi)
        assert sorted(got.tolist()) == list(range(n))
        for a in (counts, lo, hi):
            assert a.take(got).tolist() == a.take(want).tolist()


@pytest.mark.parametrize("tie_keys", [0, 1, 4])
def test_ranked_arrays_order_long_words_sharing_prefixes(monkeypatch, tie_keys):
    """Long words sharing 15-70-byte prefixes, with NUL and 0xff bytes after them and equal
    counts: ``ranked_arrays`` is Python's order by (-count, bytes) whether the tied rows are
    ordered by ``sorted`` alone (0 extra keys) or by the 8-byte keys first."""
    import longwords
    monkeypatch.setattr(longwords, "TIE_KEYS", tie_keys)
    rng = np.random.default_rng(11)
    stems = [b"p" * k for k in (15, 16, 22, 23, 30, 31, 46, 47, 70)]
    words = set()
    for _ in range(4000):
        stem = stems[rng.integers(len(stems))]
        words.add(stem + bytes(rng.choice([0, 1, 97, 255], rng.integers(0, 12)).astype(np.uint8)))
    words = sorted(w for w in words if w.split() == [w])
    counts = rng.integers(1, 4, len(words))
    table = mr.key_table(*mr.words_to_keys(words, counts))
    got, lens, got_counts, _, _ = mr.ranked_arrays(mr.unpack_table(mr.pack_table(table)))
    want = sorted(zip(words, counts.tolist()), key=lambda wc: (-wc[1], wc[0]))
    assert got.tobytes() == b"".join(w for w, _ in want)
    assert lens.tolist() == [len(w) for w, _ in want]
    assert got_counts.tolist() == [c for _, c in want]


@pytest.mark.parametrize("reducer", ["numpy", "kernel"])
@pytest.mark.parametrize("collide", ["none", "all", "by_length", "top_bits"])
def test_long_words_exact_under_hash_collisions(tmp_path, monkeypatch, collide, reducer):
    """Long words are grouped by a 64-bit hash and checked byte for byte: with every hash
    made equal (or equal for all words of one length), the numpy reducers fall back to a
    ``Counter`` of bytes and the output is still exact; with the real hash, no fallback; with
    hashes that differ in their low 24 bits only (the packed sort of ``hash_runs`` sees one
    run), they are grouped again by the whole hashes, with no fallback either. The C reducer
    (``reduce_run``) compares the bytes of words whose hashes are equal: exact, no fallback."""
    import longwords
    if reducer == "numpy":
        monkeypatch.setattr(wordcount, "REDUCE_RUN", None)
    elif wordcount.REDUCE_RUN is None:
        pytest.skip("the C kernel is not built")
    real = longwords.hash_chunks
    fallbacks = []
    if collide != "none":
        def fake(values, lens):
            h = real(values, lens)
            if collide == "top_bits":
                return h >> np.uint64(40)
            return h * np.uint64(0) if collide == "all" else lens.astype(np.uint64)
        monkeypatch.setattr(longwords, "hash_chunks", fake)
        arrays = mr._compiled_arrays

        def faked(data, compiled, reducers):         # the C kernel hashes its long words itself
            (*keys, long), bounds = arrays(data, compiled, reducers)
            return (*keys, long._replace(hashes=fake(long.chunks, long.lens))), bounds
        monkeypatch.setattr(mr, "_compiled_arrays", faked)
    counter = longwords.from_dict

    def counted(words):
        fallbacks.append(len(words))
        return counter(words)
    monkeypatch.setattr(longwords, "from_dict", counted)
    data = real_shapes(seed=7, words=20_000)
    h5 = ingest(tmp_path, data)
    pipeline(h5, str(tmp_path / "out"), 3, 2, monkeypatch)
    assert (tmp_path / "out" / "wordcount.tsv").read_bytes() == ref_tsv(data)
    assert (len(fallbacks) > 0) == (reducer == "numpy" and collide in ("all", "by_length"))


def pipeline(h5: str, out: str, reducers: int, mergers: int, monkeypatch) -> dict:
    """wordcount.json's tasks as functions, in order."""
    from mpitiny.io.splits import open_splits
    monkeypatch.setenv("MPITINY_RUN_DIR", out + "-run")
    maps = {f"map[{i}]": wordcount.map_split(h5, i, reducers) for i in range(len(open_splits(h5)))}
    reds = {f"reduce[{r}]": wordcount.reduce_sorted(out, {k: v[r] for k, v in maps.items()}, r,
                                                    mergers) for r in range(reducers)}
    plan = wordcount.plan(out, reds, mergers)
    merged = {f"merge[{m}]": wordcount.merge(dict(reds, plan=plan), m) for m in reversed(range(mergers))}
    return wordcount.commit(out, dict(reds, plan=plan, **merged))


def ingest(tmp_path, data: bytes, chunk: str = "64KiB") -> str:
    (tmp_path / "in.txt").write_bytes(data)
    subprocess.run([sys.executable, "-m", "mpitiny", "ingest", "in.txt", "-o", "data.h5",
                    "--chunk", chunk], cwd=tmp_path, check=True, capture_output=True)
    return str(tmp_path / "data.h5")


@pytest.mark.parametrize("reducers,mergers", [(1, 1), (3, 2), (5, 7)])
def test_sorted_runs_and_parallel_merge_are_exact(tmp_path, monkeypatch, reducers, mergers):
    data = real_shapes()
    h5 = ingest(tmp_path, data)
    out = str(tmp_path / "out")
    res = pipeline(h5, out, reducers, mergers, monkeypatch)
    assert (tmp_path / "out" / "wordcount.tsv").read_bytes() == ref_tsv(data)
    ref = sorted(Counter(data.split()).items(), key=lambda kv: (-kv[1], kv[0]))
    assert wordcount.read_h5(out + "/wordcount.h5") == ref
    assert res["words"] == len(ref) and res["total"] == len(data.split())
    assert res["top"][:3] == [[w.decode("utf-8", "backslashreplace"), c] for w, c in ref[:3]]
    assert not [n for n in os.listdir(out) if n.startswith(".")]        # no temporary left
    assert not os.listdir(out + "-run/wordcount-runs")                   # runs removed


def test_parallel_merge_of_no_words(tmp_path, monkeypatch):
    h5 = ingest(tmp_path, b" \n\t\r\n  \n")
    pipeline(h5, str(tmp_path / "out"), 2, 3, monkeypatch)
    assert (tmp_path / "out" / "wordcount.tsv").read_bytes() == b""
    assert wordcount.read_h5(str(tmp_path / "out" / "wordcount.h5")) == []


@pytest.mark.mpi
@pytest.mark.parametrize("n", [1, 2, 4])
def test_wordcount_job_real_shapes_any_ranks(python_module, tmp_path, n):
    data = real_shapes(seed=n, words=80_000)
    h5 = ingest(tmp_path, data)
    out = tmp_path / "out"
    proc = python_module(n, "mpitiny", "run", str(JOBS / "wordcount.json"), "--param",
                         f"input={h5}", "--param", f"output={out}", "--out", str(out) + "-run",
                         env={"PYTHONPATH": str(JOBS)}, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (out / "wordcount.tsv").read_bytes() == ref_tsv(data)


GREP_PATTERNS = [r"\bqu[a-z]*e\b", r"error|warning", r"\b(err(or)?|warn(ing)?)\b", r"(?i)ERROR",
                 r"^abc", r"abc$", r"(?m)^ -- ", r"(?<=x)error", r"err\s*or", r"a\nb",
                 r"caf\xc3\xa9", r"(?i:warn)ing", r"(warn|)ing"]


def grep_ref(data: bytes, pattern: str) -> tuple:
    search = re.compile(pattern.encode("utf-8", "surrogateescape")).search
    offsets, lines, pos = [], [], 0
    parts = data.split(b"\n")
    if parts and parts[-1] == b"":
        parts.pop()
    for line in parts:
        if search(line):
            offsets.append(pos)
            lines.append(line)
        pos += len(line) + 1
    return offsets, lines


@pytest.mark.parametrize("pattern", GREP_PATTERNS)
def test_grep_prefilter_is_exact(pattern):
    data = (b"abc error\r\nxerror warning\nquite queue quiche\n -- maint\nerr  or\n"
            b"a\nb abc\nWARNING ERROR\nwarnings\ncaf\xc3\xa9 \x00\xff\n\nerrorabc\nno\nerror") * 50
    for chunk in (data, data + b"\n", data[7:], b"", b"\n"):
        assert grep.grep_bytes(chunk, pattern) == grep_ref(chunk, pattern)


def test_required_literals():
    assert grep.required_literals(r"\bqu[a-z]*e\b") == [b"qu"]
    assert grep.required_literals(r"error|warning") == [b"error", b"warning"]
    assert grep.required_literals(r"fail(ed|ure)") == [b"fail"]
    assert grep.required_literals(r"(a|)bc") == [b"bc"]
    for none in (r"(?i)error", r"(?i:ab)", r"(a|)b", r"a\nb", r"[ab]c", r"x"):
        assert grep.required_literals(none) is None, none


@pytest.mark.parametrize("words", [0, 1, 20_000])
def test_ranked_tsv_is_tsv_lines_of_ranked_order(words):
    """The reducer's lines made from the words' chunks (``ranked_tsv``) are ``tsv_lines`` of
    ``ranked_order`` (words copied as bytes): the same bytes, lengths, counts and keys, for
    short, 8/15/16-byte and long words, NUL and 0xff bytes, counts of 1 to 7 digits."""
    edges = b" \xff\x00 \x00 12345678 123456789abcdef 123456789abcdefg x"
    data = real_shapes(seed=3, words=words) + edges * (words > 0)
    table = mr._table(*mr.count_split(data))
    table["counts"] = table["counts"].astype(np.int64) * 999_983      # counts of 6-7 digits
    blob, starts, lens, counts, lo, hi = mr.ranked_order(table)
    want, want_lens = mr.tsv_lines(blob, lens, counts, starts)
    got = mr.ranked_tsv(table)
    assert got[0].tobytes() == want.tobytes() == ref_tsv_of(table)
    for a, b in zip(got[1:], (want_lens, lens, counts, lo, hi)):
        assert a.tolist() == b.tolist()


def ref_tsv_of(table: dict) -> bytes:
    words, counts = mr.table_rows(table)
    rows = sorted(zip(words, counts.tolist()), key=lambda kv: (-kv[1], kv[0]))
    return b"".join(b"%s\t%d\n" % kv for kv in rows)
