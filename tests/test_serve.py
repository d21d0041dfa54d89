"""Jobs that share one served run (``mpitiny serve``, issue 21 point 4): jobs submitted before
and while a server runs on 2 and 4 ranks are exact (every task once, after its parents, from
the jobs' task lines), ``mpitiny status`` lists them, a bad dag.json fails its job alone with
one message, a job can be cancelled, ``mpitiny stop`` ends the server with exit 0, and a
restarted server (on 1 rank, the first ran on 4) finishes a job the stop interrupted without
running a task twice. The job files themselves (ids, claims, cancel before pickup, requeue)
are checked without MPI. No durations are asserted: the tests wait for states.
"""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from mpitiny.cli import cli
from mpitiny.io import jobs as jf

TASKS = '''
import time


def square(i, pause=0.0):
    time.sleep(pause)
    return i * i


def boom():
    print("boom says hi")
    raise ValueError("boom on purpose")
'''


def staged(name: str, n: int, pause: float) -> dict:
    """``sq[i]`` -> ``again[i]`` (element-wise) -> ``end`` (waits for the whole family)."""
    return {"name": name, "tasks": [
        {"id": "sq", "fn": "tasks_serve:square", "args": ["{i}", pause],
         "foreach": {"i": {"range": [0, n]}}},
        {"id": "again", "fn": "tasks_serve:square", "args": ["{i}", pause],
         "foreach": {"i": {"range": [0, n]}}, "deps": ["sq[{i}]"]},
        {"id": "end", "cmd": "echo {n} > end-{name}.txt", "deps": ["again"]}],
        "params": {"n": n, "name": name}}


def write(tmp_path: Path, name: str, dag: dict) -> str:
    (tmp_path / "tasks_serve.py").write_text(TASKS)
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(dag))
    return str(path)


def cli_run(*args: str):
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def submit(run: Path, dag: str, priority: int = 0) -> str:
    code, out = cli_run("submit", str(run), dag, "--priority", str(priority))
    assert code == 0, out
    return out.strip()


class Server:
    """A server running in a thread (``python_module`` with its timeout) until stopped."""

    def __init__(self, python_module, n: int, run: Path, cwd: Path) -> None:
        self.result = None
        self.run = run

        def serve():
            self.result = python_module(n, "mpitiny", "serve", str(run), "-q", timeout=90,
                                        cwd=str(cwd))
        self.thread = threading.Thread(target=serve, daemon=True)
        self.thread.start()

    def stop(self):
        jf.request_stop(str(self.run))
        self.thread.join(100)
        return self.result


def wait_for(run: Path, jid: str, test, what: str, timeout: float = 60) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        st = jf.read_state(str(run), jid)
        if test(st):
            return st
        time.sleep(0.05)
    raise AssertionError(f"job {jid} not {what} within {timeout} s: {st}")


def ended(st: dict) -> bool:
    return st.get("state") in jf.FINAL


def check_staged(run: Path, jid: str, n: int, cwd: Path, name: str) -> None:
    """Every task once, done, after its parents; the values right; the command ran."""
    rows = jf.read_lines(str(run), jid, "tasks")
    by_id = {}
    for r in rows:
        assert r["id"] not in by_id, f"job {jid}: {r['id']} ran twice"
        by_id[r["id"]] = r
    expected = {f"{f}[{i}]" for f in ("sq", "again") for i in range(n)} | {"end"}
    assert set(by_id) == expected
    assert all(r["status"] == "done" for r in rows)
    for i in range(n):
        assert by_id[f"again[{i}]"]["start"] >= by_id[f"sq[{i}]"]["end"]
    assert by_id["end"]["start"] >= max(by_id[f"again[{i}]"]["end"] for i in range(n))
    values = {r["id"]: r["value"] for r in jf.read_lines(str(run), jid, "results")}
    assert values == {f"{f}[{i}]": i * i for f in ("sq", "again") for i in range(n)}
    assert (cwd / f"end-{name}.txt").read_text().strip() == str(n)
    st = jf.read_state(str(run), jid)
    assert (st["state"], st["done"], st["tasks"]) == ("done", 2 * n + 1, 2 * n + 1)


