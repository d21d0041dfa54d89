"""Task functions for tests/test_engine_local.py (the in-process engine, ``run_local``).

Every function that takes ``log`` appends one line per call to that file (one ``O_APPEND``
write: ``TASK_ID ATTEMPT RANK``), so a test can count how often each task ran, in what order,
and on which simulated rank.
"""
import os
import zlib

import numpy as np

from mpitiny import Parts, state, with_batch

MOD = 1_000_003


def _log(log: str, tid: str) -> None:
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.write(fd, f"{tid} {os.environ.get('MPITINY_ATTEMPT')} "
                 f"{os.environ.get('MPITINY_RANK')}\n".encode())
    os.close(fd)


def tid_of(name: str, i) -> str:
    return name if i is None else f"{name}[{i}]"


def own_value(tid: str, v: int) -> int:
    """A task's own contribution: different for every instance (the test computes it too)."""
    return (v + zlib.crc32(tid.encode())) % MOD


# ---------------------------------------------------------------------- random DAGs
def leaf(name: str, i, v: int, log: str) -> int:
    tid = tid_of(name, i)
    _log(log, tid)
    return own_value(tid, v)


def reader(name: str, i, v: int, log: str, inputs: dict) -> int:
    """Its own value plus its parents' (commands give None), and a checksum of their ids."""
    tid = tid_of(name, i)
    _log(log, tid)
    return (own_value(tid, v) + inputs_sum(inputs)) % MOD


def inputs_sum(inputs: dict) -> int:
    total = 0
    for key, value in inputs.items():
        total += zlib.crc32(key.encode()) + (0 if value is None else int(value))
    return total


# ---------------------------------------------------------------------- failures, retries
class RankCrash(BaseException):
    """Not an ``Exception``: escapes the engine as a crashed rank would (the in-process
    stand-in for a task that kills its rank)."""


def flaky(i: int, log: str, succeed_at: int) -> int:
    """Fails until its attempt number reaches ``succeed_at``; returns the attempt."""
    _log(log, f"flaky[{i}]")
    attempt = int(os.environ["MPITINY_ATTEMPT"])
    if attempt < succeed_at:
        raise RuntimeError(f"attempt {attempt} of flaky[{i}] fails on purpose")
    return attempt


def misbehave(how: str, log: str = "") -> None:
    """hang, sys_exit, keyboard, raise, or poison (crashes its rank: in the engine's process
    by raising ``RankCrash``, in a child process by ``os._exit``)."""
    if log:
        _log(log, "bad")
    if how == "hang":
        import time
        time.sleep(60)
    elif how == "sys_exit":
        raise SystemExit(4)
    elif how == "keyboard":
        raise KeyboardInterrupt
    elif how == "raise":
        raise ValueError("bad")
    elif how == "poison":
        if os.environ.get("MPITINY_ATTEMPT") == "1":
            raise RankCrash("takes its rank down")
        os._exit(3)


def square(i: int, log: str) -> int:
    _log(log, f"sq[{i}]")
    return i * i


def parent_bytes() -> bytes:
    return b"P" * 4096


def child_of_bytes(i: int, log: str, inputs: dict) -> bytes:
    """Fails its first attempt (i == 0 only); checks it reads an intact parent value."""
    _log(log, f"c[{i}]")
    if inputs["p"] != b"P" * 4096:
        raise ValueError(f"c[{i}] read a parent value freed too early: {inputs['p'][:8]!r}")
    if i == 0 and os.environ.get("MPITINY_ATTEMPT") == "1":
        raise RuntimeError("the first attempt fails")
    return (b"C%d" % i) * 2048             # kept: may reuse a freed value's space


def count_inputs(inputs: dict) -> int:
    return len(inputs)


# ---------------------------------------------------------------------- data plane, state
def make_array(i: int, n: int) -> np.ndarray:
    return np.arange(i * n, (i + 1) * n, dtype=np.int64)


def make_bytes(i: int, n: int) -> bytes:
    return bytes([i % 256]) * n


def array_and_bytes_sum(i: int, inputs: dict) -> int:
    """Reads ``arr[i]`` (an array) and ``raw[i]`` (bytes): checks their types and contents."""
    arr, raw = inputs[f"arr[{i}]"], inputs[f"raw[{i}]"]
    if not isinstance(arr, np.ndarray) or not isinstance(raw, bytes):
        raise TypeError(f"got {type(arr).__name__} and {type(raw).__name__}")
    if raw != bytes([i % 256]) * len(raw):
        raise ValueError(f"raw[{i}] is damaged")
    return int(arr.sum()) + len(raw)


def arrays_total(inputs: dict) -> int:
    return int(sum(int(np.asarray(v).sum()) for v in inputs.values()))


def split_parts(i: int, nparts: int) -> Parts:
    """Part r: the bytes of ``i`` repeated r + 1 times (as 4-byte words)."""
    return Parts([np.full(r + 1, i, dtype=np.int32).tobytes() for r in range(nparts)])


def sum_part(r: int, inputs: dict) -> list:
    """Reads part r of every ``split_parts``: each is r + 1 words of its map's index."""
    out = []
    for key in sorted(inputs, key=lambda k: int(k[k.index("[") + 1:-1])):
        words = np.frombuffer(inputs[key], dtype=np.int32)
        if len(words) != r + 1:
            raise ValueError(f"{key}: part {r} has {len(words)} words")
        out.append(int(words.sum()))
    return out


def count_state(i: int, fail_every: int = 0) -> bool:
    """Counters and a first-come marker in the shared state store; with ``fail_every``, the
    first attempt of every such instance fails after its updates (a retry must not count
    them twice)."""
    state.add("hits", 1)
    state.add(f"sum{i % 5}", i)
    won = state.put_if_absent(f"first{i % 3}", i)
    if fail_every and i % fail_every == 0 and os.environ.get("MPITINY_ATTEMPT") == "1":
        raise RuntimeError(f"count[{i}] fails its first attempt after its updates")
    return won


def read_state(inputs: dict) -> dict:
    return {"hits": state.get("hits"),
            "sums": [state.get(f"sum{k}") for k in range(5)],
            "first": [state.get(f"first{k}") for k in range(3)],
            "won": sum(1 for v in inputs.values() if v)}


# ---------------------------------------------------------------------- batch forms
def _log_items(log: str, kind: str, items) -> None:
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.write(fd, (kind + " " + " ".join(map(str, items)) + "\n").encode())
    os.close(fd)


def squares_many(calls):
    """The chunk's sum of squares as the first value, zeros for the others (a combiner)."""
    items = [args[0] for args, kwargs in calls]
    log, bad = calls[0][1]["log"], calls[0][1].get("bad", -1)
    if bad in items:
        raise ValueError("item %d is in this batch" % bad)
    _log_items(log, "batch", items)
    return [sum(i * i for i in items)] + [0] * (len(items) - 1)


@with_batch(squares_many)
def batch_square(i, log, bad=-1):
    _log_items(log, "one", [i])
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
    _log_items(calls[0][1]["log"], "plus-batch", items)
    return [_plus(args[0], kwargs["inputs"]) for args, kwargs in calls]


@with_batch(plus_many)
def batch_plus(i, log, inputs):
    _log_items(log, "plus-one", [i])
    return _plus(i, inputs)


def plus_total(inputs):
    return sum(int(v.split(b":")[0]) for v in inputs.values())


def ident(v):
    return v
