"""jobs/ MapReduce jobs (wordcount, grep, distinct): exact outputs against plain Python.

One corpus of several input files with the edge cases (an empty file, one line longer than
several chunks, Unicode, CRLF, tabs and other whitespace, a file without a final newline,
NUL and non-breaking-space bytes inside words), ingested at 64 KiB chunks so that there are
many splits; the jobs must give the reference's bytes exactly, whatever the number of ranks.
"""
import json
import random
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
import mapreduce as mr  # noqa: E402
import wordcount  # noqa: E402

PATTERN = r"ab+c|caf\xc3\xa9|^\s*$|x{3}$"     # includes empty lines and a UTF-8 é as bytes


def edge_files() -> dict:
    uni = "caf\u00e9 na\u00efve\tcaf\u00e9 \u65e5\u672c \u65e5\u672c\u00a0x\r\n".encode()
    return {
        "a_empty.txt": b"",
        "b_unicode_crlf.txt": uni * 300 + b"\r\n\r\n\t\x0b\x0c \n",
        "c_huge_line.txt": b" ".join(b"w%d" % (i % 977) for i in range(40000)) + b" xxx\n",
        "d_no_final_newline.txt": b"abc abbc\n\nend of file without newline abc",
        "e_joined.txt": b"continues-the-last-line ab\x00c\n" + b"abc " * 30000 + b"\n",
        "f_empty2.txt": b"",
        "g_tail_no_newline.txt": b"last\tline  xxx",
    }


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("corpus")
    names = []
    for name, data in edge_files().items():
        (d / name).write_bytes(data)
        names.append(name)
    wordcount.generate(str(d / "zipf.txt"), megabytes=1.5, vocabulary=4000, seed=3)
    names.insert(3, "zipf.txt")
    subprocess.run([sys.executable, "-m", "mpitiny", "ingest", *names, "-o", "data.h5",
                    "--chunk", "64KiB"], cwd=d, check=True, capture_output=True)
    sources = [(n, (d / n).read_bytes()) for n in names]
    return d, sources


def logical(sources) -> bytes:
    return b"".join(data for _, data in sources)


def ref_wordcount(data: bytes) -> bytes:
    rows = sorted(Counter(data.split()).items(), key=lambda kv: (-kv[1], kv[0]))
    return b"".join(w + b"\t" + str(n).encode() + b"\n" for w, n in rows)


def ref_grep(sources, pattern: str) -> tuple:
    rx = re.compile(pattern.encode("utf-8", "surrogateescape"))
    data = logical(sources)
    starts, pos = [], 0
    for _name, d in sources:
        starts.append(pos)
        pos += len(d)
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    out, counts, pos = [], Counter(), 0
    for line in lines:
        if rx.search(line):
            k = max(i for i, s in enumerate(starts) if s <= pos)
            name = sources[k][0]
            out.append(b"%s\t%d\t%s\n" % (name.encode(), pos - starts[k], line))
            counts[name] += 1
        pos += len(line) + 1
    count_tsv = b"".join(b"%s\t%d\n" % (n.encode(), counts[n]) for n, _ in sources)
    return b"".join(out), count_tsv


def ref_distinct(data: bytes) -> bytes:
    return b"".join(w + b"\n" for w in sorted(set(data.split())))


def test_corpus_has_many_splits_and_a_multi_chunk_split(corpus):
    from mpitiny.io.splits import open_splits
    d, sources = corpus
    s = open_splits(str(d / "data.h5"))
    assert len(s) > 20
    assert int(s.lengths.max()) > 2 * 65536     # the huge line: one split over 3 chunks
    assert b"".join(s.read(i) for i in range(len(s))) == logical(sources)


