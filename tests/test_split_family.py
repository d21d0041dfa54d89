"""Split families: ``"foreach": {"split": "data.h5:/text"}`` gives one instance per split of an
ingested dataset. Loading (size, ids, arguments, ``options.splits``), errors, and runs end
to end on 1, 2 and 4 ranks (a family counts the bytes of its split, a reduce checks the total).
"""
from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from mpirun import strip_mpi_banners
from mpitiny.cli import cli
from mpitiny.dag.load import load_dag
from mpitiny.errors import DagError
from mpitiny.io.check import check_run
from mpitiny.io.ingestion import ingest
from mpitiny.io.splits import count_splits

KiB = 1 << 10


def corpus(n_lines: int = 30_000, seed: int = 1) -> bytes:
    rng = np.random.default_rng(seed)
    words = [b"tiny", b"tasks", b"over", b"mpi", b"\xc3\xbcber", b"x" * 30]
    lengths = rng.integers(0, 12, n_lines)
    return b"".join(b" ".join(words[k] for k in rng.integers(0, len(words), n)) + b"\n"
                    for n in lengths)


@pytest.fixture
def data(tmp_path):
    raw = corpus()
    (tmp_path / "in.txt").write_bytes(raw)
    ingest([str(tmp_path / "in.txt")], str(tmp_path / "data.h5"), chunk="64KiB")
    return tmp_path / "data.h5", raw


