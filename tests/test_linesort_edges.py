"""linesort's splitters (issue 18): equal lines on both sides of a splitter, the maps' sample
points' balance, and the line shapes of real text, byte for byte against ``sorted`` in one
process.

A splitter is a line and a run number (a map's: split * pieces + piece, in input order), so
that a line making up a fifth of the input (the empty line of real logs) can be cut between
reducers; a reducer's byte range in a map's sorted run (``partition_bounds``, a binary search
on the run's bytes: ``cut_run``) must hold exactly the lines ``x`` with
``bisect_right(splitters, (x, number)) == r``, which
``test_partition_bounds_are_bisect_on_line_and_split`` checks on lines sharing 16-70-byte
prefixes, NUL and 0xff bytes, splitters cut inside lines (any bytes are a splitter) and at run
numbers next to the run's; a split's pieces (one map each) are whole lines in order. The jobs
run on files of empty lines, CRLF, NUL bytes, a last line without a newline and a line longer
than a split, in process (reducers out of order, 1 and 3 pieces per split) and under MPI on
1, 2 and 4 ranks (1-3 pieces; each launch bounded by the harness's timeout).
"""
import bisect
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
JOBS = ROOT / "jobs"
sys.path.insert(0, str(JOBS))
import linesort  # noqa: E402


def _lines(rng, count: int) -> list:
    alphabet = np.frombuffer(b"\x00\x01a b\xff\r", np.uint8)
    pad = b" " * int(rng.integers(0, 70))
    return [pad[:int(rng.integers(0, len(pad) + 1))]
            + alphabet[rng.integers(0, len(alphabet), int(rng.integers(0, 30)))].tobytes()
            for _ in range(count)]


def _splitters(rng, lines: list, split: int) -> list:
    picked = [(lines[i], split + int(rng.integers(-2, 3)))
              for i in rng.integers(0, len(lines), int(rng.integers(1, 9)))]
    cut = [(x[:int(rng.integers(0, len(x) + 1))], s) if rng.random() < 0.3 else (x, s)
           for x, s in picked]
    return sorted(cut + [(b" " * 20 + b"a" * int(rng.integers(0, 40)), int(rng.integers(0, 9)))])


def _run(lines: list) -> bytes:
    return b"".join(x + b"\n" for x in sorted(lines))


@pytest.mark.parametrize("seed", range(4))
def test_partition_bounds_are_bisect_on_line_and_split(seed):
    rng = np.random.default_rng(seed)
    for _ in range(60):
        lines = _lines(rng, int(rng.integers(1, 300)))
        split = int(rng.integers(0, 8))
        splitters = _splitters(rng, lines, split)
        run = _run(lines)
        want = np.bincount([bisect.bisect_right(splitters, (x, split)) for x in sorted(lines)],
                           minlength=len(splitters) + 1)
        got, at = [], 0
        for r in range(len(splitters) + 1):
            lo, hi = linesort.partition_bounds(run, split, splitters, r)
            assert lo == at and run[lo - 1:lo] in (b"", b"\n")
            got.append(run[lo:hi].count(b"\n"))
            at = hi
        assert at == len(run) and got == want.tolist()


def test_cut_run_edges():
    run = _run([b"", b"", b"a", b"a", b"b\x00", b"\xff"])
    assert [linesort.cut_run(run, x, False) for x in (b"", b"a", b"b", b"\xff\xff")] == [0, 2, 6, 11]
    assert [linesort.cut_run(run, x, True) for x in (b"", b"a", b"b", b"\xff\xff")] == [2, 6, 6, 11]
    assert linesort.cut_run(b"", b"x", True) == 0


@pytest.mark.parametrize("pieces", [1, 2, 3, 7])
def test_pieces_are_whole_lines_in_order(pieces):
    """A split's pieces (a map each): whole lines, in order, covering the split, a line longer
    than a piece included (its piece is the one it starts in; the next may be empty)."""
    rng = np.random.default_rng(pieces)
    for _ in range(30):
        data = b"".join(x + b"\n" for x in _lines(rng, int(rng.integers(0, 60))))
        data += b"z" * int(rng.integers(0, 3000)) + b"\n" if rng.random() < 0.3 else b""
        raw = np.frombuffer(data, np.uint8)
        bounds = [linesort.piece_bounds(raw, k, pieces) for k in range(pieces)]
        assert bounds[0][0] == 0 and bounds[-1][1] == len(raw)
        assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
        assert all(lo <= hi and (lo == 0 or data[lo - 1:lo] == b"\n") for lo, hi in bounds)
    with pytest.raises(ValueError, match="piece 2 of 2"):
        linesort.piece_bounds(raw, 2, 2)


