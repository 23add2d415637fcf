"""test_output_identity.py: every report format on the sample and the locked kernels gives the bytes pinned in
tests/data/output-digests.txt (a speed change must not change one byte; a change of output that is meant
regenerates the file with one command, which the failure message gives)."""

from __future__ import annotations

import importlib.machinery
import importlib.util

from .conftest import ROOT

DIGESTS = ROOT / "tests" / "data" / "output-digests.txt"
REGENERATE = "scripts/snapshot-outputs /tmp/outputs --write-digests tests/data/output-digests.txt"
# The locked-kernel runs checked here (the script checks all of them): the default report, the list, JSON and SARIF
# on 6.1, --returns, --platform native, --deep's FBT115 and call graph, 6.12, and a module tree across workers.
KERNEL_RUNS = ("v61-reference.text", "v61-reference.list", "v61-reference.json", "v61-reference.sarif",
               "v61-stats.text", "v61-returns.list", "v61-native.list", "v61-optprobe.list", "v612-reference.text",
               "v612-reference.list", "tree61.list")  # fmt: skip


def _script():
    loader = importlib.machinery.SourceFileLoader("snapshot_outputs", str(ROOT / "scripts" / "snapshot-outputs"))
    spec = importlib.util.spec_from_loader("snapshot_outputs", loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


def _check(names: list[str], runs: dict[str, list[str]]) -> None:
    snap = _script()
    pinned = snap.read_digests(DIGESTS)
    bad = []
    for name in names:
        got = snap.digest(*snap.output(runs[name]))
        if got != pinned.get(name):
            bad.append(f"  {name}: pinned {pinned.get(name)}\n  {' ' * len(name)}  got    {got}")
    assert not bad, (
        f"{len(bad)} of {len(names)} outputs differ from {DIGESTS.relative_to(ROOT)}:\n" + "\n".join(bad) +
        "\nTo see the bytes: scripts/snapshot-outputs /tmp/old on the commit before (or main), then "
        "scripts/snapshot-outputs /tmp/new --against /tmp/old here, and diff the files it names.\n"
        f"If the change of output is meant (a new rule, fact or column), regenerate the pins: {REGENERATE}"
    )


def test_sample_outputs_are_pinned():
    """All seven formats under the four shipped tables on the sample vmlinux, and its statistics."""
    runs = _script().sample_runs()
    assert len(runs) == 29
    _check(sorted(runs), runs)


def test_locked_kernel_outputs_are_pinned(vmlinux61, vmlinux612, image61):
    """The locked kernels' main runs (KERNEL_RUNS) give the pinned bytes."""
    runs = _script().runs(quick=False)
    _check(list(KERNEL_RUNS), runs)
