#!/usr/bin/env python
"""The simulator's entry: ``python bench/sim/run.py {scale,validate,heldout,point,board}``.

- ``scale``: efficiency against task length and METG(50 %) against ranks for the
  independent-task workload (and ``--kinds dag``), on the ``--costs`` presets (``node``: one
  node, measured here; ``ib``: nodes of ``--ranks-per-node`` on an InfiniBand-class network,
  published figures), for the engine as it is and with its scale fixes taken out again
  (``--variants``, ``bench/sim/fixes.py``), with the central-queue baseline (mpi4py.futures
  ``submit``, and ``map(chunksize=100)``) beside; and the hot spots at each point.
- ``validate``: real ``mpiexec -n N python -m mpitiny run`` runs of sleeping tasks at
  ``--ranks`` (one at a time) against their simulation on a pool of ``--cores``
  (``bench/sim/validate.py``); ``--workdir DIR --reuse`` simulates kept runs again.
- ``heldout``: the wake model (``bench/sim/wake.py``) fitted on some stored ``validate``
  results (``--stored``) and tested on the others, offline (``bench/sim/heldout.py``).
- ``point``: one simulation, every figure.
- ``board``: the priority board's hot spot (``dag-prio``), e.g. ``board --ranks 1000,10000
  --variants engine,oneboard --costs ib --lengths 1e-4 --tasks-per-rank 4``.

One JSON object on stdout, a human summary on stderr (``bench/_common.py``). Design and
results: docs/scale.md.
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
# mpitiny from PYTHONPATH or the environment first (a snapshot of another tree can be tried
# this way: the real runs of ``validate`` import it from there too), else this tree's.
sys.path.append(os.path.dirname(os.path.dirname(HERE)))

import _common as C  # noqa: E402

from sim import central, heldout, metg, validate  # noqa: E402
from sim.costs import preset  # noqa: E402
from sim.fixes import VARIANTS  # noqa: E402
from sim.simulate import Simulation  # noqa: E402
from sim import workloads  # noqa: E402

DEFAULT_LENGTHS = "25e-6,50e-6,100e-6,200e-6,400e-6,800e-6,1.6e-3,3.2e-3"


def floats(text: str) -> list:
    return [float(x) for x in text.split(",") if x]


def ints(text: str) -> list:
    return [int(x) for x in text.split(",") if x]


def cmd_scale(a) -> tuple:
    lengths = floats(a.lengths)
    rows, lines = [], []
    for kind in a.kinds.split(","):
        for costs_name in a.costs.split(","):
            costs = preset(costs_name, a.ranks_per_node)
            for variant in a.variants.split(","):
                for nranks in ints(a.ranks):
                    pts = metg.sweep(kind, nranks, lengths, costs, a.tasks_per_rank, variant,
                                     a.seed, C.log)
                    m = metg.metg(pts)
                    rows.append({"kind": kind, "costs": costs_name, "variant": variant,
                                 "nranks": nranks, "metg": m, "points": pts})
                    lines.append(f"{kind:11s} {costs_name:5s} {variant:6s} P={nranks:6d}: METG "
                                 + ("n/a" if m is None else f"{m * 1e6:8.1f} µs"))
    base = []
    for nranks in ints(a.ranks):
        for label, kw in (("submit", {"service": central.SUBMIT_SERVICE, "chunk": 1}),
                          ("map100", {"service": central.MAP100_SERVICE, "chunk": 100})):
            pts = metg.central_sweep(nranks, a.central_lengths_list, a.tasks_per_rank, **kw)
            m = metg.metg(pts)
            base.append({"central": label, "nranks": nranks, "metg": m, "points": pts})
            lines.append(f"central     {label:12s} P={nranks:6d}: METG "
                         + ("n/a" if m is None else f"{m * 1e6:8.1f} µs"))
    return {"scale": rows, "central": base}, "\n".join(lines)


def cmd_validate(a) -> tuple:
    work = C.workdir(a.workdir, "mpitiny-sim-")
    cases = []
    for nranks in ints(a.ranks):
        for kind in a.kinds.split(","):
            n = a.tasks_per_rank * nranks if kind == "independent" \
                else a.tasks_per_rank * nranks // 2
            cases.append((kind, nranks, n, a.length))
    out = validate.validate(cases, work, C.log, a.reuse, a.cores)
    lines = [f"{r['kind']:11s} P={r['nranks']:3d}: makespan (first start to last end) real "
             f"{r['real']['tasks_span']:.4f} s, sim {r['sim']['tasks_span']:.4f} s: ratio "
             f"{r['ratio_span']:.3f}; without the pool {r['ratio_span_no_pool']:.3f}; "
             f"wake_cpu fitted on its CPU {r['ratio_span_fit_cpu']:.3f}; wall "
             f"{r['ratio_wall']:.3f}"
             for r in out["rows"]]
    return {"validate": out, "workdir": work}, "\n".join(lines)


def cmd_heldout(a) -> tuple:
    """The wake model fitted on some stored real runs and tested on the others
    (``bench/sim/heldout.py``), for each choice of terms and of the others' cores."""
    runs = heldout.load_stored(a.stored.split(","))
    heldout.fit_own_wakes(runs)
    out, lines = [], []
    for terms in (("one", "load"), ("one", "per_core"), ("one", "per_core", "load")):
        for background in ("measured", "model"):
            for s in heldout.heldout(runs, terms, background):
                out.append(s)
                lines.append(f"{'+'.join(terms):18s} others {background:8s} {s['split']}: "
                             f"{s['wake_model']}: {s['within_15']}/{s['count']} within 15 %: "
                             + " ".join(f"{x['kind'][:3]}-{x['nranks']}@"
                                        f"{x['run']}={x['ratio']:.3f}"
                                        for x in s["rows"]))
                C.log(lines[-1])
    every = heldout.fit_all(runs, ("one", "load"))
    C.log(f"one+load on every stored run: {every.describe()} (wake.WAKE_MODEL)")
    own = [{"run": r.run, "kind": r.kind, "nranks": r.nranks, "load": r.load,
            "own_wake_cpu": r.own_wake} for r in runs]
    return {"heldout": out, "own_wakes": own, "fit_all": every.coef}, "\n".join(lines)


