#!/usr/bin/env python
"""Chaos: nothing lost, nothing silent. Each job is run once without interruption (the
reference), then, ``--repeat`` times per fault, with a fault at a seeded random moment, then
resumed with the same command on a different rank count until it completes; every output file
must be byte-identical to the reference's.

Jobs (``--jobs``): ``wordcount``, ``grep``, ``sort``, ``distinct`` (``jobs/*.json`` over a small
ingested input: ``--megabytes`` MB in ``--chunk`` splits, so dozens of tasks) and ``dag``, a
random DAG (``random_dag``; its functions are in ``bench/chaos_tasks.py``): families with
element-wise and literal deps whose values (numpy arrays, bytes, JSON) flow through ``inputs``,
that update the shared state (``state.add``, ``state.put``, ``state.put_if_absent``), and a
final task that writes what it read and ``dict(state.items())`` with ``atomic_output``.

Faults (``--faults``); the "moment" is drawn uniformly in the reference run's task span (its
first task start to its last task end), counted from the first journal record of the faulted
run (that is, once the ranks run tasks):

* ``kill9``: SIGKILL, from outside, to one random rank's Python process (found under /proc by
  this launch's tag and ``PMI_RANK``); MPICH then ends the other ranks. Any exit status but 0
  is accepted for the faulted run.
* ``kill9_builtin`` (not in the default set): the same through mpitiny's own
  ``MPITINY_FAULT=rank=R:after=N:mode=kill`` (reproducible: the rank kills itself after N tasks,
  N drawn in [0, what rank R ran in the reference)).
* ``sigterm``: SIGTERM to ``mpiexec`` (hydra forwards it to the ranks). The faulted run must
  exit 75.
* ``disk_full``: the run directory is ``REP/disk/run`` on a small tmpfs mounted at ``REP/disk``
  (4 x the reference run directory's peak usage, at least 4 MiB); at the moment, this script
  fills it up (``REP/disk/filler.bin``, written until ENOSPC). The faulted run must exit 3 and
  say "No space left on device". Then space is made, alternately by growing the tmpfs
  (``mount -o remount,size=1G``, even repetitions) or by moving the run directory to the big
  disk (copied aside, tmpfs unmounted, copied back to the same path, odd repetitions), and the
  same command resumes. Needs root (mount).
* ``corrupt_tail``: as ``kill9``, then the tail of one random rank's journal of the killed
  incarnation is damaged, by repetition in turn: ``jnl_garbage`` (random bytes over the last 1-3
  written 40-byte records, from a random offset inside the first of them), ``jnl_truncate``
  (the file cut in the middle of its last written record), ``val_garbage`` (random bytes over
  the last 1-64 bytes of the rank's ``.val`` value file; ``jnl_garbage`` if it has none).

A fault that misses (the run completes first: exit 0) is drawn again at an earlier moment, up
to 3 times; ``landed`` says whether it hit. A fault that was sent but did not stop the run (it
came during the run's last writes) must leave a run identical to the reference, or the
repetition fails.

Resuming: the faulted run uses ``--ranks`` A (of ``A,B``, swapped on odd repetitions) and the
resumes alternate B, A, B, ...; a resume that ends with 75, 3 or a signal is resumed again, up
to ``--max-resumes`` times. A repetition is **identical** when: the faulted run ended as its
fault says (above), the last run exited 0, the output directory holds the same files as the
reference's, each byte-identical (sort's ``validate.json`` without its ``checked`` timestamp),
``check_run`` (every task exactly once in the final run's table, never before its parents)
passes, and no task was journaled done twice (by two ranks or incarnations: ``journaled_done``).
Hidden ``.NAME.tmp-*`` files that a killed ``atomic_output`` leaves (a documented limitation)
are listed, not counted.

Two references are run per job, on A and on B ranks; they must be identical to each other
(else the job itself is not deterministic and its row is marked). Run directories of failed
repetitions are kept (``--keep-all``: all of them) under ``WORKDIR/JOB/FAULT-REP/``.

Prints one JSON object on stdout (every repetition: the fault's details, every run's exit status
and ranks, the checks, the reason of a failure) and the table job x fault -> identical/repeat on
stderr.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

JOBS_DIR = C.REPO_ROOT / "jobs"
ALL_JOBS = ("wordcount", "grep", "sort", "distinct", "dag")
DEFAULT_FAULTS = ("kill9", "sigterm", "disk_full", "corrupt_tail")
ALL_FAULTS = DEFAULT_FAULTS + ("kill9_builtin",)
GREP_PATTERN = r"\bqu[a-z]*e\b"           # as bench/mapreduce_bench.py
EXIT_STOPPED, EXIT_INTERNAL = 75, 3
JNL_RECORD = 40
CORRUPT_MODES = ("jnl_garbage", "jnl_truncate", "val_garbage")
FILLER = "filler.bin"
_MOUNTS: set = set()


# ------------------------------------------------------------------ the random DAG
def random_dag(seed: int, ntasks: int = 300) -> dict:
    """A DAG of about ``ntasks`` fn tasks, its shape drawn from ``seed`` (bench/chaos_tasks.py):

    src[i] (arrays) -> blob[j] (bytes, reads src[j]) -> grid[a,b] (arrays, reads blob[a] and
    src[b]) -> col[b] (JSON, reads grid[0..A-1,b]); aggK plain tasks read 2-6 random instances
    of src/blob/grid (literal deps) and sometimes an earlier aggK; final reads every aggK and
    col and writes OUTPUT/chaos-dag.json and chaos-values.bin."""
    rng = random.Random(f"chaos-dag:{seed}")
    n1 = max(4, ntasks // 5)
    a_n = rng.randint(3, 6)
    b_n = max(2, min(n1, (ntasks * 3 // 10) // a_n))
    k_n = max(2, ntasks // 15)
    tasks = [
        {"id": "src", "fn": "chaos_tasks:source", "args": ["{seed}", "{i}"],
         "foreach": {"i": {"range": [n1]}}},
        {"id": "blob", "fn": "chaos_tasks:to_bytes", "args": ["{seed}", "{j}"],
         "foreach": {"j": {"range": [n1]}}, "deps": ["src[{j}]"]},
        {"id": "grid", "fn": "chaos_tasks:mix", "args": ["{seed}", "{a}", "{b}"],
         "foreach": {"a": {"range": [a_n]}, "b": {"range": [b_n]}},
         "deps": ["blob[{a}]", "src[{b}]"]},
        {"id": "col", "fn": "chaos_tasks:column", "args": ["{seed}", "{b}"],
         "foreach": {"b": {"range": [b_n]}}, "deps": [f"grid[{a},{{b}}]" for a in range(a_n)]},
    ]
    pool = ([f"src[{i}]" for i in range(n1)] + [f"blob[{j}]" for j in range(n1)] +
            [f"grid[{a},{b}]" for a in range(a_n) for b in range(b_n)])
    for k in range(k_n):
        deps = rng.sample(pool, rng.randint(2, 6))
        if k and rng.random() < 0.3:
            deps.append(f"agg{rng.randrange(k)}")
        tasks.append({"id": f"agg{k}", "fn": "chaos_tasks:combine", "args": ["{seed}", f"agg{k}"],
                      "deps": deps})
    tasks.append({"id": "final", "fn": "chaos_tasks:final", "args": ["{seed}", "{output}"],
                  "deps": [f"agg{k}" for k in range(k_n)] + ["col"]})
    rng.shuffle(tasks)                  # listed in any order
    return {"name": f"chaos_dag_{seed}",
            "description": "bench/chaos.py's random DAG (bench/chaos_tasks.py)",
            "params": {"seed": seed, "output": None}, "tasks": tasks}


# ------------------------------------------------------------------ jobs and inputs
class Job:
    def __init__(self, name: str, dag: str, params: dict, ignore_json_keys: dict | None = None):
        self.name, self.dag, self.params = name, dag, params
        self.ignore_json_keys = ignore_json_keys or {}      # file name -> keys dropped

    def argv(self, out_dir: str, run_dir: str) -> list:
        argv = ["-m", "mpitiny", "run", self.dag, "--out", run_dir, "-q"]
        for k, v in dict(self.params, output=out_dir).items():
            argv += ["--param", f"{k}={v}"]
        return argv

    def dag_params(self, out_dir: str) -> dict:
        return dict(self.params, output=out_dir)


def prepare_inputs(work: str, a, jobs: list) -> dict:
    sys.path.insert(0, str(JOBS_DIR))
    info = {}
    tag = f"{a.megabytes:g}MB-{a.chunk}"               # reused by a later run in the same --workdir
    need_text = any(j in ("wordcount", "grep", "distinct") for j in jobs)
    if need_text:
        corpus, h5 = os.path.join(work, "corpus.txt"), os.path.join(work, f"corpus-{tag}.h5")
        if not os.path.exists(h5):
            import wordcount
            wordcount.generate(corpus, a.megabytes)
            _ingest(corpus, h5, a.chunk)
        info["corpus"] = _split_info(h5)
    if "sort" in jobs:
        recs, h5 = os.path.join(work, "records.bin"), os.path.join(work, f"records-{tag}.h5")
        if not os.path.exists(h5):
            n = int(a.megabytes * 1e6) // 100
            p = subprocess.run([C.PYTHON, str(JOBS_DIR / "teragen.py"), str(n), recs, "--seed", "0"],
                               capture_output=True, text=True, env=C.bench_env())
            if p.returncode:
                raise C.RunFailed(f"teragen failed: {p.stderr[-2000:]}")
            _ingest(recs, h5, a.chunk, "records:100")
        info["records"] = _split_info(h5)
    return info


def _ingest(src: str, h5: str, chunk: str, fmt: str | None = None) -> None:
    p = subprocess.run([C.PYTHON, "-m", "mpitiny", "ingest", src, "-o", h5, "--chunk", chunk, "-q",
                        *(["--format", fmt] if fmt else [])],
                       capture_output=True, text=True, env=C.bench_env())
    if p.returncode:
        raise C.RunFailed(f"ingest failed: {p.stderr[-2000:]}")


def _split_info(h5: str) -> dict:
    from mpitiny.io.splits import open_splits
    s = open_splits(h5)
    return {"file": h5, "splits": len(s), "bytes": int(s.total_bytes)}


def make_jobs(work: str, a, names: list, inputs: dict) -> list:
    jobs = []
    for name in names:
        if name == "dag":
            path = C.write_dag(os.path.join(work, "chaos-dag.json"), random_dag(a.seed, a.dag_tasks))
            jobs.append(Job("dag", path, {}))
        elif name == "sort":
            jobs.append(Job("sort", str(JOBS_DIR / "sort.json"),
                            {"input": inputs["records"]["file"], "partitions": 4},
                            {"validate.json": ("checked",)}))
        else:
            params = {"input": inputs["corpus"]["file"]}
            if name == "grep":
                params["pattern"] = GREP_PATTERN
            jobs.append(Job(name, str(JOBS_DIR / f"{name}.json"), params))
    return jobs


# ------------------------------------------------------------------ launching
class Launch:
    """One ``mpiexec -n N python -m mpitiny run ...`` in its own session, tagged with a unique
    ``MPITINY_BENCH_RUN_ID`` (so that its ranks can be found, and everything it left killed);
    stdout and stderr go to ``PREFIX.out`` / ``PREFIX.err``."""

    def __init__(self, n: int, argv: list, prefix: str, env: dict | None = None, cwd: str | None = None):
        self.n, self.prefix = n, prefix
        self.run_id = uuid.uuid4().hex
        path = os.pathsep.join(x for x in (str(JOBS_DIR), str(C.BENCH_DIR),
                                           os.environ.get("PYTHONPATH")) if x)
        full = C.bench_env({"PYTHONPATH": path, **(env or {})})
        full["MPITINY_BENCH_RUN_ID"] = self.run_id
        self.cmd = [C.mpiexec_path(), "-n", str(n), C.PYTHON, *map(str, argv)]
        self._out = open(prefix + ".out", "w")
        self._err = open(prefix + ".err", "w")
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(self.cmd, env=full, cwd=cwd, stdin=subprocess.DEVNULL,
                                     stdout=self._out, stderr=self._err, start_new_session=True)
        self.rc = None
        self.wall = None

    def wait(self, timeout: float) -> int | None:
        """The exit status (negative: killed by that signal), None on timeout (then killed)."""
        try:
            self.rc = self.proc.wait(timeout=max(0.0, timeout - (time.monotonic() - self.t0)))
        except subprocess.TimeoutExpired:
            C._kill(self.proc, self.run_id)
            self.proc.wait()
            self.rc = None
        self.wall = time.monotonic() - self.t0
        deadline = time.monotonic() + 10                      # nothing should be left
        while C._kill_tagged(self.run_id, signal.SIGKILL) and time.monotonic() < deadline:
            time.sleep(0.05)
        self._out.close()
        self._err.close()
        return self.rc

    def done(self) -> bool:
        return self.proc.poll() is not None

    def stderr(self) -> str:
        try:
            with open(self.prefix + ".err", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def rank_pids(self) -> dict:
        """{rank: pid} of the rank processes (children of hydra_pmi_proxy with our tag)."""
        needle = f"MPITINY_BENCH_RUN_ID={self.run_id}".encode()
        out = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    env = f.read().split(b"\0")
                if needle not in env:
                    continue
                with open(f"/proc/{entry}/stat", "rb") as f:
                    ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
                with open(f"/proc/{ppid}/cmdline", "rb") as f:
                    if b"hydra_pmi_proxy" not in f.read():
                        continue
            except (OSError, ValueError, IndexError):
                continue
            for e in env:
                if e.startswith(b"PMI_RANK="):
                    out[int(e[9:])] = int(entry)
        return out


def describe_rc(rc) -> str:
    if rc is None:
        return "timeout"
    if rc < 0:
        return f"signal {signal.Signals(-rc).name}" if -rc in signal.Signals._value2member_map_ else f"signal {-rc}"
    return str(rc)


def tasks_started(run_dir: str) -> bool:
    """A journal of the run holds a record (a rank has started a chunk of tasks)."""
    for path in glob.glob(os.path.join(run_dir, "journal", "run-*.rank-*.jnl")):
        try:
            with open(path, "rb") as f:
                if any(f.read(JNL_RECORD)):
                    return True
        except OSError:
            pass
    return False


def wait_for_tasks(launch: Launch, run_dir: str, limit: float) -> float | None:
    """Seconds since the launch when the ranks started running tasks; None if the run ended (or
    ``limit`` passed) first."""
    while time.monotonic() - launch.t0 < limit:
        if tasks_started(run_dir):
            return time.monotonic() - launch.t0
        if launch.done():
            return None
        time.sleep(0.003)
    return None


def sleep_unless_done(launch: Launch, seconds: float) -> bool:
    """Sleep ``seconds``; False if the run ended meanwhile."""
    end = time.monotonic() + seconds
    while True:
        if launch.done():
            return False
        left = end - time.monotonic()
        if left <= 0:
            return True
        time.sleep(min(left, 0.002))


def read_summary(run_dir: str) -> dict | None:
    try:
        with open(os.path.join(run_dir, "summary.json"), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


# ------------------------------------------------------------------ disk usage, tmpfs
def usage(path: str) -> int:
    """Bytes allocated under ``path`` (st_blocks)."""
    total = 0
    for root, dirs, files in os.walk(path):
        for name in files + dirs:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                pass
    return total


class PeakUsage(threading.Thread):
    def __init__(self, path: str, every: float = 0.01):
        super().__init__(daemon=True)
        self.path, self.every, self.peak, self.stop = path, every, 0, threading.Event()

    def run(self):
        while not self.stop.is_set():
            self.peak = max(self.peak, usage(self.path))
            self.stop.wait(self.every)

    def finish(self) -> int:
        self.stop.set()
        self.join()
        self.peak = max(self.peak, usage(self.path))
        return self.peak


def _sh(*cmd) -> None:
    p = subprocess.run(list(cmd), capture_output=True, text=True)
    if p.returncode:
        raise RuntimeError(f"{' '.join(cmd)}: {p.stderr.strip() or p.returncode}")


def mount_tmpfs(path: str, size: int) -> None:
    os.makedirs(path, exist_ok=True)
    _sh("mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path)
    _MOUNTS.add(path)


def umount(path: str) -> None:
    if path in _MOUNTS:
        for wait in (0.1, 0.3, 1, 3, 0):        # a killed rank may still be closing its files
            try:
                _sh("umount", path)
                break
            except RuntimeError:
                if not wait:
                    raise
                time.sleep(wait)
        _MOUNTS.discard(path)


def cleanup_mounts() -> None:
    for path in list(_MOUNTS):
        subprocess.run(["umount", "-l", path], capture_output=True)
        _MOUNTS.discard(path)


# ------------------------------------------------------------------ comparing
def is_leftover(name: str) -> bool:
    """A hidden temporary file of a killed ``atomic_output``/``atomic_h5``."""
    return name.startswith(".") and ".tmp-" in name


def output_files(out_dir: str) -> tuple:
    files, leftovers = {}, []
    for root, _dirs, names in os.walk(out_dir):
        for name in names:
            path = os.path.join(root, name)
            rel = os.path.relpath(path, out_dir)
            (leftovers.append(rel) if is_leftover(name) else files.__setitem__(rel, path))
    return files, sorted(leftovers)


def normalized(job: Job, rel: str, path: str) -> bytes:
    with open(path, "rb") as f:
        data = f.read()
    drop = job.ignore_json_keys.get(rel)
    if drop:
        try:
            obj = json.loads(data)
            for k in drop:
                obj.pop(k, None)
            data = json.dumps(obj, sort_keys=True).encode()
        except ValueError:
            pass
    return data


def first_difference(ref: bytes, got: bytes) -> str:
    at = next((i for i, (x, y) in enumerate(zip(ref, got)) if x != y), min(len(ref), len(got)))
    text = f"{len(got)} bytes vs the reference's {len(ref)}, first at byte {at}"
    if b"\0" not in ref[:at + 200] and b"\0" not in got[:at + 200]:       # text: show the line
        line = ref.count(b"\n", 0, at)
        want = ref.split(b"\n")[line][:80].decode("utf-8", "replace")
        have = got.split(b"\n")[line][:80].decode("utf-8", "replace")
        text += f" (line {line + 1}: {have!r}, expected {want!r})"
    return text


def compare_outputs(job: Job, ref_dir: str, out_dir: str) -> dict:
    ref, _ = output_files(ref_dir)
    got, leftovers = output_files(out_dir)
    problems = []
    for rel in sorted(set(ref) - set(got)):
        problems.append(f"{rel} missing")
    for rel in sorted(set(got) - set(ref)):
        problems.append(f"{rel} not in the reference")
    for rel in sorted(set(ref) & set(got)):
        a, b = normalized(job, rel, ref[rel]), normalized(job, rel, got[rel])
        if a != b:
            problems.append(f"{rel} differs: {first_difference(a, b)}")
    return {"files": len(ref), "identical": not problems, "problems": problems,
            "leftovers": leftovers}


def journaled_done(run_dir: str, total: int) -> np.ndarray:
    """Per task: how many journal files (one per rank and incarnation) have a valid DONE
    record for it, not counting a record whose value fails its CRC (mpitiny runs that task
    again). (``mpitiny.io.journal.done_counts`` counts records, and a task that updated the
    state store has two: its value and its state log.)"""
    import zlib
    from mpitiny.io import journal as jnl
    counts = np.zeros(total, dtype=np.int64)
    for path in jnl.journal_files(run_dir):
        rec, _ = jnl._valid_records(path)
        done = rec[rec["kind"] == jnl.DONE]
        mine = jnl._mark(total, done[done["length"] < 0])
        singles = done[(done["length"] >= 0) & (done["lo"] < total)]
        vals = b""
        if len(singles) and os.path.exists(path[:-4] + ".val"):
            with open(path[:-4] + ".val", "rb") as f:
                vals = f.read()
        for r in singles:
            off, n = int(r["hi"]), int(r["length"])
            if off + n <= len(vals) and zlib.crc32(vals[off:off + n]) == int(r["vcrc"]):
                mine[int(r["lo"])] = True
        counts += mine
    return counts


def check_tasks(job: Job, run_dir: str, out_dir: str) -> list:
    """Problems found by check_run (every task exactly once in the final run, after its
    parents) and done_counts (no task journaled done twice)."""
    from mpitiny.dag.load import load_dag
    from mpitiny.io.check import check_run
    problems = []
    try:
        dag = load_dag(job.dag, job.dag_params(out_dir))
    except Exception as exc:                        # noqa: BLE001
        return [f"cannot load the DAG: {exc}"]
    try:
        counts = check_run(dag, run_dir)
        if counts["failed"] or counts["upstream_failed"]:
            problems.append(f"check_run: {counts}")
    except AssertionError as exc:
        problems.append(f"check_run: {exc}")
    except Exception as exc:                        # noqa: BLE001
        problems.append(f"check_run could not read the run: {type(exc).__name__}: {exc}")
    try:
        twice = np.flatnonzero(journaled_done(run_dir, dag.total) > 1)
        if len(twice):
            problems.append(f"{len(twice)} tasks journaled done by more than one rank or "
                            f"incarnation, e.g. {dag.task_id(int(twice[0]))}")
    except Exception as exc:                        # noqa: BLE001
        problems.append(f"reading the journals: {type(exc).__name__}: {exc}")
    return problems


# ------------------------------------------------------------------ references
def reference(job: Job, jdir: str, n: int, timeout: float) -> dict:
    out_dir, run_dir = os.path.join(jdir, f"ref-{n}", "out"), os.path.join(jdir, f"ref-{n}", "run")
    shutil.rmtree(os.path.dirname(out_dir), ignore_errors=True)
    os.makedirs(run_dir)
    peak = PeakUsage(run_dir)
    peak.start()
    launch = Launch(n, job.argv(out_dir, run_dir), os.path.join(jdir, f"ref-{n}", "mpiexec"))
    rc = launch.wait(timeout)
    s = read_summary(run_dir) or {}
    ref = {"ranks": n, "rc": rc, "wall": launch.wall, "out": out_dir, "run": run_dir,
           "peak_run_dir_bytes": peak.finish(), "tasks": s.get("tasks"),
           "span": (s["last_task_end"] - s["first_task_start"]) if s.get("last_task_end") else None,
           "per_rank_done": [r.get("done", 0) for r in s.get("per_rank", [])]}
    if rc != 0:
        ref["error"] = f"exit {describe_rc(rc)}: {launch.stderr()[-1500:]}"
    else:
        ref["problems"] = check_tasks(job, run_dir, out_dir)
    return ref


# ------------------------------------------------------------------ one repetition
def corrupt_tail(run_dir: str, rng: random.Random, mode: str) -> dict:
    """Damage the tail of one random rank's journal of the last incarnation (``mode``)."""
    jnls = sorted(glob.glob(os.path.join(run_dir, "journal", "run-*.rank-*.jnl")))
    if not jnls:
        return {"mode": mode, "skipped": "no journal file"}
    last = max(os.path.basename(p).split(".")[0] for p in jnls)
    written = []
    for path in (p for p in jnls if os.path.basename(p).startswith(last + ".")):
        raw = np.fromfile(path, np.uint8)
        whole = len(raw) // JNL_RECORD
        nz = np.flatnonzero(raw[:whole * JNL_RECORD].reshape(whole, JNL_RECORD).any(axis=1))
        if len(nz):
            written.append((path, int(nz[-1]) + 1))
    if not written:
        return {"mode": mode, "skipped": "no written record"}
    path, nrec = written[rng.randrange(len(written))]
    val = path[:-4] + ".val"
    if mode == "val_garbage" and not (os.path.exists(val) and os.path.getsize(val)):
        mode = "jnl_garbage"
    info = {"mode": mode, "file": os.path.relpath(path, run_dir), "records": nrec}
    if mode == "val_garbage":
        size = os.path.getsize(val)
        k = rng.randint(1, min(64, size))
        with open(val, "r+b") as f:
            f.seek(size - k)
            f.write(rng.randbytes(k))
        info.update(file=os.path.relpath(val, run_dir), offset=size - k, bytes=k)
    elif mode == "jnl_truncate":
        cut = (nrec - 1) * JNL_RECORD + rng.randint(1, JNL_RECORD - 1)
        info["damaged_records"] = _records_at(path, nrec - 1, nrec)
        os.truncate(path, cut)
        info.update(truncated_to=cut)
    else:
        m = rng.randint(1, min(3, nrec))
        start = (nrec - m) * JNL_RECORD + rng.randrange(JNL_RECORD)
        end = nrec * JNL_RECORD
        info["damaged_records"] = _records_at(path, nrec - m, nrec)
        with open(path, "r+b") as f:
            f.seek(start)
            f.write(rng.randbytes(end - start))
        info.update(offset=start, bytes=end - start)
    return info


