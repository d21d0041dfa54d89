"""``mpitiny report``: text summary, Chrome trace (one event per task), PNG plots."""
import json

import pytest
from click.testing import CliRunner

from mpitiny.cli import cli

pytestmark = pytest.mark.mpi


def test_report_of_a_run(python_module, tmp_path):
    dag = {"name": "rep", "tasks": [
        {"id": "s", "fn": "mpitiny.tasks:sleep", "args": [0.002], "foreach": {"i": {"range": [0, 120]}}},
        {"id": "bad", "fn": "mpitiny.tasks:fail", "args": ["boom"]},
        {"id": "after", "fn": "mpitiny.tasks:null", "deps": ["bad"]}]}
    (tmp_path / "dag.json").write_text(json.dumps(dag))
    proc = python_module(3, "mpitiny", "run", "dag.json", "-o", "run", "-q", cwd=str(tmp_path))
    assert proc.returncode == 1
    result = CliRunner().invoke(cli, ["report", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    rep = tmp_path / "run" / "report"
    text = (rep / "report.txt").read_text()
    assert "121 done" not in text and "120 done, 1 failed, 1 upstream-failed" in text
    assert all(f"\n{r:>4} " in text for r in range(3))
    assert "bad on rank" in text and "RuntimeError: boom" in text
    trace = json.loads((rep / "trace.json").read_text())
    tasks = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert len(tasks) == 121                       # every task that ran, once
    assert {e["tid"] for e in tasks} <= {0, 1, 2}
    assert all({"queued_us", "stolen", "bytes_read"} <= set(e["args"]) for e in tasks)
    counters = [e for e in trace["traceEvents"] if e["ph"] == "C"]
    assert {e["name"] for e in counters} == {"rank 0", "rank 1", "rank 2"}
    pytest.importorskip("matplotlib")
    for name in ("gantt.png", "durations.png", "latency_cdf.png", "throughput.png"):
        data = (rep / name).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 2000


def test_run_with_trace_writes_one_event_per_task(python_module, tmp_path):
    dag = {"name": "tr", "tasks": [{"id": "n", "fn": "mpitiny.tasks:null",
                                    "foreach": {"i": {"range": [0, 5000]}}}]}
    (tmp_path / "dag.json").write_text(json.dumps(dag))
    proc = python_module(2, "mpitiny", "run", "dag.json", "-o", "run", "-q", "--trace",
                         cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    trace = json.loads((tmp_path / "run" / "trace.json").read_text())
    gids = sorted(e["args"]["gid"] for e in trace["traceEvents"] if e["ph"] == "X")
    assert gids == list(range(5000))
