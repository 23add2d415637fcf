"""test_verify_kernel.py: fbt-audit verify boots the locked 6.1 kernel under QEMU: the seed pair and 300 safe probes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import locked

from fbt_audit.cli.main import run
from fbt_audit.verify import initramfs

pytestmark = pytest.mark.kernel
SEED = "kernel:this_cpu_cmpxchg16b_emu:entry"


@pytest.fixture(scope="module")
def release(image61, vmlinux61) -> str:
    """The locked 6.1 release, with its image and -dbg packages fetched, QEMU, busybox and headers present."""
    missing = initramfs.have_tools()
    if missing:
        pytest.fail(f"fbt-audit verify needs QEMU and busybox: {missing}", pytrace=False)
    entry = locked("headers-6.1")
    if not Path(f"/lib/modules/{entry['release']}/build/Makefile").is_file():
        pytest.fail(f"install {entry['package']} (scripts/install-headers): verify builds kmod/", pytrace=False)
    for tool in ("make", "gcc"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: verify builds kmod/", pytrace=False)
    return entry["release"]


def verify(tmp_path: Path, *args: str) -> tuple[int, dict]:
    out = tmp_path / "report.json"
    code = run(["verify", *args, "--workdir", str(tmp_path / "work"), "--format", "json", "-o", str(out),
                "--timeout", "300"])
    assert out.exists(), f"verify exited {code} without a report"
    return code, json.loads(out.read_text())


def test_seed_legacy_2011_leaves_interrupts_off(release, tmp_path):
    code, r = verify(tmp_path, release, "--table", "legacy-2011", "--only", "this_cpu_cmpxchg16b_emu",
                     "--cpu", "qemu64,-cx16", "--rounds", "2")
    assert code == 1 and r["complaint"] and r["table"] == "legacy-2011"
    assert [(p["name"], p["verdict"], p["armed"], p["handling"]) for p in r["probes"]] == [
        (SEED, "unsafe", True, "step")]
    assert r["boots"][0]["hits_collected"] is False  # oops=panic: the guest never saved them
    events = [(e["kind"], e["title"]) for e in r["events"]]
    # The TF-stepped PUSHF pushes TF set and IF clear; the POPF at the end of this_cpu_cmpxchg16b_emu
    # restores them: first a single-step trap nobody owns, then the kernel running with IRQs off.
    assert events[0] == ("warning", "WARNING: CPU: 0 PID: 1 at arch/x86/kernel/traps.c:1089 exc_debug+0x101/0x1a0")
    assert r["events"][0]["probes"] == [SEED]
    assert "RIP: 0010:this_cpu_cmpxchg16b_emu+0x1b/0x30" in r["events"][0]["lines"]
    irq = [e for e in r["events"] if e["kind"] == "irq-state"]
    assert irq and irq[0]["title"] == "kernel BUG at arch/x86/mm/pat/set_memory.c:368!"
    assert irq[0]["check"].startswith("BUG_ON(irqs_disabled()")


def test_seed_reference_runs_clean(release, tmp_path):
    code, r = verify(tmp_path, release, "--table", "reference", "--only", "this_cpu_cmpxchg16b_emu",
                     "--cpu", "qemu64,-cx16", "--rounds", "2")
    assert code == 0 and not r["complaint"] and r["events"] == []
    (p,) = r["probes"]
    assert (p["name"], p["verdict"], p["armed"], p["handling"], p["entry"]) == (SEED, "safe", True, "emulate", "pushf")
    assert p["hits"] > 1000
    assert r["boots"][0]["guest_marks"]["done"] > 0


def test_sample_of_300_safe_probes_runs_clean(release, tmp_path):
    code, r = verify(tmp_path, release, "--sample", "300", "--seed", "12", "--rounds", "2")
    assert code == 0 and r["events"] == []
    s = r["summary"]
    assert s["selected"] == 300 and s["armed"] == 300 and s["probes_hit"] > 0
    assert {p["handling"] for p in r["probes"]} >= {"ftrace", "step"}
    assert all(p["verdict"] == "safe" for p in r["probes"])


def test_module_never_arms_text_ftrace_copies(release, tmp_path):
    # Forced: the module itself refuses the trampoline templates, and the ftrace probe beside them (whose
    # ftrace_ops gets a dynamic trampoline copied from ftrace_regs_caller) runs clean.
    code, r = verify(tmp_path, release, "--only", "ftrace_caller,ftrace_regs_caller", "--only", "vfs_read",
                     "--rounds", "1")
    assert code == 0 and r["events"] == []
    got = {p["name"]: (p["armed"], p["handling"], p["refused"]) for p in r["probes"]}
    assert got == {
        "kernel:ftrace_caller:entry": (False, "-", "copied-by-ftrace"),
        "kernel:ftrace_regs_caller:entry": (False, "-", "copied-by-ftrace"),
        "kernel:vfs_read:entry": (True, "ftrace", None),
    }
    assert next(p for p in r["probes"] if p["name"] == "kernel:vfs_read:entry")["hits"] > 0


def test_denylist_policy_then_lines(release, tmp_path):
    # The control file as an operator uses it: fbt-audit's denylist becomes the policy, then `arm` and two
    # func+0xoff lines: vfs_read (not denied) is armed through ftrace, oops_end (FBT204: NOKPROBE) is refused.
    from fbt_audit.verify import qemu, run, target
    from fbt_audit.verify.deps import audit, render

    t = target.resolve(release)
    result = audit(t.image, "reference")
    by = {j.pp.name: j for j in result.judgements}
    assert by["oops_end"].verdict.label == "deny" and by["vfs_read"].verdict.label == "safe"
    arm = render("denylist", [result]) + "arm\nkernel:vfs_read+0x0\nkernel:oops_end+0x0\n"
    setup = run.Setup(t, qemu.build_kmod(release, "reference", tmp_path / "kmod"), tmp_path / "work", "max", 1,
                      300, "ls -l / > /dev/null; cat /proc/version", 1)
    b = run.run_boot(setup, result, [by["vfs_read"], by["oops_end"]], False, arm=arm)
    assert b.events == []
    got = {p.name: (p.armed, p.handling, p.refused) for p in b.probes}
    assert got == {"kernel:vfs_read:entry": (True, "ftrace", ""), "kernel:oops_end:entry": (False, "-", "not-safe")}
    assert b.status["requests"] == "2" and b.status["armed_ftrace"] == "1" and b.status["refused.not-safe"] == "1"
