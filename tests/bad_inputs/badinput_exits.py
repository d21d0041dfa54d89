"""A module that calls sys.exit while it is imported (fn-import-exits.json names it)."""
import sys

sys.exit(3)


def run():
    return None
