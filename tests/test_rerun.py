"""Nothing lost, nothing silent: reruns keep finished work, every rank learns the exit status,
``mpitiny status`` names the case a run directory is in, ``mpitiny show`` shows a task's output.

- the same command again resumes: done tasks stay done, failed and skipped ones run again, a
  complete run runs nothing and rewrites nothing; another DAG's directory is refused with one
  message and left as it is; only ``--fresh`` starts over, moving the earlier run aside;
- ``mpitiny.run`` returns the run's status on every rank, so ``mpitiny.map`` raises on every
  rank, naming the failed item; a second ``map`` computes afresh;
- ``status``: running, interrupted, complete with failures, complete;
- ``show``: start and end; a cached task as it ran in an earlier run (its output there too);
  what a fn task printed (with the engine recording its offsets, engine/running.py).
"""
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from mpirun import strip_mpi_banners
from mpitiny.cli import cli
from mpitiny.engine import progress
from mpitiny.engine.local import SimulatedCrash, run_local
from mpitiny.engine.types import RunOptions
from mpitiny.io.rundir import RECORD_DTYPE, Records, RankFiles, describe_task, move_aside

TASKS = '''
import os
import sys


def maybe_fail(i, log, marker):
    with open(log, "a") as f:
        f.write(f"sq[{i}]\\n")
    if i == 3 and not os.path.exists(marker):
        raise ValueError("item 3 fails until the marker exists")
    return i * i


def plus(i, log, inputs):
    with open(log, "a") as f:
        f.write(f"plus[{i}]\\n")
    return sum(inputs.values()) + 1


def talk(i):
    print(f"out {i} \\u00e9" * (i + 1))
    print(f"err {i}", file=sys.stderr)
    if i % 2:
        sys.stdout.write("no newline")
    return i
'''


def write_tasks(tmp_path: Path) -> dict:
    (tmp_path / "rerun_tasks.py").write_text(TASKS)
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path),
                                                        os.environ.get("PYTHONPATH")]))}


def rerun_dag(tmp_path: Path, n: int = 8) -> Path:
    """hello (a command), sq[i] (item 3 fails until ``marker`` exists), plus[i] after sq[i]."""
    dag = {"name": "rerun", "params": {"n": n, "log": str(tmp_path / "ran.log"),
                                       "marker": str(tmp_path / "fixed")},
           "tasks": [
               {"id": "hello", "cmd": "echo hello from a command"},
               {"id": "sq", "fn": "rerun_tasks:maybe_fail", "args": ["{i}", "{log}", "{marker}"],
                "foreach": {"i": {"range": [0, "{n}"]}}},
               {"id": "plus", "fn": "rerun_tasks:plus", "args": ["{i}", "{log}"],
                "foreach": {"i": {"range": [0, "{n}"]}}, "deps": ["sq[{i}]"]}]}
    path = tmp_path / "dag.json"
    path.write_text(json.dumps(dag))
    return path


def ran(tmp_path: Path) -> list:
    log = tmp_path / "ran.log"
    return log.read_text().splitlines() if log.exists() else []


