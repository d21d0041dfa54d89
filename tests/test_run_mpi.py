"""``mpiexec -n N python -m mpitiny run dag.json`` end to end, checked from what the run leaves.

Every DAG test checks, from the per-rank task tables, that every task finished exactly once and
never started before all of its parents ended (``mpitiny.io.check.check_run``).
"""
import json
import re
import random
from pathlib import Path

import numpy as np
import pytest

from mpirun import strip_mpi_banners
from mpitiny.dag.load import load_dag
from mpitiny.io.check import check_run
from mpitiny.io.rundir import groups_of, read_results, read_tasks, task_id

pytestmark = pytest.mark.mpi
RANKS = [1, 2, 4, 8]
SHARED = Path(__file__).resolve().parents[2] / "shared" / "wfcommons"


def write(tmp_path, dag: dict) -> Path:
    path = tmp_path / "dag.json"
    path.write_text(json.dumps(dag))
    return path


def run(python_module, n, dag_path, out, *extra, timeout=120):
    return python_module(n, "mpitiny", "run", str(dag_path), "--out", str(out), *extra,
                         timeout=timeout, cwd=str(dag_path.parent))


def checked(python_module, tmp_path, n, dag: dict, expect_status=0):
    path = write(tmp_path, dag)
    out = tmp_path / "run"
    proc = run(python_module, n, path, out)
    assert proc.returncode == expect_status, proc.stderr + proc.stdout
    counts = check_run(load_dag(str(path)), str(out))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ranks"] == n
    return counts, summary, proc


def null(id_, deps=(), **kw):
    return {"id": id_, "fn": "mpitiny.tasks:null", "deps": list(deps), **kw}


@pytest.mark.parametrize("n", RANKS)
def test_chain(python_module, tmp_path, n):
    tasks = [null("c0")] + [null(f"c{k}", [f"c{k - 1}"]) for k in range(1, 60)]
    counts, _, _ = checked(python_module, tmp_path, n, {"name": "chain", "tasks": tasks})
    assert counts["done"] == 60


@pytest.mark.parametrize("n", RANKS)
def test_placed_stencil_and_chain_hand_children_to_their_homes(python_module, tmp_path, n):
    """A stencil with point ``i`` placed on rank ``i`` and a chain whose links alternate
    ranks: a released child placed on another rank goes to that rank's inbox the moment its
    count reaches zero (``Release.hand_off``); every task once, after its parents."""
    width, steps = 4, 40
    stencil = {"id": "u", "fn": "mpitiny.tasks:null", "rank": "{i}",
               "foreach": {"t": {"range": [steps]}, "i": {"range": [width]}},
               "deps": ["u[{t}-1,{i}-1]", "u[{t}-1,{i}]", "u[{t}-1,{i}+1]"]}
    links = [null("c0", rank=0)] + [null(f"c{k}", [f"c{k - 1}"], rank=k % 3)
                                    for k in range(1, 40)]
    counts, summary, _ = checked(python_module, tmp_path, n,
                                 {"name": "placed", "tasks": [stencil, *links]})
    assert counts["done"] == width * steps + 40
    if n > 1:
        ran_on = {r["rank"] for r in summary["per_rank"] if r["done"]}
        assert len(ran_on) > 1


@pytest.mark.parametrize("n", RANKS)
def test_wide_fork_join(python_module, tmp_path, n):
    tasks = [null("src"),
             {"id": "mid", "fn": "mpitiny.tasks:sleep", "args": [0.001],
              "foreach": {"i": {"range": [0, 300]}}, "deps": ["src"]},
             null("sink", ["mid"])]
    counts, summary, _ = checked(python_module, tmp_path, n, {"name": "forkjoin", "tasks": tasks})
    assert counts["done"] == 302
    if n > 1:
        ran_on = {r["rank"] for r in summary["per_rank"] if r["done"]}
        assert len(ran_on) > 1, "the fan-out never spread beyond one rank"


