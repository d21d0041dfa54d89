"""``mpitiny import-wfcommons --work``: tasks that burn their runtime and read and write their
files in RUN_DIR/data (``mpitiny.dag.wfcommons`` with ``work``, ``mpitiny.wfwork``).

Conversion (no MPI): every task's reads and writes are the instance's files with their sizes
(scaled), the stage task writes exactly the workflow's input files, bad files are one clear
error. The worker in-process: sizes, headers, atomic outputs, clear errors. Runs on 1, 2, 4
ranks of a small instance: every task once and after its parents (``check_run``), every
declared file there with its size and no temporary file left, every task's result says it read
exactly the bytes of its declared inputs (the files its parents wrote: the header check makes
a file that is not the one written under that name an error). A missing input is one clear task
failure; the rerun that resumes it does not rewrite the outputs of the tasks done before.
"""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from mpirun import strip_mpi_banners
from test_resources import most_at_once, per_row
from mpitiny import wfwork
from mpitiny.cli import cli
from mpitiny.dag.load import load_dag, load_dag_text
from mpitiny.dag.wfcommons import (PART_SUFFIX, STAGE_FN, WORK_FN, convert, convert_file,
                                   summary)
from mpitiny.errors import BadInput
from mpitiny.io import journal as jnl
from mpitiny.io.check import check_run
from mpitiny.io.rundir import read_results, read_tasks

SHARED = Path(__file__).resolve().parents[2] / "shared" / "wfcommons"
INSTANCES = sorted(SHARED.glob("*.json")) if SHARED.is_dir() else []
needs_shared = pytest.mark.skipif(not INSTANCES, reason=f"no WfCommons instances in {SHARED}")


def instance(tasks: list, sizes: dict, name: str = "small", cores: dict | None = None) -> dict:
    """A WfFormat 1.5 instance: tasks are (id, parents, inputs, outputs, runtime) tuples;
    ``cores``: the ``coreCount`` of some of them."""
    children: dict = {t[0]: [] for t in tasks}
    for tid, parents, *_ in tasks:
        for p in parents:
            children[p].append(tid)
    spec = [{"name": tid, "id": tid, "parents": parents, "children": children[tid],
             "inputFiles": inputs, "outputFiles": outputs}
            for tid, parents, inputs, outputs, _ in tasks]
    return {"name": name, "schemaVersion": "1.5",
            "workflow": {"specification": {"tasks": spec, "files": [
                {"id": f, "sizeInBytes": s} for f, s in sizes.items()]},
                "execution": {"makespanInSeconds": 1, "tasks": [
                    {"id": t[0], "runtimeInSeconds": t[4],
                     **({"coreCount": cores[t[0]]} if t[0] in (cores or {}) else {})}
                    for t in tasks]}}}


def small() -> dict:
    """Two workflow inputs (one over the 1 MiB buffer, one empty), files shorter than their
    header, a sub-folder, a file read by a grandchild, twelve leaves, an isolated task."""
    leaves = [(f"leaf{i}", ["prep"], ["b.dat"], [f"leaves/leaf{i}.out"], 0.01) for i in range(12)]
    tasks = [("prep", [], ["raw/input.dat"], ["a.dat", "b.dat"], 0.03),
             ("left", ["prep"], ["a.dat"], ["left.out"], 0.02),
             ("right", ["prep"], ["b.dat", "ref.txt"], ["sub/right.out"], 0.04),
             ("join", ["left", "right"], ["left.out", "sub/right.out", "a.dat"],
              ["final.out"], 0.02),
             ("solo", [], [], ["empty.out"], 0.01), *leaves]
    sizes = {"raw/input.dat": 3_000_000, "ref.txt": 0, "a.dat": 100, "b.dat": 1_500_000,
             "left.out": 5, "sub/right.out": 70_000, "final.out": 1234, "empty.out": 0,
             **{f"leaves/leaf{i}.out": 1000 + i for i in range(12)}}
    return instance(tasks, sizes)


