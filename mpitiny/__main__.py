"""``python -m mpitiny ...``: the same as the ``mpitiny`` console script."""
from mpitiny.cli import main

if __name__ == "__main__":
    main()
