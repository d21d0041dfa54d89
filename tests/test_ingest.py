"""``mpitiny ingest`` and the reading API (mpitiny.io.splits): round trips, layout, errors.

Every ingested file is checked the same way (``check_ingested``): the logical content (the
concatenation of the splits' valid bytes) equals the inputs concatenated; every split starts
on a chunk boundary, holds whole records only and is as full as it can be; a split covers more
than one chunk only when its first record needs it; the padding is zeros; ``verify`` passes.
"""
from __future__ import annotations

import os
import random
import shutil
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from mpirun import strip_mpi_banners
from mpitiny.cli import cli
from mpitiny.errors import BadInput
from mpitiny.io import h5format, ingestion, splits
from mpitiny.io.ingestion import ingest
from mpitiny.io.splits import Splits, open_splits, verify

KiB, MiB = 1 << 10, 1 << 20


# ----------------------------------------------------------------------------- inputs

def text_case(name: str, chunk: int, seed: int = 0) -> bytes:
    """Text inputs of a few times the chunk (at most a few MB) with the edge case ``name``."""
    rng = random.Random(f"{name}-{chunk}-{seed}")
    target = min(3 * chunk + chunk // 3, 3 * MiB)
    words = ["a", "bb", "tiny", "task", "über", "日本語", "😀x", "naïve", "z" * 40]

    def line(n_words: int) -> str:
        return " ".join(rng.choice(words) for _ in range(n_words))

    out: list = []
    size = 0

    def add(text: str) -> None:
        nonlocal size
        b = text.encode()
        out.append(b)
        size += len(b)

    if name == "long_lines":
        long = [chunk - 1, chunk, chunk + 1, 2 * chunk + 7, chunk // 2]
        if chunk > 4 * MiB:                      # keep the test data small
            long = [MiB + 3, 2 * MiB]
        for n in long:
            add(line(5) + "\n")
            add("L" * (n - 1) + "\n")           # a line of exactly n bytes
        while size < target:
            add(line(rng.randint(0, 30)) + "\n")
    elif name == "empty_lines":
        add("\n" * 1000)
        while size < target:
            add(line(rng.randint(1, 12)) + "\n" + "\n" * rng.randint(0, 5))
    elif name == "no_final_newline":
        while size < target:
            add(line(rng.randint(1, 20)) + "\n")
        add("the last line has no newline")
    elif name == "utf8":
        multi = ["é", "日本", "😀", "Ω", "ß", "中文字符", "𝄞"]
        while size < target:
            add("".join(rng.choice(multi) for _ in range(rng.randint(1, 400))) + "\n")
    elif name == "crlf":
        while size < target:
            add(line(rng.randint(0, 20)) + "\r\n")
    else:
        raise ValueError(name)
    return b"".join(out)


TEXT_CASES = ["long_lines", "empty_lines", "no_final_newline", "utf8", "crlf"]
CHUNKS = [64 * KiB, 1 * MiB, 64 * MiB]


def first_record(part: bytes, fmt: str, record: int) -> int:
    if fmt == "text":
        j = part.find(b"\n")
        return len(part) if j < 0 else j + 1
    return record if fmt == "records" else 1


def check_ingested(path, raw: bytes, chunk: int, fmt: str = "text", record: int = 0,
                   dataset: str = "/text", sources: list | None = None) -> Splits:
    s = Splits(str(path), dataset)         # not cached: this file may be rewritten later
    n = len(s)
    parts = [s.read(i) for i in range(n)]
    assert b"".join(parts) == raw
    assert s.total_bytes == len(raw) and s.chunk_bytes == chunk and s.format == fmt
    assert s.record_size == record
    shard_ends = {sh["first_split"] + sh["n_splits"] - 1 for sh in s.shards}
    with h5py.File(path, "r") as f:
        g = f[dataset]
        data = g["data"]
        assert data.dtype == np.uint8 and data.ndim == 1 and data.shape[0] % chunk == 0
        if not data.is_virtual:
            assert data.chunks == (chunk,) and data.compression is None
        assert g["splits"].shape == (n, 2) and g["splits"].dtype == np.int64
        assert g["checksums"].shape == (n,)
        for key in ("layout", "version", "format", "record_size", "chunk_bytes",
                    "total_bytes", "n_splits", "source_names", "source_sizes", "writers"):
            assert key in g.attrs, key
        assert g.attrs["layout"] == "mpitiny-splits" and g.attrs["version"] == 1
        assert g.attrs["n_splits"] == n and g.attrs["total_bytes"] == len(raw)
        if sources is not None:
            assert [x.decode() for x in g["sources"]["name"]] == [str(p) for p, _ in sources]
            assert list(g.attrs["source_names"]) == [str(p) for p, _ in sources]
            assert list(g.attrs["source_sizes"]) == [sz for _, sz in sources]
        table = g["splits"][()]
        crcs = g["checksums"][()]
        for i, part in enumerate(parts):
            off, length = table[i]
            span = s.span_bytes(i) // chunk
            assert off % chunk == 0 and length == len(part) > 0
            assert crcs[i] == zlib.crc32(part)
            assert len(part) <= span * chunk
            if i + 1 < n:
                assert table[i + 1][0] >= off + span * chunk
            first = first_record(part, fmt, record)
            if span > 1:                        # only a record longer than a chunk spans more
                assert first > (span - 1) * chunk, (i, first, span)
            if fmt == "text" and i + 1 < n:
                assert part.endswith(b"\n"), i
            if fmt == "records":
                assert len(part) % record == 0
            if fmt == "binary" and i + 1 < n:
                assert len(part) == chunk
            if i + 1 < n and i not in shard_ends:   # greedy: the next record did not fit
                nxt = first_record(parts[i + 1], fmt, record)
                assert len(part) + nxt > span * chunk, (i, len(part), nxt, span)
            if span * chunk - length <= 4 * MiB:  # padding is zeros
                assert not data[off + length:off + span * chunk].any()
    assert verify(str(path), dataset)["ok"]
    return s


def run_ingest(inputs, out, **kw):
    return ingest([str(p) for p in inputs], str(out), **kw)


# ----------------------------------------------------------------------- round trips

@pytest.mark.parametrize("chunk", CHUNKS, ids=["64KiB", "1MiB", "64MiB"])
@pytest.mark.parametrize("case", TEXT_CASES)
def test_text_round_trip(tmp_path, case, chunk):
    raw = text_case(case, chunk)
    src = tmp_path / "in.txt"
    src.write_bytes(raw)
    summary = run_ingest([src], tmp_path / "d.h5", chunk=chunk)
    assert summary["bytes"] == len(raw) and summary["ranks"] == 1
    s = check_ingested(tmp_path / "d.h5", raw, chunk, sources=[(src, len(raw))])
    if case == "utf8":
        for i in range(len(s)):
            s.read(i).decode("utf-8")         # never cut inside a character
    if case == "crlf":
        for i in range(len(s)):
            assert s.read(i).endswith(b"\r\n")
    if case == "long_lines" and chunk <= MiB:
        assert any(s.span_bytes(i) > chunk for i in range(len(s)))


@pytest.mark.parametrize("chunk", [64 * KiB, 100 * KiB, 1 * MiB])
@pytest.mark.parametrize("record", [1, 7, 1000, 65536, 100_000, 200_000])
def test_records_round_trip(tmp_path, chunk, record):
    nrec = max(3, (3 * chunk) // record + 2)
    raw = np.random.default_rng(record).integers(0, 256, nrec * record, dtype=np.uint8).tobytes()
    (tmp_path / "r.bin").write_bytes(raw)
    run_ingest([tmp_path / "r.bin"], tmp_path / "d.h5", chunk=chunk, fmt=f"records:{record}")
    s = check_ingested(tmp_path / "d.h5", raw, chunk, fmt="records", record=record)
    arr = s.read_array(0)
    assert arr.shape[1] == record and arr.tobytes() == s.read(0)
    per_split = (-(-record // chunk) * chunk) // record
    assert all(len(s.read(i)) == per_split * record for i in range(len(s) - 1))


@pytest.mark.parametrize("size", [0, 1, 64 * KiB - 1, 64 * KiB, 64 * KiB + 1, 300_000])
def test_binary_round_trip(tmp_path, size):
    raw = os.urandom(size)
    (tmp_path / "b.bin").write_bytes(raw)
    run_ingest([tmp_path / "b.bin"], tmp_path / "d.h5", chunk="64KiB", fmt="binary")
    s = check_ingested(tmp_path / "d.h5", raw, 64 * KiB, fmt="binary")
    assert len(s) == -(-size // (64 * KiB))


def test_many_files_and_a_directory_in_order(tmp_path):
    d = tmp_path / "dir"
    d.mkdir()
    (d / "b.txt").write_bytes(b"b1\nb2\n")
    (d / "a.txt").write_bytes(b"a1\na2")             # no final newline: joins the next file
    (d / "c.txt").write_bytes(b"")
    (d / "sub").mkdir()                              # not descended into
    (tmp_path / "first.txt").write_bytes(b"first\n")
    (tmp_path / "last.txt").write_bytes(b"x" * 70_000 + b"\nend\n")
    inputs = [tmp_path / "first.txt", d, tmp_path / "last.txt"]
    run_ingest(inputs, tmp_path / "d.h5", chunk="64KiB")
    order = [tmp_path / "first.txt", d / "a.txt", d / "b.txt", d / "c.txt",
             tmp_path / "last.txt"]
    raw = b"".join(p.read_bytes() for p in order)
    s = check_ingested(tmp_path / "d.h5", raw, 64 * KiB,
                       sources=[(p, p.stat().st_size) for p in order])
    assert [x["name"] for x in s.sources] == [str(p) for p in order]
    assert [x["offset"] for x in s.sources] == [0, 6, 11, 17, 17]


def test_empty_input_gives_zero_splits(tmp_path):
    (tmp_path / "e.txt").write_bytes(b"")
    summary = run_ingest([tmp_path / "e.txt"], tmp_path / "d.h5")
    assert summary["splits"] == 0
    s = Splits(str(tmp_path / "d.h5"))
    assert len(s) == 0 and s.total_bytes == 0
    with pytest.raises(BadInput, match="out of range"):
        s.read(0)
    assert verify(str(tmp_path / "d.h5"))["splits"] == 0


def test_other_dataset_and_overwrite(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"one\ntwo\n")
    run_ingest([tmp_path / "a.txt"], tmp_path / "d.h5", dataset="logs/day1")
    check_ingested(tmp_path / "d.h5", b"one\ntwo\n", 8 * MiB, dataset="/logs/day1")
    assert len(open_splits(f"{tmp_path / 'd.h5'}:/logs/day1")) == 1
    (tmp_path / "a.txt").write_bytes(b"three\n")
    run_ingest([tmp_path / "a.txt"], tmp_path / "d.h5", dataset="/logs/day1")
    assert open_splits(f"{tmp_path / 'd.h5'}:/logs/day1").read(0) == b"three\n"   # cache renewed
    assert sorted(os.listdir(tmp_path)) == ["a.txt", "d.h5"]      # no temporary left


# ---------------------------------------------------------------------- reading API

@pytest.fixture
def small(tmp_path):
    raw = text_case("long_lines", 64 * KiB)
    (tmp_path / "in.txt").write_bytes(raw)
    run_ingest([tmp_path / "in.txt"], tmp_path / "d.h5", chunk="64KiB")
    return tmp_path / "d.h5", raw


def test_open_splits_is_cached_and_reads_one_chunk_per_split(small):
    path, raw = small
    s = open_splits(str(path))
    assert open_splits(f"{path}:/text") is s
    assert open_splits(os.path.relpath(path)) is s
    multi = next(i for i in range(len(s)) if s.span_bytes(i) > s.chunk_bytes)
    single = next(i for i in range(len(s)) if s.span_bytes(i) == s.chunk_bytes)
    before = s.chunk_reads
    s.read(single)
    assert s.chunk_reads - before == 1
    before = s.chunk_reads
    s.read(multi)
    assert s.chunk_reads - before == s.span_bytes(multi) // s.chunk_bytes
    buf = bytearray(s.span_bytes(multi))
    n = s.read_into(multi, buf)
    assert bytes(buf[:n]) == s.read(multi)
    with pytest.raises(ValueError):
        s.read_into(multi, bytearray(10))
    assert splits.read_split(str(path), 0) == s.read(0)
    assert s.read_array(0).dtype == np.uint8 and s.read_array(0).tobytes() == s.read(0)
    for bad in (len(s), -1, True, "1", 1.0):
        with pytest.raises(BadInput) as err:
            s.read(bad)
        assert str(path) in str(err.value)


def test_verify_finds_a_damaged_chunk(small, tmp_path):
    path, raw = small
    bad = tmp_path / "bad.h5"
    shutil.copy(path, bad)
    with h5py.File(bad, "r") as f:
        info = f["text/data"].id.get_chunk_info_by_coord((2 * 64 * KiB,))
        idx = next(i for i, off in enumerate(f["text/splits"][:, 0]) if off == 2 * 64 * KiB)
    with open(bad, "r+b") as f:
        f.seek(info.byte_offset + 10)
        b = f.read(1)
        f.seek(info.byte_offset + 10)
        f.write(bytes([b[0] ^ 0xFF]))
    s = open_splits(str(bad))
    s.read(idx)                                  # no check unless asked
    with pytest.raises(BadInput, match=f"split {idx}: CRC32 mismatch"):
        s.read(idx, verify=True)
    with pytest.raises(BadInput, match="CRC32 mismatch"):
        verify(str(bad))


def one_error(call, *fragments):
    with pytest.raises(BadInput) as err:
        call()
    text = err.value.format()
    assert "\n" not in text
    for frag in fragments:
        assert frag in text, text
    return text


def test_reading_errors(small, tmp_path):
    path, raw = small
    one_error(lambda: open_splits(str(tmp_path / "nope.h5")), "nope.h5", "no such file")
    (tmp_path / "plain.txt").write_bytes(b"hello world\n" * 100)
    one_error(lambda: open_splits(str(tmp_path / "plain.txt")), "plain.txt",
              "not an HDF5 file")
    (tmp_path / "empty.h5").write_bytes(b"")
    one_error(lambda: open_splits(str(tmp_path / "empty.h5")), "is empty")
    data = path.read_bytes()
    for cut in (len(data) // 2, 4096, len(data) - 1):
        (tmp_path / "cut.h5").write_bytes(data[:cut])
        one_error(lambda: open_splits(str(tmp_path / "cut.h5")), "cut.h5", "truncated")
    one_error(lambda: open_splits(f"{path}:/nope"), "/nope", "no dataset /nope",
              "at the top level: /text")
    one_error(lambda: open_splits(f"{path}:/text/data"), "not an ingested dataset",
              "did you mean /text?")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.create_group("text").create_dataset("data", data=np.zeros(10, np.uint8))
    one_error(lambda: open_splits(str(tmp_path / "other.h5")), "other.h5:/text",
              "not an ingested dataset")
    one_error(lambda: open_splits(str(tmp_path)), "is a directory")
    one_error(lambda: verify(str(tmp_path / "nope.h5")), "no such file")
    one_error(lambda: splits.count_splits(str(path), "/nope"), "no dataset /nope")
    assert splits.count_splits(str(path)) == len(open_splits(str(path)))


def test_parse_helpers():
    assert h5format.parse_size("8MiB") == 8 * MiB
    assert h5format.parse_size("100KiB") == 100 * KiB
    assert h5format.parse_size("1G") == 1 << 30
    assert h5format.parse_size("1.5M") == 3 * MiB // 2
    assert h5format.parse_size("65536") == 65536
    assert h5format.parse_size("2MB") == 2_000_000
    for bad in ("", "abc", "1.5", "8 XB", "-1"):
        with pytest.raises(ValueError):
            h5format.parse_size(bad)
    assert (h5format.parse_chunk("64KiB") == 64 * KiB
            and h5format.parse_chunk("256MiB") == 256 * MiB)
    for bad in ("64KiB1", "63KiB", "257MiB", "1G", "0"):
        with pytest.raises(BadInput, match="--chunk"):
            h5format.parse_chunk(bad)
    assert h5format.parse_format("records:16") == ("records", 16)
    assert h5format.parse_format("binary") == ("binary", 0)
    for bad in ("csv", "records", "records:0", "records:x", "records:-3", "Text"):
        with pytest.raises(BadInput, match="--format"):
            h5format.parse_format(bad)
    assert splits.parse_spec("a.h5") == ("a.h5", "/text")
    assert splits.parse_spec("dir:x/a.h5:/logs/x") == ("dir:x/a.h5", "/logs/x")
    assert splits.parse_spec("a.h5", "grp") == ("a.h5", "/grp")
    for bad in ("a.h5:/", "a.h5:/x//y", "a.h5:/../x"):
        with pytest.raises(BadInput):
            splits.parse_spec(bad)


# ------------------------------------------------------------------- the CLI (serial)

@pytest.fixture
def runner(monkeypatch):
    for var in ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE",
                "PMIX_RANK", "MPI_LOCALNRANKS"):
        monkeypatch.delenv(var, raising=False)
    return CliRunner()


def assert_one_error_line(result, *fragments):
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("mpitiny: error: "), result.stderr
    assert "Traceback" not in result.output
    for frag in fragments:
        assert frag in lines[0], lines[0]


def test_cli_ingest(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("a.txt").write_bytes(b"x\n" * 100_000)
    res = runner.invoke(cli, ["ingest", "a.txt", "-o", "d.h5", "--chunk", "100KiB"],
                        catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert res.stdout.startswith("d.h5:/text: 2 splits, 200,000 bytes from 1 file (text, "
                                 "100 KiB chunks")
    check_ingested("d.h5", b"x\n" * 100_000, 100 * KiB, sources=[("a.txt", 200_000)])


@pytest.mark.parametrize("args,fragments", [
    (["nope.txt", "-o", "d.h5"], ["input nope.txt", "no such file"]),
    (["a.txt", "-o", "missing/d.h5"], ["output missing/d.h5", "does not exist"]),
    (["a.txt", "-o", "a.txt/d.h5"], ["is not a directory"]),
    (["a.txt", "-o", "."], ["is a directory"]),
    (["a.txt", "-o", "a.txt"], ["is also an input file"]),
    (["a.txt", "-o", "d.h5", "--chunk", "1KiB"], ["--chunk 1KiB", "out of range"]),
    (["a.txt", "-o", "d.h5", "--chunk", "1G"], ["--chunk 1G", "out of range"]),
    (["a.txt", "-o", "d.h5", "--chunk", "lots"], ["--chunk", "not a size"]),
    (["a.txt", "-o", "d.h5", "--format", "csv"], ["--format 'csv'"]),
    (["a.txt", "-o", "d.h5", "--format", "records:0"], ["--format records:0"]),
    (["a.txt", "-o", "d.h5", "--format", "records:3"], ["input a.txt", "records:3"]),
    (["a.txt", "-o", "d.h5", "--dataset", "/"], ["dataset '/'"]),
    (["emptydir", "-o", "d.h5"], ["input emptydir", "no files"]),
    (["-o", "d.h5"], ["no input files"]),
    (["a.txt"], ["missing -o"]),
])
def test_cli_bad_input_one_line(runner, tmp_path, monkeypatch, args, fragments):
    monkeypatch.chdir(tmp_path)
    Path("a.txt").write_bytes(b"abcd\n")
    Path("emptydir").mkdir()
    res = runner.invoke(cli, ["ingest", *args], catch_exceptions=False)
    assert_one_error_line(res, *fragments)
    assert sorted(os.listdir(tmp_path)) == ["a.txt", "emptydir"]     # nothing left behind


def test_cli_refuses_to_replace_a_foreign_shard_dir(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("a.txt").write_bytes(b"abcd\n")
    Path("d.h5.shards").mkdir()
    Path("d.h5.shards/mine.txt").write_bytes(b"keep me")
    res = runner.invoke(cli, ["ingest", "a.txt", "-o", "d.h5"], catch_exceptions=False)
    assert_one_error_line(res, "d.h5.shards exists and is not a shard directory")
    assert Path("d.h5.shards/mine.txt").read_bytes() == b"keep me"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_cli_unreadable_input(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("a.txt").write_bytes(b"abcd\n")
    os.chmod("a.txt", 0)
    res = runner.invoke(cli, ["ingest", "a.txt", "-o", "d.h5"], catch_exceptions=False)
    assert_one_error_line(res, "input a.txt", "permission denied")


class FakeComm:
    """Enough of a communicator for ``_agree``: ``allgather`` returns the given list."""

    def __init__(self, rank, everyone):
        self.rank, self.everyone = rank, everyone

    def Get_rank(self):
        return self.rank

    def allgather(self, mine):
        out = list(self.everyone)
        out[self.rank] = mine
        return out


def test_agree_raises_the_first_error_everywhere():
    err = ("BadInput", 2, "disk full", "part 1")
    for rank in range(3):
        mine = BadInput("disk full", where="part 1") if rank == 1 else None
        with pytest.raises(BadInput) as got:
            ingestion._agree(FakeComm(rank, [None, err, None]), mine)
        assert got.value.format() == "part 1: disk full" and got.value.exit_code == 2
    ingestion._agree(FakeComm(0, [None, None]), None)


# ------------------------------------------------------------------------- under MPI

def mpi_ingest(python_module, n, tmp_path, inputs, out, *extra, timeout=120):
    return python_module(n, "mpitiny", "ingest", *map(str, inputs), "-o", str(out), *extra,
                         cwd=str(tmp_path), timeout=timeout)


def test_ingest_1_2_4_ranks_same_content(python_module, tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    pieces = [text_case(c, 64 * KiB, seed=k) for k, c in enumerate(TEXT_CASES)]
    for k, piece in enumerate(pieces):
        (d / f"part{k}.txt").write_bytes(piece)
    raw = b"".join(pieces)
    tables = {}
    for n in (1, 2, 4):
        out = tmp_path / f"d{n}.h5"
        proc = mpi_ingest(python_module, n, tmp_path, [d], out, "--chunk", "64KiB")
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.count(f"d{n}.h5:/text:") == 1        # rank 0 reports, once
        s = check_ingested(out, raw, 64 * KiB)
        assert len(s.shards) == n
        tables[n] = s
        shards = tmp_path / f"d{n}.h5.shards"
        assert shards.is_dir() == (n > 1)
        if n > 1:
            assert sorted(os.listdir(shards)) == [f"part-{r:05d}.h5" for r in range(n)]
            with h5py.File(out, "r") as f:
                assert f["text/data"].is_virtual
                assert {vs.file_name for vs in f["text/data"].virtual_sources()} == {
                    f"d{n}.h5.shards/part-{r:05d}.h5" for r in range(n)}
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    # The pair moves together (relative paths), and HDF5 itself reads through the VDS.
    moved = tmp_path / "moved"
    moved.mkdir()
    shutil.move(str(tmp_path / "d4.h5"), moved / "d4.h5")
    shutil.move(str(tmp_path / "d4.h5.shards"), moved / "d4.h5.shards")
    check_ingested(moved / "d4.h5", raw, 64 * KiB)
    with h5py.File(moved / "d4.h5", "r") as f:
        off, length = f["text/splits"][-1]
        assert f["text/data"][off:off + length].tobytes() == raw[-length:]
    # A missing shard is an error, not zeros.
    os.rename(moved / "d4.h5.shards" / "part-00002.h5", moved / "gone.h5")
    s = Splits(str(moved / "d4.h5"))
    first = s.shards[2]["first_split"]
    one_error(lambda: s.read(first), "shard file", "part-00002.h5", "missing")
    one_error(lambda: verify(str(moved / "d4.h5")), "part-00002.h5")
    # Re-ingesting over a multi-rank output with one rank removes the stale shards.
    proc = mpi_ingest(python_module, 1, tmp_path, [d], tmp_path / "d2.h5", "--chunk", "64KiB")
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "d2.h5.shards").exists()
    check_ingested(tmp_path / "d2.h5", raw, 64 * KiB)


def test_ingest_records_same_splits_any_rank_count(python_module, tmp_path):
    raw = np.random.default_rng(5).integers(0, 256, 1000 * 1500, dtype=np.uint8).tobytes()
    (tmp_path / "r.bin").write_bytes(raw)
    tables = []
    for n in (1, 2, 4):
        out = tmp_path / f"r{n}.h5"
        proc = mpi_ingest(python_module, n, tmp_path, [tmp_path / "r.bin"], out,
                          "--chunk", "64KiB", "--format", "records:1500")
        assert proc.returncode == 0, proc.stderr
        s = check_ingested(out, raw, 64 * KiB, fmt="records", record=1500)
        tables.append(list(s.lengths))
    assert tables[0] == tables[1] == tables[2]


def test_ingest_more_ranks_than_splits(python_module, tmp_path):
    (tmp_path / "a.txt").write_bytes(b"tiny\n")
    proc = mpi_ingest(python_module, 4, tmp_path, [tmp_path / "a.txt"], tmp_path / "d.h5")
    assert proc.returncode == 0, proc.stderr
    check_ingested(tmp_path / "d.h5", b"tiny\n", 8 * MiB)


@pytest.mark.parametrize("args,fragment", [
    (["nope.txt", "-o", "d.h5"], "input nope.txt: no such file"),
    (["a.txt", "-o", "d.h5", "--chunk", "1KiB"], "--chunk 1KiB"),
    (["a.txt", "-o", "no/d.h5"], "does not exist"),
])
def test_ingest_bad_input_under_mpi_one_message(python_module, tmp_path, args, fragment):
    (tmp_path / "a.txt").write_bytes(b"abc\n")
    proc = python_module(2, "mpitiny", "ingest", *args, cwd=str(tmp_path), timeout=60)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in strip_mpi_banners(proc.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("mpitiny: error: "), proc.stderr
    assert fragment in lines[0]
    assert sorted(os.listdir(tmp_path)) == ["a.txt"]
