"""conftest.py: the real kernels, loaded once per test session for every kernel test module.

Each is the build tests/kernels.lock pins: the exact-symbol and exact-count pins of these tests were
measured on it, so a kernel of another release is a failure here, not a reason to relax a pin."""

from __future__ import annotations

import pytest
from conftest import locked

from fbt_audit.pipeline import api


@pytest.fixture(scope="session")
def k61(vmlinux61):
    k = api.load_kernel(vmlinux61)
    assert k.release == locked("dbg-6.1")["release"]
    return k


@pytest.fixture(scope="session")
def k612(vmlinux612):
    k = api.load_kernel(vmlinux612)
    assert k.release == locked("dbg-6.12")["release"]
    return k
