"""The first step of loading a dag.json: its bytes to a JSON value, strictly.

Stricter than ``json.loads``, so that what a file says is what every rank runs: UTF-8 only (a
BOM is dropped), no NaN or Infinity, no number beyond a double, no duplicate keys in an
object, no unpaired UTF-16 surrogate escapes. Every problem is one ``DagError`` naming the
line or offset, never a traceback.
"""
from __future__ import annotations

import json
import math
import re
from typing import Any

from mpitiny.dag.messages import Reporter, oneline, show

_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class _Stop(Exception):
    """Raised inside the JSON parser's hooks; turned into a DagError by the reader."""

    def __init__(self, message: str, needle: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.needle = needle


def _parse_float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise _Stop(f"the number {literal} is out of range (larger than a double)", literal)
    return value


def _parse_constant(literal: str) -> None:
    raise _Stop(f"{literal} is not a JSON value (JSON has no NaN or Infinity)", literal)


_FUNCTIONS: dict = {}


def _unique_pairs(items: list) -> dict:
    """An object's key/value pairs as a dict; a key given twice stops the parse. The ``fn``
    strings, repeated by every task of a listing, are kept once (67 MB less for 10^6)."""
    obj = dict(items)
    fn = obj.get("fn")
    if fn.__class__ is str:
        obj["fn"] = _FUNCTIONS.setdefault(fn, fn)
    if len(obj) != len(items):
        seen: set = set()
        for key, _ in items:
            if key in seen:
                break
            seen.add(key)
        task_id = obj.get("id")
        inside = (f"the object with id {show(task_id)}" if isinstance(task_id, str)
                  else "a JSON object")
        raise _Stop(f"duplicate key {show(key)} in {inside}")
    return obj


class StrictJsonReader(Reporter):
    """Decodes and parses the text of one dag.json (``read``)."""

    def read(self, text: str | bytes) -> Any:
        """The JSON value of ``text`` (str, or bytes in UTF-8)."""
        return self.read_owned([text])

    def read_owned(self, box: list) -> Any:
        """``read`` of the one item of ``box``, taken out: nothing else keeps the text, so
        it is freed as soon as it is decoded and parsed."""
        text = self.decode(box.pop())
        data = self.parse(text)
        self.check_strings(text, data)
        return data

    def decode(self, text: str | bytes) -> str:
        """``text`` as a str without its BOM; not UTF-8, or empty, is a ``DagError``."""
        if isinstance(text, (bytes, bytearray, memoryview)):
            data = bytes(text)
            if data.startswith(b"\xef\xbb\xbf"):
                data = data[3:]
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as err:
                raise self.error(
                    f"not UTF-8 text: byte 0x{data[err.start]:02x} at offset {err.start} is "
                    "not valid UTF-8 (a dag.json must be JSON text in UTF-8)") from None
        elif isinstance(text, str):
            if text.startswith("\ufeff"):
                text = text[1:]
        else:
            raise TypeError(f"load_dag_text expects str or bytes, not {type(text).__name__}")
        if not text or text.isspace():
            raise self.error("the file is empty (expected a JSON object with 'name' and "
                             "'tasks')")
        return text

    def parse(self, text: str) -> Any:
        """``json.loads`` with the strict number and duplicate-key rules."""
        try:
            return json.loads(text, parse_float=_parse_float, parse_constant=_parse_constant,
                              object_pairs_hook=_unique_pairs)
        except json.JSONDecodeError as err:
            hint = " (the file looks binary)" if "\x00" in text[:4096] else ""
            raise self.error(f"not valid JSON: {err.msg} at line {err.lineno} column "
                             f"{err.colno}{hint}") from None
        except _Stop as stop:
            line = ""
            if stop.needle:
                at = text.find(stop.needle)
                if at >= 0:
                    line = f"line {text.count(chr(10), 0, at) + 1}: "
            raise self.error(line + stop.message) from None
        except ValueError as err:            # e.g. an integer with more than 4300 digits
            raise self.error(f"not valid JSON: {oneline(err)}") from None
        finally:
            _FUNCTIONS.clear()

    def check_strings(self, text: str, data: Any) -> None:
        """Reject lone surrogates (``"\\ud800"``): they cannot be encoded to UTF-8 later."""
        if _SURROGATE_ESCAPE.search(text) is None:
            return
        try:
            json.dumps(data, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise self.error("a string contains an unpaired UTF-16 surrogate escape "
                             "(\\ud800-\\udfff); strings must be valid Unicode") from None
