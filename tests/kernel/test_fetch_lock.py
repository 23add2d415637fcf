"""test_fetch_lock.py: scripts/fetch-kernel fetches exactly what tests/kernels.lock says, or says why not."""

from __future__ import annotations

import os
import re
import subprocess
import tomllib

import pytest
from conftest import LOCK, ROOT, locked

pytestmark = pytest.mark.kernel
FETCH = ROOT / "scripts" / "fetch-kernel"


def fetch(*args: str, lock=LOCK, cache=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "FBT_AUDIT_LOCK": str(lock)}
    if cache is not None:
        env["FBT_AUDIT_CACHE"] = str(cache)
    return subprocess.run([str(FETCH), *args], capture_output=True, text=True, env=env, timeout=600)


def edited_lock(tmp_path, kind: str, **changes: str):
    """A copy of the lock with KIND's fields changed."""
    text = LOCK.read_text()
    section = re.search(rf'^\["{re.escape(kind)}"\]\n(?:.+\n)+', text, re.M).group(0)
    new = section
    for key, value in changes.items():
        new = re.sub(rf'^{key} = "[^"]*"$', f'{key} = "{value}"', new, flags=re.M)
    out = tmp_path / "kernels.lock"
    out.write_text(text.replace(section, new))
    return out


def test_lock_pins_every_kind_the_tests_fetch():
    with open(LOCK, "rb") as f:
        lock = tomllib.load(f)
    assert set(lock) == {"dbg-6.1", "image-6.1", "headers-6.1", "headers-common-6.1", "dbg-6.12", "image-6.12",
                         "headers-6.12", "headers-common-6.12", "headers-kbuild-6.12"}
    for kind, e in lock.items():
        assert re.fullmatch(r"[0-9a-f]{64}", e["sha256"]), kind
        assert e["package"].startswith(("linux-image-", "linux-headers-", "linux-kbuild-")) and e["version"], kind
        assert e["release"] in e["package"] or kind.startswith(("headers-common", "headers-kbuild")), kind
    # the oracle builds kmod/oracle/ for the image-6.12 build (scripts/unpack-headers 6.12): the same build
    for kind in ("headers-6.12", "headers-common-6.12", "headers-kbuild-6.12"):
        assert (lock[kind]["release"], lock[kind]["version"]) == (lock["image-6.12"]["release"],
                                                                  lock["image-6.12"]["version"]), kind
    # the -dbg and -unsigned builds of 6.1 are one build; the pins of tests/kernel/ were measured on these
    assert lock["dbg-6.1"]["release"] == lock["image-6.1"]["release"] == lock["headers-6.1"]["release"]
    assert lock["dbg-6.1"]["version"] == lock["image-6.1"]["version"] == lock["headers-6.1"]["version"]
    # every conftest fixture fetches a locked kind
    conftest = (ROOT / "tests" / "conftest.py").read_text()
    assert set(re.findall(r'_fetch\("([^"]+)"\)', conftest)) == {"dbg-6.1", "dbg-6.12", "image-6.1", "image-6.12"}


def test_no_test_calls_apt():
    """System packages are declared in the README and installed by .ci/run, never by a test."""
    needles = ("apt" + "-get", "apt" + " install", "dpkg" + " -i")  # spelled apart so that this file passes too
    offenders = [str(p) for p in (ROOT / "tests").rglob("*") if p.is_file() and p.suffix in (".py", ".sh", "")
                 and any(n in p.read_text(errors="replace") for n in needles)]  # fmt: skip
    assert offenders == []


def test_release_of_a_kind_needs_no_network(tmp_path):
    proc = fetch("--release", "dbg-6.1", cache=tmp_path / "empty")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, locked("dbg-6.1")["release"] + "\n", "")
    assert not (tmp_path / "empty").exists() or not any((tmp_path / "empty").iterdir())


def test_a_wrong_hash_fails_in_one_clear_line(tmp_path):
    bad = "0" * 64
    want = locked("headers-6.1")
    proc = fetch("--deb", "headers-6.1", lock=edited_lock(tmp_path, "headers-6.1", sha256=bad), cache=tmp_path / "c")
    assert proc.returncode == 2 and proc.stdout == ""
    last = proc.stderr.strip().splitlines()[-1]
    assert last == (f"fetch-kernel: {want['package']} {want['version']}: the lock {tmp_path / 'kernels.lock'} says "
                    f"sha256 {bad}, the archive lists {want['sha256']}; fix the lock (scripts/fetch-kernel "
                    "--update-lock) or the archive mirror")  # fmt: skip
    assert not list((tmp_path / "c" / "debs").glob("*.deb"))


def test_a_build_that_left_the_archive_names_update_lock(tmp_path):
    proc = fetch("--deb", "headers-6.1", lock=edited_lock(tmp_path, "headers-6.1", version="6.1.0-0"),
                 cache=tmp_path / "c")  # fmt: skip
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"fetch-kernel: {locked('headers-6.1')['package']} 6.1.0-0 is no longer in the archive "
                           f"(builds there now: ")  # fmt: skip
    assert last.endswith("move the corpus deliberately with `scripts/fetch-kernel --update-lock` and re-measure "
                         "the pins")  # fmt: skip


def test_the_locked_deb_is_fetched_and_verified(tmp_path):
    """Stale or absent lists are no obstacle: the script keeps its own lists, refreshed when they lack the build."""
    want = locked("headers-6.1")
    proc = fetch("--deb", "headers-6.1", cache=tmp_path / "c")
    assert proc.returncode == 0, proc.stderr
    deb = proc.stdout.strip()
    assert deb == str(tmp_path / "c" / "debs" / f"{want['package']}_{want['version']}_amd64.deb")
    import hashlib

    assert hashlib.sha256(open(deb, "rb").read()).hexdigest() == want["sha256"]
    assert "refreshing the package lists" in proc.stderr
    again = fetch("--deb", "headers-6.1", cache=tmp_path / "c")  # cached: no apt at all
    assert (again.returncode, again.stdout, again.stderr) == (0, proc.stdout, "")


def test_unknown_kind_is_one_line(tmp_path):
    proc = fetch("dbg-9.9", cache=tmp_path / "c")
    assert proc.returncode == 2
    assert proc.stderr.startswith("fetch-kernel: unknown kind 'dbg-9.9' (the lock ") and proc.stderr.count("\n") == 1
