"""conftest.py: shared pytest fixtures: built fixture images and Debian kernels fetched into the cache."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build" / "fixtures"
SAMPLE = ROOT / "fixtures" / "sample" / "vmlinux-sample"


@pytest.fixture(scope="session")
def fixtures_built() -> Path:
    """Build every fixture from its .S source into build/fixtures (never into the tree)."""
    subprocess.run(["make", "-s", "-C", str(ROOT / "fixtures"), f"OUT={BUILD}", "all"], check=True)
    return BUILD


def _fetch(kind: str) -> Path:
    if os.environ.get("FBT_AUDIT_NO_FETCH"):
        pytest.skip("FBT_AUDIT_NO_FETCH is set: Debian kernel packages are not fetched")
    out = subprocess.run([str(ROOT / "scripts" / "fetch-kernel"), kind], check=True, capture_output=True, text=True)
    return Path(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def vmlinux61() -> Path:
    """Unstripped vmlinux of bookworm's current 6.1 kernel (the -dbg package), cached outside git."""
    return _fetch("dbg-6.1")


@pytest.fixture(scope="session")
def vmlinux612() -> Path:
    """Unstripped vmlinux of bookworm's current 6.12 kernel, cloud flavour."""
    return _fetch("dbg-6.12")


@pytest.fixture(scope="session")
def image61() -> Path:
    """The unpacked linux-image-<abi>-unsigned package: vmlinuz, System.map and modules."""
    return _fetch("image-6.1")


@pytest.fixture(scope="session")
def image612() -> Path:
    """The unpacked 6.12 amd64 image package: vmlinuz, System.map and .ko.xz modules."""
    return _fetch("image-6.12")


def pytest_addoption(parser):
    parser.addoption("--update-goldens", action="store_true", help="rewrite tests/golden/* from the current output")


@pytest.fixture
def update_goldens(request) -> bool:
    return request.config.getoption("--update-goldens")
