"""linesort's splitters (issue 18): equal lines on both sides of a splitter, the sample's
balance, and the line shapes of real text, byte for byte against ``sorted`` in one process.

A splitter is a line and its position (byte offset in the logical content), so that a line
making up a fifth of the input (the empty line of real logs) can be cut between reducers;
the maps' ``partition_cuts`` must put every line in partition ``bisect_right(splitters,
(line, position))``, which ``test_partition_cuts_are_bisect_on_line_and_position`` checks on
lines sharing 16-70-byte prefixes, NUL and 0xff bytes, splitters cut inside lines and at
positions next to theirs. The jobs run on files of empty lines, CRLF, NUL bytes, a last line
without a newline and a line longer than a split, in process (reducers out of order) and
under MPI on 1, 2 and 4 ranks (each launch bounded by the harness's timeout).
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
import mapreduce  # noqa: E402


def _lines(rng, count: int) -> list:
    alphabet = np.frombuffer(b"\x00\x01a b\xff\r", np.uint8)
    pad = b" " * int(rng.integers(0, 70))
    return [pad[:int(rng.integers(0, len(pad) + 1))]
            + alphabet[rng.integers(0, len(alphabet), int(rng.integers(0, 30)))].tobytes()
            for _ in range(count)]


def _splitters(rng, lines: list, positions: list) -> list:
    picked = [(lines[i], positions[i] + int(rng.integers(-2, 3)))
              for i in rng.integers(0, len(lines), int(rng.integers(1, 9)))]
    cut = [(x[:int(rng.integers(0, len(x) + 1))], p) if rng.random() < 0.3 else (x, p)
           for x, p in picked]
    return sorted(cut + [(b" " * 20 + b"a" * int(rng.integers(0, 40)), int(rng.integers(0, 999)))])


def _partitions(raw, starts, lens, positions, splitters) -> list:
    """The partition of each line from ``partition_cuts`` (lines in their input order)."""
    order = linesort.sort_order(raw, starts, lens)
    cuts = linesort.partition_cuts(raw, starts, lens, order, positions, splitters)
    part = np.empty(len(order), np.int64)
    for p, (a, b) in enumerate(zip([0] + cuts, cuts + [len(order)])):
        part[order[a:b]] = p
    return part.tolist()


@pytest.mark.parametrize("seed", range(4))
def test_partition_cuts_are_bisect_on_line_and_position(seed):
    rng = np.random.default_rng(seed)
    for _ in range(60):
        lines = _lines(rng, int(rng.integers(1, 300)))
        raw = np.frombuffer(b"".join(x + b"\n" for x in lines), np.uint8)
        starts, lens = linesort.line_spans(raw)
        positions = starts + int(rng.integers(0, 1000))
        splitters = _splitters(rng, lines, positions.tolist())
        assert _partitions(raw, starts, lens, positions, splitters) == [
            bisect.bisect_right(splitters, (x, p)) for x, p in zip(lines, positions.tolist())]


def test_a_splitter_given_as_a_line_alone_comes_before_equal_lines():
    raw = np.frombuffer(b"b\na\nb\nc\n", np.uint8)
    starts, lens = linesort.line_spans(raw)
    assert _partitions(raw, starts, lens, starts, [(b"b", -1)]) == [1, 0, 1, 1]
    assert linesort.parse_splitters(["62", ["62", 7]]) == [(b"b", -1), (b"b", 7)]


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


def test_sample_cuts_runs_of_equal_lines(shapes):
    """Two thirds of the lines are empty or "0": the splitters are among them, at different
    positions, and no partition takes more than half of the lines."""
    from mpitiny.io.splits import open_splits
    splitters = linesort.parse_splitters(linesort.sample(str(shapes), 6, samples=3000))
    assert splitters == sorted(splitters) and len(splitters) == 5
    assert sum(x == b"" for x, _ in splitters) >= 2
    s = open_splits(str(shapes))
    base = mapreduce.logical_starts(s)
    counts = np.zeros(6, np.int64)
    for i in range(len(s)):
        raw = linesort._lines_array(s.read_array(i))
        starts, lens = linesort.line_spans(raw)
        part = _partitions(raw, starts, lens, starts + base[i], splitters)
        counts += np.bincount(part, minlength=6)
    assert counts.max() < 0.5 * counts.sum()


def test_line_shapes_in_process(shapes, tmp_path, monkeypatch):
    from mpitiny.io.splits import open_splits
    monkeypatch.delenv("MPITINY_RUN_DIR", raising=False)
    out = str(tmp_path / "out")
    splitters = linesort.sample(str(shapes), 5, samples=2000)
    maps = {f"map[{i}]": linesort.map_split(str(shapes), i, 5, out, {"sample": splitters})
            for i in range(len(open_splits(str(shapes))))}
    reduces = {f"reduce[{r}]": linesort.reduce_part(r, out, maps) for r in (3, 0, 4, 2, 1)}
    linesort.validate(out, {**maps, **reduces})
    assert Path(out, "sorted.txt").read_bytes() == _reference()


@pytest.mark.mpi
@pytest.mark.parametrize("n,partitions", [(1, 3), (2, 8), (4, 5)])
def test_line_shapes_job(python_module, shapes, tmp_path, n, partitions):
    out = tmp_path / "out"
    proc = python_module(n, "mpitiny", "run", str(JOBS / "linesort.json"), "--param",
                         f"input={shapes}", "--param", f"output={out}", "--param",
                         f"partitions={partitions}", "--out", str(tmp_path / "run"),
                         env={"PYTHONPATH": str(JOBS)}, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (out / "sorted.txt").read_bytes() == _reference()
    assert not [p for p in os.listdir(out) if p.startswith(".")]
