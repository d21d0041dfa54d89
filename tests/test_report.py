"""``mpitiny report``: text summary, Chrome trace (one event per task), PNG plots."""
import json
import re

import numpy as np
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
    assert re.search(r"\ns +120 +\d", text) and re.search(r"\nbad +1 ", text)   # per family
    assert "time between a rank's consecutive tasks ms: p50" in text
    trace = json.loads((rep / "trace.json").read_text())
    tasks = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert len(tasks) == 121                       # every task that ran, once
    assert sorted(e["name"] for e in tasks) == sorted([f"s[{i}]" for i in range(120)] + ["bad"])
    assert all(e["name"] == f"s[{e['args']['gid']}]" for e in tasks if e["name"] != "bad")
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
    events = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert sorted(e["args"]["gid"] for e in events) == list(range(5000))
    assert all(e["name"] == f"n[{e['args']['gid']}]" for e in events)     # ids, not numbers


GROUPS = [{"name": "sq", "first": 0, "size": 1000, "vars": [["i", {"range": [0, 1000]}]]},
          {"name": "one", "first": 1000, "size": 1, "vars": []},
          {"name": "grid", "first": 1001, "size": 8,
           "vars": [["a", {"values": ["x", 'q"u\\ote', {"k": [1, 2]}, 2.5]}],
                    ["b", {"range": [9, 3, -3]}]]},
          {"name": "two", "first": 1009, "size": 1, "vars": []},
          {"name": "neg", "first": 1010, "size": 4, "vars": [["i", {"range": [-4, 4, 2]}]]}]


def test_task_ids_are_the_ids_task_id_gives():
    from mpitiny.io.rundir import task_id
    from mpitiny.report import task_ids
    gids = np.random.default_rng(3).permutation(np.repeat(np.arange(1014), 2))
    got = task_ids(GROUPS, gids)
    assert got.tolist() == [task_id(GROUPS, int(g)) for g in gids]
    assert set(got[gids >= 1000].tolist()) >= {"one", "two", "grid[x,9]", 'grid[q"u\\ote,6]',
                                                 'grid[{"k":[1,2]},9]', "grid[2.5,6]", "neg[-4]"}
    assert task_ids(GROUPS, np.array([5000, 17])).tolist() == ["#5000", "sq[17]"]
    assert task_ids(GROUPS, np.array([], dtype=np.int64)).tolist() == []


def test_chrome_trace_names_events_by_task_id(tmp_path):
    from mpitiny.report import write_chrome_trace
    ran = _rows([(17, 0, 1.0, 1.5), (1000, 1, 1.1, 1.2), (1004, 1, 1.3, 1.4), (1003, 0, 2.0, 2.5)])
    path = write_chrome_trace(str(tmp_path / "trace.json"), ran, 1.0, 2, {}, GROUPS)
    events = [e for e in json.loads(open(path).read())["traceEvents"] if e["ph"] == "X"]
    assert [(e["name"], e["args"]["gid"], e["tid"]) for e in events] == [
        ("sq[17]", 17, 0), ("one", 1000, 1), ('grid[q"u\\ote,6]', 1004, 1),
        ('grid[q"u\\ote,9]', 1003, 0)]


def _rows(spec):
    """Task rows ``(gid, rank, start, end)`` as a task table."""
    from mpitiny.io.rundir import RECORD_DTYPE
    rows = np.zeros(len(spec), dtype=RECORD_DTYPE)
    for row, (gid, rank, start, end) in zip(rows, spec):
        row["gid"], row["rank"], row["start"], row["end"] = gid, rank, start, end
    return rows


def test_between_tasks_pairs_each_rank_s_neighbours():
    from mpitiny.report import between_tasks
    ran = _rows([(3, 1, 10.0, 10.5), (0, 0, 1.0, 2.0), (2, 1, 9.0, 9.75), (1, 0, 2.25, 3.0)])
    assert sorted(between_tasks(ran).tolist()) == [0.25, 0.25]    # never across ranks
    assert len(between_tasks(_rows([(0, 0, 1.0, 2.0)]))) == 0


def test_family_times_splits_busy_time_by_family():
    from mpitiny.report import family_times
    groups = [{"name": "map", "first": 0, "size": 3}, {"name": "reduce", "first": 3, "size": 1},
              {"name": "never", "first": 4, "size": 1}]
    ran = _rows([(0, 0, 0.0, 0.001), (1, 1, 0.0, 0.003), (2, 0, 0.001, 0.003), (3, 1, 1.0, 1.5)])
    got = family_times(groups, ran)
    assert [(name, n) for name, n, *_ in got] == [("map", 3), ("reduce", 1)]
    name, n, mean, total = got[0]
    assert (round(mean, 6), round(total, 6)) == (2.0, 0.006)
    assert round(got[1][3], 6) == 0.5


def test_family_lines_keep_the_busiest_of_many():
    from mpitiny.report import FAMILY_LINES, family_lines
    few = [("a", 2, 1.0, 0.002), ("b", 1, 5.0, 0.005)]
    assert [line.split()[0] for line in family_lines(few)[1:]] == ["a", "b"]    # DAG order
    many = [(f"t{k}", 1, float(k), k / 1e3) for k in range(FAMILY_LINES + 5)]
    lines = family_lines(many)
    assert len(lines) == 1 + FAMILY_LINES + 1
    assert lines[1].split()[0] == f"t{FAMILY_LINES + 4}"                     # busiest first
    assert lines[-1] == "... 5 more families or tasks, 5 tasks, 0.010 s busy"
