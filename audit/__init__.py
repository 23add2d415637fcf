"""fbt_audit: static auditor and patch-safety linter for int3-based FBT probes on x86-64 Linux kernels."""

__version__ = "0.1.0"

import os as _os

# numpy (the entry pass's arrays) starts one OpenBLAS thread per core at import, half of its import time; the
# audit does no linear algebra. Set before anything imports numpy; a value the user set is kept.
_os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def data_bytes(package: str, *parts: str) -> bytes:
    """A data file shipped in an imported package's folder, read as a file; through importlib.resources where the
    package is no folder (a zip). By hand: importlib.resources imports tempfile, shutil, zipfile and the compressors
    (~35M instructions, a tenth of a plain vmlinux audit's Python work past numpy) to read two files."""
    import sys

    try:
        with open(_os.path.join(_os.path.dirname(sys.modules[package].__file__), *parts), "rb") as f:
            return f.read()
    except (OSError, KeyError, TypeError):  # not a file, the package not imported, no __file__
        from importlib import resources

        return resources.files(package).joinpath(*parts).read_bytes()
