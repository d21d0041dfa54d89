"""The Python API: the same DAG as dag.json, run under mpiexec; mpitiny.map."""
import json
import sys
from pathlib import Path

import pytest

import mpitiny
from mpitiny.api import function_name
from mpitiny.dag.load import load_dag
from mpitiny.errors import BadInput
from mpitiny.io.rundir import groups_of, read_results, read_tasks, task_id

JOBS = Path(__file__).resolve().parents[1] / "jobs"


def test_built_dag_equals_the_json_file():
    sys.path.insert(0, str(JOBS))
    import python_api
    built = python_api.build(100000).to_dict()
    on_disk = json.loads((JOBS / "squares.json").read_text())
    assert [t["id"] for t in built["tasks"]] == [t["id"] for t in on_disk["tasks"]]
    assert built["tasks"][1]["deps"] == ["sq[{i}]"] and built["tasks"][2]["deps"] == ["check"]
    assert built["tasks"][0]["foreach"] == {"i": {"range": [0, 100000, 1]}}
    assert built["tasks"][0]["fn"] == "python_api:square"


def test_save_gives_a_valid_dag_json(tmp_path):
    dag = mpitiny.DAG("t", params={"x": 3})
    a = dag.task("a", cmd="echo {x}")
    dag.family("b", "mpitiny.tasks:echo", args=["{i}"], foreach={"i": ["p", "q"]}, deps=[a],
               priority=4, rank=1)
    dag.save(str(tmp_path / "d.json"))
    loaded = load_dag(str(tmp_path / "d.json"))
    assert loaded.total == 3 and loaded.groups[1].priority == 4
    assert loaded.groups[1].options.rank == 1


def test_retries_timeout_and_walltime_reach_the_task_options(tmp_path):
    dag = mpitiny.DAG("t")
    dag.family("f", "mpitiny.tasks:null", foreach={"i": range(3)}, retries=2, timeout=5,
               walltime=1.5)
    dag.task("g", cmd="true", deps=["f"])
    dag.save(str(tmp_path / "d.json"))
    f, g = load_dag(str(tmp_path / "d.json")).groups
    assert (f.options.retries, f.options.timeout, f.options.walltime) == (2, 5.0, 1.5)
    assert (g.options.retries, g.options.timeout, g.options.walltime) == (None, None, None)


def test_ranks_and_node_resources_reach_the_task_options(tmp_path):
    dag = mpitiny.DAG("t")
    dag.family("wide", cmd="hostname", foreach={"i": range(2)}, ranks=2)
    dag.task("big", "mpitiny.tasks:null", cores=2, mem="1MB", gpus=0)
    dag.save(str(tmp_path / "d.json"))
    wide, big = load_dag(str(tmp_path / "d.json")).groups
    assert wide.options.ranks == 2 and big.options.ranks is None
    assert (big.options.cores, big.options.mem, big.options.gpus) == (2, 10 ** 6, 0)


def test_unnameable_functions_are_refused():
    with pytest.raises(BadInput):
        function_name(lambda x: x)
    with pytest.raises(BadInput):
        mpitiny.DAG("x").task("a")


@pytest.mark.mpi
@pytest.mark.parametrize("n", [1, 2, 4])
def test_python_api_and_dag_json_give_the_same_run(python_module, mpirun, tmp_path, n):
    proc = mpirun(n, [str(JOBS / "python_api.py"), str(tmp_path / "api")], cwd=str(tmp_path),
                  timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "map: [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]" in proc.stdout
    exported = tmp_path / "api.dag.json"
    proc = python_module(n, "mpitiny", "run", str(exported), "--out", str(tmp_path / "file"),
                         cwd=str(tmp_path), env={"PYTHONPATH": str(JOBS)}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    runs = {}
    for name in ("api", "file"):
        rows = read_tasks(str(tmp_path / name))
        groups = groups_of(str(tmp_path / name))
        runs[name] = (sorted(task_id(groups, int(g)) for g in rows["gid"]),
                      read_results(str(tmp_path / name)))
    assert runs["api"] == runs["file"]
    assert len(runs["api"][0]) == 2001
