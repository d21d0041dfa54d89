"""Batched families (``mpitiny.with_batch``): one call per claimed chunk, tasks kept apart.

Each run checks that every task finished exactly once and after its parents (``check_run``),
that every item was computed exactly once (the functions log what they compute), that chunks
of more than one task did go through the batch form (else nothing here would test it), and
that the values the children read add up as they would without batching.
"""
import json
import shutil
from collections import Counter

import pytest
from click.testing import CliRunner

from mpitiny.cli import cli
from mpitiny.dag.load import load_dag
from mpitiny.io.check import check_run
from mpitiny.io.rundir import read_results, read_tasks

pytestmark = pytest.mark.mpi
N = 400

MODULE = '''
import os
from mpitiny import with_batch

LOG = {log!r}


def _log(kind, items):
    with open(LOG, "a") as f:
        f.write(kind + " " + " ".join(map(str, items)) + "\\n")


def squares_many(calls):
    """The chunk's sum of squares as the first value, zeros for the others (a combiner)."""
    items = [args[0] for args, kwargs in calls]
    mode = calls[0][1].get("mode", "")
    bad = calls[0][1].get("bad", -1)
    if bad in items:
        _log("refused", items)
        raise ValueError("item %d is in this batch" % bad)
    _log("batch", items)
    if mode == "short":
        return [sum(i * i for i in items)]
    return [sum(i * i for i in items)] + [0] * (len(items) - 1)


@with_batch(squares_many)
def square(i, mode="", bad=-1):
    _log("one", [i])
    if i == bad:
        raise ValueError("item %d is bad" % i)
    return i * i


def total(inputs):
    return sum(inputs.values())


def base():
    return b"B" * 4096


def _plus(i, inputs):
    if inputs["base"] != b"B" * 4096:
        raise ValueError("plus %d read base after it was freed: %r" % (i, inputs["base"][:8]))
    value = 1 + sum(v for k, v in inputs.items() if k != "base")
    return (b"%d:" % value).ljust(4096, b".")   # kept: may take the space of a freed value


def plus_many(calls):
    items = [args[0] for args, kwargs in calls]
    _log("plus-batch", items)
    bad = calls[0][1].get("bad", -1)
    if bad in items:
        raise ValueError("item %d is in this batch" % bad)
    return [_plus(args[0], kwargs["inputs"]) for args, kwargs in calls]


@with_batch(plus_many)
def plus(i, inputs, bad=-1):
    if i == bad:
        raise ValueError("plus %d is bad" % i)
    return _plus(i, inputs)


def plus_total(inputs):
    return sum(int(v.split(b":")[0]) for v in inputs.values())
'''


def batch_dag(tmp_path, **kwargs) -> dict:
    log = tmp_path / "computed.log"
    (tmp_path / "batchy.py").write_text(MODULE.format(log=str(log)))
    return {"name": "batchy", "tasks": [
        {"id": "sq", "fn": "batchy:square", "args": ["{i}"], "kwargs": kwargs,
         "foreach": {"i": {"range": [0, N]}}},
        {"id": "total", "fn": "batchy:total", "deps": ["sq"]}]}


def run_dag(python_module, tmp_path, n, dag, *extra, expect_status=0):
    path = tmp_path / "dag.json"
    path.write_text(json.dumps(dag))
    out = tmp_path / "run"
    proc = python_module(n, "mpitiny", "run", str(path), "--out", str(out), *extra,
                         timeout=120, cwd=str(tmp_path))
    assert proc.returncode == expect_status, proc.stderr + proc.stdout
    counts = check_run(load_dag(str(path)), str(out))
    summary = json.loads((out / "summary.json").read_text())
    return counts, summary, out


def computed(tmp_path) -> tuple:
    """(items computed by batch calls, items computed one at a time, batch sizes)."""
    batched, single, sizes = [], [], []
    for line in (tmp_path / "computed.log").read_text().splitlines():
        kind, *items = line.split()
        if kind not in ("batch", "one"):
            continue
        (batched if kind == "batch" else single).extend(map(int, items))
        if kind == "batch":
            sizes.append(len(items))
    return batched, single, sizes


