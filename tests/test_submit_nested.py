"""``mpitiny.submit`` from a task that waits between its submits (issue 21 point 1): while it
waits for an executor's future its rank runs other tasks inside it (``Adding.run_one`` inside
``run_one``), and those submit too; the waiting task's next ids must still follow its
earlier ones (each task's submit counter is its own), so that no two added tasks share an id
(one id for two tasks loses or merges them: results, journal records and deps are keyed by
it). Checked on 1, 2 and 4 ranks: every leaf ran exactly once, every id differs, and the
nesting under test happened.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

DAGS = Path(__file__).resolve().parent / "dags"
SCRIPT = DAGS / "futures_submit_wait.py"
OUTERS = 12


@pytest.mark.parametrize("n", [1, 2, 4])
def test_ids_stay_distinct_when_a_waiting_task_runs_others(python_module, tmp_path, n):
    import sys
    sys.path.insert(0, str(DAGS))
    try:
        from futures_submit_wait import expected_labels
    finally:
        sys.path.remove(str(DAGS))
    log = tmp_path / "leaves.log"
    proc = python_module(n, "mpitiny.futures", str(SCRIPT), str(log), str(OUTERS),
                         timeout=240, cwd=str(DAGS))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [x for x in proc.stdout.splitlines() if x.startswith("{")]
    assert lines, proc.stdout + proc.stderr
    found = json.loads(lines[-1])
    ran = Counter(log.read_text().splitlines())
    expected = expected_labels(OUTERS)
    assert set(ran) == expected, "a leaf task was lost or an unexpected one ran"
    assert all(c == 1 for c in ran.values()), \
        f"ran more than once: {[k for k, c in ran.items() if c > 1]}"
    ids = Counter(found["ids"])
    assert len(found["ids"]) == len(expected)
    assert all(c == 1 for c in ids.values()), \
        f"ids given to two tasks: {[k for k, c in ids.items() if c > 1]}"
    assert found["nested"] > 0, "no inner call ran inside a waiting outer one"
