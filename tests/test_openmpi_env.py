"""Open MPI is quiet by default: ``mpitiny.mpienv.mpi_environment()`` sets ``OMPI_MCA_osc=^ucx``
before MPI is initialised when the user chose nothing and the machine has no RDMA device.

The unit tests run anywhere (no MPI). The tests that launch ranks run under Open MPI only (CI's
second phase, ``MPITINY_TEST_MPI=openmpi bash .ci/test -m mpi``); they remove the harness's own
``OMPI_MCA_osc`` default, so what they see is what a user sees.
"""
from __future__ import annotations

import json
import os
import re
import sys

import pytest

from mpitiny.mpienv import OSC, QUIET_OSC, mpi_environment

OSC_ERROR = "OSC UCX component priority set inside component query failed"


@pytest.fixture
def no_rdma(tmp_path):
    return str(tmp_path / "no-such-sysfs-dir")


@pytest.fixture
def clean_env(tmp_path):
    """An environment with no OMPI_MCA_* and a HOME without an Open MPI parameter file."""
    return {"HOME": str(tmp_path / "home"), "PATH": "/usr/bin"}


@pytest.fixture(autouse=True)
def mpi_not_imported(monkeypatch):
    """The decision depends on whether mpi4py.MPI is imported (pytest may have imported it)."""
    monkeypatch.delitem(sys.modules, "mpi4py.MPI", raising=False)


def test_sets_osc_when_nothing_is_chosen_and_there_is_no_rdma_device(clean_env, no_rdma, tmp_path):
    got = mpi_environment(clean_env, rdma_devices=no_rdma)
    assert got["set"] == {OSC: QUIET_OSC} and clean_env[OSC] == "^ucx"
    assert "no RDMA device" in got["why"]
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {"HOME": clean_env["HOME"]}
    assert mpi_environment(env, rdma_devices=str(empty))["set"] == {OSC: "^ucx"}


def test_leaves_osc_alone_on_a_machine_with_rdma_devices(clean_env, tmp_path):
    ib = tmp_path / "infiniband"
    (ib / "mlx5_0").mkdir(parents=True)
    got = mpi_environment(clean_env, rdma_devices=str(ib))
    assert got["set"] == {} and OSC not in clean_env
    assert "mlx5_0" in got["why"]


@pytest.mark.parametrize("name, value", [("OMPI_MCA_osc", "ucx"), ("OMPI_MCA_osc", ""),
                                         ("OMPI_MCA_osc_ucx_priority", "0")])
def test_what_the_user_set_wins(clean_env, no_rdma, name, value):
    clean_env[name] = value
    got = mpi_environment(clean_env, rdma_devices=no_rdma)
    assert got["set"] == {} and clean_env.get(OSC) == (value if name == OSC else None)
    assert name in got["why"]


def test_an_osc_line_in_the_user_s_parameter_file_wins(clean_env, no_rdma, tmp_path):
    conf = tmp_path / "home" / ".openmpi" / "mca-params.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text("# mine\nbtl = ^ofi\n")
    assert mpi_environment(dict(clean_env), rdma_devices=no_rdma)["set"] == {OSC: "^ucx"}
    conf.write_text("# mine\nosc = sm,rdma\n")
    got = mpi_environment(clean_env, rdma_devices=no_rdma)
    assert got["set"] == {} and OSC not in clean_env and str(conf) in got["why"]
    other = tmp_path / "site.conf"
    other.write_text("osc_ucx_priority = 0\n")
    env = {"OMPI_MCA_mca_base_param_files": f"{tmp_path / 'missing.conf'}{os.pathsep}{other}"}
    assert mpi_environment(env, rdma_devices=no_rdma)["set"] == {}


