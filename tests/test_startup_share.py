"""Start-up reads once and shares (``mpitiny.engine.start.load_everywhere``, ``read_resumed``).

The ranks are played one after another in this process with a fake communicator whose
``bcast`` hands rank 0's value to the others: rank 1 is given a dag.json path that does not
exist, so it can only have its DAG from rank 0, and a module of task functions it must import.
"""
from __future__ import annotations

import json
import pickle
import sys

import pytest

from mpitiny.engine import start
from mpitiny.errors import BadInput


class FakeComm:
    """Rank ``rank`` of a run whose rank 0 already sent ``sent`` (when rank > 0)."""

    def __init__(self, rank: int, sent=None, errors=None) -> None:
        self.rank, self.sent, self.errors = rank, sent, errors
        self.bcasts: list = []
        self.barriers = 0

    def Get_rank(self) -> int:
        return self.rank

    def Get_size(self) -> int:
        return 2

    def bcast(self, value, root=0):
        if self.rank == root:
            self.bcasts.append(value)
            return value
        return self.sent

    def Barrier(self) -> None:
        self.barriers += 1

    def Ibarrier(self):
        self.barriers += 1
        return self

    def Test(self) -> bool:
        return True

    def Wait(self) -> None:
        pass

    def allgather(self, value):
        return [value] if self.errors is None else self.errors


MODULE = "def work(i):\n    return i * 2\n"


def write_dag(tmp_path, fn="shared_start_tasks:work") -> str:
    (tmp_path / "shared_start_tasks.py").write_text(MODULE)
    path = tmp_path / "dag.json"
    path.write_text(json.dumps({"name": "s", "tasks": [
        {"id": "w", "fn": fn, "args": ["{i}"], "foreach": {"i": {"range": [0, 10]}}}]}))
    return str(path)


def test_other_ranks_take_the_dag_from_rank_0_and_read_no_file(tmp_path, monkeypatch):
    path = write_dag(tmp_path)
    root = FakeComm(0)
    dag0 = start.load_everywhere(root, path, {})
    (sent,) = root.bcasts
    blob, added = sent
    assert isinstance(blob, bytes) and str(tmp_path) in added
    sys.modules.pop("shared_start_tasks", None)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in added])
    dag1 = start.load_everywhere(FakeComm(1, sent), str(tmp_path / "not-there.json"), {})
    assert dag1.total == dag0.total == 10 and dag1.name == "s"
    assert dag1.groups[0].function(4) == 8                  # imported on rank 1, by name
    assert str(tmp_path) in sys.path


def test_an_error_on_rank_0_is_raised_on_every_rank(tmp_path):
    path = write_dag(tmp_path, fn="shared_start_tasks:nope")
    root = FakeComm(0)
    with pytest.raises(BadInput) as on_root:
        start.load_everywhere(root, path, {})
    assert root.bcasts == [None]                           # nothing sent, the error gathered
    message = on_root.value.format()
    errors = [(on_root.value.exit_code, message)]
    with pytest.raises(BadInput) as on_other:
        start.load_everywhere(FakeComm(1, None, errors), str(tmp_path / "not-there.json"), {})
    assert on_other.value.format() == message and "nope" in message


def test_a_dag_that_cannot_be_pickled_is_loaded_by_every_rank(tmp_path, monkeypatch):
    path = write_dag(tmp_path)
    monkeypatch.setattr(start, "_pickled", lambda dag: None)
    root = FakeComm(0)
    start.load_everywhere(root, path, {})
    sent = root.bcasts[0]
    assert sent[0] is None
    dag1 = start.load_everywhere(FakeComm(1, sent), path, {})        # loads it itself
    assert dag1.total == 10
    with pytest.raises(BadInput):                                     # and reads the file
        start.load_everywhere(FakeComm(1, sent), str(tmp_path / "not-there.json"), {})


def test_a_rank_that_cannot_import_the_functions_says_so(tmp_path):
    path = write_dag(tmp_path)
    root = FakeComm(0)
    start.load_everywhere(root, path, {})
    blob, _ = root.bcasts[0]
    broken = blob.replace(b"shared_start_tasks", b"shared_start_taskX")
    _, error = start._unpickled(broken, path, 3)
    assert isinstance(error, BadInput)
    assert "rank 3" in error.format() and "could not import the task functions" in error.format()


def test_many_entries_are_loaded_by_every_rank(tmp_path, monkeypatch):
    path = write_dag(tmp_path)
    monkeypatch.setattr(start, "SHARED_DAG_GROUPS", 0)
    root = FakeComm(0)
    start.load_everywhere(root, path, {})
    assert root.bcasts[0][0] is None and root.barriers == 2      # before the bcast and the allgather


def test_the_journals_are_read_by_rank_0_only(monkeypatch):
    calls = []
    monkeypatch.setattr(start.jnl, "read_journals", lambda d, n: calls.append(d) or "resumed")
    assert start.read_resumed(FakeComm(0), "run", 5) == "resumed"
    assert start.read_resumed(FakeComm(1, "resumed"), "run", 5) == "resumed"
    assert calls == ["run"]
    assert pickle.loads(pickle.dumps(start.jnl.Resumed(3))).done.shape == (3,)
