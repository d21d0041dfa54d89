"""Held-out validation: the CPU of a wake (``wake_cpu``) from a model fitted once, tested on
runs it was not fitted on.

Fitted per run on that run's CPU time (``validate.fit_wake``) ``wake_cpu`` makes the makespan
close to a restatement of the CPU time: 32 and 64 ranks keep both cores of this machine busy,
so their CPU time is about 2 × their makespan. ``WakeModel`` replaces that by a linear
function of what is known before a run starts, its coefficients fitted once on other runs:

    wake_cpu = a + b × (ranks per core) + c × (1-minute load average before the run)

(``TERMS``: ``one``, ``per_core``, ``load``; ``fit_model`` chooses a subset). The
coefficients are least squares on the per-run ``wake_cpu`` of the *training* runs (each
fitted on that run's CPU, ``fit_wake``); the held-out runs' CPU time and makespan are not
used. A held-out run is then simulated with the model's ``wake_cpu`` and compared with its
measured makespan (``ratio``).

Everything else a simulation is given is as in ``validate``: the run's start offsets and
sleep overshoot, and the cores other work took during its tasks (``others_cores``). That
last one is measured as ``/proc/stat`` busy time less the ranks' CPU, over the tasks' span:
on this machine (always fully busy: 1.86-2.07 cores used in every stored run) it is close to
``2 - CPU / span``, so it also carries the run's own span. ``background="model"`` replaces it
by a linear model in the same terms, fitted the same way on the training runs' measured
``others_cores`` (clipped to [0, cores]): then nothing from the held-out run but its start
offsets, its sleep overshoot and the load average before it enters its simulation.

Splits (``splits``): ``ranks`` fits on the 8- and 32-rank runs of every stored run and
predicts the 2- and 64-rank ones (extrapolation in ranks per core); ``run`` fits on all rows
of the other stored runs and predicts each run in turn (another time, another load).

``python bench/sim/run.py heldout --stored A.json,B.json,...`` (stored ``validate`` results).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

from .validate import costs_for, fit_wake, sim_run
from .wake import TERMS, WakeModel, fit_model

@dataclass
class StoredRun:
    """One real run of a stored ``validate`` result, with its own ``wake_cpu`` fitted on its
    CPU (``own_wake``: only ever used when it is a training run)."""

    run: str
    kind: str
    nranks: int
    tasks: int
    length: float
    cores: int
    first_release: float
    real: dict
    own_wake: float = float("nan")

    @property
    def load(self) -> float:
        return float(self.real["loadavg_before"][0])

    def case(self) -> tuple:
        return self.kind, self.nranks, self.tasks, self.length, self.real


def load_stored(paths: list) -> list:
    """The real runs of stored ``validate`` results (``bench/results/sim_validate_pool*.json``),
    each labelled by its file."""
    runs = []
    for path in paths:
        with open(path) as f:
            doc = json.load(f)
        v = doc.get("validate", doc)
        for row in v["rows"]:
            runs.append(StoredRun(os.path.basename(path), row["kind"], row["nranks"],
                                  row["tasks"], row["length"], v["cores"],
                                  v["first_release_cpu"], row["real"]))
    return runs


def fit_own_wakes(runs: list) -> None:
    """Each run's ``wake_cpu`` fitted on its own CPU time (``validate.fit_wake``)."""
    for r in runs:
        r.own_wake = fit_wake([r.case()], r.cores, r.first_release)


def splits(runs: list) -> list:
    """``(name, training runs, held-out runs)``: by ranks (fit 8 and 32, predict 2 and 64) and
    by run (fit the other stored runs, predict this one)."""
    out = [("ranks: fit 8+32, predict 2+64", [r for r in runs if r.nranks in (8, 32)],
            [r for r in runs if r.nranks in (2, 64)])]
    for name in sorted({r.run for r in runs}):
        out.append((f"run: fit the others, predict {name}", [r for r in runs if r.run != name],
                    [r for r in runs if r.run == name]))
    return out


def predict(test: list, wake: WakeModel, background: WakeModel | None) -> list:
    """Each held-out run simulated with the model's ``wake_cpu`` (and, given ``background``,
    the modelled others' cores instead of the measured): ratios to its measured figures."""
    rows = []
    for r in test:
        w = wake.at(r.nranks, r.cores, r.load)
        real = dict(r.real)
        if background is not None:
            modelled = background.at(r.nranks, r.cores, r.load)
            real["others_cores"] = min(float(r.cores), modelled)
        sim = sim_run(r.kind, r.nranks, r.tasks, r.length, real,
                      costs_for(r.nranks, r.cores, w, r.first_release, real))
        rows.append({"run": r.run, "kind": r.kind, "nranks": r.nranks, "load": r.load,
                     "wake_cpu": w, "own_wake_cpu": r.own_wake,
                     "others_cores": real["others_cores"],
                     "others_cores_measured": r.real["others_cores"],
                     "real_span": r.real["tasks_span"], "sim_span": sim["tasks_span"],
                     "ratio": sim["tasks_span"] / r.real["tasks_span"],
                     "ratio_cpu": sim["cpu"] / r.real["work_cpu"]})
    return rows


def heldout(runs: list, terms: tuple = TERMS, background: str = "measured") -> list:
    """Every split: the model fitted on its training runs, its held-out runs predicted."""
    out = []
    for name, train, test in splits(runs):
        wake = fit_model([(r.nranks, r.cores, r.load, r.own_wake) for r in train], terms)
        bg = None
        if background == "model":
            bg = fit_model([(r.nranks, r.cores, r.load, r.real["others_cores"]) for r in train],
                           terms)
        rows = predict(test, wake, bg)
        out.append({"split": name, "terms": list(terms), "background": background,
                    "wake_coef": list(wake.coef), "wake_model": wake.describe(),
                    "background_coef": list(bg.coef) if bg else None,
                    "train": [f"{r.run}:{r.kind}-{r.nranks}" for r in train], "rows": rows,
                    "within_15": int(sum(abs(x["ratio"] - 1) <= 0.15 for x in rows)),
                    "count": len(rows)})
    return out


def fit_all(runs: list, terms: tuple = TERMS) -> WakeModel:
    """The model on every run (``wake.WAKE_MODEL`` is this on the stored runs of 2026-12-06)."""
    return fit_model([(r.nranks, r.cores, r.load, r.own_wake) for r in runs], terms)
