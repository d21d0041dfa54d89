"""64 ranks, oversubscribed: a family, tasks listed one by one and a real WfCommons workflow in
one run, every task exactly once and after all its parents (``check_run``).

The tasks sleep (a few ms) or do nothing, so 64 ranks on a 2-core machine schedule as on a
cluster: what is tested is the engine's sharing out, stealing and termination among 64 ranks.
Start-up and CPU per rank at 8-64 ranks are measured by ``bench/startup.py``, not asserted.
Under Open MPI the run has 32 ranks: starting 64 oversubscribed Open MPI ranks on 2 cores takes
about 100 s of the CI's 20 minutes (MPICH: about 35 s for the whole test).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mpitiny.dag.load import load_dag
from mpitiny.io.check import check_run

pytestmark = pytest.mark.mpi

INSTANCE = Path(__file__).resolve().parents[1].parent / "shared" / "wfcommons" / \
    "1000genome-chameleon-2ch-100k-001.json"
RANKS = 64


def combined_dag(tmp_path: Path) -> Path:
    """The WfCommons instance (its sleeps scaled to at most 20 ms, or a chain of 50 if the
    instance is not here) with a 1,280-instance family and 640 listed tasks added."""
    path = tmp_path / "dag.json"
    if INSTANCE.exists():
        subprocess.run([sys.executable, "-m", "mpitiny", "import-wfcommons", str(INSTANCE),
                        "-o", str(path), "--scale", "0.00002"], check=True)
        dag = json.loads(path.read_text())
    else:
        dag = {"name": "chain", "tasks": [
            {"id": f"c{k}", "fn": "mpitiny.tasks:sleep", "args": [0.002],
             **({"deps": [f"c{k - 1}"]} if k else {})} for k in range(50)]}
    dag["tasks"] += [
        {"id": "fam", "fn": "mpitiny.tasks:sleep", "args": [0.005],
         "foreach": {"i": {"range": [0, 20 * RANKS]}}},
        *({"id": f"listed{k}", "fn": "mpitiny.tasks:null"} for k in range(10 * RANKS)),
        {"id": "end", "cmd": "true", "deps": ["fam", "listed0", f"listed{10 * RANKS - 1}"]}]
    path.write_text(json.dumps(dag))
    return path


def test_64_ranks_run_every_task_once(python_module, mpi_impl, tmp_path):
    ranks = RANKS if mpi_impl == "mpich" else RANKS // 2
    path = combined_dag(tmp_path)
    out = tmp_path / "run"
    proc = python_module(ranks, "mpitiny", "run", str(path), "--out", str(out), "-q",
                         timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    dag = load_dag(str(path))
    counts = check_run(dag, str(out))
    assert counts["done"] == dag.total and not counts["failed"] and not counts["upstream_failed"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ranks"] == ranks
    ran = [r["done"] for r in summary["per_rank"]]
    assert sum(ran) == dag.total and sum(1 for n in ran if n) > ranks // 2   # shared out
