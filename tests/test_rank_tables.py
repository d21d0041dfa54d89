"""Who writes ``tasks/rank-R.h5`` (``mpitiny.engine.start.write_tables``): the first rank of each
group of ``TABLE_GROUP`` writes the tables of the group's ranks whose rows are all in memory,
so that the other ranks never import h5py; a rank whose rows went to its raw rows file writes
its own table. Every rank's table must be there, with its own rows, whoever wrote it."""
from __future__ import annotations

import json
import textwrap

import h5py
import numpy as np
import pytest

from mpitiny.dag.load import load_dag
from mpitiny.engine.start import TABLE_GROUP
from mpitiny.io.check import check_run
from mpitiny.io.rundir import read_tasks

pytestmark = pytest.mark.mpi

# Runs mpitiny's command line and writes, per rank, whether h5py was imported by the end.
WATCHED = """
    import atexit, os, sys
    from mpi4py import MPI

    def note():
        with open(os.path.join(sys.argv[1], f"h5py-{MPI.COMM_WORLD.Get_rank()}"), "w") as f:
            f.write("yes" if "h5py" in sys.modules else "no")

    atexit.register(note)
    from mpitiny.cli import main
    main(["run", sys.argv[2], "--out", sys.argv[3], "-q"])
"""


def run_watched(mpirun, tmp_path, n: int, dag: dict, timeout: float = 240):
    path = tmp_path / "dag.json"
    path.write_text(json.dumps(dag))
    script = tmp_path / "watched.py"
    script.write_text(textwrap.dedent(WATCHED))
    out = tmp_path / "run"
    proc = mpirun(n, [str(script), str(tmp_path), str(path), str(out)], timeout=timeout,
                  cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr + proc.stdout
    imported = {r: (tmp_path / f"h5py-{r}").read_text() for r in range(n)}
    return path, out, imported


def table_ranks(out) -> dict:
    """{rank: rows} of every rank table, checking that each holds only its own rank's rows."""
    tables = {}
    for f in sorted((out / "tasks").glob("rank-*.h5")):
        with h5py.File(f, "r") as h5:
            rank = int(h5.attrs["rank"])
            rows = h5["tasks"][()]
            assert "samples" in h5
        assert f.name == f"rank-{rank:05d}.h5"
        assert (rows["rank"] == rank).all(), (f.name, np.unique(rows["rank"]))
        tables[rank] = rows
    return tables


@pytest.mark.parametrize("n", [1, 2, 4, TABLE_GROUP + 4])
def test_every_rank_has_its_table_and_only_group_writers_import_h5py(mpirun, tmp_path, n):
    dag = {"name": "tables", "tasks": [
        {"id": "t", "fn": "mpitiny.tasks:sleep", "foreach": {"i": {"range": [8 * n]}},
         "args": [0.002]},
        {"id": "end", "fn": "mpitiny.tasks:null", "deps": ["t"]}]}
    path, out, imported = run_watched(mpirun, tmp_path, n, dag)
    counts = check_run(load_dag(str(path)), str(out))
    assert counts["done"] == 8 * n + 1
    tables = table_ranks(out)
    assert sorted(tables) == list(range(n))
    assert sum(len(rows) for rows in tables.values()) == len(read_tasks(str(out)))
    writers = {r for r in range(n) if r % TABLE_GROUP == 0}
    assert {r for r, v in imported.items() if v == "yes"} == writers, imported
    with h5py.File(out / "tasks.h5", "r") as h5:    # the virtual table over them all
        assert len(h5["tasks"]) == 8 * n + 1
    assert not list((out / "tasks").glob("*.rows"))


def test_a_rank_with_rows_on_disk_writes_its_own_table(mpirun, tmp_path):
    """More rows than a rank keeps in memory (65,536) go to its raw rows file: that rank
    writes its own table, the others' still go to rank 0."""
    n, tasks = 2, 150_000
    dag = {"name": "many", "tasks": [
        {"id": "t", "fn": "mpitiny.tasks:null", "foreach": {"i": {"range": [tasks]}}}]}
    path, out, imported = run_watched(mpirun, tmp_path, n, dag)
    counts = check_run(load_dag(str(path)), str(out))
    assert counts["done"] == tasks
    tables = table_ranks(out)
    assert sorted(tables) == list(range(n))
    assert sum(len(rows) for rows in tables.values()) == tasks
    big = {r for r, rows in tables.items() if len(rows) > 1 << 16}
    assert big, {r: len(rows) for r, rows in tables.items()}
    assert {r for r, v in imported.items() if v == "yes"} == {0} | big
    assert not list((out / "tasks").glob("*.rows"))
