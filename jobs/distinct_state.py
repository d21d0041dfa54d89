"""Distinct words through the shared state store (jobs/distinct_state.json).

The first ``distinct`` job, kept as the example of ``mpitiny.state`` in a MapReduce (for
tests/test_state_exactly_once.py, which ran jobs/distinct.json to test the store): one
``put_if_absent`` per distinct word of a split and a serial ``finish`` do not scale to
millions of words; jobs/distinct.json (sorted runs, parallel merge) does.

Same tokenizer as wordcount (``bytes.split()``). ``map_split`` makes the set of its split's
words locally, then ``state.put_if_absent(word)`` for each: exactly one task in the whole run
inserts a given word (its return value counts what it inserted). ``finish`` lists
``state.items()`` (every rank's part of the store, read one-sidedly) and writes the words
sorted by bytes, one per line, to ``OUTPUT/distinct.txt``.
"""
from __future__ import annotations

import os
import time

from mpitiny import state
from mpitiny.io.commit import atomic_output
from mpitiny.io.splits import open_splits


def map_split(input: str, split: int) -> int:
    """Insert the split's distinct words into the store; how many were new to the run."""
    new = 0
    for word in set(open_splits(input).read(split).split()):
        new += state.put_if_absent(word, 1)
    return new


def finish(output: str, inputs: dict) -> dict:
    words = sorted(key for key, _ in state.items())
    path = os.path.join(output, "distinct.txt")
    with atomic_output(path) as f:
        f.write(b"".join(w + b"\n" for w in words))
    inserted = sum(inputs.values())
    if inserted != len(words):
        raise RuntimeError(f"{inserted} words inserted but {len(words)} in the store")
    return {"distinct": len(words), "output": path, "finished": time.time()}
