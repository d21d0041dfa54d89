"""Task functions for tests/dags/local_fn.json (imported from the dag file's directory)."""


def square(i):
    return i * i


def total(inputs):
    """Receives {parent task id: return value} because it has a parameter named ``inputs``."""
    return sum(inputs.values())


class Scale:
    @staticmethod
    def apply(value, factor=1):
        return value * factor
