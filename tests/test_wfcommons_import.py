"""WfCommons instances -> dag.json: every task, every edge, scaled runtimes, valid DAGs."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from mpitiny.cli import cli
from mpitiny.dag.load import load_dag, load_dag_text
from mpitiny.dag.wfcommons import convert, convert_file, dumps, sanitise_id
from mpitiny.errors import BadInput

SHARED = Path(__file__).resolve().parents[2] / "shared" / "wfcommons"
INSTANCES = sorted(SHARED.glob("*.json")) if SHARED.is_dir() else []
needs_shared = pytest.mark.skipif(
    not INSTANCES, reason=f"no WfCommons instances in {SHARED} (the shared data directory "
                          "next to the repository)")


def instance_graph(instance: dict) -> tuple:
    """(task ids, edge set, runtime by id) read straight from a WfFormat 1.5 instance."""
    spec = instance["workflow"]["specification"]["tasks"]
    runtimes = {t["id"]: t["runtimeInSeconds"] for t in instance["workflow"]["execution"]["tasks"]}
    ids = [t["id"] for t in spec]
    edges = {(p, t["id"]) for t in spec for p in t["parents"]}
    return ids, edges, runtimes


def dag_edges(dag_dict: dict) -> set:
    return {(d, t["id"]) for t in dag_dict["tasks"] for d in t.get("deps", ())}


# ------------------------------------------------------------------ the shared instances

@needs_shared
def test_shared_instances_present():
    assert len(INSTANCES) == 12


@needs_shared
@pytest.mark.parametrize("path", INSTANCES, ids=lambda p: p.name)
def test_convert_keeps_every_task_and_edge(path):
    instance = json.loads(path.read_text())
    ids, edges, runtimes = instance_graph(instance)
    scale = 0.001
    d = convert(instance, scale, source=str(path))
    assert d["version"] == 1
    assert len(d["tasks"]) == len(ids)
    assert [t["id"] for t in d["tasks"]] == ids          # these ids need no rewriting
    assert dag_edges(d) == edges
    for t in d["tasks"]:
        assert t["fn"] == "mpitiny.tasks:sleep"
        assert t["args"][0] == pytest.approx(runtimes[t["id"]] * scale, abs=1e-9)
    # and it loads: same number of tasks, every edge present as a Dep
    dag = load_dag_text(json.dumps(d), source=path.name)
    assert dag.total == len(ids)
    assert len(dag.groups) == len(ids)
    loaded = {(dag.groups[dep.parent].name, g.name) for g in dag.groups for dep in g.deps}
    assert loaded == edges
    assert all(dep.each is None for g in dag.groups for dep in g.deps)


@needs_shared
@pytest.mark.parametrize("path", INSTANCES, ids=lambda p: p.name)
def test_convert_file_writes_a_loadable_dag(path, tmp_path):
    out = tmp_path / (path.stem + ".dag.json")
    line = convert_file(str(path), str(out), 0.01)
    instance = json.loads(path.read_text())
    ids, edges, runtimes = instance_graph(instance)
    assert "\n" not in line
    assert f"{len(ids)} tasks, {len(edges)} edges" in line
    total = sum(runtimes.values()) * 0.01
    assert f"total sleep {total:.3f} s" in line
    assert f"longest sleep {max(runtimes.values()) * 0.01:.3f} s" in line
    assert sorted(os.listdir(tmp_path)) == [out.name]            # no temporary file left
    dag = load_dag(str(out))
    assert dag.total == len(ids)
    assert dag_edges(json.loads(out.read_text())) == edges


@needs_shared
def test_cli_import_wfcommons(tmp_path):
    path = SHARED / "helloworld-chain-5-chameleon.json"
    out = tmp_path / "chain.json"
    result = CliRunner().invoke(cli, ["import-wfcommons", str(path), "-o", str(out),
                                      "--scale", "0.0001"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [result.stdout.strip()]
    assert "5 tasks, 4 edges" in result.stdout
    assert "critical path 0.050 s" in result.stdout
    result = CliRunner().invoke(cli, ["validate", str(out)])
    assert result.exit_code == 0
    assert "ok: 5 tasks in 5 entries (0 families), 4 dependency entries" in result.stdout


# ------------------------------------------------------------------ synthetic instances

def v15(tasks: list, runtimes: dict | None = None, **top) -> dict:
    """A WfFormat 1.5 instance: tasks are (id, parents, children) tuples."""
    spec = [{"name": tid, "id": tid, "parents": parents, "children": children,
             "inputFiles": [], "outputFiles": []} for tid, parents, children in tasks]
    runtimes = runtimes or {}
    execution = [{"id": tid, "runtimeInSeconds": runtimes.get(tid, 1.0)}
                 for tid, _, _ in tasks]
    out = {"name": "synthetic", "schemaVersion": "1.5",
           "workflow": {"specification": {"tasks": spec, "files": []},
                        "execution": {"makespanInSeconds": 1, "tasks": execution}}}
    out.update(top)
    return out


def test_sanitised_ids_are_valid_unique_and_deterministic():
    inst = v15([("a b", [], ["x[1]"]), ("x[1]", ["a b"], ["a_b"]), ("a_b", ["x[1]"], []),
                ("c,d{e}", [], []), ("t\tab", [], []), ("x" * 300, [], []),
                ("x" * 300 + "y", [], [])])
    d = convert(inst, 1.0)
    ids = [t["id"] for t in d["tasks"]]
    assert ids[:5] == ["a_b_2", "x_1_", "a_b", "c_d_e_", "t_ab"]
    assert ids[5] == "x" * 256 and ids[6] == "x" * 254 + "_2"
    assert len(set(ids)) == len(ids)
    assert dag_edges(d) == {("a_b_2", "x_1_"), ("x_1_", "a_b")}
    assert convert(inst, 1.0) == d
    load_dag_text(json.dumps(d))
    assert sanitise_id("ok-id") == "ok-id"
    assert sanitise_id("") == "task"


def test_scale_and_rounding():
    d = convert(v15([("a", [], [])], {"a": 0.309}), 0.001)
    assert d["tasks"][0]["args"] == [0.000309]
    d = convert(v15([("a", [], [])], {"a": 12}), 0)
    assert d["tasks"][0]["args"] == [0.0]


def test_duplicate_parent_is_one_edge():
    d = convert(v15([("a", [], ["b"]), ("b", ["a", "a"], [])]), 1.0)
    assert d["tasks"][1]["deps"] == ["a"]


def test_children_optional():
    inst = v15([("a", [], []), ("b", ["a"], [])])
    for t in inst["workflow"]["specification"]["tasks"]:
        del t["children"]
    assert dag_edges(convert(inst, 1.0)) == {("a", "b")}


def test_older_wfformat_tasks_by_name():
    inst = {"name": "old", "schemaVersion": "1.3", "workflow": {
        "makespanInSeconds": 3, "executedAt": "x",
        "tasks": [
            {"name": "split_ID01", "id": "ID01", "type": "compute", "runtimeInSeconds": 2.0,
             "parents": [], "children": ["work_ID02"]},
            {"name": "work_ID02", "id": "ID02", "type": "compute", "runtimeInSeconds": 3,
             "parents": ["split_ID01"], "children": []}]}}
    d = convert(inst, 0.5)
    assert [t["id"] for t in d["tasks"]] == ["split_ID01", "work_ID02"]
    assert [t["args"] for t in d["tasks"]] == [[1.0], [1.5]]
    assert dag_edges(d) == {("split_ID01", "work_ID02")}
    assert "WfFormat 1.3" in d["description"]


def test_oldest_wfformat_jobs_with_runtime():
    inst = {"name": "older", "workflow": {"jobs": [
        {"name": "a", "runtime": 1, "parents": []},
        {"name": "b", "runtime": 2, "parents": ["a"]}]}}
    d = convert(inst, 1.0)
    assert dag_edges(d) == {("a", "b")}


@pytest.mark.parametrize("instance, fragment", [
    ([], "top level is not a JSON object"),
    ({"name": "x"}, "no 'workflow' object"),
    ({"workflow": {}}, "no workflow.specification.tasks"),
    ({"workflow": {"specification": {"tasks": {}}}}, "must be a list"),
    ({"workflow": {"specification": {"tasks": []}}}, "workflow.execution.tasks is missing"),
    (v15([]), "has no tasks"),
    (v15([("a", [], [])], {"a": -1}), "must be a non-negative number"),
    (v15([("a", [], [])], {"a": "1"}), "must be a non-negative number"),
    (v15([("a", [], []), ("a", [], [])]), "listed twice"),
    (v15([("a", ["zz"], [])]), "parent 'zz' is not a task"),
    (v15([("a", ["a"], ["a"])]), "lists itself as a parent"),
    (v15([("a", [], ["b"]), ("b", [], [])]),
     "parents and children disagree: 'a' lists child 'b' but 'b' does not list it"),
    (v15([("a", [], []), ("b", ["a"], [])]),
     "parents and children disagree: 'b' lists parent 'a' but 'a' does not list it"),
    (v15([("a", [], ["q"])]), "child 'q' is not a task"),
    (v15([("a", "b", [])]), "parents must be a list"),
    ({"workflow": {"tasks": [{"parents": []}]}}, "has no string 'name'"),
    ({"workflow": {"tasks": [{"name": "a"}]}}, "has no runtime"),
])
def test_bad_instances(instance, fragment):
    with pytest.raises(BadInput) as info:
        convert(instance, 1.0, source="inst.json")
    assert fragment in info.value.message, info.value.format()
    assert "\n" not in info.value.format()


def test_missing_runtime_entry():
    inst = v15([("a", [], []), ("b", [], [])])
    del inst["workflow"]["execution"]["tasks"][1]
    with pytest.raises(BadInput, match="'b' has no entry in workflow.execution.tasks"):
        convert(inst, 1.0)


@pytest.mark.parametrize("scale", [-1, float("nan"), float("inf"), "1", True])
def test_bad_scale(scale):
    with pytest.raises(BadInput, match="--scale"):
        convert(v15([("a", [], [])]), scale)


def test_cycle_in_instance_is_reported(tmp_path):
    inst = v15([("a", ["b"], ["b"]), ("b", ["a"], ["a"])])
    src = tmp_path / "inst.json"
    src.write_text(json.dumps(inst))
    out = tmp_path / "out.json"
    with pytest.raises(BadInput) as info:
        convert_file(str(src), str(out), 1.0)
    assert "dependency cycle: a -> b -> a" in info.value.message
    assert not out.exists()
    assert os.listdir(tmp_path) == ["inst.json"]


@pytest.mark.parametrize("content, fragment", [
    (None, "no such file"),
    (b"", "not valid JSON"),
    (b"\xff\xfe", "not UTF-8"),
    (b"{\"workflow\": ", "not valid JSON"),
])
def test_convert_file_bad_input_files(tmp_path, content, fragment):
    src = tmp_path / "inst.json"
    if content is not None:
        src.write_bytes(content)
    with pytest.raises(BadInput) as info:
        convert_file(str(src), str(tmp_path / "out.json"), 1.0)
    assert fragment in info.value.message
    assert info.value.where == str(src)


def test_convert_file_replaces_atomically(tmp_path):
    src = tmp_path / "inst.json"
    src.write_text(json.dumps(v15([("a", [], ["b"]), ("b", ["a"], [])], {"a": 2, "b": 3})))
    out = tmp_path / "out.json"
    out.write_text("old content")
    line = convert_file(str(src), str(out), 0.5)
    assert line.startswith(f"{out}: 2 tasks, 1 edges, total sleep 2.500 s, longest sleep "
                           "1.500 s, critical path 2.500 s")
    assert sorted(os.listdir(tmp_path)) == ["inst.json", "out.json"]
    assert json.loads(out.read_text())["tasks"][1] == {
        "id": "b", "fn": "mpitiny.tasks:sleep", "args": [1.5], "deps": ["a"], "priority": 3000}


def test_priorities_are_bottom_levels():
    # a(1) -> b(5) -> d(1);  a -> c(2) -> d : the long branch b gets the higher priority
    inst = v15([("a", [], ["b", "c"]), ("b", ["a"], ["d"]), ("c", ["a"], ["d"]),
                ("d", ["b", "c"], [])], {"a": 1, "b": 5, "c": 2, "d": 1})
    prio = {t["id"]: t["priority"] for t in convert(inst, 1.0)["tasks"]}
    assert prio == {"a": 7000, "b": 6000, "c": 3000, "d": 1000}


def test_convert_file_output_in_missing_directory(tmp_path):
    src = tmp_path / "inst.json"
    src.write_text(json.dumps(v15([("a", [], [])])))
    with pytest.raises(BadInput, match="cannot write"):
        convert_file(str(src), str(tmp_path / "no" / "out.json"), 1.0)


def test_cli_import_bad_instance(tmp_path):
    src = tmp_path / "inst.json"
    src.write_text(json.dumps({"workflow": {}}))
    result = CliRunner().invoke(cli, ["import-wfcommons", str(src), "-o",
                                      str(tmp_path / "o.json")])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"mpitiny: error: {src}: not a WfCommons instance: no workflow.specification.tasks "
        "(WfFormat 1.5) and no workflow.tasks (older WfFormat)"]


def test_dumps_is_one_task_per_line():
    d = convert(v15([("a", [], ["b"]), ("b", ["a"], [])]), 1.0)
    text = dumps(d)
    assert json.loads(text) == d
    assert sum(1 for line in text.splitlines() if line.lstrip().startswith('{"id"')) == 2