def declared(dag: dict) -> dict:
    """``{file: size}`` of every file the DAG writes (the stage task's included)."""
    return {name: size for t in dag["tasks"] for name, size in t["kwargs"]["write"]}


def by_id(dag: dict) -> dict:
    return {t["id"]: t for t in dag["tasks"]}


# ------------------------------------------------------------------ conversion

@needs_shared
@pytest.mark.parametrize("path", INSTANCES, ids=lambda p: p.name)
def test_work_import_of_the_shared_instances(path):
    raw = json.loads(path.read_text())
    spec = raw["workflow"]["specification"]
    sizes = {f["id"]: f["sizeInBytes"] for f in spec["files"]}
    size_scale = 0.01
    d = convert(raw, 0.001, str(path), work=True, size_scale=size_scale)
    tasks = by_id(d)
    written = {o for t in spec["tasks"] for o in t["outputFiles"]}
    external = {i for t in spec["tasks"] for i in t["inputFiles"]} - written
    stage = [t for t in d["tasks"] if t["fn"] == STAGE_FN]
    assert len(stage) == 1 and len(d["tasks"]) == len(spec["tasks"]) + 1
    assert {n for n, _ in stage[0]["kwargs"]["write"]} == external

    def scaled(names):
        return [[n, round(sizes[n] * size_scale)] for n in names]

    for t in spec["tasks"]:
        mine = tasks[t["id"]]
        assert mine["fn"] == WORK_FN
        assert mine["kwargs"] == {"read": scaled(t["inputFiles"]),
                                  "write": scaled(t["outputFiles"])}
        deps = set(mine.get("deps", ()))
        assert (stage[0]["id"] in deps) == bool(set(t["inputFiles"]) & external)
        assert deps - {stage[0]["id"]} == set(t["parents"])      # every edge, none added
    dag = load_dag_text(json.dumps(d), source=path.name)
    assert dag.total == len(d["tasks"])


def test_files_are_one_clear_error_each():
    def bad(tasks, sizes, match):
        with pytest.raises(BadInput, match=match) as err:
            convert(instance(tasks, sizes), 1.0, "inst.json", work=True)
        assert "inst.json" in err.value.format()

    bad([("a", [], [], ["x"], 1), ("b", [], [], ["x"], 1)], {"x": 1},
        "file 'x' is written by two tasks, 'a' and 'b'")
    bad([("a", [], ["x"], ["x"], 1)], {"x": 1}, "task 'a' both reads and writes file 'x'")
    bad([("a", [], [], ["x"], 1)], {}, "file 'x' .* has no size")
    bad([("a", [], [], ["x"], 1)], {"x": -1}, "non-negative whole number of bytes")
    bad([("a", [], [], ["x"], 1)], {"x": 1.5}, "non-negative whole number of bytes")
    for name, problem in [("../x", "component '..'"), ("/etc/x", "absolute path"),
                          ("a//b", "component ''"), ("x" + PART_SUFFIX, "temporary files")]:
        bad([("a", [], [], [name], 1)], {name: 1}, f"cannot be written under RUN_DIR/data: .*{problem}")
    bad([("a", [], [], ["d", "d/x"], 1)], {"d": 1, "d/x": 1},
        "file 'd' is also the folder of another file")
    bad([("a", [], ["x"], [], 1), ("b", ["a"], [], ["x"], 1)], {"x": 1},
        "task 'a' reads file 'x', which its descendant 'b' writes")


def test_a_reader_gets_the_dependency_on_the_writer_it_lacks():
    tasks = [("w", [], [], ["x"], 1), ("mid", ["w"], [], [], 1),
             ("far", ["mid"], ["x"], [], 1),               # w is an ancestor: nothing added
             ("r", [], ["x"], [], 1)]                       # no path from w: added
    d = convert(instance(tasks, {"x": 7}), 1.0, work=True)
    assert by_id(d)["r"]["deps"] == ["w"]
    assert by_id(d)["far"]["deps"] == ["mid"]
    assert "1 dependencies added" in d["description"]
    assert not [t for t in d["tasks"] if t["fn"] == STAGE_FN]    # no workflow input: no stage