FILES = {
    "a_empty_lines.txt": b"\n" * 60000 + b"x\n" * 1000 + b"\n" * 40000,
    "b_zeros.txt": b"0\n" * 50000 + b"\r\n" * 14000 + b"0\r\n" * 6000,
    "c_empty.txt": b"",
    "d_nul.txt": b"\x00\n\x00\x00\na\x00b\n\x00\xff\n" * 4000,
    "e_long.txt": b"y" * 150_000 + b"\n" + b"y" * 149_999 + b"z\n",
    "f_no_newline.txt": b"last line without a newline",
    "g_joined.txt": b" runs into this file's first line\n" + b"tail\n" * 10,
}


def ingest_files(d: Path, files: dict) -> Path:
    """``files`` (name -> bytes) written into ``d`` and ingested there at 64 KiB chunks, in
    that order: the HDF5 file's path."""
    for name, data in files.items():
        (d / name).write_bytes(data)
    subprocess.run([sys.executable, "-m", "mpitiny", "ingest", *files, "-o", "data.h5",
                    "--chunk", "64KiB"], cwd=d, check=True, capture_output=True, timeout=120)
    return d / "data.h5"


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return ingest_files(tmp_path_factory.mktemp("shapes"), FILES)


def _reference() -> bytes:
    lines = b"".join(FILES.values()).split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return b"".join(x + b"\n" for x in sorted(lines))


def test_sample_points_cut_runs_of_equal_lines(shapes, tmp_path, monkeypatch):
    """Two thirds of the lines are empty or "0": the splitters are among them, in different
    splits, and no partition takes more than half of the lines; the points' weights add up
    to each split's cost."""
    from mpitiny.io.splits import open_splits
    monkeypatch.delenv("MPITINY_RUN_DIR", raising=False)
    maps = [linesort.map_split(str(shapes), i, str(tmp_path), samples=64)
            for i in range(len(open_splits(str(shapes))))]
    for m in maps:
        assert sum(w for _, w in m["sample"]) == m["bytes"] + linesort.LINE_BYTES * m["lines"]
        assert len(m["sample"]) <= 64
    splitters = linesort.choose_splitters(maps, 6)
    assert splitters == sorted(splitters) and len(splitters) == 5
    assert sum(x == b"" for x, _ in splitters) >= 2
    counts = []
    for r in range(6):
        counts.append(0)
        for m in maps:
            run = Path(m["file"]).read_bytes()
            lo, hi = linesort.partition_bounds(run, m["run"], splitters, r)
            counts[-1] += run[lo:hi].count(b"\n")
    assert max(counts) < 0.5 * sum(counts) and sum(counts) == sum(m["lines"] for m in maps)


@pytest.mark.parametrize("pieces", [1, 3])
def test_line_shapes_in_process(shapes, tmp_path, monkeypatch, pieces):
    from mpitiny.io.splits import open_splits
    monkeypatch.delenv("MPITINY_RUN_DIR", raising=False)
    out = str(tmp_path / "out")
    maps = {f"map[{i},{k}]": linesort.map_split(str(shapes), i, out, 50, k, pieces)
            for i in range(len(open_splits(str(shapes)))) for k in range(pieces)}
    reduces = {f"reduce[{r}]": linesort.reduce_part(r, 5, out, maps) for r in (3, 0, 4, 2, 1)}
    linesort.validate(out, {**maps, **reduces})
    assert Path(out, "sorted.txt").read_bytes() == _reference()


@pytest.mark.mpi
@pytest.mark.parametrize("n,partitions,pieces", [(1, 3, 1), (2, 8, 2), (4, 5, 3)])
def test_line_shapes_job(python_module, shapes, tmp_path, n, partitions, pieces):
    out = tmp_path / "out"
    proc = python_module(n, "mpitiny", "run", str(JOBS / "linesort.json"), "--param",
                         f"input={shapes}", "--param", f"output={out}", "--param",
                         f"partitions={partitions}", "--param", f"pieces={pieces}",
                         "--out", str(tmp_path / "run"),
                         env={"PYTHONPATH": str(JOBS)}, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (out / "sorted.txt").read_bytes() == _reference()
    assert not [p for p in os.listdir(out) if p.startswith(".")]


def test_read_split_keeps_the_last_split_per_thread(shapes):
    """The next piece of the split a thread read last takes it from the thread's buffer (no
    read: the bytes handed out stay the same); another split, or another thread, reads."""
    import threading

    import splitpieces
    from mpitiny.io.splits import bytes_read, open_splits
    s = open_splits(str(shapes))
    want = [s.read(i) for i in range(len(s))]
    last = None
    for i in [1, 0, 0, 2, 1, 1, len(s) - 1, 0]:
        before = bytes_read()
        buf, n = splitpieces.read_split(str(shapes), i)
        assert buf[:n].tobytes() == want[i]
        assert bytes_read() - before == (0 if i == last else n)
        held, m = splitpieces.read_split(str(shapes), i)             # the next piece
        assert held is buf and m == n and bytes_read() - before == (0 if i == last else n)
        last = i
    got = []
    other = threading.Thread(target=lambda: got.append(splitpieces.read_split(str(shapes), 0)))
    other.start()
    other.join()
    assert got[0][0] is not buf and got[0][0][:got[0][1]].tobytes() == want[0]
