"""mpitiny: run huge numbers of tiny tasks and DAGs on every rank of an MPI job."""
__version__ = "0.1.0"