def cmd_point(a) -> tuple:
    costs = preset(a.costs.split(",")[0], a.ranks_per_node)
    nranks = ints(a.ranks)[0]
    kind = a.kinds.split(",")[0]
    length = floats(a.lengths)[0]
    n = a.tasks_per_rank * nranks if kind == "independent" else a.tasks_per_rank * nranks // 2
    r = Simulation(workloads.make(kind, n, length), nranks, costs, a.seed,
                   rank_class=VARIANTS[a.variants.split(",")[0]]).run()
    d = r.as_dict()
    return {"point": d}, (f"{kind} P={nranks} L={length * 1e6:g} µs: makespan "
                          f"{r.makespan * 1e3:.3f} ms, efficiency {r.efficiency:.3f}, "
                          f"{r.events} events in {r.real_seconds:.1f} s; hot {r.hot}")


def cmd_board(a) -> tuple:
    """The priority board's hot spot: ``dag-prio`` (``b[i]`` at priority 1 released by
    ``a[i]``: every ``b`` is counted on the board, claimed and counted off) at each of
    ``--ranks``, for each of ``--variants`` (``engine``: the tiered board; ``oneboard``: all
    on rank 0): atomics on the hottest rank and on the board's words, per second of the run."""
    # a release costs release_cpu (not the CPU time this process takes): the same figures
    # from run to run whatever the machine's load
    costs = replace(preset(a.costs.split(",")[0], a.ranks_per_node), measure_release=False)
    length = floats(a.lengths)[0]
    rows, lines = [], []
    for nranks in ints(a.ranks):
        for variant in a.variants.split(","):
            doc = workloads.make("dag-prio", max(1, a.tasks_per_rank * nranks // 2), length)
            r = Simulation(doc, nranks, costs, a.seed, rank_class=VARIANTS[variant]).run()
            keys = [k for k in r.hot if k.startswith(("atomics", "board"))]
            row = {"nranks": nranks, "variant": variant, "makespan": r.makespan,
                   "efficiency": r.efficiency, "real_seconds": r.real_seconds,
                   **{k: r.hot[k] for k in keys}}
            rows.append(row)
            lines.append(f"P={nranks:6d} {variant:8s}: makespan {r.makespan * 1e3:8.2f} ms, "
                         f"hottest rank {row['atomics_hottest_rank']} "
                         f"{row['atomics_hottest_per_second'] / 1e6:6.2f} M atomics/s; board "
                         f"atomics on its hottest rank {row['board_atomics_hottest']} "
                         f"({row['board_atomics_hottest_per_second'] / 1e6:5.2f} M/s), on rank 0 "
                         f"{row['board_atomics_rank0']}, board reads on rank 0 "
                         f"{row['board_gets_rank0']}")
            C.log(lines[-1])
    return {"board": rows}, "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["scale", "validate", "point", "board", "heldout"])
    p.add_argument("--ranks", default="1000", help="comma-separated rank counts")
    p.add_argument("--kinds", default="independent", help="independent,dag")
    p.add_argument("--costs", default="node,ib", help="cost presets: node, ib, ib-sw")
    p.add_argument("--ranks-per-node", type=int, default=64)
    p.add_argument("--variants", default="engine,direct", help=",".join(VARIANTS))
    p.add_argument("--lengths", default=DEFAULT_LENGTHS, help="task lengths, seconds")
    p.add_argument("--central-lengths", default="1e-5,1e-4,1e-3,1e-2,0.1,1,10",
                   help="task lengths for the central baseline's METG")
    p.add_argument("--tasks-per-rank", type=int, default=100)
    p.add_argument("--length", type=float, default=0.005, help="validate: sleep per task")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", default=None)
    p.add_argument("--reuse", action="store_true",
                   help="validate: read back the real runs kept in --workdir, run only new ones")
    p.add_argument("--cores", type=int, default=None,
                   help="validate: cores of the machine (default: the CPUs this process may use)")
    p.add_argument("--stored", default=",".join(
        os.path.join(os.path.dirname(HERE), "results", f"sim_validate_pool{tail}.json")
        for tail in ("_1528", "_1532", "")), help="heldout: stored validate results")
    return p


def main() -> None:
    a = parser().parse_args()
    a.central_lengths_list = floats(a.central_lengths)
    import mpitiny
    result = {"machine": C.machine(), "args": vars(a),
              "mpitiny_imported_from": os.path.dirname(mpitiny.__file__),
              "mpitiny_source": os.environ.get("MPITINY_SIM_SOURCE", "this tree")}
    out, human = {"scale": cmd_scale, "validate": cmd_validate, "point": cmd_point,
                  "board": cmd_board, "heldout": cmd_heldout}[a.command](a)
    result.update(out)
    C.emit(result, human)


if __name__ == "__main__":
    main()
