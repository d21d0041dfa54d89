"""The central-queue baseline: one master hands tasks to P workers, as mpi4py.futures does.

A worker asks, the master serves one request at a time (``service`` seconds per request: it
sends a chunk of ``chunk`` tasks and takes the previous result back), the chunk reaches the
worker ``latency`` later, runs for ``chunk x L``, and the worker asks again. The master is a
single server in FIFO order, so this is exact event by event (``central_makespan``); its
throughput bound is ``chunk / service`` tasks per second whatever P.

Service times, measured on this machine (``bench/results/throughput.json``, README "Results"):
``MPIPoolExecutor.submit`` of null tasks 4,202 tasks/s with 2 workers (238 µs per task: the
master is the bottleneck, the workers wait), ``map(chunksize=100)`` 361,572 tasks/s
(277 µs per chunk of 100). ``latency``: one way, 1.2 µs on a network (osu_latency on Aries,
reframe-hpc/reframe#1232), 0 on one node (inside the measured service time).
"""
from __future__ import annotations

import heapq

SUBMIT_SERVICE = 1 / 4202          # s per task: futures submit, measured here
MAP100_SERVICE = 100 / 361572      # s per chunk of 100: futures map(chunksize=100), measured here


def central_makespan(tasks: int, workers: int, length: float, service: float = SUBMIT_SERVICE,
                     chunk: int = 1, latency: float = 1.2e-6) -> float:
    """Makespan of ``tasks`` tasks of ``length`` s on ``workers`` workers behind one master."""
    chunks = -(-tasks // chunk)
    if chunks <= workers:                     # every chunk goes out in the first wave
        last = chunks * service + latency + min(chunk, tasks) * length
        return last + latency
    free = 0.0
    ready = [0.0] * workers                   # when each worker asks next
    heapq.heapify(ready)
    end = 0.0
    left = tasks
    for _ in range(chunks):
        asks = heapq.heappop(ready)
        start = max(free, asks + latency)
        free = start + service
        n = min(chunk, left)
        left -= n
        done = free + latency + n * length
        end = max(end, done)
        heapq.heappush(ready, done)
    return end + latency


def central_efficiency(tasks: int, workers: int, length: float, **kw) -> float:
    """work / (workers x makespan); the master is not counted as a worker (as in the
    benchmarks: N workers means N+1 processes)."""
    return tasks * length / (workers * central_makespan(tasks, workers, length, **kw))


def central_metg(tasks_per_worker: int, workers: int, lengths: list, **kw) -> float | None:
    """The smallest of ``lengths`` (ascending) with efficiency >= 0.5 (None: none)."""
    for length in lengths:
        if central_efficiency(tasks_per_worker * workers, workers, length, **kw) >= 0.5:
            return length
    return None
