"""Task Bench's Dask driver (StanfordLegion/task-bench ``dask/task_bench.py``), ported: run by
``taskbench.py`` with a Python that has Dask (a benchmark-only venv, never a dependency of
mpitiny).

As the original: one ``dask.delayed`` task per point, its inputs the outputs of its parents
(``last_row[dep]`` for each dependency, repeats included), all joined by one delayed ``join``
and computed with one ``.compute()``; the time is taken from before the graph is built to
after ``compute`` returns (its ``Elapsed Time``). The kernel is the same busy-wait as
mpitiny's (``time.perf_counter`` spin of ``L`` µs: Task Bench's C kernel is not here) and
returns its start and end, so the first start -> last end span is measured too. Output
bytes per task: 16 (the two floats). ``--scheduler``: ``processes`` (one worker process per
rank, as mpitiny's ranks: a Python kernel holds the GIL) or ``threads`` (what the original
does without ``-scheduler``).

Prints one JSON line: ``elapsed`` (Task Bench's time), ``span``, ``tasks``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import dask  # noqa: E402

from _taskbench_graph import dependencies, width_at  # noqa: E402


def execute_point(timestep, point, seconds, *inputs):
    """The busy-wait kernel: spin ``seconds``; return (start, end)."""
    start = time.perf_counter()
    end = start + seconds
    while time.perf_counter() < end:
        pass
    return (time.time() - (time.perf_counter() - start), time.time())


@dask.delayed
def execute_point_delayed(timestep, point, seconds, *inputs):
    return execute_point(timestep, point, seconds, *inputs)


@dask.delayed
def join(*args):
    return (min(a[0] for a in args), max(a[1] for a in args))


def execute_task_graph(pattern: str, steps: int, width: int, seconds: float) -> list:
    outputs = []
    last_row: list = []
    for timestep in range(steps):
        row = []
        for point in range(width_at(pattern, timestep, width)):
            inputs = [last_row[dep] for dep in dependencies(pattern, timestep, point, width)]
            output = execute_point_delayed(timestep, point, seconds, *inputs)
            row.append(output)
            outputs.append(output)
        last_row = row
    return outputs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("pattern")
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--width", type=int, required=True)
    ap.add_argument("--us", type=float, required=True)
    ap.add_argument("--scheduler", default="processes")
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    kwargs: dict = {"scheduler": a.scheduler, "num_workers": a.workers}
    if a.scheduler == "processes":      # one pool, warmed before the clock starts
        import concurrent.futures
        import multiprocessing
        kwargs["pool"] = concurrent.futures.ProcessPoolExecutor(
            a.workers, mp_context=multiprocessing.get_context("fork"))
        dask.compute(*[dask.delayed(abs)(-k) for k in range(4 * a.workers)], **kwargs)
    start_time = time.perf_counter()
    results = execute_task_graph(a.pattern, a.steps, a.width, a.us * 1e-6)
    first, last = join(*results).compute(**kwargs)
    total_time = time.perf_counter() - start_time
    print(json.dumps({"elapsed": total_time, "span": last - first, "tasks": len(results)}),
          flush=True)
    if "pool" in kwargs:
        kwargs["pool"].shutdown()


if __name__ == "__main__":
    main()
