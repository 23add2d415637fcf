"""fbt_audit: static auditor and patch-safety linter for int3-based FBT probes on x86-64 Linux kernels."""

__version__ = "0.1.0"

import os as _os

# numpy (the entry pass's arrays) starts one OpenBLAS thread per core at import, half of its import time; the
# audit does no linear algebra. Set before anything imports numpy; a value the user set is kept.
_os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