@pytest.mark.parametrize("n", RANKS)
def test_diamond_with_element_wise_families(python_module, tmp_path, n):
    tasks = [null("a"),
             {"id": "b", "fn": "mpitiny.tasks:null", "foreach": {"i": {"range": [0, 500]}},
              "deps": ["a"]},
             {"id": "c", "fn": "mpitiny.tasks:null", "foreach": {"i": {"range": [0, 500]}},
              "deps": ["b[{i}]"]},
             null("d", ["b", "c"])]
    counts, _, _ = checked(python_module, tmp_path, n, {"name": "diamond", "tasks": tasks})
    assert counts["done"] == 1002


def random_dag(seed: int) -> dict:
    rng = random.Random(seed)
    tasks = []
    for k in range(rng.randint(20, 120)):
        deps = rng.sample([t["id"] for t in tasks], min(len(tasks), rng.randint(0, 3)))
        if rng.random() < 0.2:
            size = rng.choice([2, 10, 50])
            fams = [t for t in tasks if t.get("foreach", {}).get("i") == {"range": [0, size]}]
            if fams and rng.random() < 0.7:
                deps.append(f"{rng.choice(fams)['id']}[{{i}}]")
            tasks.append({"id": f"f{k}", "fn": "mpitiny.tasks:null",
                          "foreach": {"i": {"range": [0, size]}}, "deps": deps,
                          "priority": rng.randint(-2, 2)})
        else:
            tasks.append(null(f"t{k}", deps, priority=rng.randint(-2, 2)))
    return {"name": f"random{seed}", "tasks": tasks}


@pytest.mark.parametrize("fail_at", [None, 60])
@pytest.mark.parametrize("n,width", [(2, 2), (3, 3), (4, 2)])
def test_listed_stencil_hands_children_over_with_and_without_a_failure(python_module, tmp_path,
                                                                       n, width, fail_at):
    """Task Bench's stencil_1d as listed tasks of a few µs: a rank whose parent ends first
    reserves a child (``loop.reserve``), which the rank whose parent ends last leaves to it;
    with point 0 of step ``fail_at`` failing, that rank sees the reserved child's failed
    mark and records it upstream-failed, as all that follow. Every task once, after its
    parents (``check_run``)."""
    steps = 200
    tasks = []
    for t in range(steps):
        for p in range(width):
            deps = [f"t{t - 1}_{d}" for d in range(max(0, p - 1), min(width, p + 2))] if t else []
            fails = t == fail_at and p == 0
            tasks.append({"id": f"t{t}_{p}", "fn": "mpitiny.tasks:fail" if fails else
                          "mpitiny.tasks:spin", "args": ["on purpose"] if fails else [2e-5],
                          "deps": deps})
    counts, _, _ = checked(python_module, tmp_path, n, {"name": "stencil", "tasks": tasks},
                           expect_status=0 if fail_at is None else 1)
    if fail_at is None:
        assert counts["done"] == steps * width
    else:
        lost = sum(min(width, p + 1 + t) for p in [0] for t in range(1, steps - fail_at))
        assert counts["failed"] == 1 and counts["upstream_failed"] == lost
        assert counts["done"] == steps * width - 1 - lost


@pytest.mark.parametrize("n,seed", [(1, 0), (2, 1), (4, 2), (8, 3), (3, 4), (8, 5), (4, 6), (2, 7)])
def test_random_dags(python_module, tmp_path, n, seed):
    dag = random_dag(seed)
    counts, _, _ = checked(python_module, tmp_path, n, dag)
    assert counts["failed"] == counts["upstream_failed"] == 0


@pytest.mark.parametrize("n", [1, 4])
def test_family_of_100k(python_module, tmp_path, n):
    """100,000 null tasks, each once, shared between the ranks. Not necessarily by every rank:
    the run takes a fraction of a second, and a rank the OS keeps off the CPU all that time
    finds its share stolen, as it should (seen once with 4 ranks on 2 loaded cores on the
    network path)."""
    dag = {"name": "big", "tasks": [{"id": "x", "fn": "mpitiny.tasks:null",
                                     "foreach": {"i": {"range": [0, 100_000]}}}]}
    counts, summary, _ = checked(python_module, tmp_path, n, dag)
    assert counts["done"] == 100_000
    if n > 1:
        assert sum(r["done"] > 0 for r in summary["per_rank"]) >= 2


