"""grep (parallel writes), distinct (sorted runs) and linesort on text with the hard cases:
many distinct keys, long tokens and long lines, UTF-8, CRLF, binary bytes, NUL bytes, a file
without a final newline, empty files, a pattern with no match, more writers than parts.

Every job's output is compared byte for byte with a one-process reference, under MPI at 1, 2
and 4 ranks (each launch bounded by the harness's timeout), and in process (no MPI) for the
task functions. ``test_bench_peer_timeout_leaves_no_process`` reproduces the cause of the
"multilingual grep hang" of issue 18 (a Dask peer timed out, its forked workers left running).
"""
import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
JOBS = ROOT / "jobs"
sys.path.insert(0, str(JOBS))
sys.path.insert(0, str(ROOT / "bench"))
import grep  # noqa: E402
import linesort  # noqa: E402

PATTERN = r"(файл|Datei|fichier)|ab+c|\bx{3}$"


def text_files() -> dict:
    rng = random.Random(11)
    alphabet = [bytes([b]) for b in range(256) if b not in b" \t\n\r\x0b\x0c"]
    words = [b"".join(rng.choice(alphabet) for _ in range(rng.choice([1, 3, 8, 15, 16, 17, 31, 40, 300])))
             for _ in range(20000)]
    lines = [b" ".join(rng.choice(words) for _ in range(rng.randint(0, 12))) for _ in range(9000)]
    uni = "файл Datei fichier caf\u00e9 \u65e5\u672c\u8a9e \u0645\u0644\u0641\r\n".encode()
    return {
        "a.txt": b"\n".join(lines) + b"\n",
        "b_empty.txt": b"",
        "c_unicode_crlf.txt": uni * 400 + b"abc\r\n\r\n",
        "d_long_line.txt": b" ".join(b"w%d" % i for i in range(60000)) + b" xxx\n",
        "e_no_newline.txt": b"abbbc tail without newline xxx",
        "f_joined.txt": b" continues\x00 the line\nzz\nzz\nzz\n" + b"dup line\n" * 500,
    }


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("text")
    files = text_files()
    for name, data in files.items():
        (d / name).write_bytes(data)
    subprocess.run([sys.executable, "-m", "mpitiny", "ingest", *files, "-o", "data.h5",
                    "--chunk", "64KiB"], cwd=d, check=True, capture_output=True, timeout=120)
    return d, list(files.items())


def logical(sources) -> bytes:
    return b"".join(data for _, data in sources)


def lines_of(data: bytes) -> list:
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return lines


def ref_grep(sources, pattern: str) -> tuple:
    import re
    rx = re.compile(pattern.encode())
    starts, pos = [], 0
    for _, data in sources:
        starts.append(pos)
        pos += len(data)
    out, counts, pos = [], Counter(), 0
    for line in lines_of(logical(sources)):
        if rx.search(line):
            k = max(i for i, s in enumerate(starts) if s <= pos)
            out.append(b"%s\t%d\t%s\n" % (sources[k][0].encode(), pos - starts[k], line))
            counts[sources[k][0]] += 1
        pos += len(line) + 1
    return b"".join(out), b"".join(b"%s\t%d\n" % (n.encode(), counts[n]) for n, _ in sources)


def run_job(python_module, n, job, corpus, out, *params, timeout=180):
    d, _ = corpus
    proc = python_module(n, "mpitiny", "run", str(JOBS / f"{job}.json"), "--param",
                         f"input={d / 'data.h5'}", "--param", f"output={out}", *params,
                         "--out", str(out) + "-run", env={"PYTHONPATH": str(JOBS)}, timeout=timeout)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_corpus_is_hard_enough(corpus):
    data = logical(corpus[1])
    words = set(data.split())
    assert len(words) > 15000 and max(map(len, words)) > 200
    assert any(len(w) > 15 for w in words) and b"\x00" in data and b"\r\n" in data


