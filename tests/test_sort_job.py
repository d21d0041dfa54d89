"""jobs/sort.json (TeraSort) and jobs/teragen.py: order, permutation, validate, rank counts."""
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
JOBS = ROOT / "jobs"
sys.path.insert(0, str(JOBS))
import sort  # noqa: E402
import teragen  # noqa: E402

DAG = str(JOBS / "sort.json")


def records(data: bytes) -> list:
    return [data[i:i + 100] for i in range(0, len(data), 100)]


def expected(data: bytes) -> bytes:
    """Stable sort by the 10-byte key: equal keys keep their input order."""
    return b"".join(sorted(records(data), key=lambda r: r[:10]))


def make_input(tmp_path: Path, n: int, distinct: int = 0, seed: int = 3, chunk="64KiB"):
    from mpitiny.io.ingestion import ingest
    raw = tmp_path / "in.bin"
    teragen.teragen(n, str(raw), seed=seed, distinct=distinct)
    h5 = str(tmp_path / "in.h5")
    ingest([str(raw)], h5, chunk=chunk, fmt="records:100")
    return raw.read_bytes(), h5


def run_sort(python_module, tmp_path: Path, ranks: int, h5: str, name: str, partitions=4,
             check=True):
    out = tmp_path / f"out-{name}"
    res = python_module(ranks, "mpitiny", "run", DAG, "-q", "--param", f"input={h5}",
                        "--param", f"output={out}", "--param", f"partitions={partitions}",
                        "--param", "samples=2000", "--out", str(tmp_path / f"run-{name}"),
                        cwd=str(tmp_path), timeout=60, check=check)
    return out, res


def assert_sorted_output(out: Path, data: bytes, partitions: int):
    parts = sorted(p.name for p in out.glob("part-*.bin"))
    assert parts == [f"part-{r:05d}.bin" for r in range(partitions)]
    got = sort.read_output(str(out))
    assert sorted(records(got)) == sorted(records(data))          # a permutation of the input
    assert got == expected(data)                                  # in key order, stable
    v = json.loads((out / "validate.json").read_text())
    assert v["ok"] is True and v["errors"] == [], v
    assert v["input"] == v["output"] and v["output"]["count"] == len(data) // 100
    return got


