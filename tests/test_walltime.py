"""Wall-time awareness: the run's end (``--time-limit``, a Slurm job's end), the ``"walltime"``
task key, which tasks start before the end and which are held back, the stop (exit 75) and
the resumed run (``mpitiny.engine.walltime``, ``Control.agree_end`` / ``in_time`` /
``held_back``).

No test here asserts how long anything took. The in-process runs (``run_local``) use a fake
clock where durations matter: a task "takes" 10 s by moving the clock the engine reads, so
which tasks start under a limit is exact. The MPI test runs sleeping commands with a declared
``walltime`` and a limit they cannot all fit in: it asserts the exit statuses, that every
task that started ended, and the outputs; the Slurm test (marker ``slurm``) lets a one-minute
job end its run on its own, requeue and finish.
"""
from __future__ import annotations

import json
import math
import os
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner

from mpitiny.cli import cli
from mpitiny.dag.load import load_dag_text
from mpitiny.engine import control as control_module
from mpitiny.engine import loop as loop_module
from mpitiny.engine import running as running_module
from mpitiny.engine.control import Control
from mpitiny.engine.local import run_local
from mpitiny.engine.summary import time_limit_line
from mpitiny.engine.types import RunCounts, RunOptions
from mpitiny.engine.walltime import (MARGIN_MAX, MARGIN_MIN, SLURM_RESERVE, TimeLimit,
                                     parse_slurm_time, run_end)
from mpitiny.engine.world import LocalFabric
from mpitiny.errors import DagError
from mpitiny.io.rundir import DONE, read_results, read_tasks

SCHEMA = Path(__file__).resolve().parents[1] / "mpitiny" / "dag" / "schema.json"


def load(dag: dict):
    return load_dag_text(json.dumps(dag), source="dag.json")


def summary_of(run_dir) -> dict:
    return json.loads((Path(run_dir) / "summary.json").read_text())


# ---------------------------------------------------------------------- the "walltime" key
def test_walltime_is_a_task_option():
    dag = load({"name": "w", "tasks": [
        {"id": "f", "cmd": "true", "foreach": {"i": {"range": [3]}}, "walltime": 2},
        {"id": "p", "cmd": "true", "walltime": 0.25, "timeout": 9},
        {"id": "q", "cmd": "true"}]})
    f, p, q = dag.groups
    assert f.options.walltime == 2.0 and isinstance(f.options.walltime, float)
    assert p.options.walltime == 0.25 and p.options.timeout == 9.0
    assert q.options.walltime is None


@pytest.mark.parametrize("value, shown", [
    (0, "0"), (-1.5, "-1.5"), ("5s", "'5s'"), (True, "true"), (None, "null"), (1e300, "1e+300"),
    ([1], "[1]")])
def test_bad_walltime_is_one_message(value, shown, tmp_path):
    dag = {"name": "w", "tasks": [{"id": "a", "cmd": "true", "walltime": value}]}
    with pytest.raises(DagError) as err:
        load(dag)
    assert err.value.format() == ("dag.json: tasks[0] (id 'a'): walltime: must be a number of "
                                  f"seconds > 0 (at most one year), not {shown}")
    path = tmp_path / "dag.json"
    path.write_text(json.dumps(dag))
    result = CliRunner().invoke(cli, ["validate", str(path)], catch_exceptions=False)
    assert result.exit_code == 2 and result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"mpitiny: error: {path}: tasks[0] (id 'a')")
    assert "walltime: must be a number of seconds > 0" in lines[0]


def test_schema_knows_walltime():
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text()))
    assert validator.is_valid({"name": "w", "tasks": [{"id": "a", "cmd": "x", "walltime": 1.5}]})
    assert not validator.is_valid({"name": "w", "tasks": [{"id": "a", "cmd": "x", "walltime": 0}]})


def test_the_limit_counts_from_the_process_start():
    import psutil
    from mpitiny.cli import process_started
    started = process_started()
    assert started <= time.time()
    assert abs(started - psutil.Process().create_time()) < 2.0   # psutil: whole-second boot time


def test_bad_time_limit_option(tmp_path):
    path = tmp_path / "dag.json"
    path.write_text(json.dumps({"name": "w", "tasks": [{"id": "a", "cmd": "true"}]}))
    for bad in ("0", "-3", "soon"):
        result = CliRunner().invoke(cli, ["run", str(path), "--time-limit", bad])
        assert result.exit_code == 2, result.output
        assert "--time-limit" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "mpitiny-runs").exists()


