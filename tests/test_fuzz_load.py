"""Fuzzing the dag.json loader: whatever the input, ``load_dag_text`` returns a DAG or raises
``BadInput`` with a one-line message; never another exception, never a hang.

Inputs: random JSON-ish documents (shaped like dag.json files, and arbitrary JSON), random
mutations of the valid DAGs of the repository (tests/dags/*.json, jobs/*.json: values replaced,
keys dropped or added, tasks duplicated, then sometimes the text cut or a byte changed), and
random bytes. Hypothesis runs derandomized (the same examples on every run) with a bounded
number of examples; each example has a hard time limit (SIGALRM), so a hang fails the test.
"""
from __future__ import annotations

import copy
import json
import signal
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mpitiny.dag.load import TASK_KEYS, TOP_KEYS, load_dag, load_dag_text
from mpitiny.dag.model import DAG
from mpitiny.errors import BadInput

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_SECONDS = 20          # one load taking longer than this counts as a hang

FUZZ = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])


def _bases() -> list:
    """(path, document) of every valid-looking DAG of the repository; documents whose
    required parameters (default null) get a value, so that loading goes past ``params``."""
    found = []
    for path in sorted([*ROOT.glob("tests/dags/*.json"), *ROOT.glob("jobs/*.json")]):
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):       # a job being edited: not a base
            continue
        if not isinstance(doc, dict):
            continue
        found.append((path, doc))
        params = doc.get("params")
        if isinstance(params, dict) and None in params.values():
            filled = copy.deepcopy(doc)
            filled["params"] = {k: ("missing-input.h5" if v is None else v)
                                for k, v in params.items()}
            found.append((path, filled))
    return found


BASES = _bases()


class Hang(Exception):
    pass


@contextmanager
def time_limit(seconds: int):
    def alarm(signum, frame):
        raise Hang(f"the loader ran for more than {seconds} s")
    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def check_load(text, source: str = "fuzz.json", base_dir: str | None = None,
               params: dict | None = None) -> None:
    """The property: a DAG, or BadInput with a one-line message naming the source."""
    with time_limit(EXAMPLE_SECONDS):
        try:
            dag = load_dag_text(text, source=source, params=params, base_dir=base_dir)
        except BadInput as err:
            message = err.format()
            assert message.startswith(source), message[:500]
            assert "\n" not in message and "\r" not in message, message[:500]
            assert len(message) < 2000, message[:500]
            return
    assert isinstance(dag, DAG)
    assert dag.total >= 1 and len(dag.groups) >= 1


# ------------------------------------------------------------------------------- strategies

_STRINGS = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["a", "b", "c", "sq", "{i}", "{j}", "{n}", "{input}", "a[{i}]", "sq[{i}]",
                     "sq[1]", "sq[{i},{j}]", "b[", "x]", "mpitiny.tasks:echo", "mpitiny.tasks:null",
                     "mpitiny.tasks", "math:pi", "math:sqrt", "no_such_mod_zz:f", ":", "echo {i}",
                     "missing.h5", "missing.h5:/text", "", " ", "a b", "x" * 300, "..", "/",
                     "\x00", "\u2028", "\ufeff"]),
)
_NUMBERS = st.one_of(
    st.integers(-5, 20),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([2**31, 2**62, -(2**62), 2**63, 10**30, 2**31 - 2**20]),
    st.floats(allow_nan=False, allow_infinity=False),
)
SCALARS = st.one_of(st.none(), st.booleans(), _NUMBERS, _STRINGS)
KEYS = st.one_of(st.sampled_from([*TOP_KEYS, *TASK_KEYS, "range", "split", "i", "j", "n"]),
                 st.text(max_size=6))
JSON = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=5), st.dictionaries(KEYS, inner, max_size=5)), max_leaves=25)

# Mostly well-formed pieces (so that many documents get as far as deps, cycles and fn
# imports), now and then a wrong one.
def _mostly(good, bad):
    return st.integers(0, 4).flatmap(lambda k: bad if k == 4 else good)


IDS = _mostly(st.sampled_from(["a", "b", "c", "sq", "grid"]),
              st.sampled_from(["a b", "", "x[1]", "é", "a,b"]))
RANGES = _mostly(st.lists(st.integers(-3, 12), min_size=1, max_size=3),
                 st.lists(st.one_of(_NUMBERS, st.just("{n}"), st.just("{m}")), max_size=4)
                 ).map(lambda r: {"range": r})
VALUES = _mostly(st.one_of(RANGES, st.lists(st.integers(0, 5) | st.sampled_from(["x", "y"]),
                                            min_size=1, max_size=4)),
                 st.one_of(st.lists(SCALARS, max_size=4), st.just({"split": "missing.h5"}),
                           JSON))
DEPS = st.lists(st.one_of(IDS, st.sampled_from(["sq[{i}]", "grid[{i},{j}]", "a[1]", "sq[3]",
                                                "grid[{j},x]", "sq[]", "sq[{k}]", "b[{n}]"]),
                          _STRINGS), max_size=4)


