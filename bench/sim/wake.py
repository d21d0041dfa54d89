"""The CPU a rank spends waking from a sleep (``Costs.wake_cpu``) as a model fitted once.

``wake_cpu`` (the kernel's switch back and the caches other processes emptied meanwhile) is
not measured by the hot-cache calibration; on this machine it grows with the machine's load.
``WakeModel`` is a linear function of what is known before a run starts (``features``):

    wake_cpu = a + b × (ranks per core) + c × (1-minute load average before the run)

with any subset of the terms (``TERMS``). ``fit_model`` fits it by least squares on points
``(nranks, cores, load, value)``: ``heldout.py`` on the per-run ``wake_cpu`` of training runs
and tests it on others; ``WAKE_MODEL`` is the one ``validate`` uses, fitted on all 24 stored
runs of 2026-12-06 (``heldout.py``, docs/scale.md).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TERMS = ("one", "per_core", "load")


def features(nranks: int, cores: int, load: float, terms: tuple = TERMS) -> np.ndarray:
    """The model's inputs for a run: 1, ranks per core, the 1-minute load average before it."""
    values = {"one": 1.0, "per_core": nranks / cores, "load": load}
    return np.array([values[t] for t in terms])


@dataclass(frozen=True)
class WakeModel:
    """``wake_cpu`` (seconds) as a linear function of ``terms`` (``features``)."""

    terms: tuple
    coef: tuple

    def at(self, nranks: int, cores: int, load: float) -> float:
        """Never below 0: the hot-cache costs are already charged."""
        return max(0.0, float(features(nranks, cores, load, self.terms) @ np.array(self.coef)))

    def describe(self, unit: float = 1e6) -> str:
        return " + ".join(f"{c * unit:.1f}·{t}" for t, c in zip(self.terms, self.coef))


def fit_model(points: list, terms: tuple = TERMS) -> WakeModel:
    """Least squares of ``value`` on ``features`` over ``points`` (``(nranks, cores, load,
    value)``)."""
    x = np.array([features(p, c, load, terms) for p, c, load, _ in points])
    y = np.array([v for *_, v in points])
    coef = np.linalg.lstsq(x, y, rcond=None)[0]
    return WakeModel(tuple(terms), tuple(float(v) for v in coef))


# fitted on the per-run wake_cpu of the 24 real runs in bench/results/sim_validate_pool.json,
# sim_validate_pool_1528.json and sim_validate_pool_1532.json (``heldout.py``, ``--fit-all``)
WAKE_MODEL = WakeModel(("one", "load"), (136.4e-6, 14.38e-6))