# ---------------------------------------------------------------------- the end
def test_run_end_from_the_time_limit_and_slurm():
    opts = RunOptions(time_limit=30, started=1000.0)
    assert run_end(opts, environ={}) == (1030.0, "--time-limit 30 s")
    assert run_end(RunOptions(started=1000.0), environ={}) is None
    slurm = {"SLURM_JOB_ID": "7", "SLURM_JOB_END_TIME": "5000"}
    end, what = run_end(RunOptions(started=1000.0), environ=slurm)
    assert end == 5000 - SLURM_RESERVE and what.startswith("Slurm job 7 ends at ")
    assert run_end(RunOptions(time_limit=30, started=1000.0), environ=slurm)[0] == 1030.0
    early = dict(slurm, SLURM_JOB_END_TIME="1040")
    assert run_end(RunOptions(time_limit=30, started=1000.0), environ=early)[0] == \
        1040 - SLURM_RESERVE
    assert run_end(RunOptions(started=1000.0, job_end=False), environ=slurm) is None
    # without SLURM_JOB_END_TIME, only the rank that may ask squeue finds the job's end
    assert run_end(RunOptions(started=1000.0), query_slurm=False,
                   environ={"SLURM_JOB_ID": "7"}) is None


def test_parse_slurm_time():
    assert parse_slurm_time("2026-12-06T03:37:06") == \
        time.mktime((2026, 12, 6, 3, 37, 6, 0, 0, -1))
    for text in ("N/A", "Unknown", "", "NONE", "2026-13-40T00:00:00"):
        assert parse_slurm_time(text) is None


def _limit(dag: dict, end: float = 1100.0, started: float = 1000.0) -> TimeLimit:
    return TimeLimit(end, "test", started, load(dag))


def test_margin_and_what_a_task_is_expected_to_take():
    dag = {"name": "w", "tasks": [
        {"id": "f", "cmd": "x", "foreach": {"i": {"range": [3]}}},
        {"id": "d", "cmd": "x", "foreach": {"i": {"range": [3]}}, "walltime": 7},
        {"id": "p", "cmd": "x"}]}
    assert _limit(dag).stop_at == 1100 - 5.0                     # 5 % of 100 s
    assert _limit(dag, end=1010).stop_at == 1010 - MARGIN_MIN
    assert _limit(dag, end=10_000).stop_at == 10_000 - MARGIN_MAX
    limit = _limit(dag)
    assert limit.expected(0, 0.5, 3.0) == (0.5, False)      # a family: its average here
    assert limit.expected(0, math.nan, 3.0) == (0.0, False)  # not run here yet: optimistic
    assert limit.expected(1, 0.5, 3.0) == (7.0, True)       # declared walltime wins
    assert limit.expected(2, math.nan, 3.0) == (3.0, False)  # a plain task: the rank's average
    assert limit.expected(2, math.nan, math.nan) == (0.0, False)
    assert limit.fit(10, 2.0, now=1085.0) == 5               # 10 s left: five of 2 s
    assert limit.fit(10, 0.0, now=1094.9) == 10
    assert limit.fit(10, 2.0, now=1095.0) == 0 and limit.fit(10, 0.0, now=1096.0) == 0


def _control(dag: dict, opts: RunOptions) -> tuple:
    fabric = LocalFabric(1)
    world = fabric.world(0)
    control = Control(world.words(8), 1)
    counts = RunCounts()
    control.agree_end(world, opts, load(dag), counts)
    return control, counts


