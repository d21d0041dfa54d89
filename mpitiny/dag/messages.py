"""How the dag.json loader words a problem: user values quoted on one line, JSON kind names,
and ``Reporter``, the base of the loader's passes, which puts the file name in every message.

Every message of the loader is one line, ``dag.json: tasks[3] (id 'b'): deps: unknown task
'x'``: ``Reporter.error`` builds that ``DagError`` from the message and the place in the file.
"""
from __future__ import annotations

import json
from typing import Any

from mpitiny.errors import DagError


def oneline(value: Any, limit: int = 200) -> str:
    """``str(value)`` with its whitespace runs collapsed to one space, cut at ``limit``."""
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def show(value: Any, limit: int = 80) -> str:
    """A user value quoted for a one-line message: strings as ``'x'``, others as JSON."""
    if isinstance(value, str):
        text = repr(value)
    else:
        try:
            text = json.dumps(value, ensure_ascii=False, sort_keys=True)
        except (TypeError, ValueError):
            text = repr(value)
    if len(text) > limit:
        text = text[:limit - 3] + "..."
    return text


def kind(value: Any) -> str:
    """What a JSON value is, as a message says it: ``"a string"``, ``"null"``, ``"a list"``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


class Reporter:
    """Base of the loader's passes: knows the file name that starts every message."""

    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, message: str, where: str | None = None) -> DagError:
        """The ``DagError`` to raise for ``message`` at ``where`` (``"tasks[3] (id 'b')"``)."""
        return DagError(message, where=f"{self.source}: {where}" if where else self.source)