def test_stage_task_id_avoids_the_instance_ids():
    tasks = [("stage_in", [], ["in"], ["x"], 1)]
    d = convert(instance(tasks, {"in": 1, "x": 1}), 1.0, work=True)
    assert [t["id"] for t in d["tasks"]] == ["stage_in_2", "stage_in"]
    assert by_id(d)["stage_in"]["deps"] == ["stage_in_2"]


def test_older_wfformat_task_files():
    old = {"name": "old", "schemaVersion": "1.3", "workflow": {"tasks": [
        {"name": "a", "parents": [], "runtime": 2.0, "files": [
            {"name": "in.txt", "link": "input", "size": 10},
            {"name": "out.txt", "path": "o/", "link": "output", "size": 20}]},
        {"name": "b", "parents": ["a"], "runtimeInSeconds": 1.0, "files": [
            {"name": "out.txt", "path": "o/", "link": "input", "sizeInBytes": 20}]}]}}
    d = convert(old, 0.5, work=True)
    t = by_id(d)
    assert t["a"]["args"] == [1.0]
    assert t["a"]["kwargs"] == {"read": [["in.txt", 10]], "write": [["o/out.txt", 20]]}
    assert t["b"]["kwargs"] == {"read": [["o/out.txt", 20]], "write": []}
    old["workflow"]["tasks"][1]["files"][0]["sizeInBytes"] = 21
    with pytest.raises(BadInput, match="file 'o/out.txt' is given two sizes, 20 and 21"):
        convert(old, 0.5, work=True)


def test_cli_work_and_size_scale(tmp_path):
    src = tmp_path / "small.json"
    src.write_text(json.dumps(small()))
    out = tmp_path / "dag.json"
    result = CliRunner().invoke(cli, ["import-wfcommons", str(src), "-o", str(out), "--work",
                                      "--scale", "2", "--size-scale", "0.5"])
    assert result.exit_code == 0, result.output
    assert ("17 tasks, 16 edges, total work 0.480 s, longest work 0.080 s, critical path "
            "0.180 s (scale 2); 18 files written (0.8 MB), 11.3 MB read, workflow inputs staged: "
            "2 files (1.5 MB) (size scale 0.5)") in result.stdout
    d = json.loads(out.read_text())
    assert declared(d)["b.dat"] == 750_000
    assert summary(d)["staged"] == 1_500_000
    result = CliRunner().invoke(cli, ["import-wfcommons", str(src), "-o", str(out),
                                      "--size-scale", "0.5"])
    assert result.exit_code == 2
    assert result.output.count("--size-scale applies to the files of --work only") == 1


def test_declared_cores_are_kept_and_capped():
    """``coreCount`` > 1 becomes the task's ``cores`` (and the worker's): one core declares
    nothing; ``--max-cores`` caps; the older format's ``cores`` too; a bad count is an error."""
    tasks = [("a", [], [], ["x"], 1.0), ("b", ["a"], ["x"], [], 1.0), ("c", [], [], [], 1.0)]
    inst = instance(tasks, {"x": 10}, cores={"a": 4, "b": 1})
    for work in (True, False):
        t = by_id(convert(inst, 1.0, work=work))
        assert t["a"]["cores"] == 4 and "cores" not in t["b"] and "cores" not in t["c"]
        if work:
            assert t["a"]["kwargs"]["cores"] == 4 and "cores" not in t["b"]["kwargs"]
    d = convert(inst, 1.0, work=True, max_cores=2)
    assert by_id(d)["a"]["cores"] == 2 and by_id(d)["a"]["kwargs"]["cores"] == 2
    assert d["description"].endswith(" 1 tasks use more than one core (up to 2); 1 declare "
                                     "more than --max-cores 2 and use that many.")
    assert "cores" not in by_id(convert(inst, 1.0, max_cores=1))["a"]
    old = {"workflow": {"tasks": [{"name": "a", "parents": [], "runtime": 1.0, "cores": 3}]}}
    assert by_id(convert(old, 1.0))["a"]["cores"] == 3
    for bad in (0, 2.5, "4", True):
        inst["workflow"]["execution"]["tasks"][0]["coreCount"] = bad
        with pytest.raises(BadInput, match=r"task 'a': coreCount must be a whole number of "
                                           r"cores >= 1, not"):
            convert(inst, 1.0)
    with pytest.raises(BadInput, match="--max-cores must be a whole number >= 1"):
        convert(old, 1.0, max_cores=0)


