"""``mpitiny.futures`` (issue 21 points 2 and 3): an Executor session on 1, 2, 4 ranks gives
back values, exceptions with their remote tracebacks, map/starmap/chunks in order,
as_completed / wait, cancellation at shutdown, calls submitted from tasks (which wait for
them while running others: on one rank too), a batch that does not unpickle on another rank
(only its bad calls fail), the script's exit status on every rank; bad
use gets one clear message. The peers' suites (CPython 3.11's test_concurrent_futures and
mpi4py's test_futures, ``tests/futures_conformance.py``) run when MPITINY_PEER_SUITES names
the directory that holds them (they are not kept in this repository).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from mpitiny.futures import Executor

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "dags" / "futures_script.py"
CONFORMANCE = HERE / "futures_conformance.py"
SUITES = os.environ.get("MPITINY_PEER_SUITES", "")


def findings(proc) -> dict:
    lines = [x for x in proc.stdout.splitlines() if x.startswith("{")]
    assert lines, proc.stdout + proc.stderr
    return json.loads(lines[-1])


@pytest.mark.parametrize("n", [1, 2, 4])
def test_session(python_module, n):
    proc = python_module(n, "mpitiny.futures", str(SCRIPT), "3", timeout=240,
                         cwd=str(SCRIPT.parent))
    assert proc.returncode == 3, proc.stdout + proc.stderr     # the script's sys.exit(3)
    found = findings(proc)
    for key in ("map", "map_chunks", "starmap", "kwargs", "as_completed", "wait",
                "remote_traceback", "others_done"):
        assert found[key] is True, (key, found)
    assert found["exception"] == ["ValueError", "bad value 3"]
    assert found["unpicklable_arg"] == found["unpicklable_result"] == "AttributeError"
    assert found["fib"] == 144                  # tasks that submit and wait, nested
    assert 0 < found["cancelled"] < 200
    assert found["after_shutdown"] == "cannot schedule new futures after shutdown"
    assert proc.stdout.count("{") == 1          # printed once, by the script's rank


@pytest.mark.parametrize("n", [1, 2, 4])
def test_batch_that_does_not_unpickle_fails_only_its_bad_calls(python_module, n):
    script = HERE / "dags" / "futures_resend.py"
    proc = python_module(n, "mpitiny.futures", str(script), timeout=240, cwd=str(script.parent))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    found = findings(proc)
    assert found["ints_ok"] == 2700 and not found["ints_bad"], found
    assert found["odd_ran"] + len(found["odd_failed"]) == 300
    assert set(found["odd_failed"]) <= {"AttributeError"}, found["odd_failed"]
    if n == 1:
        assert found["odd_ran"] == 300
    else:                   # rank 0 runs none while its client submits: rank 1 takes them
        assert found["odd_failed"], found
    assert found["after"] == 7


def test_script_that_raises_exits_1_with_its_traceback_once(python_module, tmp_path):
    script = tmp_path / "raises.py"
    script.write_text("raise KeyError('no such thing')\n")
    proc = python_module(2, "mpitiny.futures", str(script), timeout=120, cwd=str(tmp_path))
    assert proc.returncode == 1
    assert proc.stderr.count("KeyError: 'no such thing'") == 1, proc.stderr


def test_missing_script_is_one_clear_error(python_module, tmp_path):
    proc = python_module(2, "mpitiny.futures", str(tmp_path / "nope.py"), timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.count("mpitiny.futures: no such script:") == 1, proc.stderr


def test_executor_outside_a_session_is_one_clear_error():
    with pytest.raises(RuntimeError, match="no mpitiny.futures session on this rank"):
        Executor()


@pytest.mark.parametrize("suite", ["cpython", "mpi4py"])
@pytest.mark.parametrize("n", [1, 2, 4])
def test_peer_suite(python_module, suite, n):
    if not SUITES or not os.path.isdir(SUITES):
        pytest.skip("MPITINY_PEER_SUITES is not set to the suites' directory "
                    "(tests/futures_conformance.py says what it holds)")
    proc = python_module(n, "mpitiny.futures", str(CONFORMANCE), suite, SUITES,
                         timeout=400, cwd=str(HERE))
    result = findings(proc)
    assert proc.returncode == 0 and not result["failures"] and not result["errors"], \
        proc.stderr[-6000:]
    assert result["ran"] > 30