# ----------------------------------------------------------------- kernels, no MPI
@pytest.mark.parametrize("kernel", ["hash", "counter", "numpy", "keys"])
def test_count_words_kernels_exact(corpus, kernel):
    data = (logical(corpus[1]) + b"\x00 \xa0 \x1c\x1d\x1e\x1f \x85 a a\x00 a\x00\x00 \x00a"
            b" 1234567 12345678 \xff\xff\xff\xff\xff\xff\xff"
            b" 123456789abcdef 123456789abcdefg 123456789abcde\x00 123456789abcdef"
            b" 12345678\x00 12345678\x00\x00 " + b"x" * 300 + b" \x00" * 20)
    words, counts = mr.count_words(np.frombuffer(data, np.uint8), kernel)
    assert dict(zip(words, counts.tolist())) == Counter(data.split())
    assert len(words) == len(set(words))
    short, short_counts, lo, hi, kc, long = mr.count_split(data, kernel)
    assert (mr._short_hi(short) != 0).all() and not (hi == mr._short_hi(lo)).any()
    lo, hi = np.concatenate([short, lo]), np.concatenate([mr._short_hi(short), hi])
    kc = np.concatenate([short_counts, kc])
    assert len(set(zip(lo.tolist(), hi.tolist()))) == len(lo)          # distinct keys
    long = long.to_dict()
    assert dict(zip(mr.keys_to_words(lo, hi), kc.tolist())) | long == Counter(data.split())
    assert all(len(w) > mr.KEY_BYTES for w in long) and b"x" * 300 in long


@pytest.mark.parametrize("data", [b"", b" \n\t ", b"a", b"  a", b"a  ", b"\x00", b"x" * 15,
                                  b"x" * 16, b"\x0b\x0ca\x0cb\x0b", b"\r\na b\r\n",
                                  b"\xff" * 15 + b" " + b"\x00" * 15 + b" \x00"])
def test_hash_kernel_edges(data):
    words, counts = mr.count_words(data, "hash")
    assert dict(zip(words, counts.tolist())) == Counter(data.split())
    lo, hi, c, long = mr.words_to_keys(words, counts)          # the other kernels' way to keys
    back = dict(zip(mr.keys_to_words(lo, hi), c.tolist())) | long
    assert back == Counter(data.split())


@pytest.mark.parametrize("block", [1, 7, 64, 1000])
def test_hash_kernel_by_blocks(corpus, block):
    """count_keys cuts data over two blocks at whitespace (never inside a word, also when a
    word is longer than a block) and sums the blocks' tables: the same counts as one pass."""
    data = (logical(corpus[1])[:20000] + b" " + b"y" * 3000 + b"\n\n  a" + b" \x00" * 50
            + b" 123456789abcdef" * 9 + b"z" * 16)
    lo, hi, counts, long = mr.count_keys(data, block=block)
    assert len(set(zip(lo.tolist(), hi.tolist()))) == len(lo)
    assert dict(zip(mr.keys_to_words(lo, hi), counts.tolist())) | long == Counter(data.split())


@pytest.mark.parametrize("sort_below", [0, mr.SORT_BELOW])
@pytest.mark.parametrize("seed", range(4))
def test_hash_kernel_short_words_and_zero_byte_blocks(seed, sort_below, monkeypatch):
    """Words of at most 8 bytes are counted on one uint64 in blocks with no zero byte, and as
    two-word keys in blocks with one; the same word counted both ways (and words that share
    their first 8 bytes: 8 vs 9-16 bytes, trailing zero bytes) still sums to one exact count."""
    rng = np.random.default_rng(seed)
    pool = [b"a", b"ab", b"abcdefg", b"abcdefgh", b"abcdefghi", b"abcdefgh\x00", b"abcdefg\x00",
            b"\x00", b"\x00\x00", b"a\x00", b"\xff" * 8, b"\xff" * 9, b"\x01" * 15, b"\x01" * 16,
            b"abcdefghijklmno", b"abcdefghijklmnop"]
    pool += [bytes(rng.integers(1, 256, rng.integers(1, 18), dtype=np.uint8))
             .translate(None, mr.WHITESPACE) or b"q" for _ in range(200)]
    pieces = []
    for _ in range(3000):
        word = pool[rng.integers(len(pool))]
        if rng.random() < 0.9:                        # most blocks hold no zero byte
            word = word.replace(b"\x00", b"") or b"z"
        pieces.append(word + [b" ", b"\n", b"\t", b"\r\n", b"  "][rng.integers(5)])
    data = b"".join(pieces)
    monkeypatch.setattr(mr, "SORT_BELOW", sort_below)    # hash tables, or sorts, for small groups
    for block in (50, 300, 1 << 20):
        lo, hi, counts, long = mr.count_keys(data, block=block)
        assert len(set(zip(lo.tolist(), hi.tolist()))) == len(lo)
        assert dict(zip(mr.keys_to_words(lo, hi), counts.tolist())) | long == Counter(data.split())


