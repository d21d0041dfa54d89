"""``mpitiny.engine.guard.run_isolated``: a task run alone in a forked child, its outcome and
requests carried over pipes. A rank that already holds more than 1,024 descriptors (files of
many local engines, a long ``mpitiny serve``) must still run one: ``select.select`` refuses
descriptors from 1024 on, so the parent waits with ``poll``."""
from __future__ import annotations

import os
import resource

import pytest

from mpitiny.engine.guard import run_isolated


def _answer():
    return 0, b"42"


def _sleeps():
    import time
    time.sleep(30)
    return 0, b""


@pytest.fixture
def many_descriptors():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"the descriptor limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200) if hard == resource.RLIM_INFINITY
                                                else min(max(soft, 1200), hard), hard))
    fds = [os.open(os.devnull, os.O_RDONLY) for _ in range(1050)]
    assert max(fds) >= 1024
    yield
    for fd in fds:
        os.close(fd)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_child_runs_and_answers_with_descriptors_beyond_1024(many_descriptors):
    assert run_isolated(_answer, None) == ("ok", 0, b"42")


def test_a_child_past_its_timeout_is_killed_with_descriptors_beyond_1024(many_descriptors):
    outcome = run_isolated(_sleeps, 0.2)
    assert outcome[0] == "crash" and "timed out" in outcome[1], outcome
