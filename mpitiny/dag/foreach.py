"""A dag.json entry's ``foreach``: its variables, checked, as ``Var`` objects (never expanded).

A variable's values are one of

- ``{"range": [start, stop, step]}`` (or ``[stop]``, ``[start, stop]``): kept as a ``range``,
  so a family of 10^6 instances costs what its bounds cost;
- a list of distinct strings, numbers or booleans (distinct also as they appear in task ids);
- ``{"split": "FILE.h5:/dataset"}`` (or ``"split": "FILE.h5:/dataset"`` for a variable named
  split): the split indices ``range(0, n)`` of an ingested dataset, n read from the file.

``{param}`` placeholders of run parameters are substituted in bounds, values and split paths.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from mpitiny.dag.limits import MAX_INSTANCES, RANGE_LIMIT, is_ident, is_int
from mpitiny.dag.messages import Reporter, kind, oneline, show
from mpitiny.dag.model import PLACEHOLDER, Var, format_value, substitute_params
from mpitiny.errors import BadInput


@dataclass(frozen=True)
class Foreach:
    """A parsed ``foreach``: the variables, the instance count, and for a split family the
    ``(absolute path, dataset)`` it iterates over and the name of its split variable."""

    variables: tuple = ()          # tuple[Var, ...]
    size: int = 1
    splits: tuple[str, str] | None = None
    split_var: str | None = None


def range_length(start: int, stop: int, step: int) -> int:
    """``len(range(start, stop, step))`` without OverflowError for huge ranges."""
    if step > 0:
        return max(0, (stop - start + step - 1) // step)
    return max(0, (start - stop - step - 1) // -step)


class ForeachParser(Reporter):
    """Checks and builds the variables of one entry's ``foreach`` (``parse``)."""

    def __init__(self, source: str, params: dict) -> None:
        super().__init__(source)
        self.params = params

    def parse(self, spec: Any, where: str) -> Foreach:
        """The variables of the ``foreach`` object ``spec`` of the entry at ``where``."""
        if not isinstance(spec, dict):
            raise self.error(f"foreach: must be an object of variable -> values, not "
                             f"{kind(spec)}", where)
        if not spec:
            raise self.error("foreach: is empty (give at least one variable, or drop "
                             "'foreach')", where)
        variables = []
        size = 1
        split: tuple | None = None       # (absolute path, dataset, variable name)
        for name, values in spec.items():
            if not is_ident(name):
                raise self.error(f"foreach: {show(name)} is not a valid variable name "
                                 "(letters, digits and _, not starting with a digit)", where)
            if name in self.params:
                raise self.error(f"foreach: variable {show(name)} has the name of a "
                                 "parameter; rename one of them", where)
            label = f"foreach {show(name)}"
            if isinstance(values, dict) and "split" in values and "range" not in values:
                var, split = self.parse_split(name, values, label, where, split)
            elif isinstance(values, str) and name == "split":
                var, split = self.parse_split(name, {"split": values}, label, where, split)
            elif isinstance(values, dict):
                var = self.parse_range(name, values, label, where)
            elif isinstance(values, list):
                var = self.parse_list(name, values, label, where)
            else:
                raise self.error(f"{label}: must be {{\"range\": [start, stop, step]}} or a "
                                 f"list of values (or {{\"split\": \"FILE.h5:/dataset\"}}), "
                                 f"not {kind(values)}", where)
            size *= len(var)
            if size >= MAX_INSTANCES:
                raise self.error(f"foreach: the family has too many instances (at least "
                                 f"{size}; the limit for a whole file is 2**31 - 2**20 = "
                                 f"{MAX_INSTANCES - 1})", where)
            variables.append(var)
        if split is None:
            return Foreach(tuple(variables), size)
        return Foreach(tuple(variables), size, splits=split[:2], split_var=split[2])

    def parse_split(self, name: str, spec: dict, label: str, where: str,
                    earlier: tuple | None) -> tuple:
        """A split variable: ``(Var(name, range(0, n)), (absolute path, dataset, name))``,
        n the number of splits of the ingested dataset (read from the file, ``mpitiny.io
        .splits``). ``earlier`` is the family's split variable so far (at most one)."""
        if list(spec) != ["split"]:
            extra = next(k for k in spec if k != "split")
            raise self.error(f"{label}: unknown key {show(extra)}; write "
                             "{\"split\": \"FILE.h5:/dataset\"}", where)
        if earlier is not None:
            raise self.error(f"{label}: a family can iterate over the splits of one dataset "
                             "only (it already has a split variable)", where)
        text = spec["split"]
        if isinstance(text, str) and self.params:
            text = substitute_params(text, self.params)
        if not isinstance(text, str) or not text:
            raise self.error(f"{label}: split must be a non-empty string \"FILE.h5\" or "
                             f"\"FILE.h5:/dataset\", not {kind(text)} {show(text)}", where)
        path, dataset, count = self.count_splits(text, label, where)
        if count == 0:
            raise self.error(f"{label}: split {show(text)}: the dataset has no splits (the "
                             "ingested input was empty)", where)
        if count >= MAX_INSTANCES:
            raise self.error(f"{label}: split {show(text)}: {count} splits (the limit for a "
                             f"whole file is 2**31 - 2**20 = {MAX_INSTANCES - 1})", where)
        return Var(name, range(0, count)), (os.path.abspath(path), dataset, name)

    def count_splits(self, text: str, label: str, where: str) -> tuple:
        """``(path, dataset, number of splits)`` of the split spec ``text``, read from the
        file (h5py is imported here, on demand: only split families need it)."""
        from mpitiny.io.splits import count_splits, parse_spec
        try:
            path, dataset = parse_spec(text)
            return path, dataset, count_splits(path, dataset)
        except BadInput as err:
            raise self.error(f"{label}: {err.format()}", where) from None
        except Exception as err:           # h5py raising something unexpected: still bad input
            raise self.error(f"{label}: split {show(text)}: cannot read it: "
                             f"{type(err).__name__}: {oneline(err)}", where) from None

    def parse_range(self, name: str, spec: dict, label: str, where: str) -> Var:
        """A ``{"range": [...]}`` variable; bounds may be ``"{param}"``."""
        if list(spec) != ["range"]:
            extra = next((k for k in spec if k != "range"), None)
            what = f"unknown key {show(extra)}" if extra is not None else "missing 'range'"
            raise self.error(f"{label}: {what}; write {{\"range\": [start, stop, step]}}",
                             where)
        bounds = spec["range"]
        if not isinstance(bounds, list) or not 1 <= len(bounds) <= 3:
            raise self.error(f"{label}: range must be a list [stop], [start, stop] or "
                             f"[start, stop, step], not {show(bounds)}", where)
        numbers = [self.range_bound(value, label, where) for value in bounds]
        if len(numbers) == 1:
            start, stop, step = 0, numbers[0], 1
        elif len(numbers) == 2:
            (start, stop), step = numbers, 1
        else:
            start, stop, step = numbers
        if step == 0:
            raise self.error(f"{label}: range step must not be 0", where)
        length = range_length(start, stop, step)
        if length == 0:
            raise self.error(f"{label}: range({start}, {stop}, {step}) is empty", where)
        if length >= MAX_INSTANCES:
            raise self.error(f"{label}: range({start}, {stop}, {step}) has {length} values "
                             f"(the limit for a whole file is 2**31 - 2**20 = "
                             f"{MAX_INSTANCES - 1})", where)
        return Var(name, range(start, stop, step))

    def range_bound(self, value: Any, label: str, where: str) -> int:
        """One bound or step of a range: an integer, or ``"{param}"`` holding one."""
        if isinstance(value, str):
            m = PLACEHOLDER.fullmatch(value)
            if m and m.group(1) in self.params:
                value = self.params[m.group(1)]
            elif m:
                raise self.error(f"{label}: range: {show(value)} is not a parameter of "
                                 "this file", where)
        if not is_int(value):
            raise self.error(f"{label}: range values must be integers, not {kind(value)} "
                             f"{show(value)}", where)
        if not -RANGE_LIMIT < value < RANGE_LIMIT:
            raise self.error(f"{label}: range value {value} is out of range "
                             "(|value| < 2**62)", where)
        return value

    def parse_list(self, name: str, values: list, label: str, where: str) -> Var:
        """A list variable: distinct strings, numbers or booleans."""
        if not values:
            raise self.error(f"{label}: the list of values is empty", where)
        if len(values) >= MAX_INSTANCES:
            raise self.error(f"{label}: too many values", where)
        if self.params:
            values = [substitute_params(v, self.params) if isinstance(v, str) else v
                      for v in values]
        spellings: dict = {}
        equal: dict = {}
        for k, value in enumerate(values):
            if isinstance(value, (list, dict)) or value is None:
                raise self.error(f"{label}: values must be strings, numbers or booleans, not "
                                 f"{kind(value)} {show(value)}", where)
            if is_int(value) and not -RANGE_LIMIT < value < RANGE_LIMIT:
                raise self.error(f"{label}: the integer {value} is out of range "
                                 "(|value| < 2**62)", where)
            key = ("b", value) if isinstance(value, bool) else (
                ("s", value) if isinstance(value, str) else ("n", value))
            spelling = format_value(value)
            other = equal.get(key)
            if other is not None:
                same = ("is listed twice" if type(values[other]) is type(value) else
                        f"equals {show(values[other])} (the same JSON number)")
            else:
                other = spellings.get(spelling)
                if other is not None:
                    same = f"and {show(values[other])} look the same in task ids"
            if other is not None:
                raise self.error(f"{label}: the value {show(value)} {same} (positions "
                                 f"{other} and {k}); values must be distinct", where)
            equal[key] = k
            spellings[spelling] = k
        return Var(name, tuple(values))
