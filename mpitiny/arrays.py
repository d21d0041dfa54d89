"""Small numpy helpers for the per-task and start-up paths."""
from __future__ import annotations

import numpy as np


def distinct(values) -> np.ndarray:
    """The sorted distinct values of a 1-d array, as ``np.unique(values)``, without the import
    of ``numpy.ma`` that numpy 2's ``np.unique`` makes on its first call (10-14 ms per rank
    here: on the way of a job's first reducer, and of every listed DAG's load)."""
    ordered = np.sort(np.asarray(values).ravel())
    if len(ordered) < 2:
        return ordered
    return ordered[np.concatenate(([True], ordered[1:] != ordered[:-1]))]
