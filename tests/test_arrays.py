"""``mpitiny.arrays``: numpy helpers of the start-up and per-task paths."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from mpitiny.arrays import distinct


@pytest.mark.parametrize("values", [[], [3], [2, 2], [5, 1, 5, 3, 1], list(range(10, 0, -1))])
def test_distinct_is_numpys_unique(values):
    got = distinct(np.array(values, dtype=np.int64))
    assert got.tolist() == np.unique(np.array(values, dtype=np.int64)).tolist()


def test_distinct_of_many_random_values():
    rng = np.random.default_rng(3)
    values = rng.integers(0, 50, 10_000)
    assert np.array_equal(distinct(values), np.unique(values))


def test_loading_a_listed_dag_does_not_import_numpy_ma(tmp_path):
    """numpy 2's ``np.unique`` imports ``numpy.ma`` on its first call (10-23 ms a rank here):
    loading a DAG of listed tasks with dependencies must not."""
    tasks = [{"id": "a0", "fn": "mpitiny.tasks:null"}]
    tasks += [{"id": f"a{k}", "fn": "mpitiny.tasks:null", "deps": sorted({f"a{k - 1}", "a0"})}
              for k in range(1, 50)]
    path = tmp_path / "dag.json"
    path.write_text(json.dumps({"name": "listed", "tasks": tasks}))
    code = ("import sys; from mpitiny.dag.load import load_dag; "
            f"d = load_dag({str(path)!r}); assert d.total == 50; "
            "print('numpy.ma' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True)
    assert out.stdout.strip() == "False", out.stderr