# ------------------------------------------------------------------------------ grep
@pytest.mark.mpi
@pytest.mark.parametrize("n", [1, 2, 4])
def test_grep_job(python_module, corpus, tmp_path, n):
    out = tmp_path / "out"
    run_job(python_module, n, "grep", corpus, out, "--param", f"pattern={PATTERN}")
    lines, counts = ref_grep(corpus[1], PATTERN)
    assert lines.count(b"\n") > 400
    assert (out / "grep.tsv").read_bytes() == lines
    assert (out / "grep-counts.tsv").read_bytes() == counts
    assert not [p for p in out.iterdir() if p.name.startswith(".")]      # no temporaries left


@pytest.mark.mpi
@pytest.mark.parametrize("pattern,writers", [("no such text anywhere", 3), ("zz|dup", 500)])
def test_grep_job_no_match_and_more_writers_than_parts(python_module, corpus, tmp_path, pattern,
                                                       writers):
    check_grep(python_module, corpus, tmp_path / "out", pattern, f"writers={writers}")


@pytest.mark.mpi
@pytest.mark.parametrize("pieces", [1, 5])
def test_grep_job_pieces(python_module, corpus, tmp_path, pieces):
    check_grep(python_module, corpus, tmp_path / "out", PATTERN, f"pieces={pieces}")


def check_grep(python_module, corpus, out, pattern: str, param: str) -> None:
    """grep.json on 2 ranks with ``pattern`` and one more ``--param``: its outputs are
    ``ref_grep``'s."""
    run_job(python_module, 2, "grep", corpus, out, "--param", f"pattern={pattern}",
            "--param", param)
    lines, counts = ref_grep(corpus[1], pattern)
    assert (out / "grep.tsv").read_bytes() == lines
    assert (out / "grep-counts.tsv").read_bytes() == counts


def grep_maps(h5: str, out: str, pieces: int, seed: int) -> dict:
    """map_part of every piece of every split, in a shuffled order (so that a thread's held
    split is sometimes the one asked for, mostly not)."""
    from mpitiny.io.splits import open_splits
    todo = [(i, k) for i in range(len(open_splits(h5))) for k in range(pieces)]
    random.Random(seed).shuffle(todo)
    return {f"map[{i * pieces + k}]": grep.map_part(h5, i, PATTERN, out, k, pieces)
            for i, k in todo}


@pytest.mark.parametrize("pieces", [1, 3])
def test_grep_tasks_in_process_and_h5(corpus, tmp_path, monkeypatch, pieces):
    """map_part (each piece, in any order) / plan / write / commit called directly, writers in
    any order; grep.h5 too."""
    import h5py
    import numpy as np
    monkeypatch.delenv("MPITINY_RUN_DIR", raising=False)
    d, sources = corpus
    h5, out = str(d / "data.h5"), str(tmp_path / "out")
    maps = grep_maps(h5, out, pieces, seed=pieces)
    plan = grep.plan(h5, out, maps, writers=5)
    for m in (3, 0, 4, 2, 1):
        grep.write({"plan": plan}, m)
    summary = grep.commit(out, {"plan": plan})
    lines, _ = ref_grep(sources, PATTERN)
    assert Path(out, "grep.tsv").read_bytes() == lines
    assert summary["matches"] == lines.count(b"\n")
    rows = lines.split(b"\n")[:-1]
    with h5py.File(Path(out, "grep.h5"), "r") as f:
        ends = f["line_ends"][()]
        text = f["lines"][()].tobytes()
        got = [text[a:b] for a, b in zip(np.r_[0, ends[:-1]].tolist(), ends.tolist())]
        assert got == [r.split(b"\t", 2)[2] for r in rows]
        assert f["offset"][()].tolist() == [int(r.split(b"\t", 2)[1]) for r in rows]
        names = [n.encode() for n, _ in sources]
        assert [names[i] for i in f["source"][()].tolist()] == [r.split(b"\t", 1)[0] for r in rows]


