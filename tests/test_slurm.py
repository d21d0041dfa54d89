"""The batch scripts in slurm/, submitted for real with ``sbatch --wait`` to a Slurm cluster.

Marked ``slurm``: skipped unless MPITINY_TEST_SLURM=1, which CI sets after
``slurm/local-cluster.sh`` has started a one-node cluster on the test machine (``.ci/run``).
Not marked ``mpi``: the MPI ranks are started by Slurm (srun / mpiexec inside the job), not by the
tests/mpirun.py harness. Every job gets a unique name; a job that outlives its timeout is
cancelled (``scancel``) and the test fails with the tail of its output.

The job's exit state comes from ``sbatch --wait``'s exit status and ``scontrol show job``
(the local cluster has no accounting database, so no ``sacct``; MinJobAge keeps finished jobs
in slurmctld's memory for 300 s).
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parent.parent
SLURM = REPO / "slurm"
JOB_TIMEOUT = float(os.environ.get("MPITINY_TEST_SLURM_TIMEOUT", "300"))   # seconds per job


class SlurmJob:
    def __init__(self, job_id, name, returncode, state, exit_code, output, elapsed):
        self.job_id, self.name, self.returncode = job_id, name, returncode
        self.state, self.exit_code, self.output, self.elapsed = state, exit_code, output, elapsed

    def describe(self) -> str:
        tail = self.output if len(self.output) < 4000 else "[...]" + self.output[-4000:]
        return (f"job {self.job_id} ({self.name}): sbatch --wait exit {self.returncode}, "
                f"JobState={self.state} ExitCode={self.exit_code}, {self.elapsed:.1f} s\n"
                f"--- job output ---\n{tail}")


def _job_info(job_id: str) -> dict:
    res = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True,
                         text=True, timeout=30)
    return dict(re.findall(r"(\w+)=(\S*)", res.stdout)) if res.returncode == 0 else {}


def sbatch(script: str, *args: str, tmp_path: Path, env: dict | None = None,
           timeout: float = JOB_TIMEOUT, options: tuple = ()) -> SlurmJob:
    """``sbatch --wait slurm/SCRIPT ARGS`` from the repository root; cancels the job on timeout."""
    if shutil.which("sbatch") is None:
        pytest.fail("MPITINY_TEST_SLURM=1 but there is no sbatch: run `bash slurm/local-cluster.sh`")
    name = f"mpitiny-test-{uuid.uuid4().hex[:10]}"
    out_file = tmp_path / f"{name}.out"
    full_env = {**os.environ, "MPITINY_HOME": str(REPO), **(env or {})}
    cmd = ["sbatch", "--wait", "--parsable", f"--job-name={name}", f"--output={out_file}",
           *options, str(SLURM / script), *args]
    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=REPO, env=full_env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        subprocess.run(["scancel", f"--name={name}"], timeout=30)
        proc.terminate()
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
        output = out_file.read_text(errors="replace") if out_file.exists() else "(no output)"
        pytest.fail(f"sbatch {script}: job {name} still running after {timeout:g} s: cancelled\n"
                    f"--- job output ---\n{output[-4000:]}")
    except BaseException:            # KeyboardInterrupt (CI's SIGTERM): leave no job behind
        subprocess.run(["scancel", f"--name={name}"], timeout=30)
        proc.kill()
        raise
    elapsed = time.monotonic() - start
    job_id = stdout.strip().split(";")[0].splitlines()[-1] if stdout.strip() else ""
    assert job_id.isdigit(), f"sbatch {script}: no job id (exit {proc.returncode}): {stdout}{stderr}"
    info = _job_info(job_id)
    output = out_file.read_text(errors="replace") if out_file.exists() else "(no output file)"
    output += f"\n--- sbatch stderr ---\n{stderr}" if stderr.strip() else ""
    return SlurmJob(job_id, name, proc.returncode, info.get("JobState", "?"),
                    info.get("ExitCode", "?"), output, elapsed)


def assert_completed(job: SlurmJob) -> None:
    assert job.returncode == 0 and job.state == "COMPLETED" and job.exit_code == "0:0", \
        job.describe()


def make_corpus(path: Path, megabytes: float, seed: int = 7) -> bytes:
    """A text of ``megabytes`` MB: Zipf-ish words, some with non-ASCII bytes, ragged whitespace."""
    rng = random.Random(seed)
    vocab = [bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(1, 9)))
             for _ in range(3000)]
    vocab += ["caf\u00e9".encode(), "na\u00efve".encode(), b"\xff\xfe"]
    weights = [1 / (i + 1) for i in range(len(vocab))]
    lines, size = [], 0
    while size < megabytes * 1e6:
        words = rng.choices(vocab, weights, k=rng.randint(0, 14))
        line = b" ".join(words) + (b"  \t" if rng.random() < 0.05 else b"") + b"\n"
        lines.append(line)
        size += len(line)
    data = b"".join(lines)
    path.write_bytes(data)
    return data


def reference_tsv(data: bytes) -> bytes:
    rows = sorted(Counter(data.split()).items(), key=lambda kv: (-kv[1], kv[0]))
    return b"".join(w + b"\t" + str(n).encode() + b"\n" for w, n in rows)


def test_wordcount_sbatch(tmp_path):
    corpus = tmp_path / "corpus.txt"
    data = make_corpus(corpus, 3)
    out = tmp_path / "out"
    job = sbatch("wordcount.sh", str(corpus), tmp_path=tmp_path, env={"OUT": str(out)})
    assert_completed(job)
    tsv = out / "wordcount.tsv"
    assert tsv.exists(), job.describe()
    got, want = tsv.read_bytes(), reference_tsv(data)
    if got != want:
        got_lines, want_lines = got.splitlines(), want.splitlines()
        first = next((i for i, (a, b) in enumerate(zip(got_lines, want_lines)) if a != b),
                     min(len(got_lines), len(want_lines)))
        pytest.fail(f"wordcount.tsv differs from collections.Counter(data.split()): "
                    f"{len(got_lines)} lines vs {len(want_lines)}; first difference at line "
                    f"{first + 1}: {got_lines[first:first + 1]} vs {want_lines[first:first + 1]}\n"
                    + job.describe())
    summary = json.loads((out / "run" / "summary.json").read_text())
    assert summary["failed"] == 0 and summary["exit_status"] == 0, summary


def test_wordcount_sbatch_generates_corpus(tmp_path):
    """No INPUT: the script generates the corpus itself (MB=2) and counts it."""
    out = tmp_path / "out"
    job = sbatch("wordcount.sh", tmp_path=tmp_path, env={"OUT": str(out), "MB": "2"})
    assert_completed(job)
    data = (out / "corpus.txt").read_bytes()
    assert len(data) >= 2e6
    assert (out / "wordcount.tsv").read_bytes() == reference_tsv(data), job.describe()
    assert "distinct" in job.output, job.describe()


def test_bag_of_tasks_sbatch(tmp_path):
    n = 500
    out = tmp_path / "bag"
    job = sbatch("bag_of_tasks.sh", str(n), tmp_path=tmp_path, env={"OUT": str(out)})
    assert_completed(job)
    result = json.loads((out / "bag.json").read_text())
    assert result == {"n": n, "sum_squares": sum(i * i for i in range(n)), "shell_files": n}
    assert sorted(int(p.stem) for p in (out / "out").iterdir()) == list(range(n))
    summary = json.loads((out / "run" / "summary.json").read_text())
    assert (summary["tasks"], summary["done"], summary["failed"]) == (2 * n + 1, 2 * n + 1, 0)
    assert summary["ranks"] == 2, summary


def test_bag_of_tasks_sbatch_mpiexec_fallback(tmp_path):
    """The documented fallback launcher (the MPI's own mpiexec inside the allocation) works too."""
    out = tmp_path / "bag"
    job = sbatch("bag_of_tasks.sh", "50", tmp_path=tmp_path,
                 env={"OUT": str(out), "MPITINY_LAUNCH": "mpiexec"})
    assert_completed(job)
    assert "mpiexec -n 2" in job.output, job.describe()
    assert json.loads((out / "bag.json").read_text())["shell_files"] == 50


def test_failing_job_is_reported(tmp_path):
    """A job whose tasks fail ends FAILED with a non-zero exit (what the other tests rely on)."""
    out = tmp_path / "bag"
    job = sbatch("bag_of_tasks.sh", "not-a-number", tmp_path=tmp_path, env={"OUT": str(out)})
    assert job.returncode != 0 and job.state == "FAILED", job.describe()
    assert "N must be a positive integer" in job.output, job.describe()


@pytest.mark.parametrize("script, dag", [("wordcount.sh", "jobs/wordcount.json"),
                                         ("grep.sh", "jobs/grep.json"),
                                         ("sort.sh", "jobs/sort.json")])
def test_missing_job_fails_clearly(tmp_path, script, dag):
    """In a checkout without the job's dag.json the script stops at once with a clear message."""
    home = tmp_path / "checkout"          # the checkout, minus jobs/
    home.mkdir()
    for name in ("mpitiny", "slurm", ".venv"):
        if (REPO / name).exists():
            (home / name).symlink_to(REPO / name)
    args = ("pattern",) if script == "grep.sh" else ()
    job = sbatch(script, *args, tmp_path=tmp_path,
                 env={"OUT": str(tmp_path / "o"), "MPITINY_HOME": str(home)})
    assert job.returncode != 0 and job.state == "FAILED", job.describe()
    assert f"{dag} does not exist" in job.output, job.describe()
    assert not (tmp_path / "o").exists()


def test_grep_sbatch(tmp_path):
    if not (REPO / "jobs" / "grep.json").exists():
        pytest.skip("no jobs/grep.json in this checkout")
    corpus = tmp_path / "corpus.txt"
    data = make_corpus(corpus, 2, seed=11)
    pattern = rb"caf\xc3\xa9|^ab+c| z[a-c]+ "
    out = tmp_path / "out"
    job = sbatch("grep.sh", pattern.decode(), str(corpus), tmp_path=tmp_path, env={"OUT": str(out)})
    assert_completed(job)
    want, offset = [], 0
    for line in data.split(b"\n")[:-1]:
        if re.search(pattern, line):
            want.append((str(offset).encode(), line))
        offset += len(line) + 1
    assert want, "the pattern should match something"
    rows = [r.split(b"\t", 2) for r in (out / "grep.tsv").read_bytes().split(b"\n")[:-1]]
    assert [Path(os.fsdecode(r[0])).name for r in rows] == ["corpus.txt"] * len(rows), rows[:3]
    assert [(r[1], r[2]) for r in rows] == want, job.describe()


def test_sort_sbatch(tmp_path):
    if not (REPO / "jobs" / "sort.json").exists():
        pytest.skip("no jobs/sort.json in this checkout")
    n = 50_000
    records = tmp_path / "records.bin"
    rng = random.Random(5)
    data = rng.randbytes(n * 100)
    records.write_bytes(data)
    out = tmp_path / "out"
    job = sbatch("sort.sh", str(records), "--param", "partitions=4", tmp_path=tmp_path,
                 env={"OUT": str(out)})
    assert_completed(job)
    parts = sorted((out / "sorted").glob("part-*.bin"))
    assert len(parts) == 4, job.describe()
    got = b"".join(p.read_bytes() for p in parts)
    recs = [data[i:i + 100] for i in range(0, len(data), 100)]
    want = b"".join(sorted(recs, key=lambda r: r[:10]))
    assert got == want, f"sorted output differs ({len(got)} vs {len(want)} bytes)\n" + job.describe()
    assert json.loads((out / "sorted" / "validate.json").read_text())["ok"] is True


# ---------------------------------------------------------------------- requeue and resume
def sleepy_dag(tmp_path: Path, n: int, seconds: float) -> Path:
    """n tasks of ``seconds`` each (each logs that it ran), then their total in total.txt."""
    shutil.copy(REPO / "tests" / "dags" / "reliability_tasks.py", tmp_path)
    path = tmp_path / "dag.json"
    path.write_text(json.dumps({"name": "sleepy", "params": {"log": str(tmp_path / "ran.log")},
                                "tasks": [
        {"id": "sq", "fn": "reliability_tasks:square", "args": ["{i}", "{log}", seconds],
         "foreach": {"i": {"range": [0, n]}}},
        {"id": "total", "fn": "reliability_tasks:total",
         "args": [str(tmp_path / "total.txt"), "{log}"], "deps": ["sq"]}]}))
    return path


class Watcher(threading.Thread):
    """Watches this test's job: starts requeued jobs at once (Slurm holds a requeued job for
    about two minutes, BeginTime: the watcher releases it after 2 s), optionally runs ``scontrol requeue`` once ``ran.log`` has
    ``requeue_after`` lines, and with ``warn_at_start`` sends Slurm's USR1 warning to the batch
    shell the moment that shell has set its trap (its first line), while its ranks are still
    starting Python. (Sent earlier, before bash has read the script, the signal kills the job:
    no script can hold a signal before its first line runs; Slurm's real warning comes at least
    ``--signal``'s offset before the end, well after that.)"""

    def __init__(self, log: Path, requeue_after: int | None = None, warn_at_start: bool = False):
        super().__init__(daemon=True)
        self.log, self.requeue_after, self.warn_at_start = log, requeue_after, warn_at_start
        self.requeued, self.released, self.warned = False, 0, False
        self.held_since: dict[str, float] = {}
        self.stop = threading.Event()

    def run(self):
        while not self.stop.wait(0.1 if self.warn_at_start and not self.warned else 1.0):
            jobs = subprocess.run(["squeue", "-h", "-o", "%i %j %r %T"], capture_output=True,
                                  text=True, timeout=30).stdout.split("\n")
            for line in jobs:
                parts = line.split()
                if len(parts) < 4 or not parts[1].startswith("mpitiny-test-"):
                    continue
                job_id, reason, state = parts[0], parts[2], parts[3]
                if reason != "BeginTime":
                    self.held_since.pop(job_id, None)
                elif time.monotonic() - self.held_since.setdefault(job_id, time.monotonic()) >= 2:
                    # not at once: slurmd refuses a job started within the second its previous
                    # incarnation ended ("Job credential revoked") and the job fails
                    self.held_since.pop(job_id)
                    subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"],
                                   capture_output=True, timeout=30)
                    self.released += 1
                if (self.warn_at_start and not self.warned and state == "RUNNING"
                        and batch_shell_traps_usr1(job_id)):
                    subprocess.run(["scancel", "--batch", "--signal=USR1", job_id],
                                   capture_output=True, timeout=30)
                    self.warned = True
                lines = self.log.read_text().count("\n") if self.log.exists() else 0
                if self.requeue_after is not None and not self.requeued and lines >= self.requeue_after:
                    subprocess.run(["scontrol", "requeue", job_id], capture_output=True, timeout=30)
                    self.requeued = True