@pytest.mark.parametrize("n", [1, 3])
def test_failure_propagation(python_module, tmp_path, n):
    tasks = [{"id": "a", "fn": "mpitiny.tasks:echo", "args": ["{i}"], "foreach": {"i": {"range": [0, 6]}}},
             {"id": "bad", "fn": "mpitiny.tasks:fail", "args": ["boom {i}"],
              "foreach": {"i": {"range": [0, 6]}}, "deps": ["a[{i}]"]},
             {"id": "after", "fn": "mpitiny.tasks:null", "foreach": {"i": {"range": [0, 6]}},
              "deps": ["bad[{i}]"]},
             null("end", ["after"]),
             null("independent", ["a"]),
             {"id": "shell_bad", "cmd": "echo to-stderr >&2; exit 7"},
             null("after_shell", ["shell_bad"])]
    counts, summary, proc = checked(python_module, tmp_path, n, {"name": "fails", "tasks": tasks},
                                    expect_status=1)
    assert counts == {"done": 7, "failed": 7, "upstream_failed": 8}
    assert summary["failed"] == 7 and summary["upstream_failed"] == 8
    failures = [json.loads(line) for f in sorted((tmp_path / "run" / "failures").glob("*.jsonl"))
                for line in f.read_text().splitlines()]
    assert len(failures) == 7
    by_id = {f["id"]: f for f in failures}
    assert "RuntimeError: boom 3" in by_id["bad[3]"]["error"]
    assert by_id["bad[3]"]["error"].startswith(f"### task bad[3] failed on rank {by_id['bad[3]']['rank']} of {n} (")
    assert "exited with status 7" in by_id["shell_bad"]["error"]
    assert "to-stderr" in by_id["shell_bad"]["error"]
    assert proc.stdout.count("mpitiny: first failure:") == 1


@pytest.mark.parametrize("n", [1, 2, 4])
def test_cmd_and_fn_tasks_and_their_outputs(python_module, tmp_path, n):
    tasks = [{"id": "sh", "cmd": "echo out {i} $MPITINY_TASK_ID $MPITINY_ATTEMPT $MPITINY_RANK; echo err {i} >&2",
              "foreach": {"i": {"range": [0, 12]}}},
             {"id": "py", "fn": "mpitiny.tasks:echo", "args": [{"k": "{i}"}],
              "foreach": {"i": ["x", "y"]}, "deps": ["sh"]}]
    checked(python_module, tmp_path, n, {"name": "mixed", "tasks": tasks})
    out = tmp_path / "run"
    rows = read_tasks(str(out))
    groups = groups_of(str(out))
    logs = {}
    for row in rows:
        tid = task_id(groups, int(row["gid"]))
        if tid.startswith("sh["):
            data = (out / "logs" / f"rank-{row['rank']:05d}.out").read_bytes()
            logs[tid] = data[row["out_offset"]:row["out_offset"] + row["out_length"]].decode()
            err = (out / "logs" / f"rank-{row['rank']:05d}.err").read_bytes()
            assert err[row["err_offset"]:row["err_offset"] + row["err_length"]].decode() == \
                f"err {tid[3:-1]}\n"
    assert len(logs) == 12
    for i in range(12):
        words = logs[f"sh[{i}]"].split()
        assert words[:4] == ["out", str(i), f"sh[{i}]", "1"] and 0 <= int(words[4]) < n
    results = [json.loads(line) for f in (out / "results").glob("*.jsonl")
               for line in f.read_text().splitlines()]
    assert sorted((r["id"], r["value"]["value"]["k"]) for r in results) == [("py[x]", "x"), ("py[y]", "y")]
    # shell tasks return nothing: a Python child sees None for each of them
    assert results[0]["value"]["inputs"] == {f"sh[{i}]": None for i in range(12)}


