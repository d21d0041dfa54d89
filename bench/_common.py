"""Shared helpers of the benchmark scripts: launching MPI jobs, reading run directories,
percentiles, JSON output.

Every MPI job is started with ``mpiexec`` (the one next to ``sys.executable`` if there is one,
else the one on PATH) in a new session, with a unique ``MPITINY_BENCH_RUN_ID`` in its
environment; on timeout the launcher's group is killed, then every process carrying that id
(the ranks call setsid, so they are not in the launcher's group). Only processes this script
started are ever signalled.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
PYTHON = sys.executable
FUTURES_PEER = str(BENCH_DIR / "_futures_peer.py")
POOL_PEER = str(BENCH_DIR / "_pool_peer.py")


def mpiexec_path() -> str:
    beside = Path(sys.executable).parent / "mpiexec"
    if os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("mpiexec")
    if not found:
        raise SystemExit("bench: no mpiexec next to the interpreter or on PATH")
    return found


def bench_env(extra: dict | None = None) -> dict:
    env = dict(os.environ)
    # All ranks on this node, started by fork (as the tests do).
    env.setdefault("HYDRA_LAUNCHER", "fork")
    env.setdefault("HYDRA_RMK", "user")
    # bench_tasks.py must be importable by the ranks and by mpi4py.futures workers.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(BENCH_DIR), env.get("PYTHONPATH")) if p)
    for k, v in (extra or {}).items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = str(v)
    return env


class RunFailed(RuntimeError):
    pass


def run_mpi(n: int, argv: list, *, timeout: float = 300, env: dict | None = None,
            cwd: str | None = None, check: bool = True, wrap: list | None = None) -> dict:
    """``mpiexec -n n [wrap...] python argv...``; returns stdout, stderr, rc and ``wall`` (s, the
    whole mpiexec command, measured around Popen ... wait)."""
    run_id = uuid.uuid4().hex
    full_env = bench_env(env)
    full_env["MPITINY_BENCH_RUN_ID"] = run_id
    cmd = [mpiexec_path(), "-n", str(n), *(wrap or []), PYTHON, *map(str, argv)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=full_env, cwd=cwd, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            errors="replace", start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill(proc, run_id)
        out, err = proc.communicate()
        raise RunFailed(f"timed out after {timeout} s: {' '.join(cmd)}\n{err[-3000:]}") from None
    except BaseException:
        _kill(proc, run_id)
        raise
    wall = time.perf_counter() - t0
    _kill_tagged(run_id, signal.SIGKILL)       # nothing should be left; make sure
    if check and proc.returncode != 0:
        raise RunFailed(f"exit status {proc.returncode}: {' '.join(cmd)}\n"
                        f"stdout: {out[-3000:]}\nstderr: {err[-3000:]}")
    return {"cmd": cmd, "rc": proc.returncode, "stdout": out, "stderr": err, "wall": wall}


def _kill(proc, run_id: str) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=3)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    _kill_tagged(run_id, signal.SIGKILL)


def _kill_tagged(run_id: str, sig: int) -> list:
    needle = f"MPITINY_BENCH_RUN_ID={run_id}".encode()
    me = os.getpid()
    killed = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    os.kill(int(entry), sig)
                    killed.append(int(entry))
        except (OSError, ProcessLookupError):
            continue
    return killed


# ------------------------------------------------------------------ mpitiny runs
def write_dag(path: str | Path, dag: dict) -> str:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(dag, f, separators=(",", ":"))
    return str(path)


def run_mpitiny(n: int, dag_path: str, run_dir: str, *, timeout: float = 300,
                env: dict | None = None, wrap: list | None = None, retry_bad_input: float = 0):
    """Run ``mpiexec -n n python -m mpitiny run DAG --out RUN_DIR -q``; returns (proc, summary).

    ``retry_bad_input``: if the run exits with status 2 (bad input: e.g. a dag.json key the
    loader does not accept yet), wait and retry for up to that many seconds."""
    deadline = time.monotonic() + retry_bad_input
    shutil.rmtree(run_dir, ignore_errors=True)     # a rerun would find the last run complete
    while True:
        proc = run_mpi(n, ["-m", "mpitiny", "run", dag_path, "--out", run_dir, "-q"],
                       timeout=timeout, env=env, wrap=wrap, check=False)
        if proc["rc"] == 2 and time.monotonic() < deadline:
            log(f"mpitiny rejected {dag_path} (exit 2: {proc['stderr'].strip()[:300]}); "
                "waiting 30 s and retrying")
            time.sleep(30)
            continue
        break
    if proc["rc"] != 0:
        raise RunFailed(f"mpitiny run exit status {proc['rc']}\n{proc['stderr'][-3000:]}")
    with open(os.path.join(run_dir, "summary.json"), encoding="utf-8") as f:
        summary = json.load(f)
    return proc, summary


def read_table(run_dir: str) -> np.ndarray:
    from mpitiny.io.rundir import read_tasks
    return read_tasks(run_dir)


# ------------------------------------------------------------------ mpi4py.futures runs
def run_futures(workers: int, phases: list, *, timeout: float = 600,
                env: dict | None = None) -> dict:
    """``mpiexec -n workers+1 python -m mpi4py.futures _futures_peer.py PHASES``: 1 master
    + ``workers`` workers. Returns the peer's JSON plus ``mpiexec_wall`` (the whole command)."""
    proc = run_mpi(workers + 1, ["-m", "mpi4py.futures", FUTURES_PEER, json.dumps(phases)],
                   timeout=timeout, env=env)
    lines = [l for l in proc["stdout"].splitlines() if l.startswith("{")]
    if not lines:
        raise RunFailed(f"futures peer printed no JSON\n{proc['stdout'][-2000:]}\n{proc['stderr'][-2000:]}")
    out = json.loads(lines[-1])
    out["mpiexec_wall"] = proc["wall"]
    return out