def test_hash_kernel_and_merge_with_colliding_slots(monkeypatch):
    """Every key in one slot (multiplier 0): one word wins the slot, the others are grouped
    by the sort, in the kernel and in the merge; still exact."""
    data = b"a b a c dd dd dd " + b"long-word-over-15-bytes " * 3 + b"b\n"
    monkeypatch.setattr(mr, "_HA", np.uint64(0))
    monkeypatch.setattr(mr, "_HB", np.uint64(0))
    monkeypatch.setattr(mr, "SORT_BELOW", 0)              # the hash table even for a few keys
    words, counts = mr.count_words(data, "hash")
    assert dict(zip(words, counts.tolist())) == Counter(data.split())
    t1 = mr.key_table(*mr.count_keys(data))
    t2 = mr.key_table(*mr.count_keys(b"a zz dd long-word-over-15-bytes"))
    got = mr.merge_tables([t1, t2])
    words, counts = mr.table_rows(got)
    assert dict(zip(words, counts.tolist())) == \
        Counter((data + b" a zz dd long-word-over-15-bytes").split())


def test_ranked_rows_order_is_count_then_bytes_for_every_kind_of_word():
    """``ranked_rows`` (numpy lexsort on byte-swapped keys) gives exactly Python's order by
    count descending, then word bytes: prefixes, zero bytes, bytes >= 0x80, words of 7, 8, 15
    and 16 bytes, long words that share their first 15 bytes, and ties across tables."""
    rng = np.random.default_rng(11)
    base = [b"a", b"ab", b"ab\x00", b"ab\x00\x00", b"\x00", b"\xff", b"\x80a", b"abcdefg",
            b"abcdefgh", b"abcdefghi", b"abcdefghijklmno", b"abcdefghijklmnop",
            b"abcdefghijklmno\x00", b"abcdefghijklmnoq", b"abcdefghijklmnopq" * 2,
            b"\x00" * 15, b"\x00" * 16, b"\x00" * 17, b"zz"]
    base += [bytes(rng.integers(0, 256, rng.integers(1, 20), dtype=np.uint8))
             .translate(None, mr.WHITESPACE) or b"x" for _ in range(300)]
    words = list(set(base))
    rng.shuffle(words)
    counts = rng.integers(1, 4, len(words))             # many ties
    counts[[i for i, w in enumerate(words) if w[:15] in (b"abcdefghijklmno", b"\x00" * 15)]] = 5
    expect = sorted(zip(words, counts.tolist()), key=lambda wc: (-wc[1], wc[0]))
    half = len(words) // 2
    tables = [mr.key_table(*mr.words_to_keys(words[:half], counts[:half])),
              mr.key_table(*mr.words_to_keys(words[half:], counts[half:]))]
    got_words, got_counts = mr.ranked_rows([mr.unpack_table(mr.pack_table(t)) for t in tables])
    assert list(zip(got_words, got_counts.tolist())) == expect
    assert mr.ranked_rows([mr.key_table(*mr.count_keys(b""))])[0] == []