@pytest.mark.parametrize("n", [1, 2, 4])
def test_inputs_receive_parent_values(python_module, tmp_path, n):
    (tmp_path / "sums.py").write_text(
        "def square(i):\n    return i * i\n\n"
        "def total(inputs):\n    return sum(inputs.values())\n\n"
        "def pair(i, inputs):\n    return [i, inputs]\n\n"
        "def unjsonable():\n    return object()\n")
    tasks = [{"id": "sq", "fn": "sums:square", "args": ["{i}"], "foreach": {"i": {"range": [0, 40]}}},
             {"id": "pair", "fn": "sums:pair", "args": ["{i}"], "foreach": {"i": {"range": [0, 40]}},
              "deps": ["sq[{i}]"]},
             {"id": "total", "fn": "sums:total", "deps": ["sq"]},
             {"id": "weird", "fn": "sums:unjsonable"},
             {"id": "after_weird", "fn": "sums:total", "deps": ["weird"]}]
    counts, _, _ = checked(python_module, tmp_path, n, {"name": "inputs", "tasks": tasks},
                           expect_status=1)
    assert counts == {"done": 81, "failed": 1, "upstream_failed": 1}
    results = {}
    for f in (tmp_path / "run" / "results").glob("*.jsonl"):
        for line in f.read_text().splitlines():
            r = json.loads(line)
            results[r["id"]] = r["value"]
    assert results["total"] == sum(i * i for i in range(40))
    assert results["pair[7]"] == [7, {"sq[7]": 49}]
    failure = next((tmp_path / "run" / "failures").glob("*.jsonl")).read_text()
    assert "cannot be kept" in failure and "object" in failure


@pytest.mark.parametrize("n", RANKS)
def test_children_read_one_part_of_parts_results(python_module, tmp_path, n):
    """``mpitiny.Parts`` results: reducers with ``"part": "{r}"`` receive only their part of
    every map output (bytes), a child without ``part`` the whole Parts, a plain parent is
    read whole, and a part past the end fails that child only, naming the parent."""
    (tmp_path / "parts.py").write_text(
        "from mpitiny import Parts\n\n"
        "def split(i, r):\n    return Parts(b'%d:%d' % (i, p) for p in range(r))\n\n"
        "def gather(inputs, r=None):\n"
        "    return {k: (v.decode() if isinstance(v, bytes) else [p.decode() for p in v]"
        " if isinstance(v, list) else v) for k, v in inputs.items()}\n")
    R = 3
    tasks = [{"id": "m", "fn": "parts:split", "args": ["{i}", R], "foreach": {"i": {"range": [0, 30]}}},
             {"id": "plain", "fn": "mpitiny.tasks:null"},
             {"id": "red", "fn": "parts:gather", "kwargs": {"r": "{r}"}, "part": "{r}",
              "foreach": {"r": {"range": [0, R]}}, "deps": ["m", "plain"]},
             {"id": "all", "fn": "parts:gather", "deps": ["m[4]"]},
             {"id": "past", "fn": "parts:gather", "part": R, "deps": ["m[0]"]}]
    counts, _, _ = checked(python_module, tmp_path, n, {"name": "parts", "tasks": tasks},
                           expect_status=1)
    assert counts["done"] == 30 + 1 + R + 1 and counts["failed"] == 1, counts
    results = read_results(str(tmp_path / "run"))
    for r in range(R):
        got = results[f"red[{r}]"]
        assert got == {**{f"m[{i}]": f"{i}:{r}" for i in range(30)}, "plain": None}
    assert results["all"] == {"m[4]": [f"4:{p}" for p in range(R)]}
    failure = next((tmp_path / "run" / "failures").glob("*.jsonl")).read_text()
    assert "part 3 of m[0] was asked for, but it has 3 parts" in failure


def test_priorities_order_ready_tasks_on_one_rank(python_module, tmp_path):
    tasks = [{"id": "low", "fn": "mpitiny.tasks:null", "foreach": {"i": {"range": [0, 50]}},
              "priority": -1},
             {"id": "high", "fn": "mpitiny.tasks:null", "foreach": {"i": {"range": [0, 50]}},
              "priority": 10},
             {"id": "mid", "fn": "mpitiny.tasks:null", "priority": 3}]
    checked(python_module, tmp_path, 1, {"name": "prio", "tasks": tasks})
    rows = read_tasks(str(tmp_path / "run"))
    groups = groups_of(str(tmp_path / "run"))
    order = [task_id(groups, int(g)).split("[")[0] for g in rows[rows["start"].argsort(kind="stable")]["gid"]]
    assert order == ["high"] * 50 + ["mid"] + ["low"] * 50


