"""Tasks that update the shared state store (tests/test_state_exactly_once.py)."""
from __future__ import annotations

import json
import os

from mpitiny import state


def bump(i: int, marker: str = "") -> int:
    """Add i to "total", count a run of this task, claim word i % 7; fail the first attempt
    of every fifth task (after updating the store) when ``marker`` names a directory."""
    state.add("total", i)
    state.add("calls", 1)
    new = int(state.put_if_absent(f"w{i % 7}", i))
    if marker and i % 5 == 0 and os.environ.get("MPITINY_ATTEMPT") == "1":
        raise RuntimeError(f"bump[{i}] fails its first attempt on purpose")
    return new


def report(output: str, inputs: dict) -> dict:
    """Write the store and the claims the bumps reported to ``output`` (JSON)."""
    items = {k.decode(): v for k, v in state.items()}
    claimed = sum(v for v in inputs.values())
    with open(output, "w") as f:
        json.dump({"items": items, "claimed": claimed}, f, sort_keys=True)
    return {"claimed": claimed}
