"""Issue 5 end to end: kill -9 and resume, timeouts, crashes, retries, --max-fails, stop signals.

Kill-and-resume runs check, each time: the outputs are byte-identical to an uninterrupted run
(the DAG's value is known in closed form; wordcount is compared with a plain-Python Counter and
with a clean mpitiny run), every task is recorded exactly once and after its parents
(``check_run``), and no task the first run journaled as done ran again (each task appends a line
to a log when it runs; wordcount's rows of cached tasks say attempt 0).
"""
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from mpirun import MpirunTimeout, strip_mpi_banners
from mpitiny.dag.load import load_dag
from mpitiny.io import journal as jnl
from mpitiny.io.check import check_run
from mpitiny.io.rundir import gid_of, groups_of, read_results, read_tasks

pytestmark = pytest.mark.mpi
DAGS = Path(__file__).resolve().parent / "dags"
JOBS = Path(__file__).resolve().parents[1] / "jobs"
ENV = {"PYTHONPATH": os.pathsep.join([str(DAGS), str(JOBS)])}
sys.path[:0] = [str(DAGS), str(JOBS)]       # load_dag here imports the same task modules
N = 200


def write(tmp_path, dag: dict, name="dag.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(dag))
    return path


def run(python_module, n, dag_path, out, *extra, env=None, timeout=120):
    return python_module(n, "mpitiny", "run", str(dag_path), "--out", str(out), *extra,
                         timeout=timeout, cwd=str(dag_path.parent), env={**ENV, **(env or {})})


def rank_logs(out: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in sorted((out / "logs").glob("*.err")))


def square_dag(tmp_path, n=N, delay=0.002) -> Path:
    return write(tmp_path, {
        "name": "squares-plus", "params": {"n": n, "log": str(tmp_path / "ran.log"),
                                           "out": str(tmp_path / "out" / "total.txt"),
                                           "delay": delay},
        "tasks": [
            {"id": "sq", "fn": "reliability_tasks:square", "args": ["{i}", "{log}", "{delay}"],
             "foreach": {"i": {"range": [0, "{n}"]}}},
            {"id": "plus", "fn": "reliability_tasks:plus", "args": ["{i}", "{log}"],
             "foreach": {"i": {"range": [0, "{n}"]}}, "deps": ["sq[{i}]"]},
            {"id": "total", "fn": "reliability_tasks:total", "args": ["{out}", "{log}"],
             "deps": ["plus"]}]})


def expected_square_results(n=N) -> dict:
    out = {f"sq[{i}]": i * i for i in range(n)}
    out.update({f"plus[{i}]": i * i + 1 for i in range(n)})
    out["total"] = sum(i * i + 1 for i in range(n))
    return out


def ran_lines(tmp_path) -> list:
    path = tmp_path / "ran.log"
    return path.read_text().splitlines() if path.exists() else []


def journaled_done_ids(run_dir: Path, dag_path: Path) -> set:
    dag = load_dag(str(dag_path))
    done = jnl.read_journals(str(run_dir), dag.total).done
    ids = {}
    for g in dag.groups:
        for i in range(g.size):
            ids[int(dag.base[g.index]) + i] = g.instance_id(i)
    return {ids[int(gid)] for gid in np.flatnonzero(done)}


def check_resumed_square_run(tmp_path, dag_path, out, done_before: set, lines_before: int):
    assert (tmp_path / "out" / "total.txt").read_bytes() == \
        f"{sum(i * i + 1 for i in range(N))}\n".encode()
    assert read_results(str(out)) == expected_square_results()
    check_run(load_dag(str(dag_path)), str(out))
    rerun = [line.split()[0] for line in ran_lines(tmp_path)[lines_before:]]
    again = done_before.intersection(rerun)
    assert not again, f"{len(again)} tasks journaled done ran again: {sorted(again)[:10]}"
    ran = Counter(line.split()[0] for line in ran_lines(tmp_path))
    assert set(ran) == set(expected_square_results())     # every task ran at least once


# ---------------------------------------------------------------------- kill -9 and resume
@pytest.mark.parametrize("seed", range(10))
def test_kill_one_rank_then_resume_dag(python_module, tmp_path, seed):
    rng = random.Random(seed)
    first_ranks, second_ranks = rng.choice([2, 3, 4]), rng.choice([1, 2, 3, 4])
    victim = rng.randrange(first_ranks)
    after = rng.randrange(0, N // (2 * first_ranks))
    dag_path = square_dag(tmp_path)
    out = tmp_path / "run"
    proc = run(python_module, first_ranks, dag_path, out, "-q",
               env={"MPITINY_FAULT": f"rank={victim}:after={after}:mode=kill"})
    assert proc.returncode != 0, "the injected kill -9 did not end the run"
    done_before = journaled_done_ids(out, dag_path)
    lines_before = len(ran_lines(tmp_path))
    assert len(done_before) <= lines_before
    proc = run(python_module, second_ranks, dag_path, out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["incarnation"] == 2 and summary["cached"] == len(done_before)
    assert summary["done"] == 2 * N + 1
    check_resumed_square_run(tmp_path, dag_path, out, done_before, lines_before)


def _wait_for_lines(log: Path, lines: int, seconds: float = 60) -> None:
    """Until ``lines`` tasks have run (lines in the tasks' log), or ``seconds`` have passed."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if log.exists() and log.read_text().count("\n") >= lines:
            return
        time.sleep(0.005)


def _kill_a_rank_later(out_dir: Path, log: Path, lines: int, rng: random.Random, killed: list):
    """Once ``lines`` tasks have run, SIGKILL one rank at random."""
    import psutil
    _wait_for_lines(log, lines)
    needle = str(out_dir)
    ranks = [p for p in psutil.process_iter(["cmdline"])
             if p.info["cmdline"] and "mpitiny" in p.info["cmdline"] and needle in p.info["cmdline"]
             and "python" in os.path.basename(p.info["cmdline"][0])]
    if ranks:
        victim = rng.choice(ranks)
        try:
            victim.send_signal(signal.SIGKILL)
            killed.append(victim.pid)
        except psutil.NoSuchProcess:
            pass


@pytest.mark.parametrize("seed", range(3))
def test_kill_9_from_outside_then_resume(python_module, tmp_path, seed):
    """A rank killed with SIGKILL by another process (not by the engine), at a random point."""
    rng = random.Random(100 + seed)
    dag_path = square_dag(tmp_path, delay=0.01)
    out = tmp_path / "run"
    killed: list = []
    killer = threading.Thread(target=_kill_a_rank_later,
                              args=(out, tmp_path / "ran.log", rng.randrange(10, 300), rng, killed))
    killer.start()
    proc = run(python_module, 3, dag_path, out, "-q")
    killer.join()
    assert killed and proc.returncode != 0, "the kill missed the run"
    done_before = journaled_done_ids(out, dag_path)
    lines_before = len(ran_lines(tmp_path))
    proc = run(python_module, 2, dag_path, out, "-q")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    check_resumed_square_run(tmp_path, dag_path, out, done_before, lines_before)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    sys.path.insert(0, str(JOBS))
    import wordcount
    from mpitiny.io.ingestion import ingest
    d = tmp_path_factory.mktemp("corpus")
    wordcount.generate(str(d / "corpus.txt"), megabytes=3, seed=7)
    ingest([str(d / "corpus.txt")], str(d / "corpus.h5"), chunk="64KiB")
    data = (d / "corpus.txt").read_bytes()
    rows = sorted(Counter(data.split()).items(), key=lambda kv: (-kv[1], kv[0]))
    return d, b"".join(w + b"\t" + str(n).encode() + b"\n" for w, n in rows)


_CLEAN: dict = {}


def wordcount(python_module, n, corpus_dir, out_dir, run_dir, env=None):
    return python_module(n, "mpitiny", "run", str(JOBS / "wordcount.json"), "--out", str(run_dir),
                         "-q", "--param", f"input={corpus_dir / 'corpus.h5'}",
                         "--param", f"output={out_dir}", timeout=120, env={**ENV, **(env or {})})


@pytest.mark.parametrize("seed", range(10))
def test_kill_one_rank_then_resume_wordcount(python_module, tmp_path, corpus, seed):
    corpus_dir, reference = corpus
    if "h5" not in _CLEAN:
        clean_out = tmp_path / "clean"
        proc = wordcount(python_module, 2, corpus_dir, clean_out, tmp_path / "clean-run")
        assert proc.returncode == 0, proc.stderr
        _CLEAN["h5"] = (clean_out / "wordcount.h5").read_bytes()
        assert (clean_out / "wordcount.tsv").read_bytes() == reference
    rng = random.Random(1000 + seed)
    first_ranks, second_ranks = rng.choice([2, 3, 4]), rng.choice([1, 2, 4])
    victim = rng.randrange(first_ranks)
    dag_path = JOBS / "wordcount.json"
    total = load_dag(str(dag_path), {"input": str(corpus_dir / "corpus.h5")}).total
    after = rng.randrange(0, max(1, total // (2 * first_ranks)))
    out, run_dir = tmp_path / "out", tmp_path / "run"
    for _ in range(8):   # the victim may run fewer than `after` tasks (others stole its maps),
        shutil.rmtree(out, ignore_errors=True)       # even none (a rank descheduled at start)
        shutil.rmtree(run_dir, ignore_errors=True)
        proc = wordcount(python_module, first_ranks, corpus_dir, out, run_dir,
                         env={"MPITINY_FAULT": f"rank={victim}:after={after}:mode=kill"})
        if proc.returncode != 0:
            break
        if after == 0:
            victim = (victim + 1) % first_ranks
        after //= 2
    assert proc.returncode != 0, "the injected kill -9 did not end the run"
    assert not (out / "wordcount.tsv").exists() or (out / "wordcount.tsv").read_bytes() == reference
    done = jnl.read_journals(str(run_dir), total).done
    proc = wordcount(python_module, second_ranks, corpus_dir, out, run_dir)
    assert proc.returncode == 0, proc.stderr
    assert (out / "wordcount.tsv").read_bytes() == reference
    assert (out / "wordcount.h5").read_bytes() == _CLEAN["h5"]
    assert sorted(os.listdir(out)) == ["wordcount.h5", "wordcount.tsv"]    # no temporaries
    rows = read_tasks(str(run_dir))
    assert len(rows) == total and len(np.unique(rows["gid"])) == total
    ran_again = rows[(rows["attempt"] != 0) & done[rows["gid"]]]
    assert len(ran_again) == 0, f"{len(ran_again)} tasks journaled done ran again"
    assert np.count_nonzero(rows["attempt"] == 0) == np.count_nonzero(done)


def test_truncated_and_garbled_journal_still_resumes(python_module, tmp_path):
    dag_path = square_dag(tmp_path)
    out = tmp_path / "run"
    proc = run(python_module, 2, dag_path, out, "-q",
               env={"MPITINY_FAULT": "rank=1:after=120:mode=kill"})
    assert proc.returncode != 0
    paths = sorted((out / "journal").glob("*.jnl"))
    for k, path in enumerate(paths):
        data = path.read_bytes()
        used = len(data.rstrip(b"\0"))
        cut = used - used % jnl.RECORD.itemsize
        # the last whole record torn in half, then junk where the next would be
        path.write_bytes(data[:cut - jnl.RECORD.itemsize // 2] + os.urandom(50 + k))
    done_before = journaled_done_ids(out, dag_path)
    lines_before = len(ran_lines(tmp_path))
    proc = run(python_module, 2, dag_path, out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resumed"]["journal_records_ignored"] >= len(paths)
    check_resumed_square_run(tmp_path, dag_path, out, done_before, lines_before)


# ---------------------------------------------------------------------- misbehaving tasks
def misbehaving_dag(tmp_path, how, **task_options) -> Path:
    return write(tmp_path, {
        "name": f"bad-{how}", "params": {"log": str(tmp_path / "ran.log")},
        "tasks": [
            {"id": "ok", "fn": "reliability_tasks:square", "args": ["{i}", "{log}"],
             "foreach": {"i": {"range": [0, 40]}}},
            {"id": "bad", "fn": "reliability_tasks:misbehave", "args": [how, "{log}"],
             **task_options},
            {"id": "after_ok", "fn": "reliability_tasks:square", "args": [7, "{log}"],
             "deps": ["ok"]},
            {"id": "after_bad", "fn": "reliability_tasks:square", "args": [8, "{log}"],
             "deps": ["bad"]}]})


def failures(out: Path) -> list:
    recs = []
    for path in sorted((out / "failures").glob("*.jsonl")):
        recs += [json.loads(line) for line in path.read_text().splitlines()]
    return recs


@pytest.mark.parametrize("how,expect", [
    ("sys_exit", "SystemExit: 4"),
    ("keyboard", "KeyboardInterrupt"),
    ("raise", "ValueError: bad"),
])
def test_python_task_exits_or_interrupts_fails_alone(python_module, tmp_path, how, expect):
    dag_path = misbehaving_dag(tmp_path, how)
    out = tmp_path / "run"
    proc = run(python_module, 2, dag_path, out, "-q")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["done"], summary["failed"], summary["upstream_failed"]) == (41, 1, 1)
    (rec,) = failures(out)
    assert rec["id"] == "bad" and expect in rec["error"]


@pytest.mark.parametrize("how", ["segv", "os_exit", "kill"])
def test_task_that_kills_its_rank_fails_after_three_crashes(python_module, tmp_path, how):
    """A poison task: it takes its rank down every time. The first run dies; the resumed run
    runs it alone in a child process, which dies twice more: then it fails, and the rest of the
    DAG finishes."""
    dag_path = misbehaving_dag(tmp_path, how)
    out = tmp_path / "run"
    proc = run(python_module, 2, dag_path, out, "-q")
    assert proc.returncode not in (0, 1, 75), proc.stdout + proc.stderr
    proc = run(python_module, 2, dag_path, out, "-q")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["incarnation"] == 2
    assert (summary["done"], summary["failed"], summary["upstream_failed"]) == (41, 1, 1)
    assert summary["crashed"] == 2 and summary["isolated"] >= 2     # + its chunk-mates, once
    (rec,) = failures(out)
    assert rec["id"] == "bad" and "crashed 3 times" in rec["error"] and rec["attempt"] == 3
    runs = [line for line in ran_lines(tmp_path) if line.startswith("misbehave")]
    assert [line.split()[1] for line in runs] == ["1", "2", "3"]     # MPITINY_ATTEMPT
    if how == "segv":
        logs = "".join(p.read_text(errors="replace") for p in (out / "attempts").rglob("*.err"))
        assert "Segmentation fault" in logs and "misbehave" in logs   # faulthandler's traceback
    # a fourth run does not run it again
    proc = run(python_module, 2, dag_path, out, "-q", "--resume")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["isolated"] == 0 and summary["failed"] == 1


def test_python_task_past_its_timeout_fails_and_the_rank_goes_on(python_module, tmp_path):
    dag_path = misbehaving_dag(tmp_path, "hang", timeout=1)
    out = tmp_path / "run"
    proc = run(python_module, 2, dag_path, out, "-q")   # a hang would outlast its bound
    assert proc.returncode == 1, proc.stdout + proc.stderr
    (rec,) = failures(out)
    assert "TaskTimeout: timed out after 1 s" in rec["error"]
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["done"], summary["failed"]) == (41, 1)


def test_command_past_its_timeout_is_killed_with_its_process_group(python_module, tmp_path):
    marker = tmp_path / "grandchild-still-alive"
    dag_path = write(tmp_path, {"name": "cmd-timeout", "tasks": [
        {"id": "slow", "cmd": f"(sleep 4; touch {marker}) & sleep 100", "timeout": 1},
        {"id": "fine", "cmd": "true"}]})
    out = tmp_path / "run"
    proc = run(python_module, 2, dag_path, out, "-q")   # a hang would outlast its bound
    assert proc.returncode == 1
    (rec,) = failures(out)
    assert "timed out after 1 s: its process group was killed" in rec["error"]
    time.sleep(4.5)
    assert not marker.exists(), "a process of the timed-out command survived"


def test_hang_that_ignores_the_alarm_ends_the_rank_then_fails_alone(python_module, tmp_path):
    """A task stuck where SIGALRM cannot reach it (signals blocked, as in C code that never
    returns): faulthandler's watchdog ends the rank GRACE_SECONDS after the timeout, with the
    task's traceback in the log; the resumed run runs it alone in a child process, kills it at
    its timeout each time, and fails it after three crashes; the rest of the DAG finishes."""
    dag_path = misbehaving_dag(tmp_path, "blocked_hang", timeout=1)
    out = tmp_path / "run"
    try:
        proc = run(python_module, 2, dag_path, out, "-q")   # a hang would outlast its bound
    except MpirunTimeout as exc:
        raise AssertionError(f"{exc}\nthe ranks' logs:\n{rank_logs(out)}") from None
    assert proc.returncode != 0 and not (out / "summary.json").exists()    # the job was ended
    logs = rank_logs(out)
    assert "misbehave" in logs                       # the hung task's traceback
    proc = run(python_module, 2, dag_path, out, "-q")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    (rec,) = failures(out)
    assert rec["id"] == "bad" and "timed out after 1 s" in rec["error"]
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["done"], summary["failed"], summary["upstream_failed"]) == (41, 1, 1)


def test_retries_and_attempt_numbers(python_module, tmp_path):
    dag_path = write(tmp_path, {"name": "retry", "params": {"log": str(tmp_path / "ran.log")},
                                "tasks": [
        {"id": "flaky", "fn": "reliability_tasks:flaky", "args": ["{i}", "{log}", 3],
         "foreach": {"i": {"range": [0, 5]}}, "retries": 2},
        {"id": "hopeless", "fn": "reliability_tasks:flaky", "args": [9, "{log}", 5]},
        {"id": "cmd", "cmd": 'test "$MPITINY_ATTEMPT" -ge 2'}]})
    out = tmp_path / "run"
    proc = run(python_module, 2, dag_path, out, "-q", "--retries", "1")
    assert proc.returncode == 1
    results = read_results(str(out))
    assert all(results[f"flaky[{i}]"] == 3 for i in range(5))
    rows = read_tasks(str(out))
    groups = groups_of(str(out))
    attempt = {int(r["gid"]): int(r["attempt"]) for r in rows}
    assert attempt[gid_of(groups, "cmd")] == 2 and attempt[gid_of(groups, "hopeless")] == 2
    (rec,) = failures(out)
    assert rec["id"] == "hopeless" and rec["attempt"] == 2 and "attempt 2 of flaky[9]" in rec["error"]
    assert len(ran_lines(tmp_path)) == 5 * 3 + 2


READERS_MODULE = """
import os

def parent():
    return b"P" * 4096

def child(i, marker, inputs):
    if inputs["p"] != b"P" * 4096:
        raise ValueError("child %d read a parent value freed too early: %r" % (i, inputs["p"][:8]))
    attempt = os.environ.get("MPITINY_ATTEMPT")
    if i == 0 and marker == "crash" and attempt in ("1", "2"):
        os._exit(9)                 # takes its rank down, then its child process once more
    if i == 0 and marker == "raise" and attempt == "1":
        raise RuntimeError("the first attempt fails")
    return (b"C%d" % i) * 2048                      # kept: may reuse a freed value's space

def count(inputs):
    return len(inputs)
"""


def readers_dag(tmp_path, marker: str) -> Path:
    (tmp_path / "readers.py").write_text(READERS_MODULE)
    return write(tmp_path, {"name": "readers", "tasks": [
        {"id": "p", "fn": "readers:parent"},
        {"id": "c", "fn": "readers:child", "args": ["{i}", marker], "retries": 2,
         "foreach": {"i": {"range": [0, 6]}}, "deps": ["p"]},
        {"id": "d", "fn": "readers:count", "deps": ["c"]}]})


@pytest.mark.parametrize("n", [1, 2])
def test_a_retried_task_reads_its_inputs_once(python_module, tmp_path, n):
    """A retry passes the inputs the failed attempt read: reading them again counted the
    parent's value down twice, so it was freed (and its space reused by c[4]'s value) before
    c[5] read it."""
    out = tmp_path / "run"
    proc = run(python_module, n, readers_dag(tmp_path, "raise"), out, "-q")
    assert proc.returncode == 0, proc.stdout + proc.stderr + "".join(
        json.dumps(f) for f in failures(out))
    assert read_results(str(out))["d"] == 6
    assert json.loads((out / "summary.json").read_text())["retried"] == 1


def test_a_crashed_task_that_reads_inputs_runs_alone_with_them_once(python_module, tmp_path):
    """Resumed, c[0] runs alone in a child process, which crashes once more, then succeeds
    with the right inputs. The rank reads them once, before the first child (each child used
    to read them itself: MPI calls after fork)."""
    dag_path = readers_dag(tmp_path, "crash")
    out = tmp_path / "run"
    proc = run(python_module, 1, dag_path, out, "-q")
    assert proc.returncode not in (0, 1, 75), proc.stdout + proc.stderr
    proc = run(python_module, 1, dag_path, out, "-q")
    assert proc.returncode == 0, proc.stdout + proc.stderr + "".join(
        json.dumps(f) for f in failures(out))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["crashed"] == 1 and summary["isolated"] == 2
    assert read_results(str(out))["d"] == 6


def test_max_fails_ends_the_run(python_module, tmp_path):
    dag_path = write(tmp_path, {"name": "many-fail", "tasks": [
        {"id": "f", "fn": "mpitiny.tasks:fail", "foreach": {"i": {"range": [0, 2000]}}}]})
    out = tmp_path / "run"
    proc = run(python_module, 2, dag_path, out, "--max-fails", "5")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped"] == "max-fails" and 5 <= summary["failed"] < 2000
    assert "stopped after" in proc.stdout


@pytest.mark.parametrize("sig", [signal.SIGUSR1, signal.SIGTERM])
def test_stop_signal_stops_resumably_and_the_rerun_resumes(python_module, tmp_path, mpi_impl, sig):
    """The launcher is sent the signal (as Slurm does) and forwards it to the ranks."""
    dag_path = square_dag(tmp_path, delay=0.02)
    out = tmp_path / "run"
    stopper = threading.Thread(target=_signal_launcher,
                               args=(out, sig, tmp_path / "ran.log", 60))
    stopper.start()
    proc = run(python_module, 2, dag_path, out)
    stopper.join()
    if mpi_impl == "openmpi" and sig == signal.SIGTERM:
        # prterun forwards SIGTERM but then ends the ranks itself (SIGKILL) and exits 1: the
        # resume below is then like the one after a kill -9
        assert proc.returncode != 0
    else:
        assert proc.returncode == 75, proc.stdout + proc.stderr
        assert proc.stdout.count("run the same command again to resume") == 1
        summary = json.loads((out / "summary.json").read_text())
        assert summary["stopped"] == "signal" and summary["not_run"] > 0, proc.stderr
        assert summary["stop_signals"] == [signal.Signals(sig).name]
    done_before = journaled_done_ids(out, dag_path)
    lines_before = len(ran_lines(tmp_path))
    proc = run(python_module, 3, dag_path, out, "-q")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    check_resumed_square_run(tmp_path, dag_path, out, done_before, lines_before)


def _signal_launcher(out: Path, sig, log: Path, lines: int) -> None:
    """Once ``lines`` tasks have run, send ``sig`` to the mpiexec of the run writing ``out``."""
    import psutil
    _wait_for_lines(log, lines)
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        launcher = os.path.basename(cmd[0]) if cmd else ""
        if launcher in ("mpiexec", "mpirun", "prterun", "mpiexec.hydra") and str(out) in cmd:
            p.send_signal(sig)


# ---------------------------------------------------------------------- when to resume
def test_complete_run_runs_nothing_and_other_dag_is_refused(python_module, tmp_path):
    dag_path = square_dag(tmp_path, n=N, delay=0)
    out = tmp_path / "run"
    assert run(python_module, 2, dag_path, out, "-q").returncode == 0
    lines = len(ran_lines(tmp_path))
    proc = run(python_module, 2, dag_path, out)                       # complete: nothing to run
    assert proc.returncode == 0 and proc.stdout.count("nothing to run") == 1, proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["incarnation"] == 1 and summary["cached"] == 0
    proc = run(python_module, 2, dag_path, out, "-q", "--resume")     # the same
    summary = json.loads((out / "summary.json").read_text())
    assert proc.returncode == 0 and summary["incarnation"] == 1
    assert len(ran_lines(tmp_path)) == lines
    other = square_dag(tmp_path, n=N + 1, delay=0)
    proc = run(python_module, 2, other, out, "-q", "--resume")
    assert proc.returncode == 2
    err = strip_mpi_banners(proc.stderr).strip().splitlines()
    assert len(err) == 1 and "belong to another DAG" in err[0] and "--fresh" in err[0]


def test_unwritable_run_directory_is_one_clear_error(python_module, tmp_path):
    dag_path = square_dag(tmp_path, n=5, delay=0)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = run(python_module, 2, dag_path, blocker / "run", "-q")
    assert proc.returncode == 2
    err = strip_mpi_banners(proc.stderr).strip().splitlines()
    assert len(err) == 1 and "cannot prepare run directory" in err[0], proc.stderr


@pytest.fixture
def small_fs(tmp_path):
    """A 400 KiB tmpfs (needs root; skipped elsewhere), unmounted afterwards."""
    mnt = tmp_path / "small-fs"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(mnt)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (not root?)")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_full_run_directory_is_a_clear_error(python_module, tmp_path, small_fs):
    dag_path = write(tmp_path, {"name": "fills", "tasks": [
        {"id": "b", "fn": "mpitiny.tasks:echo", "args": ["x" * 200 + "{i}"],
         "foreach": {"i": {"range": [0, 20000]}}}]})
    proc = run(python_module, 2, dag_path, small_fs / "run", "-q")
    assert proc.returncode not in (0, 1, 2), proc.stderr
    errors = [line for line in strip_mpi_banners(proc.stderr).splitlines()
              if line.startswith("mpitiny: error:")]
    assert errors and "No space left on device" in errors[0], proc.stderr
    assert "run the same command again to resume" in errors[0]
    assert "Traceback" not in proc.stderr, proc.stderr


def test_read_only_run_directory_is_one_clear_error(python_module, tmp_path, small_fs):
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    dag_path = square_dag(tmp_path, n=5, delay=0)
    proc = run(python_module, 2, dag_path, small_fs / "run", "-q")
    assert proc.returncode == 2
    err = strip_mpi_banners(proc.stderr).strip().splitlines()
    assert len(err) == 1 and "cannot prepare run directory" in err[0] \
        and "Read-only file system" in err[0], proc.stderr


@pytest.mark.parametrize("mode", ["exit", "segv", "kill", "hang", "raise"])
def test_fault_modes_end_the_run_and_it_resumes(python_module, tmp_path, mode):
    """MPITINY_FAULT in each mode ends the job (a hung rank: by the launcher's timeout, as a
    time limit would); the rerun resumes and finishes with the right outputs."""
    dag_path = square_dag(tmp_path)
    out = tmp_path / "run"
    env = {"MPITINY_FAULT": f"rank=1:after=20:mode={mode}"}
    try:
        proc = run(python_module, 2, dag_path, out, "-q", env=env, timeout=8 if mode == "hang" else 120)
        assert proc.returncode != 0, proc.stderr
        if mode == "raise":
            assert proc.returncode == 3 and "fault injected by MPITINY_FAULT" in proc.stderr
        if mode == "segv":
            logs = rank_logs(out)
            assert "Segmentation fault" in logs or "Fatal Python error" in logs
    except MpirunTimeout:
        assert mode == "hang"
    done_before = journaled_done_ids(out, dag_path)
    lines_before = len(ran_lines(tmp_path))
    proc = run(python_module, 2, dag_path, out, "-q")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    check_resumed_square_run(tmp_path, dag_path, out, done_before, lines_before)


def test_status_of_a_killed_and_of_a_resumed_run(python_module, tmp_path, monkeypatch):
    from mpitiny.engine import progress
    dag_path = square_dag(tmp_path)
    out = tmp_path / "run"
    proc = run(python_module, 2, dag_path, out, "-q",
               env={"MPITINY_FAULT": "rank=0:after=30:mode=kill"})
    assert proc.returncode != 0
    monkeypatch.setattr(progress, "STALE_SECONDS", 0.0)
    done = len(journaled_done_ids(out, dag_path))
    line = progress.status(str(out))
    assert f"interrupted: {done} of {2 * N + 1} tasks done (journaled, run 1)" in line
    assert "running the same command again resumes it" in line
    assert run(python_module, 2, dag_path, out, "-q").returncode == 0
    line = progress.status(str(out))
    assert line.startswith("squares-plus: complete:") and f"{done} were done in earlier runs" in line