def test_cli_max_cores(tmp_path):
    src = tmp_path / "wide.json"
    src.write_text(json.dumps(instance([("a", [], [], [], 1.0), ("b", [], [], [], 1.0)], {},
                                       cores={"a": 8, "b": 2})))
    out = tmp_path / "dag.json"
    result = CliRunner().invoke(cli, ["import-wfcommons", str(src), "-o", str(out), "--work",
                                      "--max-cores", "4"])
    assert result.exit_code == 0, result.output
    assert "; 2 tasks of more than one core (up to 4)" in result.stdout
    assert [t.get("cores") for t in json.loads(out.read_text())["tasks"]] == [4, 2]
    result = CliRunner().invoke(cli, ["import-wfcommons", str(src), "-o", str(out),
                                      "--max-cores", "0"])
    assert result.exit_code == 2 and "--max-cores" in result.output


# ------------------------------------------------------------------ the worker, in-process

def test_burn_runs_a_thread_per_core():
    """Each of the cores' threads makes passes until the deadline; one core spins instead."""
    start = time.perf_counter()
    passes = wfwork.burn(0.2, 3)
    assert time.perf_counter() - start >= 0.2
    assert len(passes) == 3 and min(passes) > 0
    assert wfwork.burn(0.01, 1) == []
    assert not [t for t in threading.enumerate() if t.name.startswith("mpitiny-burn")]


def test_worker_writes_sizes_and_headers_atomically(tmp_path, monkeypatch):
    monkeypatch.setenv("MPITINY_RUN_DIR", str(tmp_path))
    data = tmp_path / "data"
    assert wfwork.stage([["in", 2_500_000], ["tiny", 3]]) == {"read": 0, "written": 2_500_003}
    inode = (data / "in").stat().st_ino
    assert wfwork.stage([["in", 2_500_000]]) == {"read": 0, "written": 0}   # already whole
    assert (data / "in").stat().st_ino == inode
    got = wfwork.run_task(0.0, [["in", 2_500_000], ["tiny", 3]], [["d/out", 10], ["z", 0]])
    assert got == {"read": 2_500_003, "written": 10}
    assert (data / "d" / "out").read_bytes() == b"mpitiny-wf"
    assert (data / "tiny").read_bytes() == b"mpi"
    assert (data / "z").stat().st_size == 0
    assert (data / "in").read_bytes().startswith(b"mpitiny-wfwork in\n")
    assert not list(data.rglob("*" + PART_SUFFIX))

    def interrupted(_seconds):
        raise KeyboardInterrupt("stopped while burning")

    monkeypatch.setattr(wfwork, "spin", interrupted)
    with pytest.raises(KeyboardInterrupt):
        wfwork.run_task(1.0, [], [["new", 5000], ["d/out", 10]])
    assert not (data / "new").exists()                   # nothing under a declared name
    assert (data / "d" / "out").read_bytes() == b"mpitiny-wf"
    assert not list(data.rglob("*" + PART_SUFFIX))


