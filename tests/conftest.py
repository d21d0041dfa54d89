"""Shared fixtures. The MPI launcher lives in mpirun.py (read its docstring).

Fixtures: ``mpi_impl`` ("mpich" or "openmpi", from MPITINY_TEST_MPI), ``mpirun`` and
``python_module`` (the functions from mpirun.py). A test that takes ``mpirun`` or
``python_module`` is marked ``mpi`` automatically; one that imports them must say
``@pytest.mark.mpi`` itself.

Markers: ``mpi`` and ``slow`` (pyproject.toml), ``slurm`` (registered here: needs the one-node
Slurm cluster that .ci/run starts when slurm/local-cluster.sh exists; skipped unless
MPITINY_TEST_SLURM=1).

SIGTERM (e.g. from CI's per-phase `timeout`) is turned into KeyboardInterrupt, so pytest stops
cleanly and a running ``mpirun`` kills its ranks instead of orphaning them.
"""
from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

import mpirun as _harness

_AUTO_MPI_FIXTURES = {"mpirun", "python_module"}


def pytest_configure(config):
    config.addinivalue_line("markers", "slurm: needs the local one-node Slurm cluster "
                            "(skipped unless MPITINY_TEST_SLURM=1)")
    _return_big_blocks()
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _sigterm_to_interrupt)


def _return_big_blocks() -> None:
    """Blocks of 1 MiB and more are mmap'ed and given back when freed. The in-process engine
    tests build hundreds of simulated ranks' windows (megabytes each) run after run; with
    glibc's dynamic threshold those come from the heap once one was freed, and the heap kept
    growing (22 GB over tests/test_engine_local.py)."""
    import ctypes
    import sys
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None).mallopt(-3, 1 << 20)      # M_MMAP_THRESHOLD
        except (OSError, AttributeError):
            pass


def _sigterm_to_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_report_header(config):
    try:
        la = _harness.launcher()
        where = f"{' '.join(la.mpiexec)} / {la.python}"
    except _harness.MpiNotAvailable as exc:
        where = f"NOT AVAILABLE: {exc}"
    except Exception as exc:  # a header must never break the session
        where = f"? ({exc})"
    return f"mpitiny tests: MPITINY_TEST_MPI={_safe_impl()}: {where}"


def _safe_impl() -> str:
    try:
        return _harness.mpi_impl()
    except _harness.MpiNotAvailable as exc:
        return str(exc)


@pytest.hookimpl(tryfirst=True)       # before -m selects by marker
def pytest_collection_modifyitems(config, items):
    slurm_up = os.environ.get("MPITINY_TEST_SLURM", "") not in ("", "0")
    network_path = os.environ.get("MPIR_CVAR_NOLOCAL", "") not in ("", "0")
    openmpi = _safe_impl() == "openmpi"
    for item in items:
        if _AUTO_MPI_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.mpi)
        if not slurm_up and item.get_closest_marker("slurm") is not None:
            item.add_marker(pytest.mark.skip(reason="needs the local Slurm cluster "
                                                    "(MPITINY_TEST_SLURM=1)"))
        reason = _one_rank_skip(item, network_path, openmpi)
        if reason:
            item.add_marker(pytest.mark.skip(reason=reason))


def _one_rank_skip(item, network_path: bool, openmpi: bool) -> str:
    """Why the one-rank case of an MPI test is left out of this phase ("" if it is not)."""
    if item.get_closest_marker("mpi") is None or not _one_rank(item):
        return ""
    if network_path:
        return "one rank under MPIR_CVAR_NOLOCAL: no other rank, no network path"
    if openmpi and Path(str(item.fspath)).name not in OPENMPI_ONE_RANK_FILES:
        return "one rank under Open MPI: only in " + ", ".join(OPENMPI_ONE_RANK_FILES)
    return ""


# Under Open MPI (a CI phase after the MPICH one, which runs everything), the one-rank case of
# a test parametrised over rank counts runs only in these files: the launcher's own tests and
# the engine's DAG shapes. Elsewhere it runs the same engine paths as under MPICH, with no
# other rank for Open MPI to carry anything to.
OPENMPI_ONE_RANK_FILES = ("test_harness.py", "test_run_mpi.py")


def _one_rank(item) -> bool:
    """Whether the test is the one-rank case of a test parametrised over rank counts."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    return any(params.get(name) == 1 for name in ("n", "nranks", "ranks"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    _harness._current_test = (item.nodeid, item.get_closest_marker("mpi") is not None)
    try:
        yield
    finally:
        _harness._current_test = None


@pytest.fixture(scope="session")
def mpi_impl() -> str:
    """Which MPI the launched ranks use: "mpich" or "openmpi" (MPITINY_TEST_MPI)."""
    return _harness.mpi_impl()


@pytest.fixture
def mpirun():
    """``mpirun(n, args, *, timeout=120, cwd=None, env=None, check=False)``; see mpirun.py."""
    return _harness.mpirun


@pytest.fixture
def python_module():
    """``python_module(n, "mpitiny", "run", "dag.json", **mpirun_kwargs)``."""
    return _harness.python_module