def batch_shell_traps_usr1(job_id: str) -> bool:
    """Whether the batch shell of ``job_id`` (on this one-node cluster) catches USR1 yet: its
    ``SigCgt`` mask in /proc has bit 10 set."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if b"slurm_script" not in (proc / "cmdline").read_bytes():
                continue
            if f"SLURM_JOB_ID={job_id}\0".encode() not in (proc / "environ").read_bytes() + b"\0":
                continue
            status = (proc / "status").read_text()
        except OSError:
            continue
        caught = int(re.search(r"^SigCgt:\s*([0-9a-f]+)", status, re.M).group(1), 16)
        if caught & (1 << (signal.SIGUSR1 - 1)):
            return True
    return False


def watched_run_dag(tmp_path: Path, dag: Path, watcher: Watcher, options: tuple = ()) -> SlurmJob:
    """``sbatch slurm/run_dag.sh DAG -q`` (run directory ``tmp_path/run``) while ``watcher``
    watches the job."""
    watcher.start()
    try:
        return sbatch("run_dag.sh", str(dag), "-q", tmp_path=tmp_path,
                      env={"OUT": str(tmp_path / "run")}, options=options)
    finally:
        watcher.stop.set()


def check_sleepy_run(tmp_path: Path, run_dir: Path, n: int, job: SlurmJob) -> dict:
    from mpitiny.io import journal as jnl
    assert (tmp_path / "total.txt").read_text() == f"{sum(i * i for i in range(n))}\n", job.describe()
    ran = Counter(line.split()[0] for line in (tmp_path / "ran.log").read_text().splitlines())
    assert set(ran) == {f"sq[{i}]" for i in range(n)} | {"total"}
    done = jnl.done_counts(str(run_dir), n + 1)
    assert (done == 1).all(), f"tasks journaled done more than once: {np.flatnonzero(done != 1)}"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["exit_status"] == 0 and summary["done"] == n + 1, summary
    return summary


def test_time_limit_stops_requeues_and_resumes(tmp_path):
    """--time=1 with --signal=B:USR1@45: Slurm warns the batch shell in the job's first 15 s (it
    checks its timers every 30 s or so and may warn that much early, even in the first second:
    a CI run once got it 2 s in); mpitiny stops (exit 75), the script requeues the job, the job
    starts again with the same id and run directory, and resumes, until all 50 s of work
    (100 x 1 s on 2 ranks) are done."""
    n = 100
    dag = sleepy_dag(tmp_path, n, 1.0)
    run_dir = tmp_path / "run"
    job = watched_run_dag(tmp_path, dag, Watcher(tmp_path / "ran.log"),
                          options=("--time=1", "--signal=B:USR1@45"))
    assert_completed(job)
    assert job.output.count("requeueing job") >= 1, job.describe()
    summary = check_sleepy_run(tmp_path, run_dir, n, job)
    assert summary["incarnation"] >= 2 and summary["cached"] > 0, summary


def test_warning_while_ranks_start_is_held_until_they_catch_it(tmp_path):
    """USR1 sent to the batch shell as soon as the job runs, before the ranks have started
    Python: the script holds it until `mpitiny run` says every rank catches it, then the run
    stops cleanly (75, not killed by the signal), requeues and completes."""
    n = 40
    dag = sleepy_dag(tmp_path, n, 0.5)
    run_dir = tmp_path / "run"
    watcher = Watcher(tmp_path / "ran.log", warn_at_start=True)
    job = watched_run_dag(tmp_path, dag, watcher)
    assert watcher.warned
    assert_completed(job)
    assert "User defined signal" not in job.output, job.describe()
    assert job.output.count("requeueing job") == 1, job.describe()
    summary = check_sleepy_run(tmp_path, run_dir, n, job)
    assert summary["incarnation"] == 2, summary


def test_scontrol_requeue_resumes(tmp_path):
    n = 40
    dag = sleepy_dag(tmp_path, n, 0.5)
    run_dir = tmp_path / "run"
    watcher = Watcher(tmp_path / "ran.log", requeue_after=10)
    job = watched_run_dag(tmp_path, dag, watcher)
    assert watcher.requeued
    assert_completed(job)
    summary = check_sleepy_run(tmp_path, run_dir, n, job)
    assert summary["incarnation"] >= 2 and summary["cached"] >= 8, summary


def mpitiny_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(REPO / ".venv" / "bin" / "python"), "-m", "mpitiny", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=60)


def test_serve_sbatch_runs_submitted_jobs_until_stopped(tmp_path):
    """``sbatch slurm/serve.sh RUN_DIR``: a job submitted before the server starts and one
    submitted while it runs both complete exactly; ``mpitiny stop`` ends the batch job, which
    completes (exit 0), and ``mpitiny status`` lists both jobs as done."""
    from mpitiny.io import jobs as jf
    run_dir = tmp_path / "pool"
    dags = []
    for name, n in (("early", 60), ("late", 40)):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"name": name, "tasks": [
            {"id": "sq", "fn": "mpitiny.tasks:sleep", "args": [0.01],
             "foreach": {"i": {"range": [0, n]}}},
            {"id": "all", "cmd": "true", "deps": ["sq"]}]}))
        dags.append((path, n))
    early = mpitiny_cli("submit", str(run_dir), str(dags[0][0]))
    assert early.returncode == 0, early.stderr
    holder: dict = {}
    server = threading.Thread(target=lambda: holder.update(job=sbatch(
        "serve.sh", str(run_dir), tmp_path=tmp_path)))
    server.start()
    try:
        late = mpitiny_cli("submit", str(run_dir), str(dags[1][0]))
        assert late.returncode == 0, late.stderr
        ids = [early.stdout.strip(), late.stdout.strip()]
        deadline = time.monotonic() + JOB_TIMEOUT / 2
        while time.monotonic() < deadline and not all(
                jf.read_state(str(run_dir), j).get("state") in jf.FINAL for j in ids):
            time.sleep(0.5)
        status = mpitiny_cli("status", str(run_dir))
    finally:
        stop = mpitiny_cli("stop", str(run_dir))
        server.join(JOB_TIMEOUT)
    assert stop.returncode == 0, stop.stderr
    assert_completed(holder["job"])
    for jid, (_, n) in zip(ids, dags):
        state = jf.read_state(str(run_dir), jid)
        assert (state.get("state"), state.get("done"), state.get("failed")) == ("done", n + 1, 0), \
            f"{state}\n{status.stdout}\n{holder['job'].describe()}"
        rows = [r["id"] for r in jf.read_lines(str(run_dir), jid, "tasks")]
        assert sorted(rows) == sorted([f"sq[{i}]" for i in range(n)] + ["all"]), rows
    assert status.stdout.count(" done ") >= 2, status.stdout