def write_dag(tmp_path: Path, dag: dict, name: str = "dag.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(dag))
    return path


def count_dag(spec: str, **params) -> dict:
    return {"name": "splits", "params": {"input": "data.h5", **params},
            "tasks": [{"id": "count", "cmd": "wc -c {input} {split}",
                       "foreach": {"split": spec}}]}


def test_load_split_family(data, tmp_path, monkeypatch):
    path, raw = data
    monkeypatch.chdir(tmp_path)
    n = count_splits(str(path))
    assert n > 5
    for spec in ("{input}:/text", "{input}", "data.h5:/text", str(path)):
        dag = load_dag(write_dag(tmp_path, count_dag(spec)))
        g = dag.groups[0]
        assert dag.total == g.size == n
        assert g.vars[0].name == "split" and g.vars[0].values == range(0, n)
        assert g.options.splits == (str(path), "/text")
        assert g.options.split_var == "split"
        assert g.instance_id(0) == "count[0]" and g.instance_id(n - 1) == f"count[{n - 1}]"
        assert g.command(3).endswith(" 3")


def test_long_form_other_dataset_product_and_deps(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.txt").write_bytes(corpus(20_000, seed=2))
    ingest(["a.txt"], "d.h5", dataset="/logs", chunk="64KiB")
    n = count_splits("d.h5", "/logs")
    dag = {"name": "x", "params": {"file": "d.h5"}, "tasks": [
        {"id": "a", "cmd": "echo {k} {m}",
         "foreach": {"k": {"split": "{file}:/logs"}, "m": ["p", "q"]}},
        {"id": "b", "cmd": "echo {split}", "foreach": {"split": "d.h5:/logs"},
         "deps": ["a[{split},q]"], "rank": "{split}"},
        {"id": "c", "cmd": "echo done", "deps": ["b"]}]}
    loaded = load_dag(write_dag(tmp_path, dag))
    a, b, c = loaded.groups
    assert a.size == 2 * n and a.instance_id(3) == "a[1,q]" and a.command(3) == "echo 1 q"
    assert a.options.splits == (str(tmp_path / "d.h5"), "/logs")
    assert a.options.split_var == "k"
    assert b.size == n and b.options.rank == "{split}" and b.options.splits is not None
    assert c.options.splits is None
    assert loaded.total == 3 * n + 1


@pytest.mark.parametrize("pieces", [1, 3])
def test_a_chunk_prefetches_the_split_its_next_instance_reads(tmp_path, monkeypatch, pieces):
    """``running.prefetching``: in a family over splits and pieces of them, the split the
    next instance reads, once per change of split (not the instance's index); the reader is
    opened for such a family too."""
    import types

    from mpitiny.engine.running import prefetching
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.txt").write_bytes(corpus(20_000, seed=2))
    ingest(["a.txt"], "d.h5", chunk="64KiB")
    n = count_splits("d.h5")
    tasks = {"id": "a", "cmd": "echo {s} {p}",
             "foreach": {"s": {"split": "d.h5"}, "p": {"range": [pieces]}}} if pieces > 1 else \
        {"id": "a", "cmd": "echo {s}", "foreach": {"s": {"split": "d.h5"}}}
    group = load_dag(write_dag(tmp_path, {"name": "x", "tasks": [tasks]})).groups[0]
    reader = types.SimpleNamespace(chunk_bytes=8 << 20)
    instances = list(range(2 * pieces - 1, group.size))
    upcoming = prefetching(group, reader, instances)
    want = [(i + 1) // pieces if (i + 1) % pieces == 0 else None for i in instances[:-1]]
    assert list(upcoming) == want and len(want) == (n - 2) * pieces
    assert prefetching(group, types.SimpleNamespace(chunk_bytes=1 << 10), instances) is None


def test_validate_cli(data, tmp_path, monkeypatch):
    path, _ = data
    monkeypatch.chdir(tmp_path)
    for var in ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK"):
        monkeypatch.delenv(var, raising=False)
    dag = write_dag(tmp_path, count_dag("{input}"))
    n = count_splits(str(path))
    res = CliRunner().invoke(cli, ["validate", str(dag)], catch_exceptions=False)
    assert res.exit_code == 0 and res.stdout == f"{dag}: ok: {n} tasks in 1 entries " \
                                               "(1 families), 0 dependency entries\n"
    res = CliRunner().invoke(cli, ["validate", str(dag), "-p", "input=zzz.h5"],
                             catch_exceptions=False)
    assert res.exit_code == 2
    assert res.stderr.splitlines() == [
        f"mpitiny: error: {dag}: tasks[0] (id 'count'): foreach 'split': zzz.h5: no such file"]


def make_bad_files(tmp_path: Path) -> None:
    (tmp_path / "plain.txt").write_bytes(b"not hdf5\n")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.create_group("text").create_dataset("data", data=np.zeros(4, np.uint8))
    (tmp_path / "empty.txt").write_bytes(b"")
    ingest([str(tmp_path / "empty.txt")], str(tmp_path / "empty.h5"))


@pytest.mark.parametrize("foreach,fragments", [
    ({"split": "missing.h5"}, ["foreach 'split': missing.h5: no such file"]),
    ({"split": "data.h5:/nope"}, ["data.h5:/nope: no dataset /nope in the file"]),
    ({"split": "data.h5:/text/data"}, ["not an ingested dataset", "did you mean /text?"]),
    ({"split": "plain.txt"}, ["plain.txt: not an HDF5 file"]),
    ({"split": "other.h5"}, ["other.h5:/text: not an ingested dataset"]),
    ({"split": "empty.h5"}, ["empty.h5", "has no splits"]),
    ({"k": {"split": 3}}, ["must be a non-empty string", "not an integer 3"]),
    ({"split": 3}, ["foreach 'split': must be {\"range\"", "not an integer"]),
    ({"split": ""}, ["must be a non-empty string"]),
    ({"k": {"split": "data.h5", "x": 1}}, ["foreach 'k': unknown key 'x'"]),
    ({"k": {"split": "data.h5"}, "j": {"split": "data.h5"}}, ["foreach 'j'", "one"]),
    ({"k": "data.h5"}, ["foreach 'k': must be {\"range\"", "{\"split\""]),
    ({"split": "{input}"}, ["input.h5: no such file"]),
    ({"split": "data.h5:/"}, ["dataset '/'"]),
])
def test_split_errors_name_the_task(data, tmp_path, monkeypatch, foreach, fragments):
    monkeypatch.chdir(tmp_path)
    make_bad_files(tmp_path)
    dag = {"name": "bad", "params": {"input": "input.h5"}, "tasks": [
        {"id": "ok", "cmd": "true"},
        {"id": "count", "cmd": "echo", "foreach": foreach}]}
    with pytest.raises(DagError) as err:
        load_dag(write_dag(tmp_path, dag))
    text = err.value.format()
    assert text.startswith(f"{tmp_path / 'dag.json'}: tasks[1] (id 'count'): "), text
    assert "\n" not in text and "Traceback" not in text
    for frag in fragments:
        assert frag in text, text


# ------------------------------------------------------------------------ end to end

JOB = textwrap.dedent('''
    import zlib
    from mpitiny.io.splits import open_splits

    def count(path, split):
        data = open_splits(path).read(split, verify=True)
        assert data.endswith(b"\\n")
        return {"split": split, "bytes": len(data), "lines": data.count(b"\\n"),
                "crc": zlib.crc32(data)}

    def check(n, total, lines, inputs):
        parts = sorted(inputs.values(), key=lambda p: p["split"])
        assert [p["split"] for p in parts] == list(range(n)), "one instance per split"
        assert sum(p["bytes"] for p in parts) == total
        assert sum(p["lines"] for p in parts) == lines
        return {"splits": len(parts), "bytes": total}
''')


def split_job(tmp_path: Path, raw: bytes, n: int) -> dict:
    return {"name": "count-splits",
            "params": {"input": "data.h5", "n": n, "total": len(raw),
                       "lines": raw.count(b"\n")},
            "tasks": [
                {"id": "count", "fn": "splitjob:count", "args": ["{input}", "{split}"],
                 "foreach": {"split": "{input}:/text"}},
                {"id": "check", "fn": "splitjob:check",
                 "args": ["{n}", "{total}", "{lines}"], "deps": ["count"]}]}


@pytest.mark.parametrize("n", [1, 2, 4])
def test_split_family_end_to_end(python_module, tmp_path, monkeypatch, n):
    monkeypatch.chdir(tmp_path)          # "data.h5" in the dag is relative to the current dir
    raw = corpus(40_000, seed=n)
    (tmp_path / "in.txt").write_bytes(raw)
    (tmp_path / "splitjob.py").write_text(JOB)
    proc = python_module(n, "mpitiny", "ingest", "in.txt", "-o", "data.h5", "--chunk", "64KiB",
                         "-q", cwd=str(tmp_path), timeout=120)
    assert proc.returncode == 0, proc.stderr
    nsplits = count_splits(str(tmp_path / "data.h5"))
    assert nsplits >= 8
    dag_path = write_dag(tmp_path, split_job(tmp_path, raw, nsplits))
    proc = python_module(n, "mpitiny", "run", str(dag_path), "--out", "run", "-q",
                         cwd=str(tmp_path), timeout=120)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    counts = check_run(load_dag(str(dag_path)), str(tmp_path / "run"))
    assert counts["done"] == nsplits + 1
    results = {}
    for name in os.listdir(tmp_path / "run" / "results"):
        for line in (tmp_path / "run" / "results" / name).read_text().splitlines():
            rec = json.loads(line)
            results[rec["id"]] = rec["value"]
    assert results["check"] == {"splits": nsplits, "bytes": len(raw)}
    assert sum(results[f"count[{i}]"]["bytes"] for i in range(nsplits)) == len(raw)


def test_bad_split_file_under_mpi_one_message(python_module, tmp_path):
    (tmp_path / "splitjob.py").write_text(JOB)
    dag_path = write_dag(tmp_path, split_job(tmp_path, b"", 1))
    proc = python_module(2, "mpitiny", "run", str(dag_path), "--out", "run",
                         cwd=str(tmp_path), timeout=60)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in strip_mpi_banners(proc.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "tasks[0] (id 'count'): foreach 'split': data.h5: no such file" in lines[0]
    assert not (tmp_path / "run").exists()