def test_released_high_priority_task_runs_before_queued_low_priority(python_module, tmp_path):
    tasks = [null("gate"),
             {"id": "bulk", "fn": "mpitiny.tasks:sleep", "args": [0.0005],
              "foreach": {"i": {"range": [0, 400]}}, "priority": 0},
             {"id": "urgent", "fn": "mpitiny.tasks:null", "deps": ["gate"], "priority": 100}]
    checked(python_module, tmp_path, 1, {"name": "urgent", "tasks": tasks})
    rows = read_tasks(str(tmp_path / "run"))
    groups = groups_of(str(tmp_path / "run"))
    starts = {task_id(groups, int(r["gid"])): r["start"] for r in rows}
    later_bulk = sum(1 for k, v in starts.items() if k.startswith("bulk") and v > starts["urgent"])
    assert later_bulk > 300, "a ready high-priority task waited behind queued low-priority ones"


@pytest.mark.parametrize("n", [1, 4])
def test_bad_input_one_message_exit_2_nothing_written(python_module, tmp_path, n):
    path = write(tmp_path, {"name": "bad", "tasks": [null("a", ["b"]), null("b", ["a"])]})
    proc = run(python_module, n, path, tmp_path / "run")
    assert proc.returncode == 2
    lines = own_lines(proc.stderr)
    assert len(lines) == 1 and lines[0].startswith("mpitiny: error:") and "cycle" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "run").exists()


def own_lines(text: str) -> list:
    """Non-empty lines of what mpitiny printed, without what the MPI launcher adds."""
    return [line for line in strip_mpi_banners(text).splitlines() if line.strip()]


def test_missing_dag_file(python_module, tmp_path):
    proc = python_module(2, "mpitiny", "run", str(tmp_path / "nope.json"), timeout=60)
    assert proc.returncode == 2
    lines = own_lines(proc.stderr)
    assert len(lines) == 1 and lines[0].startswith("mpitiny: error:") and "nope.json" in lines[0]


@pytest.mark.parametrize("mode", ["raise", "exit"])
def test_internal_error_on_one_rank_aborts_the_job(python_module, tmp_path, mode):
    dag = {"name": "abort", "tasks": [{"id": "s", "fn": "mpitiny.tasks:sleep", "args": [0.01],
                                       "foreach": {"i": {"range": [0, 400]}}}]}
    path = write(tmp_path, dag)
    proc = python_module(4, "mpitiny", "run", str(path), "--out", str(tmp_path / "run"),
                         env={"MPITINY_FAULT": f"rank=2:after=3:mode={mode}"}, timeout=60)
    assert proc.returncode != 0
    if mode == "raise":
        assert "internal error on rank 2 of 4" in proc.stderr
        assert "fault injected" in proc.stderr


@pytest.mark.skipif(not SHARED.is_dir(), reason="shared/wfcommons not beside the repository")
@pytest.mark.parametrize("instance", sorted(p.name for p in SHARED.glob("*.json")) if SHARED.is_dir() else [])
def test_wfcommons_instances_run(python_module, tmp_path, instance):
    from mpitiny.dag.wfcommons import convert_file
    dag_path = tmp_path / "dag.json"
    data = json.loads((SHARED / instance).read_text())
    convert_file(str(SHARED / instance), str(dag_path), 1e-9)
    out = tmp_path / "run"
    proc = run(python_module, 8, dag_path, out)
    assert proc.returncode == 0, proc.stderr
    counts = check_run(load_dag(str(dag_path)), str(out))
    assert counts["done"] == len(data["workflow"]["specification"]["tasks"])


