"""Build the optional compiled kernels (``mpitiny/kernels/*.c``, one extension module each).

Everything else is in pyproject.toml. Each kernel is optional: where no C compiler is found the
install still succeeds, and the code that uses a kernel falls back to its numpy form
(``mpitiny.kernels.load``).
"""
import glob
import os

from setuptools import Extension, setup

KERNELS = sorted(glob.glob(os.path.join("mpitiny", "kernels", "*.c")))

setup(ext_modules=[
    Extension(f"mpitiny.kernels.{os.path.splitext(os.path.basename(path))[0]}", [path],
              extra_compile_args=["-O3"], optional=True)
    for path in KERNELS
])
