"""conftest.py: the real kernels, loaded once per test session for every kernel test module."""

from __future__ import annotations

import pytest

from fbt_audit import api


@pytest.fixture(scope="session")
def k61(vmlinux61):
    return api.load_kernel(vmlinux61)


@pytest.fixture(scope="session")
def k612(vmlinux612):
    return api.load_kernel(vmlinux612)