def _records_at(path: str, a: int, b: int) -> list:
    """Records a..b-1 of a journal as text, before they are damaged."""
    try:
        from mpitiny.io import journal as jnl
        names = {jnl.START: "START", jnl.DONE: "DONE", jnl.FAILED: "FAILED",
                 jnl.STOPPED: "STOPPED", jnl.CRASHED: "CRASHED"}
        out = []
        for r in np.fromfile(path, jnl.RECORD, count=b)[a:b]:
            kind = names.get(int(r["kind"]), f"kind {int(r['kind'])}")
            if kind == "DONE" and r["length"] >= 0:
                out.append(f"DONE task {int(r['lo'])} (vkind {int(r['vkind'])}, "
                           f"{int(r['length'])} bytes at {int(r['hi'])})")
            else:
                out.append(f"{kind} tasks [{int(r['lo'])}, {int(r['hi'])})")
        return out
    except Exception:                               # noqa: BLE001
        return []


def fill_disk(disk: str) -> int:
    """Fill the file system of ``disk`` with ``disk/filler.bin`` until ENOSPC; bytes written."""
    written = 0
    with open(os.path.join(disk, FILLER), "wb", buffering=0) as f:
        for block in (1 << 20, 4096, 512):
            zeros = bytes(block)
            while True:
                try:
                    written += f.write(zeros)
                except OSError:
                    break
    return written


