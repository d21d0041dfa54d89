"""``bench/taskbench.metg``: Task Bench's ``chart_metg.py`` arithmetic over the runs of a
pattern, repetitions at one task length counting by their mean elapsed time (as chart_metg.py
groups its repetitions). Pure arithmetic on made-up runs: no MPI, no timing."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from taskbench import metg  # noqa: E402


def runs_of(overhead_us: float, lengths=(200.0, 100.0, 50.0, 20.0), tasks=1000, ranks=2):
    """A run per L whose elapsed time is tasks/ranks × (L + overhead)."""
    return [{"us": us, "tasks": tasks, "span": tasks / ranks * (us + overhead_us) * 1e-6}
            for us in lengths]


def test_one_run_per_length_interpolates_between_the_last_efficient_length_and_the_next():
    out = metg(runs_of(40.0), ranks=2, basis="span")
    # efficiency relative to L = 200 (elapsed 240): 100 -> 0.857, 50 -> 0.667, 20 -> 0.400
    assert out["efficiency"] == pytest.approx([1.0, 0.8571, 0.6667, 0.4], abs=1e-4)
    assert out["granularity_us"] == pytest.approx([240.0, 140.0, 90.0, 60.0])
    expected = 60.0 + (0.5 - 0.4) / (0.6667 - 0.4) * (90.0 - 60.0)
    assert out["metg_us"] == pytest.approx(expected, abs=0.05)
    assert out["reps"] == [1, 1, 1, 1] and not out["below_all"]


def test_repetitions_count_by_their_mean_elapsed_time():
    fast, slow = runs_of(20.0), runs_of(60.0)
    alone = metg(runs_of(40.0), ranks=2, basis="span")
    both = metg(fast + slow, ranks=2, basis="span")
    assert both["reps"] == [2, 2, 2, 2]
    assert both["granularity_us"] == pytest.approx(alone["granularity_us"])
    assert both["metg_us"] == pytest.approx(alone["metg_us"])
    assert metg(fast, 2, "span")["metg_us"] < both["metg_us"] < metg(slow, 2, "span")["metg_us"]


def test_still_efficient_at_the_smallest_length_is_marked():
    out = metg(runs_of(1.0), ranks=2, basis="span")
    assert out["below_all"] and out["metg_us"] == pytest.approx(out["granularity_us"][-1])