def test_worker_input_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("MPITINY_RUN_DIR", str(tmp_path))
    wfwork.stage([["x", 50]])
    with pytest.raises(wfwork.WorkFileError, match=r"input file 'gone' is missing \(.*data/gone\)"):
        wfwork.run_task(0.0, [["gone", 1]], [["never", 1]])
    assert not (tmp_path / "data" / "never").exists()
    with pytest.raises(wfwork.WorkFileError, match="input file 'x' has 50 bytes, the workflow "
                                                   "declares 51"):
        wfwork.run_task(0.0, [["x", 51]])
    os.replace(tmp_path / "data" / "x", tmp_path / "data" / "y")
    with pytest.raises(wfwork.WorkFileError, match="input file 'y' does not start with the "
                                                   "header"):
        wfwork.run_task(0.0, [["y", 50]])
    monkeypatch.delenv("MPITINY_RUN_DIR")
    with pytest.raises(wfwork.WorkFileError, match="MPITINY_RUN_DIR is not set"):
        wfwork.run_task(0.0)


# ------------------------------------------------------------------ runs under MPI

def import_small(tmp_path, inst: dict | None = None) -> tuple:
    src = tmp_path / "small.json"
    src.write_text(json.dumps(inst or small()))
    path = tmp_path / "dag.json"
    convert_file(str(src), str(path), 1.0, work=True)
    return path, json.loads(path.read_text())


def run(python_module, n, path, out, timeout=120):
    return python_module(n, "mpitiny", "run", str(path), "--out", str(out),
                         timeout=timeout, cwd=str(path.parent))


def check_files(dag: dict, out: Path, results: dict) -> None:
    """Every declared file there with its size; every task read exactly its inputs."""
    data = out / "data"
    for name, size in declared(dag).items():
        assert (data / name).stat().st_size == size, name
    assert not list(data.rglob("*" + PART_SUFFIX))
    for t in dag["tasks"]:
        if t["fn"] == WORK_FN:
            assert results[t["id"]] == {"read": sum(s for _, s in t["kwargs"]["read"]),
                                        "written": sum(s for _, s in t["kwargs"]["write"])}


@pytest.mark.parametrize("n", [1, 2, 4])
def test_work_run(python_module, tmp_path, n):
    path, dag = import_small(tmp_path)
    out = tmp_path / "run"
    proc = run(python_module, n, path, out)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    counts = check_run(load_dag(str(path)), str(out))
    assert counts == {"done": len(dag["tasks"]), "failed": 0, "upstream_failed": 0}
    check_files(dag, out, read_results(str(out)))


@pytest.mark.parametrize("n", [1, 3])
def test_missing_input_fails_once_and_the_resume_keeps_finished_outputs(python_module,
                                                                         tmp_path, n):
    path, dag = import_small(tmp_path)
    stage = dag["tasks"][0]
    stage["kwargs"]["write"] = [f for f in stage["kwargs"]["write"] if f[0] != "raw/input.dat"]
    path.write_text(json.dumps(dag))                    # nothing writes raw/input.dat now
    out = tmp_path / "run"
    proc = run(python_module, n, path, out)
    assert proc.returncode == 1, proc.stderr + proc.stdout
    counts = check_run(load_dag(str(path)), str(out))
    assert counts == {"done": 2, "failed": 1, "upstream_failed": len(dag["tasks"]) - 3}
    text = strip_mpi_banners(proc.stdout + proc.stderr)
    assert text.count("mpitiny: first failure:") == 1
    assert text.count("WorkFileError: input file 'raw/input.dat' is missing") == 1
    data = out / "data"
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in data.rglob("*")}
    assert sorted(str(p.relative_to(data)) for p in before) == ["empty.out", "ref.txt"]

    os.environ["MPITINY_RUN_DIR"] = str(out)            # put the input there, as a user would
    try:
        wfwork.stage([["raw/input.dat", 3_000_000]])
    finally:
        del os.environ["MPITINY_RUN_DIR"]
    proc = run(python_module, n, path, out)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    check_run(load_dag(str(path)), str(out))
    check_files(dag, out, read_results(str(out)))
    for p, stamp in before.items():                     # the done tasks did not run again
        assert (p.stat().st_ino, p.stat().st_mtime_ns) == stamp, p
    done = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in data.rglob("*") if p.is_file()}
    proc = run(python_module, n, path, out)             # complete: runs nothing
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in done} == done