def test_key_counter_grows_and_keeps_colliding_keys(monkeypatch):
    """A KeyCounter that may hold 1,000 rows of a kind sums them as they come (it sums its
    pending rows before the end), and with every key's hash equal (multipliers 0) orders the
    rows by their keys instead; the sums are exact either way."""
    rng = np.random.default_rng(3)
    words = ([b"w%d" % i for i in range(3000)] + [b"word-%d" % i for i in range(2000)]
             + [b"w\x00%d\x00" % i for i in range(100)] + [b"L" * 20])   # short, two-word, long
    expect: Counter = Counter()
    for zero in (False, True):
        if zero:
            monkeypatch.setattr(mr, "_HA", np.uint64(0))
            monkeypatch.setattr(mr, "_HB", np.uint64(0))
        kc = mr.KeyCounter(pending=1000)
        expect.clear()
        for _ in range(5):
            pick = [words[i] for i in rng.integers(0, len(words), 2000)]
            c = Counter(pick)
            expect.update(c)
            kc.add_tables([mr.key_table(*mr.words_to_keys(list(c), list(c.values())))])
        got_words, got_counts = mr.table_rows(kc.table())
        assert dict(zip(got_words, got_counts.tolist())) == expect
        assert len(got_words) == len(set(got_words))
        assert kc.short.sums and kc.two.sums


@pytest.mark.parametrize("reducers", [1, 2, 5])
def test_split_and_merge_tables_partition_every_word_once(corpus, reducers):
    """split_table puts each word (keyed or long) in exactly one partition, the same one for
    every split; merging partition r over the splits and concatenating the partitions gives
    the counts of the whole input."""
    datas = [logical(corpus[1])[i::3] + b" " + b"L" * 20 + b" " + b"M" * (17 + i)
             for i in range(3)]
    tables = [mr.split_table(*mr.count_keys(d), reducers) for d in datas]
    total: Counter = Counter()
    seen: dict = {}
    for r in range(reducers):
        words, counts = mr.table_rows(mr.merge_tables([t[r] for t in tables]))
        assert len(words) == len(set(words))
        for w in words:
            assert seen.setdefault(w, r) == r
        total.update(dict(zip(words, counts.tolist())))
    assert total == Counter(b" ".join(datas).split())
    if reducers > 1:
        assert len(set(seen.values())) == reducers          # every partition got words


def test_numpy_kernel_falls_back_on_collision(monkeypatch):
    real = mr.tokenize

    def colliding(arr):
        s, e, h1, h2 = real(arr)
        return s, e, np.zeros_like(h1), h2          # every token has the same h1
    monkeypatch.setattr(mr, "tokenize", colliding)
    data = b"a b a c\n"
    assert mr.count_words_numpy(np.frombuffer(data, np.uint8)) is None
    words, counts = mr.count_words(data, "numpy")
    assert dict(zip(words, counts.tolist())) == {b"a": 2, b"b": 1, b"c": 1}


@pytest.mark.parametrize("big", [6, 70_000, 1 << 33])
def test_table_pack_roundtrip(big):
    """pack_table / unpack_table: short words (lo only), two-word keys, counts (uint16, uint32,
    or int64 past 2**32), long words and the two numbers a table carries; an empty table too."""
    words = [b"a", b"bb", b"\x00\xff", b"\xff\x00", b"12345678", b"1234567\x00", b"x" * 15,
             b"y" * 16, b"long-word-over-15-bytes"]
    counts = [big, 2, 3, 4, 5, 6, 7, 8, big + 1]
    t = mr.key_table(*mr.words_to_keys(words, counts))
    assert sorted(mr.keys_to_words(t["short"], mr._short_hi(t["short"]))) == \
        sorted([b"12345678", b"\x00\xff", b"a", b"bb"])
    assert t["counts"].dtype == {6: np.uint16, 70_000: np.uint32, 1 << 33: np.int64}[big]
    back = mr.unpack_table(mr.pack_table(t, nbytes=12345, nparts=7))
    assert back["nbytes"] == 12345 and back["nparts"] == 7
    got_words, got_counts = mr.table_rows(back)
    assert dict(zip(got_words, got_counts.tolist())) == dict(zip(words, counts))
    empty = mr.unpack_table(mr.pack_table(mr.key_table([], [], [])))
    assert mr.table_rows(empty)[0] == [] and empty["nparts"] == 1