def test_teragen_deterministic(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    teragen.teragen(3000, str(a), seed=5)
    teragen.teragen(3000, str(b), seed=5)
    teragen.teragen(3000, str(c), seed=6)
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()
    recs = records(a.read_bytes())
    assert len(recs) == 3000 and all(len(r) == 100 for r in recs)
    assert recs[7][10:12] == b"\x00\x11" and recs[7][12:44] == b"%032X" % 7
    assert recs[7][96:] == b"\xcc\xdd\xee\xff"
    teragen.teragen(500, str(a), seed=5, distinct=1)
    assert len({r[:10] for r in records(a.read_bytes())}) == 1


def test_tasks_in_process_and_validate_catches_errors(tmp_path, monkeypatch):
    """The task functions called directly (no MPI); then a damaged output fails validation."""
    monkeypatch.delenv("MPITINY_RUN_DIR", raising=False)
    from mpitiny.io.splits import open_splits
    data, h5 = make_input(tmp_path, 5000, distinct=300)
    out = str(tmp_path / "out")
    n, R = len(open_splits(h5)), 3
    splitters = sort.sample(h5, R, samples=500)
    assert splitters.shape == (R - 1, 10)
    maps = {f"map[{i}]": sort.map_split(h5, i, R, out, {"sample": splitters}) for i in range(n)}
    for r in range(R):
        sort.reduce_part(r, out, maps)
    checks = {f"check[{r}]": sort.check_part(r, out) for r in range(R)}
    v = sort.validate(out, {**maps, **checks}, keep_work=True)
    assert v["ok"] and sort.read_output(out) == expected(data)

    # a changed byte in a payload: still in order, but not a permutation any more
    p0 = Path(out) / "part-00000.bin"
    good = p0.read_bytes()
    bad = bytearray(good)
    bad[50] ^= 1
    p0.write_bytes(bytes(bad))
    checks["check[0]"] = sort.check_part(0, out)
    with pytest.raises(AssertionError, match="not a permutation"):
        sort.validate(out, {**maps, **checks}, keep_work=True)
    assert json.loads((Path(out) / "validate.json").read_text())["ok"] is False

    # two records swapped inside a part: a permutation, but out of order
    recs = records(good)
    i = next(j for j in range(len(recs) - 1) if recs[j][:10] != recs[j + 1][:10])
    recs[i], recs[i + 1] = recs[i + 1], recs[i]
    p0.write_bytes(b"".join(recs))
    checks["check[0]"] = sort.check_part(0, out)
    with pytest.raises(AssertionError, match="out of order"):
        sort.validate(out, {**maps, **checks}, keep_work=True)

    # parts swapped: each in order, a permutation, but not in order across parts
    p0.write_bytes(good)
    p1 = Path(out) / "part-00001.bin"
    one = p1.read_bytes()
    p1.write_bytes(good)
    p0.write_bytes(one)
    checks = {f"check[{r}]": sort.check_part(r, out) for r in range(R)}
    with pytest.raises(AssertionError, match="starts before"):
        sort.validate(out, {**maps, **checks}, keep_work=True)


@pytest.mark.parametrize("groups", ["consecutive", "scattered"])
def test_batch_form_writes_one_file_per_chunk_and_sorts_the_same(tmp_path, monkeypatch, groups):
    """``map_splits``: a chunk of consecutive splits -> one map file, its records counted by
    the first split's value; scattered splits run one by one (equal keys keep input order)."""
    monkeypatch.delenv("MPITINY_RUN_DIR", raising=False)
    from mpitiny.io.splits import open_splits
    data, h5 = make_input(tmp_path, 8000, distinct=50)
    out = str(tmp_path / "out")
    n, R = len(open_splits(h5)), 3
    inputs = {"sample": sort.sample(h5, R, samples=500)}
    chunks = [list(range(a, min(n, a + 4))) for a in range(0, n, 4)] if groups == "consecutive" \
        else [list(range(k, n, 3)) for k in range(3)]
    maps = {}
    for chunk in chunks:
        values = sort.map_splits([([h5, i, R, out], {"inputs": inputs}) for i in chunk])
        assert [v["split"] for v in values] == chunk
        maps.update({f"map[{i}]": v for i, v in zip(chunk, values)})
    files = {v["file"] for v in maps.values()} - {None}
    assert len(files) == (len(chunks) if groups == "consecutive" else n)
    assert sum(v["count"] for v in maps.values()) == len(data) // 100
    for r in range(R):
        sort.reduce_part(r, out, maps)
    checks = {f"check[{r}]": sort.check_part(r, out) for r in range(R)}
    assert sort.validate(out, {**maps, **checks})["ok"]
    assert sort.read_output(out) == expected(data)
    assert not any(os.path.exists(f) for f in files)                 # map files removed


def test_sort_on_1_2_4_ranks(tmp_path, python_module):
    """50,000 records in 64 KiB splits (77 splits): same sorted output on every rank count."""
    data, h5 = make_input(tmp_path, 50_000)
    outs = []
    for ranks in (1, 2, 4):
        out, _ = run_sort(python_module, tmp_path, ranks, h5, f"n{ranks}", partitions=5)
        outs.append([(out / f"part-{r:05d}.bin").read_bytes() for r in range(5)])
        got = assert_sorted_output(out, data, 5)
        assert not (tmp_path / f"run-n{ranks}" / "sort-maps").exists()   # intermediates removed
        summary = json.loads((tmp_path / f"run-n{ranks}" / "summary.json").read_text())
        assert summary["batches"] > 0                                    # maps went batched
    assert outs[0] == outs[1] == outs[2]
    sizes = [len(p) // 100 for p in outs[0]]
    assert min(sizes) > 0.6 * 50_000 / 5, sizes                        # the sample balances
    assert len(got) == len(data)


@pytest.mark.parametrize("distinct", [1, 40])
def test_sort_duplicate_keys(tmp_path, python_module, distinct):
    """Every key equal (all records in one partition) and 40 distinct keys."""
    data, h5 = make_input(tmp_path, 20_000, distinct=distinct)
    out, _ = run_sort(python_module, tmp_path, 2, h5, "dup", partitions=4)
    assert_sorted_output(out, data, 4)
    if distinct == 1:
        assert sort.read_output(str(out)) == data                       # stable: input order


def test_sort_rejects_text_input(tmp_path, python_module):
    from mpitiny.io.ingestion import ingest
    (tmp_path / "t.txt").write_bytes(b"hello world\n" * 1000)
    ingest([str(tmp_path / "t.txt")], str(tmp_path / "t.h5"), chunk="64KiB")
    out, res = run_sort(python_module, tmp_path, 2, str(tmp_path / "t.h5"), "text", check=False)
    assert res.returncode == 1
    failures = "".join(f.read_text() for f in (tmp_path / "run-text" / "failures").iterdir())
    assert "not ingested with --format records:100" in failures
    assert not (out / "validate.json").exists()


@pytest.mark.parametrize("partitions", [1, 3])
def test_keys_with_zero_bytes_in_process(tmp_path, monkeypatch, partitions):
    """Keys compare as unsigned bytes (memcmp), trailing zero bytes and 0xff included."""
    monkeypatch.delenv("MPITINY_RUN_DIR", raising=False)
    from mpitiny.io.ingestion import ingest
    from mpitiny.io.splits import open_splits
    rng = np.random.default_rng(9)
    recs = teragen.make_block(0, 3000)
    alphabet = np.array([0, 1, 0x7F, 0x80, 0xFF], np.uint8)
    recs[:, :10] = alphabet[rng.integers(0, 5, (3000, 10))]
    recs[:1000, 3:10] = 0                              # many keys that end in zero bytes
    data = recs.tobytes()
    (tmp_path / "k.bin").write_bytes(data)
    h5 = str(tmp_path / "k.h5")
    ingest([str(tmp_path / "k.bin")], h5, chunk="64KiB", fmt="records:100")
    out = str(tmp_path / "out")
    splitters = sort.sample(h5, partitions, samples=300)
    maps = {f"map[{i}]": sort.map_split(h5, i, partitions, out, {"sample": splitters})
            for i in range(len(open_splits(h5)))}
    for r in range(partitions):
        sort.reduce_part(r, out, maps)
    checks = {f"check[{r}]": sort.check_part(r, out) for r in range(partitions)}
    assert sort.validate(out, {**maps, **checks})["ok"]
    assert sort.read_output(out) == expected(data)
    assert not (Path(out) / "_work").exists()


@pytest.mark.parametrize("distinct", [0, 1, 3, 300])
def test_sort_order_is_a_stable_lexsort(distinct):
    """``sort.sort_order`` (quicksort of the first 8 key bytes, stable lexsort of the rows tied
    on them) is the stable order ``np.lexsort`` gives, with keys tied on 8, 9 and 10 bytes."""
    rng = np.random.default_rng(distinct)
    n = 20000
    keys = rng.integers(0, 256, (max(distinct, 1) if distinct else n, 10), dtype=np.uint8)
    if distinct:
        keys[:, :8] = keys[0, :8]                       # all tied on the first 8 bytes
        keys[: len(keys) // 2, 8] = 7                   # half of them on 9 bytes too
    recs = np.zeros((n, 100), np.uint8)
    recs[:, :10] = keys[rng.integers(0, len(keys), n)] if distinct else keys
    recs[:, 10:18] = np.arange(n, dtype=">u8").view(np.uint8).reshape(n, 8)
    first = np.ascontiguousarray(recs[:, 0:8]).view(">u8").ravel()
    rest = np.ascontiguousarray(recs[:, 8:10]).view(">u2").ravel()
    assert sort.sort_order(recs).tolist() == np.lexsort((rest, first)).tolist()
