"""The scale simulator (bench/sim): it drives the engine's real queue, release and termination
code on simulated word memories; these tests check that every task runs exactly once and the
run ends on 1 to 1,000 simulated ranks, that the cost model adds up by hand, and that a pool
of cores (fewer cores than ranks) serialises CPU work but not sleeping tasks. No timing
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


def pooled_run(fn: str, cores, nranks: int = 4, tasks: int = 40, length: float = 1e-3,
               **changes):
    doc = workloads.make("independent", tasks, length, fn=fn)
    costs = replace(preset("node"), cores=cores, spin=False, max_sleep=1e-3, **changes)
    return Simulation(doc, nranks, costs).run()


def test_a_pool_of_one_core_serialises_cpu_bound_tasks():
    """4 ranks of busy-waiting tasks on 1 core take about 4x as long as on 4 cores (or with a
    core each): the core runs one rank's task at a time, and the ranks wait for it."""
    spread = pooled_run("mpitiny.tasks:spin", 4)
    one = pooled_run("mpitiny.tasks:spin", 1)
    each = pooled_run("mpitiny.tasks:spin", None)
    assert spread.makespan == pytest.approx(each.makespan, rel=1e-9)   # 4 cores: no pool
    assert spread.core_wait == 0.0
    assert 3.6 <= one.makespan / spread.makespan <= 4.1
    assert one.makespan >= one.cpu >= 40 * 1e-3          # every task's CPU, one after another
    assert one.core_wait > 0


def test_sleeping_tasks_do_not_hold_a_core():
    """The same tasks sleeping: the core is free while they sleep, so 1 core for 4 ranks only
    adds the waits for the engine's few µs per task, not the tasks' length."""
    spread = pooled_run("mpitiny.tasks:sleep", 4)
    one = pooled_run("mpitiny.tasks:sleep", 1)
    assert one.makespan / spread.makespan <= 1.1
    assert one.cpu < 0.1 * 40 * 1e-3                     # the tasks' time is not CPU


def test_waking_costs_cpu_and_other_work_takes_its_share_of_the_cores():
    """``wake_cpu`` is charged at every wake from a sleep; with 2 ranks per core it queues, and
    ``background`` (other work's cores) makes a rank's core busy for longer after it."""
    plain = pooled_run("mpitiny.tasks:sleep", 2, nranks=8, tasks=80)
    woken = pooled_run("mpitiny.tasks:sleep", 2, nranks=8, tasks=80, wake_cpu=2e-4)
    busy = pooled_run("mpitiny.tasks:sleep", 2, nranks=8, tasks=80, wake_cpu=2e-4,
                      background=1.5)
    assert woken.cpu - plain.cpu >= 80 * 2e-4            # at least one wake per task
    assert woken.makespan > plain.makespan
    assert busy.core_wait > woken.core_wait
    assert busy.makespan > woken.makespan
    assert busy.cpu == pytest.approx(woken.cpu, rel=0.2)   # the same work, served later


@pytest.mark.parametrize("fn", ["mpitiny.tasks:spin", "mpitiny.tasks:sleep"])
@pytest.mark.parametrize("nranks", [2, 64])
def test_a_dag_on_a_pool_runs_every_task_once(fn, nranks):
    """64 ranks on 2 cores, as the validation runs: every task once (``Simulation.result``
    checks), each ``b[i]`` after its ``a[i]``, and the run ends."""
    doc = workloads.make("dag", 5 * nranks, 1e-4, fn=fn)
    costs = replace(preset("node"), cores=2, spin=nranks <= 2, max_sleep=1e-3, wake_cpu=1e-4)
    sim = Simulation(doc, nranks, costs, seed=5)
    starts = {}
    real_ran = sim.ran

    def ran(rank, first, idx, now):
        for i in idx:
            starts[first + int(i)] = now
        real_ran(rank, first, idx, now)
    sim.ran = ran
    r = sim.run()
    assert r.tasks == 2 * 5 * nranks + 1
    n = 5 * nranks
    assert all(starts[n + i] > starts[i] for i in range(n))       # b[i] after a[i]
    assert starts[2 * n] == max(starts.values())                  # end after every b
    assert (sim.pools is not None) == (nranks > 2)


