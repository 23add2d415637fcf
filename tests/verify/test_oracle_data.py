"""test_oracle_data.py: the audit under --table kprobes-* --platform native against register_kprobe()'s saved answers.

tests/data/oracle-<release>.txt is a measured result of the locked kernel booted under QEMU (scripts/oracle-pass
regenerates it); these tests compare the audit with it without booting. Every remaining difference is named here
with its reason (audit/verify/oracle.py REASONS)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import locked

from fbt_audit.pipeline.api import audit
from fbt_audit.verify import oracle

pytestmark = pytest.mark.kernel
DATA = Path(__file__).resolve().parent.parent / "data"

# 6.1: a __bug_table ud2 at the entry, which kprobes' find_bug() refuses (FBT204 under kprobes-* tables: these were
# the last model differences), and section boundary symbols that have no patchpoint (kprobes refuses them: they sit
# at the edge of a refused range or inside an instruction).
BUG_TABLE_61 = [
    "dummy_handler", "ftrace_modify_call", "udp_lib_hash", "udp_lib_hash", "udp_lib_hash", "udp_lib_hash",
    "addr_from_call.cold", "rcu_implicit_dynticks_qs.cold", "rcu_gp_cleanup.cold", "ftrace_shutdown.part.0.cold",
    "ftrace_init_array_ops.cold", "alg_test.cold", "transfer_surpluses.cold", "pci_add_new_bus.cold",
    "qi_flush_piotlb.cold", "pirq_vlsi_set.cold", "pirq_vlsi_get.cold",
]  # fmt: skip
MARKERS_61 = [
    "__noinstr_text_end", "__sched_text_end", "__cpuidle_text_end", "__lock_text_start", "__lock_text_end",
    "__kprobes_text_end", "__kprobes_text_end", "__entry_text_start", "__entry_text_end", "__softirqentry_text_end",
    "0xffffffff81e01d32",  # _etext
    "0xffffffff81e01d32",  # __indirect_thunk_end
    "0xffffffff830e7c04",  # _einittext
]  # fmt: skip


SMP_LOCK_ENTRIES_61 = ["event_file_get", "folio_put", "io_poll_wake.cold", "kvm_get_tsc_khz",
                       "ring_buffer_record_disable", "ring_buffer_record_enable"]


def comparison(image: Path, release: str, table: str, platform: str = "native") -> oracle.Comparison:
    meta, answers = oracle.load(DATA / f"oracle-{release}.txt")
    r = audit(image, table, platform=platform)
    assert meta["build-id"] == r.kernel.build_id, "the saved answers are of another build: scripts/oracle-pass"
    return oracle.compare(r, oracle.named(r, answers))


def test_61_native_agrees_with_register_kprobe(vmlinux61):
    release = locked("dbg-6.1")["release"]
    c = comparison(vmlinux61, release, "kprobes-6.1")
    assert c.total == 49674
    assert c.ratio >= 0.999, oracle.render(c, release, "kprobes-6.1", "native")
    assert c.agree == 49661
    assert c.by_reason() == {"section-marker": 13}
    assert sorted((d.name, d.audit, d.errno) for d in c.differences) == sorted(
        (n, "no patchpoint", 22) for n in MARKERS_61)


def test_61_bug_table_entries_refused(vmlinux61):
    """find_bug(): kprobes refuses a BUG()/WARN() ud2 by its address; under kprobes-6.1 FBT204 says so."""
    r = audit(vmlinux61, "kprobes-6.1", platform="native")
    got = sorted((j.pp.name, j.rule_ids) for j in r.judgements if "bug-table" in j.pp.facts and j.pp.site == "entry")
    want = sorted((n, ["FBT105", "FBT204", "FBT206"] if n.endswith(".cold") else ["FBT105", "FBT204"])
                  for n in [*BUG_TABLE_61, "paravirt_BUG"])  # paravirt_BUG: noinstr as well  # fmt: skip
    assert got == want


def test_61_all_platform_refuses_paravirt_and_smp_lock_sites(vmlinux61):
    """--platform all (the default) judges the on-disk `call *pv_ops` form, which no boot leaves live, and keeps
    FBT201 on `.smp_locks` prefixes (rewritten at run time only on `--platform up` boots): 75 paravirt entries
    (FBT114: call *mem), such as set_pte, and 6 lock-prefixed entries, which the -smp 1 boot accepts."""
    release = locked("dbg-6.1")["release"]
    c = comparison(vmlinux61, release, "kprobes-6.1", platform="all")
    assert c.by_reason() == {"paravirt-disk-form": 75, "section-marker": 13, "smp-lock-runtime": 6}
    pv = sorted(d.name for d in c.differences if d.reason == "paravirt-disk-form")
    assert {d.audit for d in c.differences if d.reason == "paravirt-disk-form"} == {"FBT114"}
    assert "set_pte" in pv and "load_idt" in pv
    assert sorted(d.name for d in c.differences if d.reason == "smp-lock-runtime") == SMP_LOCK_ENTRIES_61


# 6.12 (the amd64 image package, booted and audited from the same vmlinuz): section boundary symbols (-EILSEQ
# from can_probe at a marker inside an instruction, or -EINVAL), and the one address with three names.
MARKERS_612 = [  # (address, errno): the kallsyms names at it
    (0xFFFFFFFF81CE89D8, 84), (0xFFFFFFFF81CE89D8, 84),  # __cpuidle_text_end, __noinstr_text_end
    (0xFFFFFFFF81CF40C2, 84),  # __sched_text_end
    (0xFFFFFFFF81CF5314, 84),  # __lock_text_end
    (0xFFFFFFFF81CFD520, 84),  # __static_call_text_end
    (0xFFFFFFFF81E0230B, 84),  # __entry_text_end
    (0xFFFFFFFF81E00010, 22),  # __entry_text_start
    (0xFFFFFFFF82000000, 22),  # _etext
    (0xFFFFFFFF833DD594, 22),  # _einittext
]


def test_612_native_agrees_with_register_kprobe(image612):
    release = locked("image-6.12")["release"]
    c = comparison(image612 / "boot" / f"vmlinuz-{release}", release, "kprobes-6.12")
    assert c.total == 107342
    assert c.ratio >= 0.999, oracle.render(c, release, "kprobes-6.12", "native")
    assert c.by_reason() == {"section-marker": 9, "preamble-alias": 3}
    assert sorted((d.addr, d.errno) for d in c.differences if d.reason == "section-marker") == sorted(MARKERS_612)
    # _stext, _text and __pfx_sev_es_terminate: one address, judged by the audit as the __pfx_ padding
    assert [(d.addr, d.audit) for d in c.differences if d.reason == "preamble-alias"] == [
        (0xFFFFFFFF81000000, "FBT206")] * 3


def test_612_all_platform_differences_are_named(image612):
    """Under all, 6.12's paravirt calls (ALTERNATIVE(PARAVIRT_CALL, ALT_CALL_INSTR, ALT_CALL_ALWAYS)) keep their
    on-disk indirect form and the lock prefixes FBT201: 24 more differences, every one named."""
    release = locked("image-6.12")["release"]
    c = comparison(image612 / "boot" / f"vmlinuz-{release}", release, "kprobes-6.12", platform="all")
    assert c.by_reason() == {"paravirt-disk-form": 19, "section-marker": 9, "smp-lock-runtime": 5,
                             "preamble-alias": 3}  # fmt: skip
    assert {d.name for d in c.differences if d.reason == "paravirt-disk-form"} >= {"pte_val", "set_pmd", "xen_halt"}
