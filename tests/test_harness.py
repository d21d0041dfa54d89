"""The MPI test harness itself (mpirun.py): launching, timeouts and clean-up, exit codes."""
from __future__ import annotations

import os
import re
import textwrap
import time

import pytest

import mpirun as harness
from mpirun import MpirunError, MpirunTimeout, strip_mpi_banners

pytestmark = pytest.mark.mpi

HELLO = """
    import os, sys
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    lib = MPI.Get_library_version().splitlines()[0]
    print(f"<rank {comm.Get_rank()} of {comm.Get_size()} test={os.environ.get('MPITINY_TEST')} "
          f"extra={os.environ.get('HARNESS_EXTRA', '-')} lib={lib.split(',')[0].strip()}>")
"""

# Rank 0 waits for a message nobody sends; the others wait in a barrier rank 0 never reaches.
DEADLOCK = """
    import os, signal, sys
    from pathlib import Path
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    if "--ignore-term" in sys.argv:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    Path(sys.argv[1], f"pid.{comm.Get_rank()}").write_text(str(os.getpid()))
    print(f"rank {comm.Get_rank()} waiting", flush=True)
    if comm.Get_rank() == 0:
        comm.recv(source=MPI.ANY_SOURCE, tag=77)
    else:
        comm.Barrier()
"""

EXIT_CODE = """
    import sys
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    print(f"rank {comm.Get_rank()} says hi on stderr", file=sys.stderr, flush=True)
    comm.Barrier()
    code = int(sys.argv[1])
    if comm.Get_rank() == comm.Get_size() - 1:
        sys.exit(code)
"""


def script(tmp_path, name, body):
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return str(path)


def ranks_seen(stdout):
    # Ranks share the launcher's stdout; MPICH may interleave lines, so match, don't split.
    return re.findall(r"<rank (\d+) of (\d+) test=(\S+) extra=(\S+) lib=([^>]*)>", stdout)


@pytest.mark.parametrize("n", [1, 2, 4])
def test_every_rank_runs(tmp_path, mpi_impl, n):
    res = harness.mpirun(n, [script(tmp_path, "hello.py", HELLO)], timeout=60, cwd=tmp_path,
                         check=True)
    seen = ranks_seen(res.stdout)
    assert sorted(int(r) for r, *_ in seen) == list(range(n)), res.stdout
    assert {int(size) for _, size, *_ in seen} == {n}
    assert {test for _, _, test, *_ in seen} == {"1"}, "MPITINY_TEST=1 must reach every rank"
    libs = {lib for *_, lib in seen}
    expected = {"mpich": "MPICH", "openmpi": "Open MPI"}[mpi_impl]
    assert all(lib.startswith(expected) for lib in libs), (mpi_impl, libs)
    assert res.impl == mpi_impl and res.returncode == 0 and res.elapsed > 0


def test_env_is_laid_over_callers_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_EXTRA", "from-parent")
    hello = script(tmp_path, "hello.py", HELLO)
    res = harness.mpirun(2, [hello], timeout=60, check=True)
    assert {extra for *_, extra, _ in ranks_seen(res.stdout)} == {"from-parent"}
    res = harness.mpirun(2, [hello], timeout=60, check=True, env={"HARNESS_EXTRA": "override"})
    assert {extra for *_, extra, _ in ranks_seen(res.stdout)} == {"override"}
    res = harness.mpirun(1, [hello], timeout=60, check=True, env={"HARNESS_EXTRA": None})
    assert {extra for *_, extra, _ in ranks_seen(res.stdout)} == {"-"}


def _assert_all_dead(pid_dir, n):
    pids = [int((pid_dir / f"pid.{r}").read_text()) for r in range(n)]
    deadline = time.monotonic() + 5
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = [p for p in pids if _alive(p)]
        time.sleep(0.1)
    assert not alive, f"ranks still running after the harness gave up: {alive}"


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("n", [2, 3])
def test_deadlock_is_killed_at_timeout(tmp_path, n):
    timeout = 5
    start = time.monotonic()
    with pytest.raises(MpirunTimeout) as info:
        harness.mpirun(n, [script(tmp_path, "deadlock.py", DEADLOCK), str(tmp_path)],
                       timeout=timeout)
    took = time.monotonic() - start
    assert took < timeout + harness.TERM_GRACE + 5, took
    exc = info.value
    assert isinstance(exc, AssertionError), "a timeout must fail the test"
    assert exc.timeout == timeout and exc.elapsed >= timeout
    assert "rank 0 waiting" in exc.stdout          # output printed before the hang comes back
    assert "timed out after 5 s" in str(exc) and "rank 0 waiting" in str(exc)
    where = str(exc).split("when its bound ran out:", 1)[1]     # each rank, seen before the kill
    ranks = [line for line in where.splitlines() if "deadlock.py" in line and "mpiexec" not in line]
    assert len(ranks) == n and "threads " in where, where
    _assert_all_dead(tmp_path, n)