def run_pool(workers: int, phases: list, *, timeout: float = 600) -> dict:
    """``python _pool_peer.py W PHASES``: the same phases on ``multiprocessing.Pool(W)``."""
    t0 = time.perf_counter()
    proc = subprocess.run([PYTHON, POOL_PEER, str(workers), json.dumps(phases)],
                          env=bench_env(), capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RunFailed(f"pool peer failed: {proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["process_wall"] = wall
    return out


# ------------------------------------------------------------------ numbers
PCTS = (10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 99)


def percentiles(values, pcts=PCTS, scale: float = 1.0, digits: int = 6) -> dict:
    v = np.asarray(values, dtype=float)
    if not len(v):
        return {}
    out = {f"p{p}": round(float(np.percentile(v, p)) * scale, digits) for p in pcts}
    out["max"] = round(float(v.max()) * scale, digits)
    return out


def ratio(a, b):
    return None if not a or not b else a / b


def rnd(x, digits=6):
    if x is None:
        return None
    if isinstance(x, float):
        return round(x, digits)
    return x


_MACHINE = None


def _git_head():
    try:
        head = subprocess.run(["git", "-C", str(REPO_ROOT), "log", "-1", "--format=%h %ci %s"],
                              capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--", "mpitiny"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None, None
    return head, bool(dirty)


def compile_sources() -> None:
    """Write the bytecode of ``mpitiny/`` and ``jobs/`` as an installed package has it: with
    ``PYTHONDONTWRITEBYTECODE`` set (as on the dev machine) an editable checkout is compiled
    again by every rank of every run, ~60 ms a start; the peers' packages are precompiled."""
    import compileall
    for d in ("mpitiny", "jobs"):
        compileall.compile_dir(str(REPO_ROOT / d), quiet=2)


def machine() -> dict:
    """Cores, load average, Python and the mpitiny commit, as of the first call (the scripts
    call it before they run anything; ``emit`` adds the commit at the end). Compiles the
    sources first (``compile_sources``)."""
    global _MACHINE
    if _MACHINE is not None:
        return _MACHINE
    compile_sources()
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    head, dirty = _git_head()
    _MACHINE = {"cores": cores, "loadavg_at_start": load, "python": sys.version.split()[0],
                "cpu": _cpu_model(), "python_loop_ns": python_loop_ns(),
                "two_process_slowdown": two_process_slowdown(),
                "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                "git_head": head, "mpitiny_uncommitted_changes": dirty}
    return _MACHINE


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _loop_seconds(n: int, out=None) -> float:
    t0, total = time.perf_counter(), 0
    for i in range(n):
        total += i
    seconds = time.perf_counter() - t0
    if out is not None:
        out.put(seconds)
    return seconds


def two_process_slowdown(n: int = 2_000_000) -> float | None:
    """How much slower the slower of two processes runs the same Python loop at once than
    one process alone (1.0: two free cores). This VM's second core has given 1.0-1.4 (a
    shared or stolen core): every figure of 2 ranks against one process depends on it."""
    import multiprocessing as mp
    try:
        ctx = mp.get_context("fork")
        alone = min(_loop_seconds(n) for _ in range(2))
        queue = ctx.Queue()
        procs = [ctx.Process(target=_loop_seconds, args=(n, queue)) for _ in range(2)]
        for p in procs:
            p.start()
        both = max(queue.get(timeout=60) for _ in procs)
        for p in procs:
            p.join()
        return round(both / alone, 2)
    except Exception:       # a probe: no figure rather than no benchmark
        return None


def python_loop_ns(n: int = 1_000_000) -> float:
    """ns per iteration of a plain Python ``for`` loop that adds (best of 3): how fast this
    interpreter runs here and now. The same VM has run it 2-3x apart between sessions, and
    the engine's per-task path is Python, so absolute figures (µs per hand-off, METG) are
    comparable between runs only at similar values of this."""
    return round(min(_loop_seconds(n) for _ in range(3)) / n * 1e9, 1)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def emit(result: dict, human: str) -> None:
    if isinstance(result.get("machine"), dict):
        head, dirty = _git_head()
        result["machine"]["git_head_at_end"] = head
        result["machine"]["mpitiny_uncommitted_changes_at_end"] = dirty
        try:
            result["machine"]["loadavg_at_end"] = os.getloadavg()
        except OSError:
            pass
    print(json.dumps(result, indent=1))
    print(human, file=sys.stderr, flush=True)


def workdir(keep: str | None, prefix: str) -> str:
    if keep:
        os.makedirs(keep, exist_ok=True)
        return keep
    return tempfile.mkdtemp(prefix=prefix)