@pytest.mark.mpi
def test_two_jobs_status_bad_job_cancel_and_stop(python_module, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)              # commands run where they were submitted from
    run = tmp_path / "run"
    one = submit(run, write(tmp_path, "one", staged("one", 30, 0.0)))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "bad", "tasks": [{"id": "x", "fn": "nosuchmod:f"}]}))
    broken = submit(run, str(bad))
    oops = submit(run, write(tmp_path, "oops", {"name": "oops", "tasks": [
        {"id": "boom", "fn": "tasks_serve:boom"}, {"id": "after", "cmd": "true", "deps": ["boom"]},
        {"id": "fine", "fn": "tasks_serve:square", "args": [3]}]}))
    long = submit(run, write(tmp_path, "long", staged("long", 400, 0.02)), priority=-1)
    server = Server(python_module, 2, run, tmp_path)
    try:
        wait_for(run, long, lambda s: s.get("state") == "running", "running")
        two = submit(run, write(tmp_path, "two", staged("two", 20, 0.0)), priority=5)
        code, out = cli_run("cancel", str(run), long)
        assert code == 0 and "cancel requested" in out, out
        for jid in (one, broken, oops, long, two):
            wait_for(run, jid, ended, "ended")
        code, listing = cli_run("status", str(run))
    finally:
        result = server.stop()
    assert result is not None and result.returncode == 0, result and result.stderr[-3000:]
    check_staged(run, one, 30, tmp_path, "one")
    check_staged(run, two, 20, tmp_path, "two")
    st = jf.read_state(str(run), broken)
    assert st["state"] == "failed" and "nosuchmod" in st["error"]
    error = (run / "jobs" / broken / "error.txt").read_text()
    assert error.count("\n") == 1 and "nosuchmod" in error
    assert result.stderr.count("nosuchmod") == 1        # said once, by the rank that loaded it
    st = jf.read_state(str(run), oops)
    assert (st["state"], st["done"], st["failed"], st["upstream_failed"]) == ("failed", 1, 1, 1)
    rows = {r["id"]: r["status"] for r in jf.read_lines(str(run), oops, "tasks")}
    assert rows == {"boom": "failed", "after": "upstream_failed", "fine": "done"}
    failures = jf.read_lines(str(run), oops, "failures")
    assert len(failures) == 1 and "boom on purpose" in failures[0]["error"]
    printed = "".join(p.read_text() for p in (run / "jobs" / oops / "logs").glob("*.fn.out"))
    assert printed == "boom says hi\n"
    cancelled = jf.read_state(str(run), long)
    assert cancelled["state"] == "cancelled" and cancelled["done"] < 801
    ids = [r["id"] for r in jf.read_lines(str(run), long, "tasks")]
    assert len(ids) == len(set(ids)) == cancelled["done"]
    assert code == 0
    for jid, state in ((one, "done"), (broken, "failed"), (oops, "failed"), (long, "cancelled"),
                       (two, "done")):
        assert any(line.split()[:2] == [jid, state] for line in listing.splitlines()), listing
    assert "jobs: 0 queued, 0 running, 0 interrupted, 2 done, 2 failed, 1 cancelled" in listing


@pytest.mark.mpi
def test_restarted_server_finishes_an_interrupted_job(python_module, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    big = submit(run, write(tmp_path, "big", staged("big", 150, 0.02)))
    small = submit(run, write(tmp_path, "small", staged("small", 10, 0.0)), priority=3)
    server = Server(python_module, 4, run, tmp_path)
    try:
        wait_for(run, small, ended, "ended")
        end = time.monotonic() + 60
        while len(jf.read_lines(str(run), big, "tasks")) < 40 and time.monotonic() < end:
            time.sleep(0.05)
    finally:
        first = server.stop()
    assert first is not None and first.returncode == 0, first and first.stderr[-3000:]
    assert jf.read_state(str(run), big)["state"] == "interrupted"
    again = Server(python_module, 1, run, tmp_path)
    try:
        wait_for(run, big, ended, "ended")
    finally:
        second = again.stop()
    assert second is not None and second.returncode == 0, second and second.stderr[-3000:]
    check_staged(run, small, 10, tmp_path, "small")
    check_staged(run, big, 150, tmp_path, "big")


def test_job_files_without_mpi(tmp_path):
    run = str(tmp_path / "run")
    dag = write(tmp_path, "one", staged("one", 3, 0.0))
    first, second = jf.submit_job(run, dag, {}, 0), jf.submit_job(run, dag, {}, 7)
    assert (first, second) == ("1", "2")
    assert jf.read_state(run, first)["state"] == "queued"
    assert jf.claim_next(run) == second                 # the higher priority first
    assert "cancelled (it had not started)" in jf.request_cancel(run, first)
    assert jf.claim_next(run) is None and jf.read_state(run, first)["state"] == "cancelled"
    jf.write_state(run, second, {"state": "running", "owner": 1, "slot": 0})
    assert jf.requeue_unfinished(run) == [second]
    assert jf.read_state(run, second) == {"state": "queued"}
    assert jf.claim_next(run) == second
    with pytest.raises(KeyError):
        jf.request_cancel(run, "9")
    code, out = cli_run("cancel", run, "9")
    assert code == 2 and out.count("no job '9'") == 1
    code, out = cli_run("submit", run, str(tmp_path / "missing.json"))
    assert code == 2 and out.count("missing.json") == 1