def test_too_late_once_mpi_is_initialised(clean_env, no_rdma, monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py.MPI", object())
    got = mpi_environment(clean_env, rdma_devices=no_rdma)
    assert got["set"] == {} and OSC not in clean_env and "already imported" in got["why"]


def test_the_process_environment_is_decided_once(monkeypatch, tmp_path):
    import mpitiny.mpienv as mpienv
    monkeypatch.setattr(mpienv, "_done", None)
    monkeypatch.setenv(OSC, "recorded")     # so that the variable set below is undone after
    monkeypatch.delenv(OSC)
    monkeypatch.setenv("HOME", str(tmp_path))
    first = mpi_environment(rdma_devices=str(tmp_path / "none"))
    assert first["set"] == {OSC: "^ucx"} and os.environ[OSC] == "^ucx"
    assert mpi_environment() is first          # the variable it set is not "set by the user"


# ------------------------------------------------------------------------- under Open MPI

def _needs_quiet_default(mpi_impl):
    if mpi_impl != "openmpi":
        pytest.skip("Open MPI only (MPITINY_TEST_MPI=openmpi)")
    try:
        if os.listdir("/sys/class/infiniband"):
            pytest.skip("this machine has RDMA devices: mpitiny leaves Open MPI's osc/ucx alone")
    except FileNotFoundError:
        pass


def _osc_errors(stderr: str) -> list:
    """Open MPI's error lines (``[host:pid] file.c:375  Error: ...``) and any OSC UCX message;
    not mpitiny's own lines (its summary says "0 failed")."""
    return [line for line in stderr.splitlines()
            if "OSC UCX" in line or re.match(r"\[[\w.-]+:\d+\] .*(Error|failed)", line)]


WINDOWS = """
from mpitiny.mpienv import mpi_environment
got = mpi_environment()
from mpi4py import MPI
for _ in range(3):
    MPI.Win.Allocate(64, comm=MPI.COMM_WORLD).Free()
if MPI.COMM_WORLD.Get_rank() == 0:
    print(MPI.Get_library_version().split(",")[0], got["set"])
"""


@pytest.mark.mpi
def test_setting_it_in_the_rank_before_mpi_init_silences_open_mpi(mpirun, mpi_impl, tmp_path):
    """The variable set in the Python process (not in mpiexec's environment) is enough: each rank
    chooses its one-sided component in its own MPI_Init. Without it, every window prints."""
    _needs_quiet_default(mpi_impl)
    script = tmp_path / "windows.py"
    script.write_text(WINDOWS)
    loud = tmp_path / "loud.py"
    loud.write_text(WINDOWS.replace("got = mpi_environment()", "got = {'set': {}}"))
    res = mpirun(2, [str(loud)], env={OSC: None}, timeout=60)
    assert res.returncode == 0, res.stderr
    assert len(_osc_errors(res.stderr)) >= 2, res.stderr        # what users saw
    res = mpirun(2, [str(script)], env={OSC: None}, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "Open MPI" in res.stdout and "'^ucx'" in res.stdout, res.stdout
    assert _osc_errors(res.stderr) == [], res.stderr


@pytest.mark.mpi
def test_mpitiny_run_under_open_mpi_prints_no_osc_errors(python_module, mpi_impl, tmp_path):
    _needs_quiet_default(mpi_impl)
    dag = {"name": "quiet", "tasks": [
        {"id": "sq", "fn": "mpitiny.tasks:echo", "args": ["{i}"],
         "foreach": {"i": {"range": [0, 200]}}},
        {"id": "check", "fn": "mpitiny.tasks:null", "foreach": {"i": {"range": [0, 200]}},
         "deps": ["sq[{i}]"]},
        {"id": "end", "fn": "mpitiny.tasks:null", "deps": ["check"]}]}
    (tmp_path / "dag.json").write_text(json.dumps(dag))
    res = python_module(2, "mpitiny", "run", "dag.json", "-o", "run", "-q", cwd=str(tmp_path),
                        env={OSC: None}, timeout=90)
    assert res.returncode == 0, res.stderr
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["done"] == 401
    assert _osc_errors(res.stderr) == [], res.stderr