def test_rank_placement_prefers_the_named_rank(python_module, tmp_path):
    tasks = [{"id": "s", "fn": "mpitiny.tasks:sleep", "args": [0.03], "rank": "{i}",
              "foreach": {"i": {"range": [0, 8]}}},
             {"id": "t", "fn": "mpitiny.tasks:sleep", "args": [0.03], "rank": "{i}",
              "foreach": {"i": {"range": [0, 8]}}, "deps": ["s[{i}]"]}]
    checked(python_module, tmp_path, 4, {"name": "placed", "tasks": tasks})
    rows = read_tasks(str(tmp_path / "run"))
    at_home = sum(1 for r in rows if int(r["rank"]) == int(r["gid"]) % 8 % 4)
    assert at_home >= len(rows) // 2, f"only {at_home} of {len(rows)} tasks ran on their rank"


@pytest.mark.parametrize("n", [1, 3])
def test_what_fn_tasks_print_goes_to_rank_logs_not_the_terminal(python_module, tmp_path, n):
    (tmp_path / "noisy.py").write_text(
        "import sys\n\ndef talk(i):\n    print('hello', i)\n    print('warn', i, file=sys.stderr)\n")
    tasks = [{"id": "t", "fn": "noisy:talk", "args": ["{i}"], "foreach": {"i": {"range": [0, 300]}}}]
    _, _, proc = checked(python_module, tmp_path, n, {"name": "noisy", "tasks": tasks})
    assert "hello" not in proc.stdout and "warn" not in proc.stderr
    logs = tmp_path / "run" / "logs"
    out = "".join(p.read_text() for p in logs.glob("*.fn.out"))
    err = "".join(p.read_text() for p in logs.glob("*.fn.err"))
    assert sorted(out.splitlines()) == sorted(f"hello {i}" for i in range(300))
    assert sorted(err.splitlines()) == sorted(f"warn {i}" for i in range(300))


@pytest.mark.parametrize("n", [1, 8])
def test_state_store_concurrent_updates_lose_nothing(python_module, tmp_path, n):
    (tmp_path / "st.py").write_text(
        "from mpitiny import state\n\n"
        "def bump(i):\n"
        "    for k in range(50):\n"
        "        state.add('total', 1)\n"
        "        state.add(f'key{k % 7}', i)\n"
        "    return state.put_if_absent(f'word{i % 13}', i)\n\n"
        "def check(inputs):\n"
        "    got = {k.decode(): v for k, v in state.items()}\n"
        "    return {'state': got, 'first': sum(1 for v in inputs.values() if v)}\n")
    tasks = [{"id": "bump", "fn": "st:bump", "args": ["{i}"], "foreach": {"i": {"range": [0, 200]}}},
             {"id": "check", "fn": "st:check", "deps": ["bump"]}]
    checked(python_module, tmp_path, n, {"name": "state", "tasks": tasks})
    (line,) = [l for f in (tmp_path / "run" / "results").glob("*.jsonl")
               for l in f.read_text().splitlines() if '"check"' in l]
    value = json.loads(line)["value"]
    st = value["state"]
    assert st["total"] == 200 * 50
    for r in range(7):
        per_i = sum(1 for k in range(50) if k % 7 == r)
        assert st[f"key{r}"] == per_i * sum(range(200))
    assert value["first"] == 13             # exactly one winner per distinct word
    assert sorted(k for k in st if k.startswith("word")) == sorted(f"word{j}" for j in range(13))