def test_pack_roundtrip():
    parts = [{"x": np.arange(5, dtype=np.int64), "b": b"hi\n"}, {"y": np.zeros((2, 3), "u1")},
             {"e": np.empty(0, np.uint64), "s": np.arange(10, dtype=np.uint32)[::2]}]
    back = mr.unpack(mr.pack(parts))
    assert back[0]["b"] == b"hi\n" and back[0]["x"].tolist() == list(range(5))
    assert back[1]["y"].shape == (2, 3)
    assert back[2]["e"].dtype == np.uint64 and len(back[2]["e"]) == 0
    assert back[2]["s"].tolist() == [0, 2, 4, 6, 8]
    assert mr.unpack(mr.pack(parts), which={1})[0] is None


def test_tree_tasks_shape():
    tasks, root = mr.tree_tasks("map", 10, 3, "m:f")
    assert [t["deps"] for t in tasks if t["id"].startswith("tree1.")][-1] == ["map[9]"]
    assert len([t for t in tasks if t["id"].startswith("tree1.")]) == 4
    assert root == "tree3.0" and tasks[-1]["deps"] == ["tree2.0", "tree2.1"]
    assert mr.tree_tasks("map", 1, 4, "m:f")[1] == "tree1.0"


@pytest.mark.parametrize("reducers", [1, 3])
@pytest.mark.parametrize("batch", [1 << 16, 3])
def test_wordcount_functions_without_mpi(corpus, tmp_path, reducers, batch, monkeypatch):
    from mpitiny.io.splits import open_splits
    monkeypatch.setattr(wordcount, "MERGE_ENTRIES", batch)   # 3: many running merges
    d, sources = corpus
    h5 = str(d / "data.h5")
    maps = {f"map[{i}]": wordcount.map_split(h5, i, reducers)
            for i in range(len(open_splits(h5)))}
    reds = {f"reduce[{r}]": wordcount.reduce_part(maps, r) for r in range(reducers)}
    res = wordcount.finish(str(tmp_path), reds)
    data = logical(sources)
    assert (tmp_path / "wordcount.tsv").read_bytes() == ref_wordcount(data)
    assert res["bytes"] == len(data) and res["total"] == len(data.split())
    assert wordcount.read_h5(str(tmp_path / "wordcount.h5")) == sorted(
        Counter(data.split()).items(), key=lambda kv: (-kv[1], kv[0]))


@pytest.mark.parametrize("group,shuffled", [(2, False), (5, True), (1000, False)])
def test_wordcount_batch_form_counts_as_one_split_at_a_time(corpus, tmp_path, group, shuffled):
    """``map_splits`` (the runtime calls it for a chunk of splits): splits read end to end,
    including a file without a final newline before the next file's first word, in order or
    not, with positional or keyword arguments; the first value holds the chunk's counts."""
    from mpitiny.io.splits import open_splits
    d, sources = corpus
    h5 = str(d / "data.h5")
    order = list(range(len(open_splits(h5))))
    if shuffled:
        random.Random(5).shuffle(order)
    maps = {}
    for k in range(0, len(order), group):
        ids = order[k:k + group]
        calls = [([h5, i, 3], {}) if j % 2 else ([h5], {"split": i, "reducers": 3})
                 for j, i in enumerate(ids)]
        values = wordcount.map_splits(calls)
        assert len(values) == len(ids) and all(len(v) == 3 for v in values)
        assert all(mr.unpack_table(p)["nbytes"] == 0 for v in values[1:] for p in v)
        maps.update({f"map[{i}]": v for i, v in zip(ids, values)})
    reds = {f"reduce[{r}]": wordcount.reduce_part(maps, r) for r in range(3)}
    res = wordcount.finish(str(tmp_path), reds)
    data = logical(sources)
    assert (tmp_path / "wordcount.tsv").read_bytes() == ref_wordcount(data)
    assert res["bytes"] == len(data)


def test_wordcount_batch_form_of_unlike_calls_runs_them_one_by_one(corpus):
    d, _ = corpus
    h5 = str(d / "data.h5")
    calls = [([h5, 3, 2], {}), ([h5, 4, 3], {}), ([h5, 5], {"reducers": 2, "kernel": "numpy"})]
    assert wordcount.map_splits(calls) == [wordcount.map_split(*a, **k) for a, k in calls]


