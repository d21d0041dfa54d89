"""Integer expressions in element-wise dependency items: ``{t}-1``, ``{i}//2``, ``({i}+1)%{n}``.

An item of ``parent[item, ...]`` that holds a placeholder and anything besides it is an
expression over integer literals, the child's integer foreach variables (``{i}``) and integer
run parameters (``{n}``, replaced by their values when the file is loaded), with ``+``, ``-``
(also unary), ``*``, ``//``, ``%`` and parentheses, as in Python: ``*``, ``//`` and ``%``
bind tighter than ``+`` and ``-``, all are left-associative, ``//`` rounds down and ``%`` takes
the sign of its divisor. Nothing is passed to ``eval``: ``parse`` builds a tree of tuples,

- ``("n", value)``: an integer;
- ``("v", name)``: a foreach variable of the child;
- ``(op, left, right)``: ``op`` one of ``+ - * // %``;

with the parts that hold no variable folded to ``("n", value)``. ``evaluate`` computes a tree
for many child instances at once (int64 numpy arrays, one per variable). ``parse`` bounds every
node by interval arithmetic over the variables' ranges, so no value can leave int64
(``|value| < 2**62``, as ``range`` bounds): a tree that could is refused when loading.
"""
from __future__ import annotations

import re

import numpy as np

from mpitiny.dag.limits import RANGE_LIMIT, is_int

_TOKEN = re.compile(r"\s*(?:([0-9]+)|\{([A-Za-z_][A-Za-z0-9_]*)\}|(//|[-+*%()]))")
#: How deeply parentheses and unary minus may nest (an item is a short formula).
MAX_DEPTH = 32
MAX_LENGTH = 200


class ExprError(ValueError):
    """Why an item is not a valid expression (the message ends a load error)."""


def tokens(text: str) -> list:
    """``text`` as tokens: ``("n", int)``, ``("name", str)`` or ``("op", str)``."""
    out: list = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            bad = text[pos:].lstrip()[:1] or text[pos:pos + 1]
            raise ExprError(f"unexpected {bad!r} at position {pos}")
        number, name, op = m.groups()
        if number is not None:
            if len(number) > 19 or int(number) >= RANGE_LIMIT:
                raise ExprError(f"the integer {number} is out of range (|value| < 2**62)")
            out.append(("n", int(number)))
        elif name is not None:
            out.append(("name", name))
        else:
            out.append(("op", op))
        pos = m.end()
    return out


class _Parser:
    """Recursive descent over the tokens of one item (bounded depth)."""

    def __init__(self, toks: list, variables: dict, params: dict) -> None:
        self.toks = toks
        self.at = 0
        self.variables = variables        # name -> (lowest, highest) value
        self.params = params

    def peek(self) -> tuple | None:
        return self.toks[self.at] if self.at < len(self.toks) else None

    def take(self) -> tuple:
        tok = self.peek()
        if tok is None:
            raise ExprError("it ends too early")
        self.at += 1
        return tok

    def sum(self, depth: int) -> tuple:
        node = self.product(depth)
        while self.peek() in (("op", "+"), ("op", "-")):
            node = fold(self.take()[1], node, self.product(depth))
        return node

    def product(self, depth: int) -> tuple:
        node = self.unary(depth)
        while self.peek() in (("op", "*"), ("op", "//"), ("op", "%")):
            node = fold(self.take()[1], node, self.unary(depth))
        return node

    def unary(self, depth: int) -> tuple:
        if depth > MAX_DEPTH:
            raise ExprError(f"it nests deeper than {MAX_DEPTH} levels")
        if self.peek() == ("op", "-"):
            self.take()
            return fold("-", ("n", 0), self.unary(depth + 1))
        if self.peek() == ("op", "+"):
            self.take()
            return self.unary(depth + 1)
        return self.atom(depth)

    def atom(self, depth: int) -> tuple:
        kind, value = self.take()
        if kind == "n":
            return ("n", value)
        if kind == "name":
            return self.name(value)
        if value == "(":
            node = self.sum(depth + 1)
            if self.peek() != ("op", ")"):
                raise ExprError("a '(' is not closed")
            self.take()
            return node
        raise ExprError(f"unexpected {value!r}")

    def name(self, name: str) -> tuple:
        if name in self.variables:
            return ("v", name)
        if name in self.params:
            value = self.params[name]
            if not is_int(value):
                raise ExprError(f"parameter {name} is not an integer")
            return ("n", value)
        raise ExprError(f"{{{name}}} is neither an integer foreach variable of this task "
                        "nor a parameter")


