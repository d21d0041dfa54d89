"""Ready-made task functions for dag.json ``fn`` entries, benchmarks and imported workflows."""
from __future__ import annotations

import time


def null() -> None:
    """Do nothing: measures the runtime's own per-task cost."""


def sleep(seconds: float) -> None:
    """Sleep (the rank's core is free meanwhile): stands in for I/O-bound or remote work."""
    time.sleep(seconds)


def spin(seconds: float) -> None:
    """Busy-wait in Python for ``seconds``: stands in for compute-bound work."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def echo(value=None, inputs=None):
    """Return ``value`` (and the parents' values when it has any): for DAG data-flow tests."""
    return value if inputs is None else {"value": value, "inputs": inputs}


def fail(message: str = "task failed on purpose") -> None:
    """Raise ``RuntimeError(message)``: for failure-propagation tests and demos."""
    raise RuntimeError(message)
