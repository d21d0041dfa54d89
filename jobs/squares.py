"""The README's quick-start example: square numbers, check each square, report."""


def square(i: int) -> int:
    return i * i


def check(i: int, inputs: dict) -> bool:
    """``inputs`` holds the parent's value: ``{"sq[i]": i*i}``."""
    (value,) = inputs.values()
    if value != i * i:
        raise ValueError(f"square of {i} came back as {value}")
    return None