@st.composite
def tasks(draw):
    task = {"id": draw(IDS)}
    if draw(st.booleans()):
        task["cmd"] = draw(st.one_of(st.just("true"), _STRINGS))
    else:
        task["fn"] = draw(st.sampled_from(["mpitiny.tasks:echo", "mpitiny.tasks:null",
                                           "mpitiny.tasks:sleep", "math:pi", "nomod_zz:f",
                                           "mpitiny.tasks:nope", "bad"]))
        if draw(st.booleans()):
            task["args"] = draw(st.lists(SCALARS, max_size=3))
        if draw(st.booleans()):
            task["kwargs"] = draw(st.dictionaries(KEYS, SCALARS, max_size=2))
    if draw(st.booleans()):
        task["foreach"] = draw(st.dictionaries(
            _mostly(st.sampled_from(["i", "j"]), st.sampled_from(["k", "n", "1x", ""])),
            VALUES, min_size=1, max_size=2))
    if draw(st.booleans()):
        task["deps"] = draw(DEPS)
    for key in ("priority", "rank", "description"):
        if draw(st.integers(0, 4)) == 4:
            task[key] = draw(_mostly(st.one_of(st.integers(0, 5), st.just("{i}")),
                                     st.one_of(_NUMBERS, _STRINGS)))
    if draw(st.integers(0, 19)) == 19:
        task[draw(KEYS)] = draw(JSON)
    return task


@st.composite
def dag_documents(draw):
    doc = {"name": draw(_mostly(st.just("fuzz"), st.one_of(_STRINGS, SCALARS))),
           "tasks": draw(_mostly(st.lists(tasks(), min_size=1, max_size=6),
                                 st.one_of(st.just([]), JSON)))}
    if draw(st.booleans()):
        doc["params"] = draw(st.dictionaries(
            _mostly(st.sampled_from(["n", "input"]), st.sampled_from(["i", "2x"])),
            _mostly(st.integers(1, 6), SCALARS), max_size=2))
    if draw(st.integers(0, 19)) == 19:
        doc[draw(KEYS)] = draw(JSON)
    return doc


def _paths(value, prefix=()):
    """Every position in a JSON document, as a tuple of keys/indices."""
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(value, list):
        for k, v in enumerate(value):
            yield from _paths(v, prefix + (k,))


def _mutate(doc, data) -> object:
    paths = list(_paths(doc))
    path = data.draw(st.sampled_from(paths), label="path")
    op = data.draw(st.sampled_from(["replace", "delete", "insert", "duplicate", "scalar"]),
                   label="op")
    if not path:
        return data.draw(JSON, label="new document") if op == "replace" else doc
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    last = path[-1]
    if op in ("replace", "scalar"):
        parent[last] = data.draw(JSON if op == "replace" else SCALARS, label="value")
    elif op == "delete":
        del parent[last]
    elif op == "insert":
        if isinstance(parent, list):
            parent.insert(last, data.draw(JSON, label="inserted"))
        else:
            parent[data.draw(KEYS, label="key")] = data.draw(JSON, label="inserted")
    elif op == "duplicate" and isinstance(parent, list):
        parent.append(copy.deepcopy(parent[last]))
    return doc


# ------------------------------------------------------------------------------------ tests

@FUZZ
@given(doc=dag_documents())
def test_fuzz_dag_shaped_documents(doc):
    check_load(json.dumps(doc))


@FUZZ
@given(doc=JSON, as_bytes=st.booleans())
def test_fuzz_arbitrary_json(doc, as_bytes):
    text = json.dumps(doc, ensure_ascii=False)
    check_load(text.encode("utf-8", "surrogatepass") if as_bytes else text)


@pytest.mark.skipif(not BASES, reason="no valid DAG files found")
@FUZZ
@given(data=st.data())
def test_fuzz_mutated_valid_dags(data):
    path, base = data.draw(st.sampled_from(BASES), label="base")
    doc = copy.deepcopy(base)
    for _ in range(data.draw(st.integers(1, 4), label="mutations")):
        doc = _mutate(doc, data)
    raw = json.dumps(doc, indent=data.draw(st.sampled_from([None, 1]), label="indent")).encode()
    how = data.draw(st.sampled_from(["as is", "as is", "cut", "byte", "insert"]), label="bytes")
    if how == "cut" and raw:
        raw = raw[:data.draw(st.integers(0, len(raw) - 1), label="cut at")]
    elif how in ("byte", "insert") and raw:
        at = data.draw(st.integers(0, len(raw) - 1), label="at")
        byte = bytes([data.draw(st.integers(0, 255), label="byte value")])
        raw = raw[:at] + byte + raw[at + (how == "byte"):]
    params = None
    if data.draw(st.integers(0, 4), label="with params") == 0:
        params = data.draw(st.dictionaries(st.sampled_from(["n", "input", "out", "zz", ""]),
                                           SCALARS, max_size=2), label="params")
    check_load(raw, source=str(path), base_dir=str(path.parent), params=params)


@FUZZ
@given(raw=st.one_of(st.binary(max_size=300),
                     st.binary(max_size=100).map(lambda b: b"\xef\xbb\xbf" + b),
                     st.binary(max_size=100).map(lambda b: b'{"name": "x", "tasks": [' + b)))
def test_fuzz_random_bytes(raw):
    check_load(raw)


def test_valid_bases_still_load():
    """The unmutated bases load (or fail only on their missing input file)."""
    for path, doc in BASES:
        with time_limit(EXAMPLE_SECONDS):
            try:
                load_dag_text(json.dumps(doc), source=str(path), base_dir=str(path.parent))
            except BadInput as err:
                assert "required" in err.message or "missing-input.h5" in err.message, err


def test_load_dag_on_files(tmp_path):
    """``load_dag`` (the file reader in front of the same loader) on odd paths."""
    for path in (tmp_path, tmp_path / "nope.json", str(tmp_path / "a\x00b"), b"/nonexistent"):
        with pytest.raises(BadInput) as err:
            load_dag(path)
        assert "\n" not in err.value.format()