# ----------------------------------------------------------------- the jobs under MPI
def run_job(python_module, n, dag, corpus, out, *params, timeout=120):
    d, _ = corpus
    proc = python_module(n, "mpitiny", "run", str(dag), "--param", f"input={d / 'data.h5'}",
                         "--param", f"output={out}", *params, "--out", str(out) + "-run",
                         env={"PYTHONPATH": str(JOBS)}, timeout=timeout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads((Path(str(out) + "-run") / "summary.json").read_text())


@pytest.mark.mpi
@pytest.mark.parametrize("n", [1, 2, 4, 8])
def test_wordcount_job_any_ranks(python_module, corpus, tmp_path, n):
    out = tmp_path / "out"
    run_job(python_module, n, JOBS / "wordcount.json", corpus, out,
            "--param", f"reducers={3 if n < 8 else 1}")
    assert (out / "wordcount.tsv").read_bytes() == ref_wordcount(logical(corpus[1]))


@pytest.mark.mpi
@pytest.mark.parametrize("n", [1, 2, 4, 8])
def test_grep_job_any_ranks(python_module, corpus, tmp_path, n):
    out = tmp_path / "out"
    run_job(python_module, n, JOBS / "grep.json", corpus, out, "--param", f"pattern={PATTERN}")
    lines, counts = ref_grep(corpus[1], PATTERN)
    assert lines.count(b"\n") > 100
    assert (out / "grep.tsv").read_bytes() == lines
    assert (out / "grep-counts.tsv").read_bytes() == counts


@pytest.mark.mpi
@pytest.mark.parametrize("n", [1, 2, 4, 8])
def test_distinct_job_any_ranks(python_module, corpus, tmp_path, n):
    out = tmp_path / "out"
    run_job(python_module, n, JOBS / "distinct.json", corpus, out)
    assert (out / "distinct.txt").read_bytes() == ref_distinct(logical(corpus[1]))


@pytest.mark.mpi
def test_aggregation_tree_variants(python_module, corpus, tmp_path):
    """The generated tree dag.json (plain tasks with literal deps) gives the same outputs."""
    d, sources = corpus
    h5 = str(d / "data.h5")
    one_var = json.loads((JOBS / "grep.json").read_text())     # literal deps: one map per split
    one_var["tasks"][0].update(args=["{input}", "{split}", "{pattern}", "{output}"],
                               foreach={"split": "{input}"})
    (tmp_path / "grep.json").write_text(json.dumps(one_var))
    for job, fn, extra in [("wordcount", "wordcount:reduce_part",
                            ["--finish-fn", "wordcount:finish", "-p", "reducers=1"]),
                           ("grep", "grep:merge",
                            ["--finish-fn", "grep:finish", "-p", f"pattern={PATTERN}"])]:
        dag = tmp_path / f"{job}-tree.json"
        source = tmp_path / "grep.json" if job == "grep" else JOBS / f"{job}.json"
        subprocess.run([sys.executable, str(JOBS / "mapreduce.py"), "tree", str(source),
                        "--input", h5, "--fn", fn, "--fanin", "4", *extra, "-o", str(dag)],
                       check=True, capture_output=True, env={"PYTHONPATH": str(JOBS), "PATH": ""})
        run_job(python_module, 2, dag, corpus, tmp_path / job)
    assert (tmp_path / "wordcount" / "wordcount.tsv").read_bytes() == ref_wordcount(logical(sources))
    assert (tmp_path / "grep" / "grep.tsv").read_bytes() == ref_grep(sources, PATTERN)[0]


@pytest.mark.mpi
@pytest.mark.parametrize("kernel", ["counter", "numpy", "keys"])
def test_wordcount_other_kernels_job(python_module, corpus, tmp_path, kernel):
    out = tmp_path / "out"
    run_job(python_module, 2, JOBS / "wordcount.json", corpus, out, "--param", f"kernel={kernel}")
    assert (out / "wordcount.tsv").read_bytes() == ref_wordcount(logical(corpus[1]))
