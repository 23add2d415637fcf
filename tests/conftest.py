"""conftest.py: shared pytest fixtures: built fixture images and Debian kernels fetched into the cache."""

from __future__ import annotations

import os
import subprocess
import tomllib
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


LOCK = ROOT / "tests" / "kernels.lock"


def locked(kind: str) -> dict:
    """The entry of tests/kernels.lock for KIND: the exact package, version and release the pins were measured on."""
    with open(LOCK, "rb") as f:
        return tomllib.load(f)[kind]


def _fetch(kind: str) -> Path:
    """scripts/fetch-kernel KIND: the locked package, fetched once into the cache; its stderr shown if it fails."""
    if os.environ.get("FBT_AUDIT_NO_FETCH"):
        pytest.skip("FBT_AUDIT_NO_FETCH is set: Debian kernel packages are not fetched")
    proc = subprocess.run([str(ROOT / "scripts" / "fetch-kernel"), kind], capture_output=True, text=True)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        tail = "\n".join(lines[-30:])
        pytest.fail(f"scripts/fetch-kernel {kind} failed (exit {proc.returncode}): "
                    f"{lines[-1] if lines else 'no output'}\n{tail}", pytrace=False)
    return Path(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def vmlinux61() -> Path:
    """The locked 6.1 -dbg package's unstripped vmlinux (System.map-<release> beside it), cached outside git."""
    return _fetch("dbg-6.1")


@pytest.fixture(scope="session")
def vmlinux612() -> Path:
    """The locked 6.12 cloud -dbg package's unstripped vmlinux."""
    return _fetch("dbg-6.12")


@pytest.fixture(scope="session")
def image61() -> Path:
    """The locked, unpacked linux-image-<release>-unsigned package: vmlinuz, stub System.map, modules."""
    return _fetch("image-6.1")


@pytest.fixture(scope="session")
def image612() -> Path:
    """The locked, unpacked 6.12 amd64 image package: vmlinuz, stub System.map, .ko.xz modules."""
    return _fetch("image-6.12")


def pytest_addoption(parser):
    parser.addoption("--update-goldens", action="store_true", help="rewrite tests/golden/* from the current output")


@pytest.fixture
def update_goldens(request) -> bool:
    return request.config.getoption("--update-goldens")


def pytest_collection_modifyitems(config, items):
    """Tests marked `deep` need angr (the [deep] extra): .ci/run runs them in .venv-deep; elsewhere they skip."""
    import importlib.util

    if importlib.util.find_spec("angr") is not None:
        return
    skip = pytest.mark.skip(reason="needs angr: pip install -e '.[deep]' (.ci/run's .venv-deep)")
    for item in items:
        if "deep" in item.keywords:
            item.add_marker(skip)
