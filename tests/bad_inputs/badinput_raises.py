"""A module that fails while it is imported (fn-import-raises.json names it)."""

RATIO = 1 / 0


def run():
    return RATIO
