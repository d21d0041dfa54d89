"""tests/conftest.py's skips: the Slurm tests are skipped without the cluster, and the network
path phase (MPIR_CVAR_NOLOCAL=1) skips one-rank cases, each for its own reason."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def pytest_summary(env_changes: dict, *args) -> str:
    """pytest's summary (with the skip reasons) of ``args`` run with ``env_changes``."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("MPITINY_TEST_SLURM", "MPIR_CVAR_NOLOCAL")}
    env.update(env_changes)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                           *args], cwd=HERE.parent, env=env, capture_output=True, text=True,
                          timeout=120)
    return proc.stdout


def test_slurm_tests_are_skipped_without_the_cluster_under_the_network_path_too():
    out = pytest_summary({"MPIR_CVAR_NOLOCAL": "1"}, "tests/test_slurm.py")
    assert " passed" not in out and " failed" not in out, out
    assert "needs the local Slurm cluster" in out, out


def test_the_network_path_skips_one_rank_cases_only():
    one_rank = "test_each_chunk_is_one_call_and_each_task_is_recorded_once[1]"
    out = pytest_summary({"MPIR_CVAR_NOLOCAL": "1"}, f"tests/test_batch.py::{one_rank}",
                         "tests/test_procstat.py::test_node_memory_is_psutil_s")
    assert "1 passed, 1 skipped" in out and "no network path" in out, out