@pytest.mark.parametrize("victim", [0, 1])
def test_killed_run_resumes_without_half_files_or_rewrites(python_module, tmp_path, victim):
    path, dag = import_small(tmp_path)
    out = tmp_path / "run"
    proc = python_module(2, "mpitiny", "run", str(path), "--out", str(out), "-q", timeout=120,
                         cwd=str(tmp_path), env={"MPITINY_FAULT": f"rank={victim}:after=3:mode=kill"})
    assert proc.returncode != 0, "the injected kill -9 did not end the run"
    loaded = load_dag(str(path))
    done = jnl.read_journals(str(out), loaded.total).done
    done_ids = {loaded.task_id(int(gid)) for gid in np.flatnonzero(done)}
    assert done_ids and len(done_ids) < len(dag["tasks"])
    data = out / "data"
    before = {data / name: (data / name).stat().st_mtime_ns
              for t in dag["tasks"] if t["id"] in done_ids for name, _ in t["kwargs"]["write"]}
    proc = run(python_module, 2, path, out)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    check_run(loaded, str(out))
    check_files(dag, out, read_results(str(out)))
    assert {p: p.stat().st_mtime_ns for p in before} == before


@pytest.mark.parametrize("n", [1, 2, 3])
def test_work_run_of_a_task_of_two_cores(python_module, tmp_path, n):
    """A task of ``coreCount`` 2 holds two rank slots: the cores of the tasks running at once
    never sum to more than the ranks (all here are one node); on one rank it can never run:
    one error naming it, nothing run."""
    leaves = [(f"leaf{i}", [], [], [f"l{i}.out"], 0.05) for i in range(8)]
    tasks = [("wide", [], [], ["w.out"], 0.3), *leaves,
             ("join", ["wide", *[f"leaf{i}" for i in range(8)]], ["w.out"], [], 0.01)]
    sizes = {"w.out": 4096, **{f"l{i}.out": 10 for i in range(8)}}
    path, dag = import_small(tmp_path, instance(tasks, sizes, cores={"wide": 2}))
    assert by_id(dag)["wide"]["cores"] == 2
    out = tmp_path / "run"
    proc = run(python_module, n, path, out)
    if n == 1:
        lines = strip_mpi_banners(proc.stderr).strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1, proc.stderr
        assert "(id 'wide'): cores: 2 is more than the ranks of a node (1 on" in lines[0]
        assert not out.exists()
        return
    assert proc.returncode == 0, proc.stderr + proc.stdout
    loaded = load_dag(str(path))
    check_run(loaded, str(out))
    check_files(dag, out, read_results(str(out)))
    rows = read_tasks(str(out))
    assert most_at_once(rows, per_row(loaded, rows, lambda g: g.options.cores or 1)) <= n


@needs_shared
@pytest.mark.parametrize("name", ["helloworld-forkjoin-10-chameleon.json",
                                  "seismology-chameleon-100p-001.json"])
def test_shared_instance_work_run(python_module, tmp_path, name):
    path = tmp_path / "dag.json"
    convert_file(str(SHARED / name), str(path), 1e-4, work=True, size_scale=0.01)
    dag = json.loads(path.read_text())
    out = tmp_path / "run"
    proc = run(python_module, 4, path, out)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    check_run(load_dag(str(path)), str(out))
    check_files(dag, out, read_results(str(out)))