def move_run_dir(disk: str, run_dir: str) -> None:
    """Move the run directory off the tmpfs ``disk`` to the big disk, at the same path: copy
    it aside, unmount, put it back (the filler stays behind)."""
    aside = disk + ".moving"
    shutil.rmtree(aside, ignore_errors=True)
    shutil.copytree(run_dir, aside, symlinks=True)
    umount(disk)
    shutil.rmtree(run_dir, ignore_errors=True)
    os.makedirs(disk, exist_ok=True)
    os.replace(aside, run_dir)


def send_fault(fault: str, launch: Launch, rng: random.Random, n: int, disk: str, info: dict) -> None:
    if fault == "sigterm":
        launch.proc.send_signal(signal.SIGTERM)
        info.update(sent="SIGTERM to mpiexec")
    elif fault == "disk_full":
        filled = fill_disk(disk)
        info.update(sent=f"tmpfs filled ({filled // 1024} KiB of filler)", filler_bytes=filled)
    else:
        pids = launch.rank_pids()
        victim = rng.randrange(n)
        info.update(rank=victim, rank_pids=pids, sent=None)
        if victim in pids:
            try:
                os.kill(pids[victim], signal.SIGKILL)
                info.update(sent=f"SIGKILL to rank {victim} (pid {pids[victim]})")
            except ProcessLookupError:
                pass
    info["at"] = round(time.monotonic() - launch.t0, 4)


