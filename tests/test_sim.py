"""The scale simulator (bench/sim): it drives the engine's real queue, release and termination
code on simulated word memories; these tests check that every task runs exactly once and the
run ends on 1 to 1,000 simulated ranks, and that the cost model adds up by hand. No timing
assertions: the figures are virtual time."""
from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from sim import central, metg, workloads  # noqa: E402
from sim.costs import preset  # noqa: E402
from sim.fixes import VARIANTS  # noqa: E402
from sim.simulate import Simulation, simulate  # noqa: E402


@pytest.mark.parametrize("nranks", [1, 2, 4, 64, 1000])
def test_independent_tasks_run_once_and_the_run_ends(nranks):
    tasks_per_rank = 3 if nranks == 1000 else 20
    r = simulate("independent", nranks, 1e-4, preset("node"), tasks_per_rank)
    assert r.tasks == tasks_per_rank * nranks      # Simulation.result checks each ran once
    assert r.makespan > 0 and 0 < r.efficiency <= 1
    assert r.hot["done_cas"] >= nranks              # every rank's DONE word was set


@pytest.mark.parametrize("nranks", [1, 2, 4, 64])
@pytest.mark.parametrize("variant", ["engine", "direct", "before"])
def test_a_dag_runs_every_task_once(nranks, variant):
    doc = workloads.make("dag", 10 * nranks, 1e-4)
    r = Simulation(doc, nranks, preset("ib", ranks_per_node=4), seed=3,
                   rank_class=VARIANTS[variant]).run()
    assert r.tasks == 2 * 10 * nranks + 1


@pytest.mark.parametrize("variant", ["engine", "direct", "before"])
def test_every_variant_runs_every_task_once_on_1000_ranks(variant):
    doc = workloads.make("independent", 3 * 1000, 1e-4)
    r = Simulation(doc, 1000, preset("ib", ranks_per_node=64), rank_class=VARIANTS[variant]).run()
    assert r.tasks == 3000
    assert r.hot["done_cas"] >= 1000


def test_the_engine_combines_the_finished_counts_on_1000_ranks():
    """With the combining tree no more than rank 0 and its ``FANIN`` children add to
    ``FINISHED`` (plus the ancestors' drains, not due in so short a run); with every rank
    adding directly (``direct``, the engine before) each of the 1,000 does."""
    from mpitiny.engine.control import FANIN
    doc = workloads.make("independent", 20 * 1000, 1e-4)
    costs = preset("ib", ranks_per_node=64)
    engine = Simulation(doc, 1000, costs, rank_class=VARIANTS["engine"]).run()
    direct = Simulation(doc, 1000, costs, rank_class=VARIANTS["direct"]).run()
    assert engine.tasks == direct.tasks == 20 * 1000
    assert engine.hot["finished_ops"] <= 3 * (FANIN + 1)
    assert direct.hot["finished_ops"] >= 1000


def test_one_task_on_one_rank_costs_what_the_model_says():
    """Claim (one compare-and-swap), a round, the chunk, the task; then a round that finds
    nothing, the report (one fetch-and-add on FINISHED) and the DONE word (one CAS)."""
    costs = preset("node")
    r = Simulation(workloads.make("independent", 1, 1e-3), 1, costs).run()
    ops = costs.node_ops
    by_hand = (2 * ops["cas"] + 2 * costs.round_cpu + costs.chunk_cpu + 1e-3 + costs.task_cpu
               + ops["fetch_add"])
    assert r.makespan == pytest.approx(by_hand, rel=1e-9)
    assert r.efficiency == pytest.approx(1e-3 / by_hand)


def test_contention_makes_operations_on_one_word_wait():
    costs = replace(preset("ib", ranks_per_node=1), service_net=1e-3)
    from sim.memory import Ledger
    ledger = Ledger(3, costs, (10, 20))
    first = ledger.op("fetch_add", 1, 0, 1, 0.0)
    second = ledger.op("fetch_add", 2, 0, 1, 0.0)       # arrives while the first is served
    assert second - first == pytest.approx(1e-3)
    assert ledger.finished_times == [0.0, 0.0]


def test_central_baseline_by_hand():
    # 4 tasks, 2 workers, 1 s per request at the master, 10 s tasks: the second wave is
    # served at 11 and 12 s and ends 1 + 10 s later: 3 x 1 s + 2 x 10 s.
    assert central.central_makespan(4, 2, 10.0, service=1.0, latency=0.0) == pytest.approx(23.0)
    # master-bound: 1,000 tasks at 1 s each cannot finish before 1,000 s
    assert central.central_makespan(1000, 100, 1e-3, service=1.0, latency=0.0) >= 1000.0


def test_metg_interpolates_in_log_length():
    pts = [{"length": 1e-5, "efficiency": 0.25}, {"length": 1e-4, "efficiency": 0.75}]
    assert metg.metg(pts) == pytest.approx(10 ** -4.5)
    assert metg.metg([{"length": 1e-5, "efficiency": 0.2}]) is None


def test_the_priority_board_is_tiered_on_1000_ranks():
    """``dag-prio``: every ``b`` (priority 1) is counted on the board when released and off
    when claimed. On one board (``oneboard``, as below 64 ranks) all of it lands on rank 0;
    tiered, each group of 64 ranks counts on its own leader and rank 0 keeps only which groups
    hold work (``mpitiny.queue.levels``): its hottest rank takes a fraction of the atomics."""
    doc = workloads.make("dag-prio", 1000, 1e-4)
    costs = replace(preset("ib", ranks_per_node=64), measure_release=False)
    tiered = Simulation(doc, 1000, costs, rank_class=VARIANTS["engine"]).run()
    one = Simulation(doc, 1000, costs, rank_class=VARIANTS["oneboard"]).run()
    assert tiered.tasks == one.tasks == 2 * 1000 + 1
    assert one.hot["board_atomics_rank0"] >= 2 * 1000      # each b counted on and off
    assert one.hot["board_atomics_hottest"] == one.hot["board_atomics_rank0"]
    assert tiered.hot["board_atomics_hottest"] * 4 <= one.hot["board_atomics_hottest"]
