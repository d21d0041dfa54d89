"""``mpitiny.futures._future.LightFuture``: the states, results, callbacks and waiting of a
``concurrent.futures.Future`` with its lock made on demand, side by side with CPython's own
``Future`` where the answer is the same; and the races its module docstring argues about, run
many times between threads that give the lock away before every line of the futures' code
(``yield_at_each_line``): the run and the cancel of one future never both win, every callback runs
exactly once, and every waiter wakes."""
from __future__ import annotations

import concurrent.futures as cf
import threading
import time

import pytest

from mpitiny.futures import _future
from mpitiny.futures._core import TaskFuture
from mpitiny.futures._future import LightFuture

KINDS = [cf.Future, LightFuture, TaskFuture]


@pytest.mark.parametrize("kind", KINDS)
def test_pending_cancelled_is_never_run(kind):
    f = kind()
    assert not f.done() and not f.running() and not f.cancelled()
    assert f.cancel() and f.cancel()
    assert f.cancelled() and f.done()
    assert f.set_running_or_notify_cancel() is False
    with pytest.raises(cf.CancelledError):
        f.result(timeout=0)
    with pytest.raises(cf.InvalidStateError):
        f.set_result(1)


@pytest.mark.parametrize("kind", KINDS)
def test_running_is_not_cancelled_and_calls_back_once(kind):
    f = kind()
    seen: list = []
    f.add_done_callback(lambda fut: seen.append(("before", fut.result())))
    assert f.set_running_or_notify_cancel() is True
    assert f.running() and not f.cancel() and not f.cancelled()
    with pytest.raises(RuntimeError):
        f.set_running_or_notify_cancel()
    with pytest.raises(cf.TimeoutError):
        f.result(timeout=0.01)
    f.set_result(42)
    f.add_done_callback(lambda fut: seen.append(("after", fut.result())))
    assert f.done() and not f.running() and f.result() == 42 and f.exception() is None
    assert seen == [("before", 42), ("after", 42)]
    with pytest.raises(cf.InvalidStateError):
        f.set_result(43)
    assert f.result() == 42 and "finished returned int" in repr(f)


@pytest.mark.parametrize("kind", KINDS)
def test_exception_and_pending_result(kind):
    f = kind()
    f.set_running_or_notify_cancel()
    f.set_exception(ValueError("bad"))
    with pytest.raises(ValueError, match="bad"):
        f.result()
    assert isinstance(f.exception(), ValueError) and f.done()
    g = kind()                      # a pending future may be given its result directly
    g.set_result("x")
    assert g.result() == "x" and not g.cancel()
    with pytest.raises(RuntimeError):
        g.set_running_or_notify_cancel()


@pytest.mark.parametrize("kind", KINDS)
def test_waiters_in_other_threads_wake(kind):
    fs = [kind() for _ in range(3)]
    got: dict = {}

    def wait_result():
        got["result"] = fs[0].result(timeout=30)

    def wait_first():
        got["first"] = cf.wait(fs[1:], timeout=30, return_when=cf.FIRST_COMPLETED)[0]

    def as_completed():
        got["order"] = [f.result() for f in cf.as_completed(fs, timeout=30)]

    threads = [threading.Thread(target=t) for t in (wait_result, wait_first, as_completed)]
    for t in threads:
        t.start()
    time.sleep(0.05)
    for k, f in enumerate(fs):
        f.set_running_or_notify_cancel()
        f.set_result(k)
    for t in threads:
        t.join(30)
    assert got["result"] == 0 and got["first"] == {fs[1]} or got["first"] == set(fs[1:])
    assert sorted(got["order"]) == [0, 1, 2]


def yield_at_each_line(frame, event, arg):
    """A tracer that gives the interpreter's lock away (``sleep(0)``) before every line of
    the futures' own code: the threads then interleave at any line of it."""
    if frame.f_code.co_filename not in TRACED:
        return None

    def line(frame, event, arg):
        if event == "line":
            time.sleep(0)
        return line
    return line


TRACED = {_future.__file__, cf._base.__file__}


@pytest.fixture
def fast_switches():
    threading.settrace(yield_at_each_line)
    yield
    threading.settrace(None)


@pytest.mark.parametrize("kind", [LightFuture, TaskFuture])
def test_run_cancel_wait_and_callbacks_race(kind, fast_switches):
    """Under ``yield_at_each_line``: one thread runs each future
    (``set_running_or_notify_cancel`` then ``set_result``), a second cancels it, a third
    adds a callback and waits for it, a fourth waits for its result: never both a run and a
    cancel, every callback once, every wait ends with the future done and every result is
    the future's. (A ``set_result`` that wrote the state without the lock failed here: a
    ``wait`` that held the lock read the state twice, saw it change between the two reads,
    counted no pending future and was never woken.)"""
    rounds = 1000
    both = calls_wrong = not_done = 0
    for k in range(rounds):
        f = kind()
        calls: list = []
        outcome: dict = {}
        start = threading.Barrier(4)

        def run(f=f, outcome=outcome, k=k, start=start):
            start.wait()
            outcome["ran"] = f.set_running_or_notify_cancel()
            if outcome["ran"]:
                f.set_result(k)

        def cancel(f=f, outcome=outcome, start=start):
            start.wait()
            outcome["cancelled"] = f.cancel()

        def watch(f=f, calls=calls, outcome=outcome, start=start):
            start.wait()
            f.add_done_callback(calls.append)
            outcome["done"] = bool(cf.wait([f], timeout=30).done)

        def result(f=f, outcome=outcome, start=start):
            start.wait()
            try:
                outcome["result"] = f.result(timeout=30)
            except cf.CancelledError:
                outcome["result"] = "cancelled"

        threads = [threading.Thread(target=t) for t in (watch, run, cancel, result)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        both += outcome["ran"] and outcome["cancelled"]
        calls_wrong += calls != [f]
        not_done += not outcome["done"]
        assert outcome["ran"] != f.cancelled()
        assert (f.result() == k) if outcome["ran"] else f.cancelled()
        assert outcome["result"] == (k if outcome["ran"] else "cancelled")
    assert (both, calls_wrong, not_done) == (0, 0, 0)