def faulted_run(job: Job, fault: str, rng: random.Random, rdir: str, ref: dict, n: int,
                timeout: float) -> dict:
    """The first run of a repetition, with its fault; drawn again (an earlier moment) when it
    misses, up to 3 times, but a miss whose run then differs from the reference is kept."""
    out_dir, disk = os.path.join(rdir, "out"), os.path.join(rdir, "disk")
    run_dir = os.path.join(disk, "run")
    span = max(ref["span"] or 0.05, 0.02)
    scale = 1.0
    tries = []
    for attempt in range(4):
        if disk in _MOUNTS:
            umount(disk)
        shutil.rmtree(out_dir, ignore_errors=True)
        shutil.rmtree(disk, ignore_errors=True)
        os.makedirs(disk)
        env, info = {}, {"try": attempt + 1}
        if fault == "disk_full":
            size = max(4 << 20, -(-4 * ref["peak_run_dir_bytes"] // 4096) * 4096)
            mount_tmpfs(disk, size)
            info.update(tmpfs_bytes=size)
        if fault == "kill9_builtin":
            per = ref["per_rank_done"] or [1] * n
            victim = rng.randrange(n)
            after = rng.randrange(max(1, int(per[victim % len(per)] * scale)))
            env["MPITINY_FAULT"] = f"rank={victim}:after={after}:mode=kill"
            info.update(rank=victim, after=after, sent=f"MPITINY_FAULT rank={victim} after={after}")
        launch = Launch(n, job.argv(out_dir, run_dir), os.path.join(rdir, f"fault{attempt + 1}"), env)
        if fault != "kill9_builtin":
            started = wait_for_tasks(launch, run_dir, timeout)
            delay = rng.uniform(0, span) * scale
            info.update(tasks_started_at=started, delay=round(delay, 4), sent=None)
            if started is not None and sleep_unless_done(launch, delay):
                send_fault(fault, launch, rng, n, disk, info)
        rc = launch.wait(timeout)
        err = launch.stderr()
        info.update(rc=rc, rc_text=describe_rc(rc), wall=round(launch.wall, 3),
                    stderr_tail=err[-600:])
        tries.append(info)
        if rc != 0:                           # hit (or failed by itself: reported)
            break
        if rc == 0 and info["sent"]:         # a fault sent that changed nothing must be harmless
            problems = compare_outputs(job, ref["out"], out_dir)["problems"]
            problems += check_tasks(job, run_dir, out_dir)
            if problems:
                info["problems_after_exit_0"] = problems
                break
        scale *= 0.5                          # missed: an earlier moment
    last = tries[-1]
    return {"tries": tries, "landed": bool(last["sent"]) and last["rc"] != 0, "first": last}


def fault_expectation(fault: str, first: dict, run_dir: str) -> list:
    """Why the faulted run did not end as its fault says (empty: it did). A SIGTERM that
    reaches ``mpiexec`` after the ranks ended the run (its summary.json complete, not stopped)
    makes hydra exit 15 whatever the ranks did: the fault came after the end, as a miss."""
    rc = first["rc"]
    if first.get("problems_after_exit_0"):
        return [f"exit 0 after the fault ({first['sent']}), but: "
                + "; ".join(first["problems_after_exit_0"])]
    if rc == 0:
        return ["the fault missed 4 times (the run completed first)"]
    if not first.get("sent"):
        return [f"the run ended with exit {describe_rc(rc)} before the fault was sent: "
                f"{_last_line(first.get('stderr_tail', ''))}"]
    if rc is None:
        return ["the faulted run timed out"]
    if fault == "sigterm" and rc != EXIT_STOPPED:
        summary = read_summary(run_dir) or {}
        if summary.get("incarnation") == 1 and summary.get("done") == summary.get("tasks") \
                and not summary.get("stopped"):
            first["after_the_end"] = True
            return []
        return [f"SIGTERM: exit {describe_rc(rc)}, expected 75"]
    if fault == "disk_full":
        if rc != EXIT_INTERNAL:
            return [f"disk full: exit {describe_rc(rc)}, expected 3: {_last_line(first['stderr_tail'])}"]
        if "No space left on device" not in first.get("stderr_tail", ""):
            return ["disk full: exit 3 without 'No space left on device'"]
    return []


def free_space(rep: int, disk: str, run_dir: str) -> str:
    """After disk_full: grow the tmpfs (even repetitions) or move the run directory to the big
    disk (odd ones)."""
    if rep % 2 == 0:
        _sh("mount", "-o", "remount,size=1G", disk)
        return "tmpfs grown to 1 GiB"
    move_run_dir(disk, run_dir)
    return "run directory moved to the big disk"


def resume_until_done(job: Job, ranks: list, rdir: str, out_dir: str, run_dir: str, rc, a) -> tuple:
    """The same command again, on the other rank count each time, while it ends resumably
    (75, 3, a signal, a timeout), at most ``--max-resumes`` times."""
    runs = []
    while rc not in (0, 1, 2) and len(runs) < a.max_resumes:     # 1, 2: complete / bad input
        n = ranks[(len(runs) + 1) % 2]
        launch = Launch(n, job.argv(out_dir, run_dir), os.path.join(rdir, f"resume{len(runs) + 1}"))
        rc = launch.wait(a.timeout)
        s = read_summary(run_dir) or {}
        runs.append({"ranks": n, "rc": rc, "rc_text": describe_rc(rc), "wall": round(launch.wall, 3),
                     "incarnation": s.get("incarnation"), "cached": s.get("cached"),
                     "crashed": s.get("crashed"), "isolated": s.get("isolated"),
                     "stderr_tail": launch.stderr()[-600:]})
    return rc, runs


def run_rep(job: Job, fault: str, rep: int, a, ref: dict, jdir: str) -> dict:
    rng = random.Random(f"chaos:{a.seed}:{job.name}:{fault}:{rep}")
    ranks = a.ranks if rep % 2 == 0 else a.ranks[::-1]
    rdir = os.path.join(jdir, f"{fault}-{rep:02d}")
    if os.path.exists(rdir):
        shutil.rmtree(rdir)
    os.makedirs(rdir)
    out_dir, disk = os.path.join(rdir, "out"), os.path.join(rdir, "disk")
    run_dir = os.path.join(disk, "run")
    t0 = time.monotonic()
    res = {"rep": rep, "dir": rdir, "ranks_first": ranks[0]}
    try:
        f = faulted_run(job, fault, rng, rdir, ref[ranks[0]], ranks[0], a.timeout)
        res["fault"] = f
        problems = fault_expectation(fault, f["first"], run_dir)
        if fault == "corrupt_tail" and f["landed"]:
            res["corruption"] = corrupt_tail(run_dir, rng, CORRUPT_MODES[rep % len(CORRUPT_MODES)])
        if fault == "disk_full" and disk in _MOUNTS:
            res["freed"] = free_space(rep, disk, run_dir)
        rc, runs = resume_until_done(job, ranks, rdir, out_dir, run_dir, f["first"]["rc"], a)
        res["resumes"] = runs
        if any(x["rc"] is None for x in runs):
            problems.append(f"a resume timed out after {a.timeout:g} s")
        if rc != 0:
            last = runs[-1]["stderr_tail"] if runs else f["first"]["stderr_tail"]
            problems.append(f"final exit {describe_rc(rc)} after {len(runs)} resume(s): "
                            f"{failure_reason(run_dir, last)}")
        if rc == 0:
            cmp = compare_outputs(job, ref[a.ranks[0]]["out"], out_dir)
            res["compare"] = cmp
            problems += cmp["problems"]
            problems += check_tasks(job, run_dir, out_dir)
        res["problems"] = problems
        res["identical"] = not problems
    except Exception as exc:                        # noqa: BLE001
        import traceback
        res["problems"] = [f"chaos.py error: {type(exc).__name__}: {exc}"]
        res["traceback"] = traceback.format_exc()
        res["identical"] = False
    finally:
        if disk in _MOUNTS:                 # keep what it holds, on the big disk
            try:
                move_run_dir(disk, run_dir) if os.path.isdir(run_dir) else umount(disk)
            except Exception:                       # noqa: BLE001
                cleanup_mounts()
    res["seconds"] = round(time.monotonic() - t0, 2)
    if res["identical"] and not a.keep_all:
        shutil.rmtree(rdir, ignore_errors=True)
        res["dir"] = None
    return res


def failure_reason(run_dir: str, stderr: str) -> str:
    """The run's first failed task and the last line of its error (summary.json), else the
    last line of its stderr."""
    fails = (read_summary(run_dir) or {}).get("failures_first") or []
    if fails:
        return f"task {fails[0].get('id')} failed: {_last_line(fails[0].get('error') or '')}"
    return _last_line(stderr)


def _last_line(text: str) -> str:
    lines = [l for l in text.strip().splitlines() if l.strip()]
    return lines[-1][:300] if lines else ""


# ------------------------------------------------------------------ main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", default=",".join(ALL_JOBS), help=f"of {','.join(ALL_JOBS)}")
    ap.add_argument("--faults", default=",".join(DEFAULT_FAULTS), help=f"of {','.join(ALL_FAULTS)}")
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ranks", default="2,3", help="A,B: faulted runs on A, resumes on B (swapped "
                    "on odd repetitions)")
    ap.add_argument("--megabytes", type=float, default=8, help="corpus / teragen input size (MB)")
    ap.add_argument("--chunk", default="128KiB", help="ingest chunk size")
    ap.add_argument("--dag-tasks", type=int, default=300, help="size of the random DAG")
    ap.add_argument("--max-resumes", type=int, default=4)
    ap.add_argument("--timeout", type=float, default=300, help="per mpiexec (s)")
    ap.add_argument("--keep-all", action="store_true", help="keep the run directories of "
                    "identical repetitions too")
    ap.add_argument("--workdir")
    a = ap.parse_args()
    names = [j for j in a.jobs.split(",") if j]
    faults = [f for f in a.faults.split(",") if f]
    bad = [j for j in names if j not in ALL_JOBS] + [f for f in faults if f not in ALL_FAULTS]
    if bad:
        ap.error(f"unknown job or fault: {', '.join(bad)}")
    a.ranks = [int(x) for x in a.ranks.split(",")]
    if len(a.ranks) == 1:
        a.ranks = a.ranks * 2
    if "disk_full" in faults and os.geteuid() != 0:
        ap.error("disk_full mounts a tmpfs: run as root, or leave it out of --faults")
    machine = C.machine()
    work = os.path.abspath(C.workdir(a.workdir, "bench-chaos-"))
    sys.path[:0] = [str(JOBS_DIR), str(C.BENCH_DIR)]
    t_start = time.monotonic()
    result = {"benchmark": "chaos", "machine": machine, "workdir": work,
              "options": {k: v for k, v in vars(a).items()}, "jobs": {}}
    try:
        C.log(f"inputs: {a.megabytes:g} MB in {a.chunk} splits, in {work}")
        inputs = prepare_inputs(work, a, names)
        result["inputs"] = inputs
        for job in make_jobs(work, a, names, inputs):
            jdir = os.path.join(work, job.name)
            os.makedirs(jdir, exist_ok=True)
            refs = {n: reference(job, jdir, n, a.timeout) for n in dict.fromkeys(a.ranks)}
            entry = {"dag": job.dag, "params": job.params, "references": list(refs.values()),
                     "faults": {}}
            result["jobs"][job.name] = entry
            r0 = refs[a.ranks[0]]
            bad_ref = [f"reference on {r['ranks']} ranks: {r['error']}" for r in refs.values() if r.get("error")]
            bad_ref += [f"reference on {r['ranks']} ranks: {p}" for r in refs.values() for p in r.get("problems", [])]
            if not bad_ref and len(refs) > 1:
                cmp = compare_outputs(job, r0["out"], refs[a.ranks[1]]["out"])
                entry["references_identical"] = cmp["identical"]
                bad_ref += [f"references on {a.ranks[0]} and {a.ranks[1]} ranks differ: {p}"
                            for p in cmp["problems"]]
            entry["reference_problems"] = bad_ref
            C.log(f"{job.name}: reference {r0['tasks']} tasks, span {r0['span'] or 0:.3f} s, "
                  f"whole {r0['wall']:.2f} s, run dir peak {r0['peak_run_dir_bytes'] / 1e6:.2f} MB"
                  + (f"; PROBLEM: {bad_ref}" if bad_ref else ""))
            if any(r.get("error") for r in refs.values()):
                continue
            for fault in faults:
                reps = []
                for rep in range(a.repeat):
                    r = run_rep(job, fault, rep, a, refs, jdir)
                    reps.append(r)
                    C.log(f"{job.name} {fault} {rep}: {'identical' if r['identical'] else 'DIFFERENT'}"
                          f" ({_rep_line(r)}, {r['seconds']:.1f} s)"
                          + ("" if r["identical"] else f": {'; '.join(r['problems'])[:400]}"))
                entry["faults"][fault] = {
                    "identical": sum(r["identical"] for r in reps), "repeat": len(reps),
                    "landed": sum(bool(r.get("fault", {}).get("landed")) for r in reps),
                    "reps": reps}
    finally:
        cleanup_mounts()
    result["seconds"] = round(time.monotonic() - t_start, 1)
    C.emit(result, human(result, names, faults))


def _rep_line(r: dict) -> str:
    fault = r.get("fault", {})
    f = fault.get("first", {})
    what = f.get("sent") or "no fault sent"
    if len(fault.get("tries", [])) > 1:
        what += f" (try {len(fault['tries'])})"
    if r.get("corruption"):
        what += f", then {r['corruption'].get('mode')}"
    if r.get("freed"):
        what += f", then {r['freed']}"
    runs = [f"{r.get('ranks_first')}r:{f.get('rc_text')}"] + \
        [f"{x['ranks']}r:{x['rc_text']}" + (f" ({x['cached']} cached)" if x.get("cached") is not None else "")
         for x in r.get("resumes", [])]
    return f"{what}; runs {' -> '.join(runs)}"


def human(result: dict, names: list, faults: list) -> str:
    width = max(12, *(len(f) for f in faults))
    lines = [f"chaos: identical runs / repetitions (ranks {result['options']['ranks']}, "
             f"seed {result['options']['seed']}, {result['seconds']:.0f} s)",
             "job".ljust(10) + "".join(f.rjust(width + 2) for f in faults)]
    fails = []
    for name in names:
        e = result["jobs"].get(name)
        if e is None:
            continue
        cells = []
        for f in faults:
            x = e["faults"].get(f)
            if x is None:
                cells.append("ref failed" if e["reference_problems"] else "-")
                continue
            cell = f"{x['identical']}/{x['repeat']}"
            if x["landed"] < x["repeat"]:
                cell += f" ({x['landed']} hit)"
            cells.append(cell)
            for r in x["reps"]:
                if not r["identical"]:
                    fails.append(f"  {name} {f} rep {r['rep']}: {'; '.join(r['problems'])[:500]}"
                                 f"  [kept: {r['dir']}]")
        lines.append(name.ljust(10) + "".join(c.rjust(width + 2) for c in cells))
        for p in e["reference_problems"]:
            fails.append(f"  {name} reference: {p[:500]}")
    if fails:
        lines += ["failures:"] + fails
    lines.append(f"workdir: {result['workdir']}")
    return "\n".join(lines)


if __name__ == "__main__":
    try:
        main()
    finally:
        cleanup_mounts()