def test_ranks_that_ignore_sigterm_are_killed(tmp_path):
    timeout = 3
    start = time.monotonic()
    with pytest.raises(MpirunTimeout):
        harness.mpirun(2, [script(tmp_path, "deadlock.py", DEADLOCK), str(tmp_path),
                           "--ignore-term"], timeout=timeout)
    assert time.monotonic() - start < timeout + 2 * harness.TERM_GRACE + 5
    _assert_all_dead(tmp_path, 2)


def test_exit_code_and_stderr_come_back(tmp_path):
    prog = script(tmp_path, "exit.py", EXIT_CODE)
    res = harness.mpirun(1, [prog, "3"], timeout=60)
    assert res.returncode == 3
    assert "rank 0 says hi on stderr" in res.stderr
    res = harness.mpirun(2, [prog, "0"], timeout=60)
    assert res.returncode == 0, res.stderr
    assert sorted(re.findall(r"rank (\d) says hi", res.stderr)) == ["0", "1"]
    res = harness.mpirun(2, [prog, "4"], timeout=60)
    assert res.returncode != 0     # which code a multi-rank failure gives depends on the MPI


def test_check_raises_with_output_tail(tmp_path):
    prog = script(tmp_path, "exit.py", EXIT_CODE)
    with pytest.raises(MpirunError) as info:
        harness.mpirun(1, [prog, "5"], timeout=60, check=True)
    assert info.value.returncode == 5
    assert isinstance(info.value, AssertionError)
    assert "exit status 5" in str(info.value) and "says hi on stderr" in str(info.value)


def test_python_exception_in_a_rank_is_a_nonzero_exit(tmp_path):
    prog = script(tmp_path, "boom.py", "raise SystemExit('boom: bad input')\n")
    res = harness.mpirun(2, [prog], timeout=60)
    assert res.returncode != 0 and "boom: bad input" in res.stderr


def test_python_module_runs_a_module(python_module, mpi_impl):
    res = python_module(2, "mpi4py.bench", "helloworld", timeout=60, check=True)
    assert sorted(re.findall(r"process (\d+) of 2", res.stdout)) == ["0", "1"], res.stdout


def test_mpitiny_module_starts(python_module):
    """The package is importable by the ranks' Python (`pip install -e .` in each venv)."""
    res = python_module(1, "mpitiny", "--help", timeout=60, check=True)
    assert "mpitiny" in res.stdout


def test_unmarked_test_may_not_launch(monkeypatch):
    # What a test without @pytest.mark.mpi sees (conftest sets this for every test it runs).
    monkeypatch.setattr(harness, "_current_test", ("tests/x.py::test_y", False))
    with pytest.raises(AssertionError, match=r"not marked: add @pytest.mark.mpi"):
        harness.mpirun(1, ["-c", "pass"])


def test_mpi_impl_fixture_matches_env(mpi_impl):
    assert mpi_impl == (os.environ.get("MPITINY_TEST_MPI") or "mpich")


def test_strip_mpi_banners_leaves_the_programs_own_lines(tmp_path):
    prog = script(tmp_path, "fail.py", """
        import sys
        from mpi4py import MPI
        comm = MPI.COMM_WORLD
        if comm.Get_rank() == 0:
            print("prog: error: bad input", file=sys.stderr, flush=True)
        comm.Barrier()
        if sys.argv[1] == "abort" and comm.Get_rank() == 1:
            MPI.COMM_WORLD.Abort(7)
        comm.Barrier()
        sys.exit(2)
    """)
    for how, code in (("exit", 2), ("abort", 7)):
        res = harness.mpirun(3, [prog, how], timeout=60)
        assert res.returncode == code, res.stderr
        lines = [line for line in strip_mpi_banners(res.stderr).splitlines() if line.strip()]
        assert lines == ["prog: error: bad input"], res.stderr


def test_strip_mpi_banners_samples():
    ompi = ("mine\n" + "-" * 74 + "\nprterun detected that one or more processes exited with "
            "non-zero status,\nthus causing the job to be terminated.\n\n   Exit code:    2\n"
            + "-" * 74 + "\n")
    mpich = ("mine\n\n" + "=" * 83 + "\n=   BAD TERMINATION OF ONE OF YOUR APPLICATION PROCESSES\n"
             "=   EXIT CODE: 9\n" + "=" * 83 + "\nYOUR APPLICATION TERMINATED WITH THE EXIT "
             "STRING: Killed (signal 9)\nThis typically refers to a problem with your "
             "application.\nPlease see the FAQ page for debugging suggestions\n")
    abort = "Abort(7) on node 1 (rank 1 in comm 0): application called MPI_Abort(...)\nmine\n"
    epoll = ("mine\n[warn] Epoll MOD(4) on fd 20 failed. Old events were 6; read change was 2 "
             "(del); write change was 0 (none); close change was 0 (none): Bad file descriptor\n")
    for text in (ompi, mpich, abort, epoll):
        assert strip_mpi_banners(text).split() == ["mine"], strip_mpi_banners(text)
    assert strip_mpi_banners("a --- b\n=== c\n") == "a --- b\n=== c\n"