def fold(op: str, left: tuple, right: tuple) -> tuple:
    """``(op, left, right)``, computed now if neither side holds a variable."""
    if op in ("//", "%") and right == ("n", 0):
        raise ExprError(f"{op} by zero")
    if left[0] == "n" and right[0] == "n":
        return ("n", int(_apply(op, left[1], right[1])))
    return (op, left, right)


def _apply(op: str, a, b):
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if op == "//":
        return a // b
    return a % b


def parse(text: str, variables: dict, params: dict) -> tuple:
    """The tree of the item ``text``. ``variables``: the child's integer foreach variables,
    name -> ``(lowest, highest)`` value; ``params``: the run parameters. Raises ``ExprError``
    for anything else, and for a tree whose values could leave ``|value| < 2**62``."""
    if len(text) > MAX_LENGTH:
        raise ExprError(f"it is longer than {MAX_LENGTH} characters")
    toks = tokens(text)
    if not toks:
        raise ExprError("it is empty")
    parser = _Parser(toks, variables, params)
    node = parser.sum(0)
    if parser.at != len(toks):
        raise ExprError(f"unexpected {toks[parser.at][1]!r} after a complete expression")
    lo, hi = bounds(node, variables)
    if not (-RANGE_LIMIT < lo and hi < RANGE_LIMIT):
        raise ExprError("its values could leave the range |value| < 2**62")
    return node


def bounds(node: tuple, variables: dict) -> tuple:
    """``(lowest, highest)`` value ``node`` can take (Python ints, exact); raises
    ``ExprError`` if a node on the way could leave ``|value| < 2**62``."""
    kind = node[0]
    if kind == "n":
        return node[1], node[1]
    if kind == "v":
        return variables[node[1]]
    a, b = bounds(node[1], variables), bounds(node[2], variables)
    if kind == "+":
        lo, hi = a[0] + b[0], a[1] + b[1]
    elif kind == "-":
        lo, hi = a[0] - b[1], a[1] - b[0]
    elif kind == "*":
        corners = [x * y for x in a for y in b]
        lo, hi = min(corners), max(corners)
    elif kind == "//":           # |a // b| <= |a| for |b| >= 1
        m = max(abs(a[0]), abs(a[1]))
        lo, hi = -m, m
    else:                        # |a % b| < |b|
        m = max(abs(b[0]), abs(b[1]))
        lo, hi = -m, m
    if not (-RANGE_LIMIT < lo and hi < RANGE_LIMIT):
        raise ExprError("its values could leave the range |value| < 2**62")
    return lo, hi


def names(node: tuple) -> set:
    """The variables ``node`` reads."""
    if node[0] == "n":
        return set()
    if node[0] == "v":
        return {node[1]}
    return names(node[1]) | names(node[2])


def evaluate(node: tuple, values: dict, n: int) -> np.ndarray:
    """``node`` for ``n`` child instances (int64); ``values``: variable -> int64 array. A
    ``//`` or ``%`` by zero gives 0 there (the loader refuses such files first:
    ``zero_divisor``)."""
    kind = node[0]
    if kind == "n":
        return np.full(n, node[1], dtype=np.int64)
    if kind == "v":
        return values[node[1]]
    a, b = evaluate(node[1], values, n), evaluate(node[2], values, n)
    if kind in ("//", "%"):
        safe = np.where(b == 0, 1, b)
        out = a // safe if kind == "//" else a % safe
        return np.where(b == 0, 0, out)
    return _apply(kind, a, b)


def zero_divisor(node: tuple, values: dict, n: int) -> np.ndarray:
    """Which of the ``n`` instances divide by zero somewhere in ``node`` (bool array)."""
    kind = node[0]
    if kind in ("n", "v"):
        return np.zeros(n, dtype=bool)
    bad = zero_divisor(node[1], values, n) | zero_divisor(node[2], values, n)
    if kind in ("//", "%"):
        bad |= evaluate(node[2], values, n) == 0
    return bad


def spell(node: tuple) -> str:
    """The tree written back as text (parenthesised where needed): ``{t}-1``."""
    kind = node[0]
    if kind == "n":
        return str(node[1])
    if kind == "v":
        return "{%s}" % node[1]
    left, right = spell(node[1]), spell(node[2])
    if kind in ("*", "//", "%"):
        if node[1][0] in ("+", "-"):
            left = f"({left})"
        if node[2][0] not in ("n", "v"):
            right = f"({right})"
    elif kind == "-" and node[2][0] in ("+", "-"):
        right = f"({right})"
    return f"{left}{kind}{right}"


__all__ = ["ExprError", "evaluate", "names", "parse", "spell", "zero_divisor"]
