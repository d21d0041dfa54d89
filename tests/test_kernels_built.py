"""The compiled kernels are built wherever a C compiler is (``setup.py`` builds them optional,
so a failed build would otherwise pass unnoticed and leave the jobs on their slower numpy
forms, with the kernels' own tests skipped)."""
import os
import shutil
import sysconfig

import pytest

from mpitiny.kernels import load

SOURCES = sorted(f[:-2] for f in os.listdir(os.path.join(os.path.dirname(__file__), "..",
                                                          "mpitiny", "kernels"))
                 if f.endswith(".c"))


@pytest.mark.skipif(shutil.which(sysconfig.get_config_var("CC").split()[0]) is None,
                    reason="no C compiler here: the kernels are optional")
@pytest.mark.skipif(os.environ.get("MPITINY_KERNELS") == "0", reason="kernels turned off")
@pytest.mark.parametrize("name", SOURCES)
def test_each_kernel_source_is_built(name):
    assert load(name) is not None, (
        f"mpitiny/kernels/{name}.c is not built: run `pip install -e .` again (or "
        "`python setup.py build_ext --inplace`) and read the compiler's messages")
