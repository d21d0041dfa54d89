"""``mpitiny validate``: one line on success (exit 0), one error line on bad input (exit 2)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from mpitiny.cli import cli

DAGS = Path(__file__).resolve().parent / "dags"


@pytest.fixture
def runner(monkeypatch):
    for var in ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK"):
        monkeypatch.delenv(var, raising=False)
    return CliRunner()


def write(tmp_path: Path, content, name: str = "dag.json") -> str:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        path.write_text(content)
    else:
        path.write_text(json.dumps(content))
    return str(path)


def validate(runner, *args):
    return runner.invoke(cli, ["validate", *args], catch_exceptions=False)


def assert_one_error_line(result, *fragments):
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("mpitiny: error: ")
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def test_validate_ok(runner, tmp_path):
    path = write(tmp_path, {"name": "d", "tasks": [
        {"id": "a", "cmd": "true"},
        {"id": "f", "fn": "mpitiny.tasks:echo", "args": ["{i}"],
         "foreach": {"i": {"range": [1000]}}, "deps": ["a"]},
        {"id": "g", "fn": "mpitiny.tasks:echo", "foreach": {"i": {"range": [1000]}},
         "deps": ["f[{i}]"]}]})
    result = validate(runner, path)
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines == [f"{path}: ok: 2001 tasks in 3 entries (2 families), 2 dependency entries"]


@pytest.mark.parametrize("path", sorted(DAGS.glob("*.json")), ids=lambda p: p.name)
def test_validate_examples(runner, path):
    result = validate(runner, str(path), "--param", "out=/tmp/x") if path.name == "params.json" \
        else validate(runner, str(path))
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 1
    assert ": ok: " in result.stdout


def test_validate_params(runner, tmp_path):
    path = write(tmp_path, {"name": "d", "params": {"n": 3, "out": None},
                            "tasks": [{"id": "a", "cmd": "x {out}",
                                       "foreach": {"i": {"range": ["{n}"]}}}]})
    assert_one_error_line(validate(runner, path), f"{path}: params: parameter 'out' is required")
    result = validate(runner, path, "--param", "out=o", "-p", "n=10")
    assert result.exit_code == 0
    assert "ok: 10 tasks" in result.stdout
    assert_one_error_line(validate(runner, path, "-p", "out=o", "-p", "m=1"),
                          "declares no parameter 'm'")
    assert_one_error_line(validate(runner, path, "-p", "out"), "--param 'out': expected NAME=VALUE")
    assert_one_error_line(validate(runner, path, "-p", "out=o", "-p", "n=x"),
                          "range values must be integers, not a string 'x'")


@pytest.mark.parametrize("content, fragments", [
    (b"", ["the file is empty"]),
    (b"\xff\xfe\x00\x01garbage", ["not UTF-8"]),
    (b"\x00\x01\x02\x7f", ["not valid JSON"]),
    (b"{\"name\": \"x\", ", ["not valid JSON", "line 1"]),
    ({"name": "x", "tasks": [{"id": "a", "cmd": "x"}, {"id": "b", "cmd": "y", "deps": ["x"]}]},
     ["tasks[1] (id 'b'): deps: unknown task 'x'"]),
    ({"name": "x", "tasks": [{"id": "a", "cmd": "x", "deps": ["b"]},
                             {"id": "b", "cmd": "y", "deps": ["c"]},
                             {"id": "c", "cmd": "y", "deps": ["a"]}]},
     ["tasks[0] (id 'a'): deps: dependency cycle: a -> b -> c -> a"]),
    ({"name": "x", "tasks": [{"id": "a", "cmd": "x"}, {"id": "a", "cmd": "y"}]},
     ["duplicate id 'a'", "tasks[0]", "tasks[1]"]),
    ({"name": "x", "tasks": [{"id": "a", "fn": "no_such_module_abc:f"}]},
     ["tasks[0] (id 'a'): fn: no module named 'no_such_module_abc'"]),
    ({"name": "x", "tasks": [{"id": "a", "cmd": "x", "foreach": {"i": {"range": [10**30]}}}]},
     ["out of range"]),
    ('{"name": "x", "tasks": [{"id": "a", "fn": "mpitiny.tasks:sleep", "args": [1e400]}]}',
     ["1e400 is out of range"]),
    ({"name": "x", "tasks": [{"id": "a", "cmd": "x", "retry": 2}]},
     ["unknown key 'retry'"]),
    ({"name": "x", "tasks": [{"id": "a", "cmd": "x", "retries": -1}]},
     ["retries: must be an integer from 0 to 1000"]),
    ({"name": "x", "tasks": [{"id": "a", "cmd": "x", "timeout": "5s"}]},
     ["timeout: must be a number of seconds > 0"]),
    ({"name": "x", "tasks": [{"id": "s", "cmd": "x", "foreach": {"i": {"range": [3]}}},
                             {"id": "t", "cmd": "x", "foreach": {"i": {"range": [4]}},
                              "deps": ["s[{i}]"]}]},
     ["t[3] would wait for s[3], which does not exist"]),
    ({"name": "x", "tasks": [{"id": "a", "cmd": "x\nsecond line", "deps": ["a\nb"]}]},
     ["deps: 'a\\nb' is not a task id"]),
])
def test_validate_bad_file(runner, tmp_path, content, fragments):
    path = write(tmp_path, content)
    line = assert_one_error_line(validate(runner, path), *fragments)
    assert line.startswith(f"mpitiny: error: {path}")


def test_validate_missing_file(runner, tmp_path):
    path = str(tmp_path / "absent.json")
    assert_one_error_line(validate(runner, path), f"{path}: no such file")


def test_validate_directory(runner, tmp_path):
    # click itself refuses a directory (dir_okay=False) with its usage error, also status 2
    result = validate(runner, str(tmp_path))
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def test_validate_under_python_m(tmp_path):
    import subprocess
    import sys
    path = write(tmp_path, {"name": "x", "tasks": [{"id": "a", "cmd": "x", "deps": ["zz"]}]})
    proc = subprocess.run([sys.executable, "-m", "mpitiny", "validate", path],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == [
        f"mpitiny: error: {path}: tasks[0] (id 'a'): deps: unknown task 'zz'"]
