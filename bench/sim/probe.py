"""Per-operation costs of mpitiny's word memory on one node, measured here (run under mpiexec).

``mpiexec -n 2 python bench/sim/probe.py [REPS]``: rank 1 performs each ``RmaMemory`` operation
the engine uses (``fetch_add``, ``cas``, ``swap``, ``add``, ``get`` of 1 word and of a steal's
header of 261 words, ``put``) ``REPS`` times on rank 0's window, which sits in a blocking
barrier meanwhile (as a busy rank makes no MPI call), and on its own window; it prints one JSON
object: the median and p10/p90 of each, in µs, through mpi4py (so the Python call is included,
as the engine pays it). These are the ``node`` figures of ``bench/sim/costs.py``.
"""
from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def main() -> None:
    from mpi4py import MPI

    from mpitiny.queue.memory import RmaMemory
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    comm = MPI.COMM_WORLD
    mem = RmaMemory(comm, 4096)
    mem.start()
    comm.Barrier()
    out: dict = {"reps": reps, "nranks": comm.Get_size(), "loadavg": os.getloadavg()}
    if comm.Get_rank() == 1:
        vals = np.arange(8, dtype=np.int64)
        ops = {
            "fetch_add": lambda t: mem.fetch_add(t, 10, 1),
            "cas": lambda t: mem.cas(t, 11, 0, 0),
            "swap": lambda t: mem.swap(t, 12, 0),
            "add": lambda t: mem.add(t, 13, 1),
            "get1": lambda t: mem.get(t, 14, 1),
            "get261": lambda t: mem.get(t, 100, 261),
            "put8": lambda t: mem.put(t, 500, vals),
        }
        for where, target in (("remote", 0), ("self", 1)):
            for name, op in ops.items():
                for _ in range(50):
                    op(target)
                ts = np.empty(reps)
                for k in range(reps):
                    t0 = time.perf_counter()
                    op(target)
                    ts[k] = time.perf_counter() - t0
                ts *= 1e6
                out[f"{where}.{name}"] = {"median_us": round(float(np.median(ts)), 3),
                                          "p10_us": round(float(np.percentile(ts, 10)), 3),
                                          "p90_us": round(float(np.percentile(ts, 90)), 3)}
        t0 = time.perf_counter()
        for _ in range(reps):
            pass
        out["python_loop_us"] = (time.perf_counter() - t0) / reps * 1e6
        print(json.dumps(out), flush=True)
    comm.Barrier()
    mem.stop()
    mem.free()


if __name__ == "__main__":
    main()
