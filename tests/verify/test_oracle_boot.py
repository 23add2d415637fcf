"""test_oracle_boot.py: boot the locked 6.1 kernel and ask register_kprobe() about a seeded sample and the hard cases.

The full pass is scripts/oracle-pass (its answers are tests/data/oracle-<release>.txt); this boots in the test
command: 300 sampled entry symbols plus one of every difference class and every refusal kind, checked against
the saved answers and against the audit under --table kprobes-6.1 --platform native. A second boot with one CPU
present and two possible (--platform up) shows kprobes accepting an .smp_locks entry even there: its check is
alternatives_text_reserved(addr, addr), an empty range (a named difference of --platform up, smp-lock-runtime)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import locked

from fbt_audit.pipeline.api import audit
from fbt_audit.verify import initramfs, oracle, target

pytestmark = pytest.mark.kernel
DATA = Path(__file__).resolve().parent.parent / "data"
HARD = [
    "set_pte",  # paravirt: call *pv_ops on disk, a direct call once booted (native: safe)
    "dummy_handler",  # a __bug_table ud2: find_bug() refuses (FBT204 under kprobes-* tables)
    "__SCT__x86_pmu_handle_irq",  # a static-call trampoline: kprobes accepts
    "default_idle",  # .cpuidle.text: 6.1 kprobes accepts
    "kvm_get_tsc_khz",  # an .smp_locks lock prefix at the entry
    "do_int3",  # NOKPROBE_SYMBOL
    "exc_page_fault",  # noinstr
    "start_kernel",  # init text, freed
    "schedule",  # an ftrace site: kprobe on ftrace
    "addr_from_call.cold",  # a .cold part (FBT206, FBT's own policy) that is also a bug-table site
]  # fmt: skip


@pytest.fixture(scope="module")
def setup(image61, vmlinux61):
    missing = initramfs.have_tools()
    if missing:
        pytest.fail(f"the oracle needs QEMU and busybox: {missing}", pytrace=False)
    release = locked("headers-6.1")["release"]
    oracle.headers(release)  # fails with what to install
    t = target.Target(release, image61 / "boot" / f"vmlinuz-{release}",
                      image61 / "lib" / "modules" / release, vmlinux61)  # fmt: skip
    return t, audit(vmlinux61, "kprobes-6.1", platform="native")


def test_sample_and_hard_cases(setup, tmp_path):
    t, r = setup
    sample = oracle.choose(r, only=None, sample=300, seed=13)
    hard = oracle.choose(r, only=HARD, sample=None, seed=0)
    asked = sorted(set(sample) | set(hard))
    answers = oracle.ask(t, tmp_path, asked, timeout=600)
    assert [(a.addr, a.name) for a in answers] == asked
    _meta, saved = oracle.load(DATA / f"oracle-{t.release}.txt")
    by_addr = {a.addr: a.errno for a in saved}
    assert [(a.name, a.errno) for a in answers] == [(a.name, by_addr[a.addr]) for a in answers]  # reproducible
    errno: dict[str, list[int]] = {}
    for a in answers:
        errno.setdefault(a.name, []).append(a.errno)
    assert {n: errno[n] for n in HARD} == {
        "set_pte": [0, 0, 0, 0, 0], "dummy_handler": [22, 0],  # two static functions: the first is a BUG() ud2
        "__SCT__x86_pmu_handle_irq": [0], "default_idle": [0], "kvm_get_tsc_khz": [0], "do_int3": [22],
        "exc_page_fault": [22], "start_kernel": [22], "schedule": [0], "addr_from_call.cold": [22],
    }  # fmt: skip
    c = oracle.compare(r, answers)
    assert (c.agree, c.total, c.differences) == (len(asked), len(asked), [])


def test_up_boot_accepts_smp_lock_entry(setup, tmp_path):
    """-smp 1,maxcpus=2: uniprocessor-patched and remembered in smp_alt_modules ("Allowing 2 CPUs, 1 hotplug
    CPUs"), yet register_kprobe() accepts the lock-prefixed entry: --platform up keeps FBT201 (the prefix is
    rewritten when the second CPU comes up), a named difference from kprobes."""
    t, _r = setup
    up = audit(t.image, "kprobes-6.1", platform="up")
    asked = oracle.choose(up, only=["kvm_get_tsc_khz", "set_pte"], sample=None, seed=0)
    answers = oracle.ask(t, tmp_path, asked, smp="1,maxcpus=2", timeout=300)
    assert {a.name: a.errno for a in answers} == {"kvm_get_tsc_khz": 0, "set_pte": 0}
    assert "Allowing 2 CPUs, 1 hotplug CPUs" in (tmp_path / "oracle-boot" / "serial.log").read_text(errors="replace")
    assert [(d.name, d.audit, d.reason) for d in oracle.compare(up, answers).differences] == [
        ("kvm_get_tsc_khz", "FBT201", "smp-lock-runtime")]