def summary_of(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def snapshot(root: Path) -> dict:
    """Every file under ``root``: its size and modification time."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def one_error(proc) -> str:
    err = [line for line in strip_mpi_banners(proc.stderr).strip().splitlines() if line]
    assert len(err) == 1, proc.stderr
    assert err[0].startswith("mpitiny: error:") and "Traceback" not in proc.stderr
    return err[0]


# ---------------------------------------------------------------------- reruns (mpiexec)
def test_rerun_resumes_failed_then_does_nothing_other_dag_refused_fresh_moves_aside(
        python_module, tmp_path):
    """Fails on the old code: the second run started afresh (incarnation 1, every task ran
    again), and a complete run ran again."""
    env = write_tasks(tmp_path)
    dag_path = rerun_dag(tmp_path)
    out = tmp_path / "run"

    def run(*extra, dag=dag_path):
        return python_module(2, "mpitiny", "run", str(dag), "--out", str(out), *extra,
                             timeout=120, cwd=str(tmp_path), env=env)

    proc = run("-q")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    s = summary_of(out)
    assert (s["done"], s["failed"], s["upstream_failed"]) == (15, 1, 1)
    line = progress.status(str(out))
    assert line.startswith("rerun: complete with failures:")
    assert "running the same command again reruns the 2 failed or skipped tasks" in line
    first = len(ran(tmp_path))
    assert first == 15                                   # 8 sq + 7 plus

    # the same command again: only the failed one and the one it skipped run again
    proc = run("-q")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    s = summary_of(out)
    assert s["incarnation"] == 2 and s["cached"] == 15
    assert (s["done"], s["failed"], s["upstream_failed"]) == (15, 1, 1)
    assert ran(tmp_path)[first:] == ["sq[3]"]

    (tmp_path / "fixed").write_text("")
    proc = run()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "resumed (run 3): 15 tasks were done in earlier runs" in proc.stdout
    s = summary_of(out)
    assert s["incarnation"] == 3 and s["done"] == 17 and s["cached"] == 15
    assert sorted(ran(tmp_path)[first + 1:]) == ["plus[3]", "sq[3]"]
    line = progress.status(str(out))
    assert line.startswith("rerun: complete: all 17 tasks done") and "does nothing" in line

    # a command done in run 1 (cached since) is shown as it ran then, with its output
    info = describe_task(str(out), "hello")
    assert info["status"] == "done" and info["attempt"] == 1 and info["run"] == 1
    assert info["dir"] == os.path.join("attempts", "0001")
    assert info["stdout"].strip() == "hello from a command"
    shown = CliRunner().invoke(cli, ["show", str(out), "hello"])
    assert shown.exit_code == 0, shown.output
    assert "run: 1 (an earlier run: attempts/0001)" in shown.output
    assert "hello from a command" in shown.output

    # complete: one line, exit 0, nothing run and nothing rewritten
    before = snapshot(out)
    lines_before = len(ran(tmp_path))
    proc = run()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    said = [line for line in proc.stdout.splitlines() if line.startswith("mpitiny:")]
    assert len(said) == 1 and "rerun: complete: all 17 tasks are done" in said[0], proc.stdout
    assert "nothing to run" in said[0]
    assert snapshot(out) == before and len(ran(tmp_path)) == lines_before
    proc = run("-q", "--resume")                # --resume is the default, kept for scripts
    assert proc.returncode == 0 and snapshot(out) == before

    # another DAG (other parameters): one message, nothing changed
    for extra in ((), ("--resume",)):
        proc = run("-q", "--param", "n=9", *extra)
        assert proc.returncode == 2
        err = one_error(proc)
        assert "belong to another DAG or other parameters" in err and str(out) in err
        assert "'rerun'" in err and "17 tasks" in err and "--fresh" in err and "--out" in err
        assert err.startswith("mpitiny: error: --resume: the journals in") == bool(extra)
        assert snapshot(out) == before

    # --fresh: the earlier run moved aside, said where, the new run starts over
    proc = run("--fresh")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    aside = Path(f"{out}.old-1")
    moved = [line for line in proc.stdout.splitlines() if "--fresh" in line]
    assert moved == [f"mpitiny: --fresh: moved the earlier run in {out} to {aside}"]
    assert snapshot(aside) == before
    s = summary_of(out)
    assert s["incarnation"] == 1 and s["cached"] == 0 and s["done"] == 17


def test_no_journal_does_not_discard_an_unfinished_run(python_module, tmp_path):
    """--no-journal on a directory holding journals of an unfinished run of the same DAG is
    refused (the old code deleted them); one message, nothing changed."""
    env = write_tasks(tmp_path)
    dag_path = rerun_dag(tmp_path)
    out = tmp_path / "run"
    proc = python_module(2, "mpitiny", "run", str(dag_path), "--out", str(out), "-q",
                         "--max-fails", "1", timeout=120, cwd=str(tmp_path), env=env)
    assert proc.returncode == 1 and summary_of(out)["stopped"] == "max-fails"
    assert progress.status(str(out)).startswith("rerun: interrupted (stopped by max-fails):")
    before = snapshot(out)
    proc = python_module(2, "mpitiny", "run", str(dag_path), "--out", str(out), "-q",
                         "--no-journal", timeout=120, cwd=str(tmp_path), env=env)
    assert proc.returncode == 2
    assert "--no-journal would not add to them" in one_error(proc)
    assert snapshot(out) == before


# ---------------------------------------------------------------------- every rank's status
MAP_SCRIPT = '''
import sys

import mpitiny
from mpi4py import MPI
from mpitiny.errors import TasksFailed


def square(x):
    if x == 7:
        raise ValueError("seven is not welcome")
    return x * x


if __name__ == "__main__":
    out = sys.argv[1]
    rank = MPI.COMM_WORLD.rank
    said = []                                            # the ranks' stdout would interleave
    dag = mpitiny.DAG("one-fails")
    dag.family("sq", square, args=["{i}"], foreach={"i": [1, 7, 2]})
    said.append(f"run status {mpitiny.run(dag, out=out + '-dag', quiet=True)}")
    try:
        said.append(f"returned {mpitiny.map(square, [5, 6, 7, 8, 9], out=out)}")
    except TasksFailed as exc:
        said.append(f"raised {exc.message.splitlines()[0]}")
    said.append(f"again {mpitiny.map(square, [1, 2, 3], out=out)}")
    said.append(f"the same {mpitiny.map(square, [1, 2, 3], out=out)}")
    with open(f"{out}.rank-{rank}.txt", "w") as f:
        f.write("\\n".join(said) + "\\n")
'''


@pytest.mark.parametrize("n", [2, 3])
def test_every_rank_gets_the_status_and_map_raises_on_every_rank(mpirun, tmp_path, n):
    """Fails on the old code: ranks but 0 got run status 0 and map returned
    [25, 36, None, 64, 81] there."""
    script = tmp_path / "maps.py"
    script.write_text(MAP_SCRIPT)
    proc = mpirun(n, [str(script), str(tmp_path / "m")], cwd=str(tmp_path), timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for r in range(n):
        said = (tmp_path / f"m.rank-{r}.txt").read_text().splitlines()
        assert said == ["run status 1",
                        "raised mpitiny.map: square(items[2]) failed, items[2] = 7:",
                        "again [1, 4, 9]",                  # computed afresh
                        "the same [1, 4, 9]"], (r, said)


# ---------------------------------------------------------------------- status (no MPI)
LOCAL_DAG = {"name": "local", "tasks": [
    {"id": "a", "fn": "mpitiny.tasks:echo", "args": ["{i}"], "foreach": {"i": {"range": [0, 30]}}},
    {"id": "b", "fn": "mpitiny.tasks:echo", "args": ["{i}"], "foreach": {"i": {"range": [0, 30]}},
     "deps": ["a[{i}]"]}]}


def local(run_dir: Path, dag: dict, **kwargs) -> int:
    return run_local(json.dumps(dag), 2, str(run_dir), RunOptions(quiet=True), **kwargs)


def with_failure() -> dict:
    dag = json.loads(json.dumps(LOCAL_DAG))
    dag["tasks"].append({"id": "bad", "fn": "mpitiny.tasks:fail"})
    dag["tasks"].append({"id": "after_bad", "fn": "mpitiny.tasks:null", "deps": ["bad"]})
    return dag


def status_line(run_dir: Path) -> str:
    result = CliRunner().invoke(cli, ["status", str(run_dir)])
    assert result.exit_code == 0, result.output
    return result.output.strip()


def test_status_complete(tmp_path):
    """Fails on the old code ("finished", no case, no word on what a rerun does)."""
    assert local(tmp_path / "run", LOCAL_DAG) == 0
    line = status_line(tmp_path / "run")
    assert line.startswith("local: complete: all 60 tasks done in ")
    assert line.endswith("running the same command again does nothing (--fresh starts over)")


def test_status_complete_with_failures(tmp_path):
    assert local(tmp_path / "run", with_failure()) == 1
    line = status_line(tmp_path / "run")
    assert line.startswith("local: complete with failures: 60 done, 1 failed, 1 upstream-failed "
                           "of 62 in ")
    assert line.endswith("running the same command again reruns the 2 failed or skipped tasks")


def test_status_interrupted_killed_and_stopped(tmp_path, monkeypatch):
    with pytest.raises(SimulatedCrash):
        local(tmp_path / "killed", LOCAL_DAG, crash_after=12)
    line = status_line(tmp_path / "killed")
    assert line.startswith("local: interrupted: ") and "of 60 tasks done (journaled, run 1)" in line
    assert line.endswith("if its job is gone, running the same command again resumes it")
    (tmp_path / "killed" / "progress.json").write_text(json.dumps({
        "name": "local", "state": "running", "done": 7, "total": 60, "failed": 0, "rate": 5.0,
        "eta_seconds": 1.0, "busy_ranks": 2, "ranks": 2, "rss_mb": 90,
        "elapsed_seconds": 5.0, "updated": time.time() - 3 * progress.STALE_SECONDS}))
    line = status_line(tmp_path / "killed")
    assert line.startswith("local: interrupted: ") and "last updated 180 s ago" in line
    opts = RunOptions(quiet=True, max_fails=1)
    dag = with_failure()
    dag["tasks"].insert(0, dag["tasks"].pop(2))          # bad first
    assert run_local(json.dumps(dag), 1, str(tmp_path / "stopped"), opts) == 1
    line = status_line(tmp_path / "stopped")
    assert line.startswith("local: interrupted (stopped by max-fails): ")
    assert line.endswith("running the same command again resumes it")


def test_status_running(tmp_path):
    (tmp_path / "progress.json").write_text(json.dumps({
        "name": "big", "state": "running", "done": 250, "total": 1000, "failed": 2, "rate": 50.0,
        "eta_seconds": 15.0, "busy_ranks": 4, "ranks": 4, "rss_mb": 90, "elapsed_seconds": 5.0,
        "updated": time.time() - 3}))
    line = status_line(tmp_path)
    assert line.startswith("big: running: progress done=250/1000 pct=25.0 failed=2")
    assert line.endswith("(updated 3 s ago)")


# ---------------------------------------------------------------------- files (no MPI)
def test_fn_streams_count_bytes_and_records_take_offsets(tmp_path):
    """Fails on the old code: no ``fn_out`` / ``size``, ``add_run`` takes no ``out``/``err``."""
    (tmp_path / "logs").mkdir()
    files = RankFiles(str(tmp_path), 2)
    out, err = files.python_streams()
    assert (out, err) == (files.fn_out, files.fn_err) and out.size == 0
    assert out.write("h\u00e9llo\n") == 6 and out.size == 7           # bytes, not characters
    out.write("\udcff!")                                                # a lone surrogate
    assert out.size == 9
    at = out.size
    print("more", file=out)
    files.close()
    data = (tmp_path / "logs" / "rank-00002.fn.out").read_bytes()
    assert data == "h\u00e9llo\n?!more\n".encode() and data[at:] == b"more\n"
    assert not (tmp_path / "logs" / "rank-00002.fn.err").exists()
    again = RankFiles(str(tmp_path), 2)                # reopened: size counts what is there
    assert again.fn_out.size == len(data)

    records = Records(2, str(tmp_path / "rows"), capacity=2)
    records.add_one(0, 1, 0.0, 1.0, out=(5, 6), err=(7, 8))
    records.add_run([1, 2], 1, [0.0, 0.0], [1.0, 1.0])               # after a flush: zeros
    records.add_run([3, 4], 1, [0.0, 0.0], [1.0, 1.0], out=([10, 20], [3, 4]),
                    err=(np.array([1, 2]), np.array([0, 9])))
    table = records.table()
    assert table.dtype == RECORD_DTYPE
    assert table[["out_offset", "out_length", "err_offset", "err_length"]].tolist() == [
        (5, 6, 7, 8), (0, 0, 0, 0), (0, 0, 0, 0), (10, 3, 1, 0), (20, 4, 2, 9)]


def test_move_aside_numbers_siblings_and_keeps_other_files(tmp_path):
    run = tmp_path / "run"
    assert move_aside(str(run)) is None
    for k in (1, 2):
        (run / "journal").mkdir(parents=True)
        (run / "journal" / "run.json").write_text(str(k))
        (run / "summary.json").write_text("{}")
        (run / "mine.txt").write_text("not mpitiny's")
        assert move_aside(str(run)) == f"{run}.old-{k}"
        assert (Path(f"{run}.old-{k}") / "journal" / "run.json").read_text() == str(k)
        assert sorted(p.name for p in run.iterdir()) == ["mine.txt"]


def test_plan_of_a_rerun(tmp_path):
    """What rank 0 decides before changing anything (``plan_run_dir``)."""
    from mpitiny.dag.load import load_dag_text
    from mpitiny.engine.start import plan_run_dir
    from mpitiny.errors import BadInput

    def plan(run_dir, dag, scratch=False, **opts):
        text = json.dumps(dag)
        loaded = load_dag_text(text, source="<local DAG>", params={})
        return plan_run_dir(str(run_dir), loaded, text.encode(), {},
                            RunOptions(quiet=True, **opts), scratch).action

    assert plan(tmp_path / "new", LOCAL_DAG) == "new"
    assert local(tmp_path / "ok", LOCAL_DAG) == 0
    assert plan(tmp_path / "ok", LOCAL_DAG) == "complete"
    assert plan(tmp_path / "ok", LOCAL_DAG, resume="yes") == "complete"
    assert plan(tmp_path / "ok", LOCAL_DAG, resume="no") == "fresh"
    assert plan(tmp_path / "ok", LOCAL_DAG, journal=False) == "complete"
    assert local(tmp_path / "bad", with_failure()) == 1
    assert plan(tmp_path / "bad", with_failure()) == "resume"
    with pytest.raises(BadInput, match="--no-journal would not add to them"):
        plan(tmp_path / "bad", with_failure(), journal=False)
    with pytest.raises(BadInput, match=r"belong to another DAG .*'local'.*62 tasks, run 1, "
                                       r"complete\); nothing was changed: use --fresh"):
        plan(tmp_path / "bad", LOCAL_DAG)
    with pytest.raises(BadInput, match="not a map"):              # mpitiny.map's own dir
        plan(tmp_path / "bad", LOCAL_DAG, scratch=True)
    mapped = dict(LOCAL_DAG, name="map-f")
    assert local(tmp_path / "map", mapped) == 0
    assert plan(tmp_path / "map", mapped, scratch=True) == "replace"


# ---------------------------------------------------------------------- show (mpiexec)
def test_show_prints_times_and_what_fn_tasks_printed(python_module, tmp_path):
    env = write_tasks(tmp_path)
    dag = {"name": "talk", "tasks": [
        {"id": "t", "fn": "rerun_tasks:talk", "args": ["{i}"], "foreach": {"i": {"range": [0, 6]}}},
        {"id": "c", "cmd": "echo cmd-out; echo cmd-err >&2"}]}
    (tmp_path / "dag.json").write_text(json.dumps(dag))
    out = tmp_path / "run"
    proc = python_module(2, "mpitiny", "run", str(tmp_path / "dag.json"), "--out", str(out),
                         "-q", timeout=120, cwd=str(tmp_path), env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    shown = CliRunner().invoke(cli, ["show", str(out), "c"])
    assert shown.exit_code == 0, shown.output
    header = shown.output.split("\n---")[0].splitlines()
    fields = dict(line.split(": ", 1) for line in header if ": " in line)
    assert fields["status"] == "done" and "start" in fields and "end" in fields, shown.output
    start = time.mktime(time.strptime(fields["start"].split(".")[0], "%Y-%m-%d %H:%M:%S"))
    assert abs(start - describe_task(str(out), "c")["start"]) < 1
    assert len(fields["end"].split(".")[1]) == 3 and fields["end"] >= fields["start"]
    assert "--- stdout\ncmd-out" in shown.output and "--- stderr\ncmd-err" in shown.output
    assert describe_task(str(out), "t[2]")["kind"] == "fn"


def test_show_prints_what_each_fn_task_printed(python_module, tmp_path):
    """Every assertion here needs both halves: ``RankFiles.fn_out.size`` / ``Records.add_run(
    out=, err=)`` (rundir.py) and the engine passing each fn task's offsets (running.py)."""
    env = write_tasks(tmp_path)
    dag = {"name": "talk", "tasks": [
        {"id": "t", "fn": "rerun_tasks:talk", "args": ["{i}"], "foreach": {"i": {"range": [0, 40]}}}]}
    (tmp_path / "dag.json").write_text(json.dumps(dag))
    out = tmp_path / "run"
    proc = python_module(2, "mpitiny", "run", str(tmp_path / "dag.json"), "--out", str(out),
                         "-q", timeout=120, cwd=str(tmp_path), env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for i in range(40):
        info = describe_task(str(out), f"t[{i}]")
        expect = f"out {i} \u00e9" * (i + 1) + "\n" + ("no newline" if i % 2 else "")
        assert info.get("stdout") == expect and info.get("stderr") == f"err {i}\n", info
    shown = CliRunner().invoke(cli, ["show", str(out), "t[3]"])
    assert "--- stdout\n" + "out 3 \u00e9" * 4 + "\nno newline" in shown.output
    assert "--- stderr\nerr 3" in shown.output