def test_no_pool_where_every_rank_has_a_core():
    """At 1,000 ranks of 64 per node with 64 cores per node nothing is pooled: the scale runs'
    figures stay what they were (a core per rank)."""
    costs = preset("ib", ranks_per_node=64)
    assert not replace(costs, cores=64).pooled(1000)
    assert replace(costs, cores=32).pooled(1000)
    assert not costs.pooled(10_000)


def test_the_wake_model_fitted_on_some_points_predicts_the_others():
    """``wake.fit_model`` is least squares in the named terms: points on a plane in ranks per
    core and load, fitted on 8 and 32 ranks, give back the plane at 2 and 64 ranks (held out);
    the model never gives a negative ``wake_cpu``."""
    from sim.wake import WakeModel, fit_model

    def truth(nranks, load):
        return 1e-4 + 3e-6 * nranks / 2 + 1.5e-5 * load
    train = [(p, 2, load, truth(p, load)) for p in (8, 32) for load in (5.0, 12.0, 30.0)]
    model = fit_model(train)
    assert model.coef == pytest.approx((1e-4, 3e-6, 1.5e-5), rel=1e-6)
    for p, load in ((2, 7.0), (64, 36.0)):
        assert model.at(p, 2, load) == pytest.approx(truth(p, load), rel=1e-6)
    assert WakeModel(("one", "load"), (-1e-3, 1e-6)).at(64, 2, 10.0) == 0.0


def test_heldout_splits_never_fit_on_what_they_predict():
    from sim.heldout import StoredRun, splits
    runs = [StoredRun(run, kind, p, 20 * p, 5e-3, 2, 0.0, {"loadavg_before": [load, 0, 0]})
            for run, load in (("a", 5.0), ("b", 20.0)) for kind in ("independent", "dag")
            for p in (2, 8, 32, 64)]
    found = splits(runs)
    assert [len(test) for _, _, test in found] == [8, 8, 8]
    for _, train, test in found:
        assert not {id(r) for r in train} & {id(r) for r in test}
    by_ranks = found[0]
    assert {r.nranks for r in by_ranks[1]} == {8, 32} and {r.nranks for r in by_ranks[2]} == {2, 64}


def test_a_validation_run_is_simulated_with_the_modelled_wake_cpu():
    """``validate.costs_for`` with the model's ``wake_cpu`` for the run's load: every wake of a
    rank is charged it on the virtual clock (releases charged ``release_cpu``, not timed), so
    a run predicted under a higher load costs more CPU and, on 2 cores for 16 ranks, lasts
    longer."""
    from sim.validate import costs_for
    from sim.wake import WAKE_MODEL
    nranks, tasks = 16, 16 * 10
    doc = workloads.make("dag", tasks // 2, 5e-3, fn="mpitiny.tasks:sleep")
    results = []
    for load in (2.0, 40.0):
        real = {"sleep_overshoot": 0.0, "others_cores": 0.0,
                "loadavg_before": [load, load, load]}
        wake = WAKE_MODEL.at(nranks, 2, load)
        costs = replace(costs_for(nranks, 2, wake, 0.0, real), measure_release=False)
        assert costs.wake_cpu == wake > 0 and costs.cores == 2
        sim = Simulation(doc, nranks, costs, seed=1)
        r = sim.run()
        assert r.tasks == tasks + 1
        wakes = sum(rk.wakes for rk in sim.ranks)
        assert wakes >= tasks                          # every sleeping task ends in a wake
        assert r.cpu >= wakes * wake
        results.append(r)
    quiet, loaded = results
    assert loaded.cpu > quiet.cpu and loaded.makespan > quiet.makespan