@pytest.mark.parametrize("n", [1, 4])
def test_intermediate_data_beyond_the_memory_limit_spills_and_stays_exact(python_module, tmp_path, n):
    (tmp_path / "big.py").write_text(
        "import numpy as np\n\n"
        "def block(i):\n"
        "    return np.arange(i, i + 250_000, dtype=np.int64)     # 2 MB each\n\n"
        "def total(inputs):\n"
        "    return int(sum(int(a.sum()) for a in inputs.values()))\n\n"
        "def twice(i, inputs):\n"
        "    (a,) = inputs.values()\n"
        "    return a.tobytes()[:16] * 2\n")
    tasks = [{"id": "block", "fn": "big:block", "args": ["{i}"], "foreach": {"i": {"range": [0, 24]}}},
             {"id": "pair", "fn": "big:twice", "args": ["{i}"], "foreach": {"i": {"range": [0, 24]}},
              "deps": ["block[{i}]"]},
             {"id": "total", "fn": "big:total", "deps": ["block"]}]
    path = write(tmp_path, {"name": "spill", "tasks": tasks})
    out = tmp_path / "run"
    # 48 MB of outputs: 3x what all ranks together may keep in memory
    proc = run(python_module, n, path, out, "--mem-limit", str(16 // n))
    assert proc.returncode == 0, proc.stderr
    check_run(load_dag(str(path)), str(out))
    lines = [json.loads(l) for f in (out / "results").glob("*.jsonl") for l in f.read_text().splitlines()]
    (total,) = [l["value"] for l in lines if l["id"] == "total"]
    assert total == sum(sum(range(i, i + 250_000)) for i in range(24))
    summary = json.loads((out / "summary.json").read_text())
    assert sum(r["outputs_spilled"] for r in summary["per_rank"]) > 0
    assert any((out / "spill").iterdir())
    pair = [l for l in lines if l["id"] == "pair[5]"][0]
    data = (out / "results" / pair["file"]).read_bytes()[pair["offset"]:pair["offset"] + pair["length"]]
    assert data == np.arange(5, 7, dtype=np.int64).tobytes() * 2


@pytest.mark.parametrize("n", [1, 3])
def test_outputs_are_freed_once_every_reader_has_read_them(python_module, tmp_path, n):
    """30 map outputs of 2 parts (3 MB), each part read by one of 2 reducers (``"part"``), then
    30 more outputs of 3 MB in all, under ``--mem-limit 4`` (MB per rank): they fit only if
    the readers' counts (one batched ``Accumulate`` per holder) freed the first ones."""
    (tmp_path / "waves.py").write_text(
        "from mpitiny import Parts\n\n"
        "def two(i):\n    return Parts([bytes([i]) * 50_000, bytes([100 + i]) * 50_000])\n\n"
        "def one(i):\n    return bytes([i]) * 100_000\n\n"
        "def sums(inputs, r):\n"
        "    return sorted([k, len(v), sum(set(v))] for k, v in inputs.items())\n\n"
        "def size(inputs):\n    return sum(len(v) for v in inputs.values())\n")
    tasks = [{"id": "a", "fn": "waves:two", "args": ["{i}"], "foreach": {"i": {"range": [0, 30]}}},
             {"id": "red", "fn": "waves:sums", "kwargs": {"r": "{r}"}, "part": "{r}",
              "foreach": {"r": {"range": [0, 2]}}, "deps": ["a"]},
             {"id": "b", "fn": "waves:one", "args": ["{i}"], "foreach": {"i": {"range": [0, 30]}},
              "deps": ["red"]},
             {"id": "total", "fn": "waves:size", "deps": ["b"]}]
    path = write(tmp_path, {"name": "waves", "tasks": tasks})
    out = tmp_path / "run"
    proc = run(python_module, n, path, out, "--mem-limit", "4")
    assert proc.returncode == 0, proc.stderr
    check_run(load_dag(str(path)), str(out))
    results = read_results(str(out))
    for r in range(2):
        assert results[f"red[{r}]"] == sorted([f"a[{i}]", 50_000, 100 * r + i] for i in range(30))
    assert results["total"] == 30 * 100_000
    summary = json.loads((out / "summary.json").read_text())
    assert sum(r["outputs_spilled"] for r in summary["per_rank"]) == 0
    assert sum(r["outputs_in_window"] for r in summary["per_rank"]) == 60


PROGRESS_LINE = re.compile(
    r"^mpitiny: progress done=(\d+)/(\d+) pct=([\d.]+) failed=(\d+) rate=([\d.]+)/s "
    r"eta=(\S+) busy=(\d+)% rss=(\d+)MB elapsed=([\d.]+)s$")


def test_progress_lines_are_parseable_and_status_reads_them(python_module, tmp_path):
    dag = {"name": "prog", "tasks": [
        {"id": "s", "fn": "mpitiny.tasks:sleep", "args": [0.01], "foreach": {"i": {"range": [0, 300]}}},
        {"id": "bad", "fn": "mpitiny.tasks:fail"}]}
    path = write(tmp_path, dag)
    proc = run(python_module, 3, path, tmp_path / "run", "--progress-interval", "0.2")
    assert proc.returncode == 1, proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.startswith("mpitiny: progress")]
    assert len(lines) >= 3, proc.stderr
    parsed = [PROGRESS_LINE.match(l) for l in lines]
    assert all(parsed), lines
    done = [int(m.group(1)) for m in parsed]
    assert done == sorted(done) and done[-1] == 301 and int(parsed[-1].group(4)) == 1
    assert json.loads((tmp_path / "run" / "progress.json").read_text())["state"] == "finished"
    from click.testing import CliRunner
    from mpitiny.cli import cli
    result = CliRunner().invoke(cli, ["status", str(tmp_path / "run")])
    assert result.exit_code == 0 and "complete with failures: 300 done, 1 failed" in result.output
    quiet = run(python_module, 2, path, tmp_path / "run2", "--quiet")
    assert "progress" not in quiet.stderr and quiet.stdout == ""


def reduction_tree(leaves: int, fan: int, bad_leaf: int | None = None) -> dict:
    """A family of leaves, then a tree of plain tasks, each waiting for ``fan`` named
    instances or nodes (``"leaf[5]"``): the shape of an aggregation tree."""
    tasks = [{"id": "leaf", "fn": "mpitiny.tasks:echo", "args": ["{i}"],
              "foreach": {"i": {"range": [0, leaves]}}}]
    if bad_leaf is not None:
        tasks[0]["foreach"]["i"] = [i for i in range(leaves) if i != bad_leaf]
        tasks.append({"id": "leafbad", "fn": "mpitiny.tasks:fail"})
    level = [f"leaf[{i}]" if i != bad_leaf else "leafbad" for i in range(leaves)]
    depth = 1
    while len(level) > 1:
        nxt = []
        for k in range(0, len(level), fan):
            tid = f"n{depth}_{k // fan}"
            tasks.append({"id": tid, "fn": "mpitiny.tasks:null", "deps": level[k:k + fan]})
            nxt.append(tid)
        level, depth = nxt, depth + 1
    return {"name": "tree", "tasks": tasks}


@pytest.mark.parametrize("n", [1, 2, 4])
def test_reduction_tree_over_family_instances(python_module, tmp_path, n):
    """Finishing a leaf touches only the node that names it (not every child group of the
    family): 1024 leaves, fan-in 4, 341 nodes."""
    counts, summary, _ = checked(python_module, tmp_path, n, reduction_tree(1024, 4))
    assert counts["done"] == 1024 + 341


def test_reduction_tree_failed_leaf_skips_its_path_only(python_module, tmp_path):
    counts, summary, _ = checked(python_module, tmp_path, 2, reduction_tree(64, 4, bad_leaf=37),
                                 expect_status=1)
    assert (counts["failed"], counts["upstream_failed"]) == (1, 3)    # 37 -> n1_9 -> n2_2 -> n3_0
    assert counts["done"] == 63 + 21 - 3


@pytest.mark.parametrize("n", [2, 4])
def test_long_tasks_released_together_run_on_different_ranks(python_module, tmp_path, n):
    """Two 1 s tasks released by the same last short task: a rank sizes its chunks by the
    running time of the group it claims from, so it does not take both long tasks in one
    chunk (sized for the 0.5 ms tasks before them) while another rank idles."""
    tasks = [{"id": "short", "fn": "mpitiny.tasks:sleep", "args": [0.0005],
              "foreach": {"i": {"range": [0, 400]}}},
             {"id": "long", "fn": "mpitiny.tasks:sleep", "args": [1.0],
              "foreach": {"r": {"range": [0, 2]}}, "deps": ["short"]}]
    checked(python_module, tmp_path, n, {"name": "long-after-short", "tasks": tasks})
    rows = read_tasks(str(tmp_path / "run"))
    groups = groups_of(str(tmp_path / "run"))
    ids = [task_id(groups, int(g)) for g in rows["gid"]]
    long_rows = rows[[i.startswith("long[") for i in ids]]
    assert len(long_rows) == 2
    assert long_rows["rank"][0] != long_rows["rank"][1], long_rows
    assert max(long_rows["start"]) < min(long_rows["end"]), "the long tasks did not overlap"