@pytest.mark.parametrize("n", [1, 2, 4])
def test_each_chunk_is_one_call_and_each_task_is_recorded_once(python_module, tmp_path, n):
    counts, summary, out = run_dag(python_module, tmp_path, n, batch_dag(tmp_path))
    assert counts == {"done": N + 1, "failed": 0, "upstream_failed": 0}
    assert read_results(str(out))["total"] == sum(i * i for i in range(N))
    batched, single, sizes = computed(tmp_path)
    assert sorted(batched + single) == list(range(N))            # each item once
    assert max(sizes) > 1 and summary["batched"] == len(batched) and summary["unbatched"] == 0
    assert summary["batches"] == len(sizes)
    rows = read_tasks(str(out))
    assert len(rows) == N + 1 and (rows["end"] >= rows["start"]).all()
    report = CliRunner().invoke(cli, ["report", str(out), "--no-plots"])
    assert report.exit_code == 0, report.output
    assert f"batched: {len(batched)} tasks in {len(sizes)} calls" in \
        (out / "report" / "report.txt").read_text()


def inputs_dag(tmp_path, **plus_kwargs) -> dict:
    """sq -> plus[i] (reads sq[i] and base, which all N plus read) -> plus_total."""
    dag = batch_dag(tmp_path)
    dag["tasks"] += [
        {"id": "base", "fn": "batchy:base"},
        {"id": "plus", "fn": "batchy:plus", "args": ["{i}"], "kwargs": plus_kwargs,
         "foreach": {"i": {"range": [0, N]}}, "deps": ["sq[{i}]", "base"]},
        {"id": "plus_total", "fn": "batchy:plus_total", "deps": ["plus"]}]
    return dag


def plus_batches(tmp_path) -> list:
    return [line for line in (tmp_path / "computed.log").read_text().splitlines()
            if line.startswith("plus-batch")]


@pytest.mark.parametrize("n", [1, 2])
def test_a_batched_family_that_reads_inputs_gets_each_instance_s_own(python_module, tmp_path, n):
    counts, summary, out = run_dag(python_module, tmp_path, n, inputs_dag(tmp_path))
    assert counts["done"] == 2 * N + 3
    assert read_results(str(out))["plus_total"] == N + sum(i * i for i in range(N))
    assert any(len(line.split()) > 2 for line in plus_batches(tmp_path))


@pytest.mark.parametrize("n", [1, 2])
def test_a_failed_batch_does_not_read_its_inputs_twice(python_module, tmp_path, n):
    """base has N readers. When a batch of plus fails, its instances run one by one with the
    inputs the batch read: reading them again counted base down twice, so it was freed (and
    its space reused) while later plus instances still had to read it."""
    for _ in range(5):      # chunks follow task times: plus[5] may have run alone, unbatched
        shutil.rmtree(tmp_path / "run", ignore_errors=True)
        counts, summary, out = run_dag(python_module, tmp_path, n, inputs_dag(tmp_path, bad=5),
                                       expect_status=1)
        failure = [json.loads(line) for f in (out / "failures").glob("*.jsonl")
                   for line in f.read_text().splitlines()]
        assert [f["id"] for f in failure] == ["plus[5]"], failure[:2]
        assert counts == {"done": 2 * N + 1, "failed": 1, "upstream_failed": 1}
        if summary["unbatched"] >= 1:
            break
    assert summary["unbatched"] >= 1, "no batch held plus[5] in 5 runs"


def test_no_batch_calls_the_function_once_per_task(python_module, tmp_path):
    counts, summary, out = run_dag(python_module, tmp_path, 2, batch_dag(tmp_path), "--no-batch")
    assert counts["done"] == N + 1
    batched, single, _ = computed(tmp_path)
    assert batched == [] and sorted(single) == list(range(N))
    assert summary["batched"] == 0
    assert read_results(str(out))["total"] == sum(i * i for i in range(N))


