"""The mpitiny.futures side of bench/futures_bench.py: the phases of ``_futures_peer.py``
(the same functions, the same null task) run on ``mpitiny.futures.Executor``::

    mpiexec -n N python -m mpitiny.futures bench/_mpitiny_futures_peer.py PHASES_JSON

Prints one JSON object ``{"workers": N, "phases": [...]}``.
"""
from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_tasks  # noqa: E402
from _futures_peer import phase_chain, phase_map, phase_sleeps, phase_submit  # noqa: E402
from mpitiny.futures import Executor  # noqa: E402
from mpitiny.tasks import null  # noqa: E402


def main():
    phases = json.loads(sys.argv[1])
    with Executor() as ex:
        workers = ex.num_workers
        for f in [ex.submit(null) for _ in range(4 * workers)]:   # as the mpi4py peer does
            f.result()
        out = bench_tasks.run_phases(ex, phases, {"submit": phase_submit, "map": phase_map,
                                                "chain": phase_chain, "sleeps": phase_sleeps})
    print(json.dumps({"workers": workers, "phases": out}))


if __name__ == "__main__":
    main()