def test_grep_plan_refuses_missing_pieces(corpus, tmp_path, monkeypatch):
    """A tree dag.json built over the first ``splits`` map instances of a job with 2 pieces
    per split feeds plan half the pieces: an error naming the cause, not a shorter output."""
    monkeypatch.delenv("MPITINY_RUN_DIR", raising=False)
    d, _ = corpus
    h5, out = str(d / "data.h5"), str(tmp_path / "out")
    maps = grep_maps(h5, out, 2, seed=0)
    first = dict(sorted(maps.items(), key=lambda kv: (kv[1]["split"], kv[1]["piece"]))[:len(maps) // 2])
    with pytest.raises(ValueError, match="not every piece"):
        grep.plan(h5, out, first)
    with pytest.raises(ValueError, match="not every piece"):
        grep.finish(out, {"tree": list(first.values())})
    twice = {**maps, "extra": next(iter(maps.values()))}
    with pytest.raises(ValueError, match="pieces=1"):
        grep.plan(h5, out, twice)


# ------------------------------------------------------------------------------ distinct
@pytest.mark.mpi
@pytest.mark.parametrize("n,reducers,mergers", [(1, 1, 1), (2, 3, 5), (4, 8, 8)])
def test_distinct_job_many_keys(python_module, corpus, tmp_path, n, reducers, mergers):
    out = tmp_path / "out"
    run_job(python_module, n, "distinct", corpus, out, "--param", f"reducers={reducers}",
            "--param", f"mergers={mergers}")
    ref = b"".join(w + b"\n" for w in sorted(set(logical(corpus[1]).split())))
    assert (out / "distinct.txt").read_bytes() == ref
    assert task_value(Path(str(out) + "-run"), "commit")["distinct"] == ref.count(b"\n")


def task_value(run_dir: Path, task: str):
    for path in sorted((run_dir / "results").glob("rank-*.jsonl")):
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            if rec.get("id") == task:
                return rec["value"]
    raise AssertionError(f"no value of {task} in {run_dir}")


# ------------------------------------------------------------------------------ linesort
def ref_sorted(data: bytes) -> bytes:
    return b"".join(line + b"\n" for line in sorted(lines_of(data)))


@pytest.mark.mpi
@pytest.mark.parametrize("n,partitions", [(1, 1), (2, 5), (4, 8)])
def test_linesort_job(python_module, corpus, tmp_path, n, partitions):
    out = tmp_path / "out"
    run_job(python_module, n, "linesort", corpus, out, "--param", f"partitions={partitions}")
    assert (out / "sorted.txt").read_bytes() == ref_sorted(logical(corpus[1]))
    report = json.loads((out / "linesort.json").read_text())
    assert report["valid"] and report["lines"] == len(lines_of(logical(corpus[1])))


def test_linesort_tasks_in_process_with_a_stale_partial_output(corpus, tmp_path, monkeypatch):
    """Reducers in any order; a longer partial file from an earlier run is cut to size."""
    from mpitiny.io.splits import open_splits
    monkeypatch.delenv("MPITINY_RUN_DIR", raising=False)
    d, sources = corpus
    h5, out = str(d / "data.h5"), tmp_path / "out"
    out.mkdir()
    (out / linesort.PARTIAL).write_bytes(b"x" * (len(logical(sources)) + 1000))
    maps = {f"map[{i}]": linesort.map_split(h5, i, str(out), samples=50)
            for i in range(len(open_splits(h5)))}
    reduces = {f"reduce[{r}]": linesort.reduce_part(r, 6, str(out), maps) for r in (5, 2, 0, 4, 1, 3)}
    linesort.validate(str(out), {**maps, **reduces})
    assert (out / "sorted.txt").read_bytes() == ref_sorted(logical(sources))
    assert not (out / linesort.PARTIAL).exists()


def test_linesort_validate_catches_a_bad_order(corpus, tmp_path, monkeypatch):
    from mpitiny.io.splits import open_splits
    monkeypatch.delenv("MPITINY_RUN_DIR", raising=False)
    d, _ = corpus
    h5, out = str(d / "data.h5"), str(tmp_path / "out")
    maps = {f"map[{i}]": linesort.map_split(h5, i, out) for i in range(len(open_splits(h5)))}
    reduces = {f"reduce[{r}]": linesort.reduce_part(r, 3, out, maps) for r in range(3)}
    reduces["reduce[0]"]["last"] = b"\xff".hex()
    with pytest.raises(RuntimeError, match="begins before"):
        linesort.validate(out, {**maps, **reduces})
    reduces["reduce[0]"]["last"] = reduces["reduce[0]"]["first"]
    reduces["reduce[1]"]["offset"] += 1
    with pytest.raises(RuntimeError, match="part 1 is at byte"):
        linesort.validate(out, {**maps, **reduces})


# ------------------------------------------------------------------------------ the bench's peers
def test_bench_peer_timeout_leaves_no_process(tmp_path):
    """The cause of issue 18's "multilingual grep hang": bench/mapreduce_bench.py ran Dask
    with ``subprocess.run(timeout=240)``, which kills only the peer, not the worker processes
    it forked; the multilingual Dask wordcount ran into that timeout (4 min under load, taken
    for a hang of the grep that follows it) and left its workers running. A peer that forks
    a worker and sleeps: after the timeout, no process of it may remain."""
    import mapreduce_bench as mb
    pids = tmp_path / "pids"
    peer = tmp_path / "peer.py"
    peer.write_text("import os, sys, time\n"
                    "child = os.fork()\n"
                    "if child == 0:\n"
                    "    time.sleep(120); os._exit(0)\n"
                    f"open({str(pids)!r}, 'w').write(str(child))\n"
                    "time.sleep(120)\n")
    t0 = time.monotonic()
    got = mb.run_peer([sys.executable, str(peer)], timeout=3)
    assert got.get("timed_out_after") == 3
    assert time.monotonic() - t0 < 30
    child = int(pids.read_text())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(child):
        time.sleep(0.1)
    assert not _alive(child), "the peer's forked worker outlived the timeout"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False
    finally:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass


@pytest.mark.parametrize("others", [0, 3000])
def test_reducer_keeps_the_nul_word(others):
    """The 1-byte word b"\\x00" is a short key of value 0, which the reducer's hash table
    (``_SumTable``) uses for an empty slot: it was dropped by wordcount's and distinct's
    reducers (found by test_distinct_job_many_keys with 8 reducers)."""
    import numpy as np
    import mapreduce as mr
    words = [b"\x00", b"\x00\x00", b"\x00a", b"a"] + [b"w%d" % i for i in range(others)]
    data = b" ".join(words * 3) + b"\n"
    table = mr.split_parts(mr.count_split(np.frombuffer(data, np.uint8), "hash"), 1)[0]
    blob = mr.pack_table(table)
    summed = mr.KeyCounter().add_tables([mr.unpack_table(blob), mr.unpack_table(blob)]).table()
    got_words, got_counts = mr.table_rows(summed)
    assert dict(zip(got_words, got_counts.tolist())) == {w: 6 for w in set(words)}


def test_linesort_bounds_of_lines_sharing_long_prefixes():
    """Lines indented by 16 spaces and more (code) and splitters among them: the byte ranges
    put every line in partition ``bisect_right(splitters, (line, split))``, and they spread
    over the partitions."""
    import bisect
    import numpy as np
    rng = random.Random(9)
    lines = [b" " * rng.choice([0, 4, 16, 20, 24]) + bytes(rng.choice(b"\x00ab\xff")
                                                           for _ in range(rng.randint(0, 6)))
             for _ in range(5000)]
    splitters = sorted((x, rng.choice([0, 1])) for x in rng.sample(lines, 7))
    run = b"".join(x + b"\n" for x in sorted(lines))
    part = [bisect.bisect_right(splitters, (x, 1)) for x in sorted(lines)]
    got = [run[slice(*linesort.partition_bounds(run, 1, splitters, r))].count(b"\n")
           for r in range(8)]
    assert got == np.bincount(part, minlength=8).tolist()
    assert max(np.bincount(part)) < 0.6 * len(lines)


@pytest.mark.mpi
def test_distinct_state_job_still_exact(python_module, corpus, tmp_path):
    """jobs/distinct_state.json: the state-store version distinct.json replaced."""
    out = tmp_path / "out"
    run_job(python_module, 2, "distinct_state", corpus, out)
    ref = b"".join(w + b"\n" for w in sorted(set(logical(corpus[1]).split())))
    assert (out / "distinct.txt").read_bytes() == ref
