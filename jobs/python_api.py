"""The Python API, runnable: ``mpiexec -n 4 python jobs/python_api.py [OUT_DIR]``.

Builds the same DAG as jobs/squares.json in code, runs it, exports it as dag.json, and runs a
plain bag of tasks with ``mpitiny.map``. Every rank runs this whole script (SPMD).
"""
import sys

import mpitiny


def square(i: int) -> int:
    return i * i


def check(i: int, inputs: dict) -> None:
    (value,) = inputs.values()
    if value != i * i:
        raise ValueError(f"square of {i} came back as {value}")


def build(n: int = 1000) -> mpitiny.DAG:
    dag = mpitiny.DAG("squares", params={"n": n})
    sq = dag.family("sq", square, args=["{i}"], foreach={"i": range(n)})
    ck = dag.family("check", check, args=["{i}"], foreach={"i": range(n)}, deps=[sq.each("{i}")])
    dag.task("report", cmd="echo all done > report.txt", deps=[ck])
    return dag


if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else "mpitiny-runs/python-api"
    dag = build()
    status = mpitiny.run(dag, out=out)
    dag.save(f"{out}.dag.json")                 # the same DAG for `mpitiny run`
    squares = mpitiny.map(square, range(10))    # a bag of tasks, results in order
    from mpi4py import MPI
    if MPI.COMM_WORLD.rank == 0:
        print(f"status {status}; map: {squares}")
    sys.exit(status)