@pytest.mark.parametrize("n", [1, 3])
def test_a_batch_that_raises_runs_one_by_one_and_only_the_bad_task_fails(
        python_module, tmp_path, n):
    counts, summary, out = run_dag(python_module, tmp_path, n, batch_dag(tmp_path, bad=213),
                                   expect_status=1)
    assert counts == {"done": N - 1, "failed": 1, "upstream_failed": 1}
    batched, single, _ = computed(tmp_path)
    assert Counter(batched + single) == Counter(range(N))        # 213's chunk ran once, alone
    assert 213 in single
    refused = [line for line in (tmp_path / "computed.log").read_text().splitlines()
               if line.startswith("refused")]
    # A stolen chunk can shrink to 213 alone, which runs without the batch form.
    assert refused or n > 1, "213 never reached the batch form on one rank"
    if refused:
        assert summary["unbatched"] >= 1
    failure = [json.loads(line) for f in (out / "failures").glob("*.jsonl")
               for line in f.read_text().splitlines()]
    assert [f["id"] for f in failure] == ["sq[213]"]
    assert "item 213 is bad" in failure[0]["error"]
    logs = "".join(p.read_text() for p in (out / "logs").glob("*.fn.err"))
    if refused:
        assert "the batch form of sq failed" in logs and "item 213 is in this batch" in logs


def test_a_batch_that_returns_too_few_values_runs_one_by_one(python_module, tmp_path):
    counts, summary, out = run_dag(python_module, tmp_path, 2, batch_dag(tmp_path, mode="short"))
    assert counts["done"] == N + 1
    assert read_results(str(out))["total"] == sum(i * i for i in range(N))
    assert summary["unbatched"] >= 1 and summary["batched"] == 0
    logs = "".join(p.read_text() for p in (out / "logs").glob("*.fn.err"))
    assert "it returned 1 values for" in logs


def test_a_torn_unit_of_batch_values_runs_again_whole_on_resume(python_module, tmp_path):
    """A batch's first value holds the whole chunk's sum: if a crash or a damaged journal
    lost one record of the chunk's unit, resuming must run the whole chunk again, not only
    the lost task (that would count the chunk's items twice or not at all)."""
    import numpy as np
    from mpitiny.io import journal as jnl
    dag = batch_dag(tmp_path)
    run_dag(python_module, tmp_path, 2, dag)
    first_run = len((tmp_path / "computed.log").read_text().splitlines())
    total_gid = N
    torn_items = None
    for path in sorted((tmp_path / "run" / "journal").glob("*.jnl")):
        rec = np.fromfile(path, dtype=jnl.RECORD)
        unit = rec["unit"].astype(np.int64)
        if torn_items is None:
            big = np.flatnonzero((unit >> 16 >= 3) & ((unit & 0xFFFF) == 1))
            if len(big):
                at = int(big[0])
                size = int(unit[at] >> 16)
                torn_items = rec["lo"][at - 1:at - 1 + size].tolist()
                rec[at]["check"] ^= 1                     # the unit's second record torn
        rec["check"][(rec["kind"] == jnl.DONE) & (rec["lo"] == total_gid)] ^= 1
        rec.tofile(path)
    assert torn_items, "no unit of 3 or more values was journaled"
    info = jnl.read_run_info(str(tmp_path / "run"))
    jnl.write_run_info(str(tmp_path / "run"), {**info, "complete": False})   # as if killed
    counts, _, out = run_dag(python_module, tmp_path, 2, dag, "--resume")
    assert counts["done"] == N + 1
    assert read_results(str(out))["total"] == sum(i * i for i in range(N))
    again = []
    for line in (tmp_path / "computed.log").read_text().splitlines()[first_run:]:
        again.extend(map(int, line.split()[1:]))
    assert sorted(again) == sorted(torn_items)