def test_no_limit_leaves_the_hot_path_alone(monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    control, counts = _control({"name": "w", "tasks": [{"id": "a", "cmd": "x"}]}, RunOptions())
    assert control.agreed and control.limit is None and control.start_by == 0.0
    assert counts.run_end == 0.0


def test_in_time_claims_what_fits_and_sets_the_latest_start(monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    dag = {"name": "w", "tasks": [{"id": "f", "cmd": "x", "foreach": {"i": {"range": [9]}}}]}
    started = time.time()
    control, counts = _control(dag, RunOptions(time_limit=100, started=started))
    assert control.limit is not None and counts.run_end == started + 100
    stop_at = control.limit.stop_at
    monkeypatch.setattr(control_module, "time", SimpleNamespace(time=lambda: stop_at - 7.0))
    assert list(control.in_time(0, range(9), 2.0, 2.0)) == [0, 1, 2]     # 7 s: three of 2 s
    assert control.start_by == stop_at - 2.0 and not control.declared
    ids = np.arange(5)
    assert control.in_time(0, ids, 0.5, 0.5) is ids                       # all fit: no copy
    control.held_back(6, counts)
    assert counts.held_back == 6 and counts.held_back_declared == 0
    assert control.end() == 4                                              # End.TIME_LIMIT


def test_time_limit_line():
    line = time_limit_line({"not_run": 16, "time_limit": {
        "end_local": "2026-12-06 03:40:36", "from": "--time-limit 30 s", "held_back": 4,
        "held_back_declared": 1}})
    assert line.startswith("mpitiny: stopped for the time limit (the run ends at 03:40:36: "
                           "--time-limit 30 s) with 16 tasks not run; 4 held back")
    assert "(1 by their declared walltime, 3 by the average time of their tasks here)" in line
    assert line.endswith("run the same command again to resume (exit status 75)")
    assert "longer than the whole limit" not in line
    line = time_limit_line({"not_run": 3, "time_limit": {
        "end_local": "2026-12-06 03:40:36", "from": "x", "held_back": 2,
        "held_back_declared": 2, "held_back_too_long": 2}})
    assert ("2 held back, as they would not finish in time (2 by their declared walltime), 2 of "
            "them expected to take longer than the whole limit: a run this long cannot run "
            "them; the journals are saved") in line


# ---------------------------------------------------------------------- in-process runs
class FakeClock:
    """The engine's clock, ``shift`` seconds ahead of the real one: a task that calls
    ``advance`` "takes" that long without waiting."""

    shift = 0.0

    def __init__(self) -> None:
        self.time = lambda: time.time() + FakeClock.shift
        self.perf_counter = lambda: time.perf_counter() + FakeClock.shift
        self.monotonic = lambda: time.monotonic() + FakeClock.shift

    def __getattr__(self, name):
        return getattr(time, name)


def advance(i: int, seconds: float) -> int:
    """A task of the in-process runs: ``seconds`` pass on the fake clock; returns i * i."""
    FakeClock.shift += seconds
    return i * i


@pytest.fixture
def fake_clock(monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    FakeClock.shift = 0.0
    clock = FakeClock()
    for module in (loop_module, control_module, running_module):
        monkeypatch.setattr(module, "time", clock)
    yield clock
    FakeClock.shift = 0.0


def _tens(walltime: float | None = None) -> dict:
    family = {"id": "t", "fn": "test_walltime:advance", "args": ["{i}", 10],
              "foreach": {"i": {"range": [10]}}}
    if walltime is not None:
        family["walltime"] = walltime
    return {"name": "tens", "tasks": [family]}


def _started(run_dir) -> set:
    rows = read_tasks(str(run_dir))
    return {int(g) for g in rows["gid"][rows["attempt"] > 0]}


@pytest.mark.parametrize("walltime, done", [(None, 5), (20.0, 4)])
def test_tasks_start_only_while_they_fit(fake_clock, tmp_path, walltime, done):
    """Ten tasks of 10 s on one rank, 55 s: tasks must end by 52 s (a 3 s margin). By the
    family's average (known after the first task) five fit; by a declared walltime of 20 s,
    four. The next one is held back, the run stops (75); the rerun (no limit) does the rest."""
    run_dir = tmp_path / "run"
    text = json.dumps(_tens(walltime))
    opts = RunOptions(quiet=True, time_limit=55, started=time.time())
    assert run_local(text, 1, str(run_dir), opts) == 75
    summary = summary_of(run_dir)
    assert summary["done"] == done and summary["not_run"] == 10 - done
    assert summary["stopped"] == "time-limit" and summary["exit_status"] == 75
    assert summary["held_back"] == 1
    assert summary["held_back_declared"] == (0 if walltime is None else 1)
    assert summary["held_back_too_long"] == 0
    assert summary["time_limit"]["from"] == "--time-limit 55 s"
    assert _started(run_dir) == set(range(done))
    assert run_local(text, 1, str(run_dir), RunOptions(quiet=True)) == 0
    again = summary_of(run_dir)
    assert again["done"] == 10 and again["cached"] == done and again["isolated"] == 0
    assert again["time_limit"] is None
    assert _started(run_dir) == set(range(done, 10))
    assert read_results(str(run_dir)) == {f"t[{i}]": i * i for i in range(10)}


def test_declared_walltime_holds_back_what_cannot_fit(monkeypatch, tmp_path):
    """3 ranks: a family of quick tasks, then (after all of them) tasks declared to take an
    hour, under a 10-minute limit: every quick task runs, no hour-long one starts; the
    rerun without a limit runs them and their child, values exact."""
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    dag = {"name": "hours", "tasks": [
        {"id": "a", "fn": "test_walltime:advance", "args": ["{i}", 0],
         "foreach": {"i": {"range": [0, 30]}}, "walltime": 1},
        {"id": "b", "fn": "test_walltime:advance", "args": ["{i}", 0],
         "foreach": {"i": {"range": [0, 4]}}, "walltime": 3600, "deps": ["a"]},
        {"id": "c", "fn": "test_walltime:advance", "args": [5, 0], "deps": ["b"]}]}
    run_dir = tmp_path / "run"
    for seed in range(3):
        status = run_local(json.dumps(dag), 3, str(run_dir), seed=seed,
                           opts=RunOptions(quiet=True, time_limit=600, resume="no"))
        assert status == 75
        summary = summary_of(run_dir)
        assert summary["done"] == 30 and summary["failed"] == 0 and summary["not_run"] == 5
        assert summary["held_back"] == summary["held_back_declared"] >= 1
        assert summary["held_back_too_long"] == summary["held_back"]     # 1 h > 10 min
        assert summary["time_limit"]["held_back_too_long"] == summary["held_back"]
        assert _started(run_dir) == set(range(30))
    assert run_local(json.dumps(dag), 2, str(run_dir), RunOptions(quiet=True)) == 0
    assert read_results(str(run_dir)) == {**{f"a[{i}]": i * i for i in range(30)},
                                          **{f"b[{i}]": i * i for i in range(4)}, "c": 25}
    rows = read_tasks(str(run_dir))
    assert (rows["status"] == DONE).all() and len(rows) == 35


def test_a_run_that_fits_is_not_stopped(monkeypatch, tmp_path):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    dag = {"name": "fits", "tasks": [
        {"id": "a", "fn": "mpitiny.tasks:echo", "args": ["{i}"],
         "foreach": {"i": {"range": [0, 50]}}, "walltime": 0.001}]}
    run_dir = tmp_path / "run"
    assert run_local(json.dumps(dag), 2, str(run_dir), RunOptions(quiet=True, time_limit=600)) == 0
    summary = summary_of(run_dir)
    assert summary["done"] == 50 and summary["stopped"] is None and summary["held_back"] == 0
    assert summary["time_limit"]["from"] == "--time-limit 600 s"


# ---------------------------------------------------------------------- MPI
def _sleepers(tmp_path: Path, n: int, seconds: float, walltime: float) -> Path:
    out, log = tmp_path / "out", tmp_path / "ran.log"
    out.mkdir()
    path = tmp_path / "dag.json"
    path.write_text(json.dumps({"name": "sleepers", "tasks": [
        {"id": "t", "foreach": {"i": {"range": [0, n]}}, "walltime": walltime,
         "cmd": (f"echo start {{i}} >> {log} && sleep {seconds} && "
                 f"echo $(( {{i}} * {{i}} )) > {out}/{{i}}.tmp && mv {out}/{{i}}.tmp "
                 f"{out}/{{i}}.txt && echo end {{i}} >> {log}")},
        {"id": "total", "deps": ["t"],
         "cmd": f"cat {out}/*.txt | awk '{{s += $1}} END {{print s}}' > {out}/total"}]}))
    return path


def _log(tmp_path: Path) -> tuple:
    lines = [line.split() for line in (tmp_path / "ran.log").read_text().splitlines()]
    return (Counter(i for what, i in lines if what == "start"),
            Counter(i for what, i in lines if what == "end"))


def test_time_limit_stops_before_the_end_and_the_rerun_finishes(python_module, tmp_path):
    """40 commands of 0.5 s declared at 0.75 s on 2 ranks cannot all run within 12 s (tasks
    must end 3 s before it: 15 s of declared work per rank, and even 10 s of real work, > 9 s;
    with 30, a quick machine ran them all and held back only the last task, which declares no
    walltime): the run exits 75 with every task it started ended; the same command again
    resumes, until every task ran exactly once and the outputs are exact."""
    n = 40
    dag = _sleepers(tmp_path, n, 0.5, 0.75)
    run_dir = tmp_path / "run"
    args = ("mpitiny", "run", str(dag), "--out", str(run_dir), "--time-limit", "12")
    env = {"SLURM_JOB_ID": None}
    first = python_module(2, *args, timeout=120, env=env)
    assert first.returncode == 75, first.stderr
    assert "mpitiny: stopped for the time limit" in first.stdout
    summary = summary_of(run_dir)
    assert summary["stopped"] == "time-limit" and summary["failed"] == 0
    assert summary["held_back"] == summary["held_back_declared"] >= 1
    starts, ends = _log(tmp_path)
    assert starts == ends and sum(starts.values()) < n
    for _ in range(6):                        # a loaded machine may need a few more runs
        again = python_module(2, *args, timeout=120, env=env)
        assert again.returncode in (0, 75), again.stderr
        starts, ends = _log(tmp_path)
        assert starts == ends
        if again.returncode == 0:
            break
    assert again.returncode == 0
    assert starts == Counter({str(i): 1 for i in range(n)})
    out = tmp_path / "out"
    assert all((out / f"{i}.txt").read_text() == f"{i * i}\n" for i in range(n))
    assert (out / "total").read_text() == f"{sum(i * i for i in range(n))}\n"
    rows = read_tasks(str(run_dir))
    assert (rows["status"] == DONE).all()


OVERRUN = """
import os
import time


def work(i, marker):
    if i == 0 and not os.path.exists(marker):      # the first attempt of task 0 overruns
        open(marker, "w").close()
        time.sleep(3600)
    return i * i
"""


def _overrunner(tmp_path: Path, kind: str) -> Path:
    marker, log = tmp_path / "overran", tmp_path / "ran.log"
    if kind == "fn":
        (tmp_path / "overrun.py").write_text(OVERRUN)
        task = {"fn": "overrun:work", "args": ["{i}", str(marker)]}
    else:
        task = {"cmd": f"if [ {{i}} = 0 ] && [ ! -e {marker} ]; then touch {marker}; "
                       f"sleep 3600; fi; echo {{i}} >> {log}"}
    path = tmp_path / "dag.json"
    path.write_text(json.dumps({"name": "overrun", "tasks": [
        {"id": "t", "foreach": {"i": {"range": [0, 6]}}, **task},
        {"id": "after", "cmd": "true", "deps": ["t"]}]}))
    return path


@pytest.mark.parametrize("kind", ["fn", "cmd"])
def test_a_task_that_overruns_is_stopped_at_the_end_and_runs_again(python_module, tmp_path,
                                                                   kind):
    """Task t[0] sleeps for an hour on its first attempt, with nothing to tell the run that it
    would (no walltime, the first task of its family): the run still ends at its time limit
    (the launcher's bound, far below the hour, would fail the test otherwise) with exit 75 and
    the task counted as stopped mid-way; the rerun runs it again, and every task ran once."""
    from mpitiny.dag.load import load_dag
    from mpitiny.io.check import check_run
    dag = _overrunner(tmp_path, kind)
    run_dir = tmp_path / "run"
    args = ("mpitiny", "run", str(dag), "--out", str(run_dir))
    env = {"SLURM_JOB_ID": None}
    first = python_module(2, *args, "--time-limit", "8", timeout=90, env=env)
    assert first.returncode == 75, first.stdout + first.stderr
    assert "1 stopped mid-way at the end, as they overran" in first.stdout, first.stdout
    summary = summary_of(run_dir)
    assert summary["stopped"] == "time-limit" and summary["time_limit"]["cut_off"] == 1
    assert summary["done"] < 7
    again = python_module(2, *args, timeout=90, env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    check_run(load_dag(str(dag)), str(run_dir))
    if kind == "fn":
        results = read_results(str(run_dir))
        assert [results[f"t[{i}]"] for i in range(6)] == [i * i for i in range(6)]
    else:
        ran = Counter((tmp_path / "ran.log").read_text().split())
        assert ran == Counter(str(i) for i in range(6))     # t[0]'s killed attempt logged nothing


SUSPECT = """
import os
import signal
import time


def work(i, marks):
    if i == 0 and not os.path.exists(marks + ".1"):      # attempt 1 takes its rank down
        open(marks + ".1", "w").close()
        deadline = time.time() + 30                       # once the others have run and
        while time.time() < deadline and not all(        # their ranks are idle: a rank the
                os.path.exists(marks + ".done%d" % k) for k in (1, 2, 3)):   # launcher kills
            time.sleep(0.01)                              # mid-task has a suspect too
        time.sleep(0.3)
        os.kill(os.getpid(), signal.SIGKILL)
    if i == 0 and not os.path.exists(marks + ".2"):      # attempt 2, alone, overruns
        open(marks + ".2", "w").close()
        time.sleep(3600)
    if i:
        open(marks + ".done%d" % i, "w").close()
    return i + 100
"""


def test_a_suspect_run_alone_is_stopped_at_the_end_and_stays_a_suspect(python_module,
                                                                        tmp_path):
    """t[0] kills its rank; in the resumed run it runs alone in a child process (a suspect)
    and overruns the time limit: the child is killed at the run's end (exit 75, counted as
    stopped mid-way, not as a crash); the next run runs it alone again and it returns. t[0]
    kills its rank only once the other tasks have run: a task that the launcher's kill
    interrupts on the other rank is a suspect too (CI saw that once: 2 run alone)."""
    from mpitiny.dag.load import load_dag
    from mpitiny.io.check import check_run
    (tmp_path / "suspect.py").write_text(SUSPECT)
    dag = tmp_path / "dag.json"
    dag.write_text(json.dumps({"name": "suspect", "tasks": [
        {"id": "t", "fn": "suspect:work", "args": ["{i}", str(tmp_path / "mark")],
         "foreach": {"i": {"range": [0, 4]}}}]}))
    run_dir = tmp_path / "run"
    args = ("mpitiny", "run", str(dag), "--out", str(run_dir))
    env = {"SLURM_JOB_ID": None}
    crashed = python_module(2, *args, timeout=90, env=env)
    assert crashed.returncode not in (0, 75) and (tmp_path / "mark.1").exists()
    stopped = python_module(2, *args, "--time-limit", "8", timeout=90, env=env)
    assert stopped.returncode == 75, stopped.stdout + stopped.stderr
    summary = summary_of(run_dir)
    assert summary["time_limit"]["cut_off"] == 1 and summary["crashed"] == 0
    assert summary["isolated"] == 1
    done = python_module(2, *args, timeout=90, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    check_run(load_dag(str(dag)), str(run_dir))
    summary = summary_of(run_dir)
    assert summary["isolated"] == 1 and summary["crashed"] == 0    # alone again, and it returned
    results = read_results(str(run_dir))
    assert [results[f"t[{i}]"] for i in range(4)] == [i + 100 for i in range(4)]


# ---------------------------------------------------------------------- Slurm
@pytest.mark.slurm
def test_slurm_job_ends_its_run_before_the_job_ends(tmp_path):
    """A one-minute job (the script's USR1@120 comes at once and is held: mpitiny knows the
    job's end) with 30 s of work on 2 ranks: the run ends itself 30 s before the job's end
    (exit 75), the job requeues, resumes and completes; no task was interrupted (each ran
    once)."""
    from test_slurm import Watcher, assert_completed, check_sleepy_run, sleepy_dag, watched_run_dag
    n = 60
    dag = sleepy_dag(tmp_path, n, 1.0)
    run_dir = tmp_path / "run"
    job = watched_run_dag(tmp_path, dag, Watcher(tmp_path / "ran.log"), options=("--time=1",))
    assert_completed(job)
    assert job.output.count("requeueing job") >= 1, job.describe()
    assert "User defined signal" not in job.output and "stopping mpitiny" not in job.output, \
        job.describe()
    check_sleepy_run(tmp_path, run_dir, n, job)
    ran = Counter(line.split()[0] for line in (tmp_path / "ran.log").read_text().splitlines())
    assert max(ran.values()) == 1, job.describe()
    first = json.loads((run_dir / "attempts" / "0001" / "summary.json").read_text())
    assert first["stopped"] == "time-limit" and first["time_limit"]["from"].startswith("Slurm job")
    assert os.path.exists(run_dir / "summary.json")
