"""The whole engine in one process: P simulated ranks stepped round-robin, no MPI.

``run_local`` does what ``mpitiny run`` does (run directory, journals, resume, task tables,
``summary.json``), with every rank's windows in one ``LocalFabric`` and the ranks taking
turns: each turn a rank runs one chunk (its own, stolen or handed to it) or finds nothing and
reports. The order of turns is shuffled by ``seed``, so tests can try many interleavings of
claims, steals and releases. It is the engine's ``get_sync`` (as in dask): DAG, failure,
retry and resume cases run in milliseconds beside the tests that launch ``mpiexec``.

A simulated crash is an exception out of a turn (``MPITINY_FAULT``'s ``mode=raise``, or a
test's ``crash_after`` turns): the engines are dropped as they are, journals included, as a
killed job leaves them, and the next ``run_local`` on the same run directory resumes.
"""
from __future__ import annotations

import random
import time

from mpitiny.dag.load import load_dag_text
from mpitiny.engine.loop import Engine
from mpitiny.engine.start import conclude, plan_run_dir, prepare_run_dir
from mpitiny.engine.types import RunOptions
from mpitiny.engine.world import LocalFabric
from mpitiny.errors import EXIT_OK
from mpitiny.io import journal as jnl
from mpitiny.io import rundir


class SimulatedCrash(Exception):
    """Raised by ``run_local`` when ``crash_after`` turns have been taken."""


def run_local(text: str, nranks: int, run_dir: str, opts: RunOptions | None = None,
              params: dict | None = None, seed: int = 0, fault: str | None = None,
              crash_after: int | None = None, max_turns: int = 10_000_000) -> int:
    """Run the dag.json ``text`` on ``nranks`` simulated ranks in this process; returns the
    exit status, as ``mpitiny run`` would (``summary.json`` and the rest in ``run_dir``)."""
    opts = opts or RunOptions(quiet=True)
    params = params or {}
    t_launch = time.time()
    dag = load_dag_text(text, source="<local DAG>", params=params)
    plan = plan_run_dir(run_dir, dag, text.encode(), params, opts)
    if plan.action == "complete":           # every task done already: nothing to run
        return EXIT_OK
    incarnation, resuming = prepare_run_dir(run_dir, dag, None, params, text, opts, nranks,
                                            plan)
    resumed = jnl.read_journals(run_dir, dag.total) if resuming else None
    fabric = LocalFabric(nranks)
    engines = [Engine(fabric.world(r), dag, run_dir, opts, fault, incarnation, resumed)
               for r in range(nranks)]
    for engine in engines:
        engine.open_journal()
    for engine in engines:
        engine.bind()
        engine.start()
    t_start = time.time()
    take_turns(engines, random.Random(seed), crash_after, max_turns)
    t_end = time.time()
    all_stats = []
    for engine in engines:
        engine.stop()
        engine.sample()
        rundir.write_rank_table(run_dir, engine.rank, engine.records, engine.samples)
        all_stats.append(engine.stats())
    for engine in engines:
        engine.free()
    return conclude(dag, run_dir, opts, all_stats, (t_launch, t_start, t_end), incarnation,
                    resumed)


def take_turns(engines: list, rng: random.Random, crash_after: int | None,
               max_turns: int) -> None:
    """Step the ranks in shuffled rounds until every one has left the run."""
    running = list(range(len(engines)))
    turns = 0
    while running:
        rng.shuffle(running)
        for r in list(running):
            if crash_after is not None and turns >= crash_after:
                raise SimulatedCrash(f"simulated crash after {turns} turns")
            if turns >= max_turns:
                raise RuntimeError(f"the run did not end in {max_turns} turns")
            turns += 1
            engine = engines[r]
            engine.bind()
            engine.guard.install()
            try:
                if not engine.step():
                    running.remove(r)
            finally:
                engine.guard.uninstall()
