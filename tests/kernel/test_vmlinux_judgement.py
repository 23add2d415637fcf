"""test_vmlinux_judgement.py: exact verdicts at exact symbols on real Debian vmlinux images, under each named table."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from fbt_audit.judge.registry import REGISTRY
from fbt_audit.model.core import IC
from fbt_audit.pipeline import api
from fbt_audit.report.formats import render

from ..test_rule_examples import example_tables

pytestmark = pytest.mark.kernel

# Static functions named alike: udp_lib_hash is `{ BUG(); }` in four compilation units, so its entry is ud2.
UD2_ENTRIES_61 = [
    # BUG()/WARN stubs whose first instruction is ud2
    "dummy_handler",
    "ftrace_modify_call",
    "paravirt_BUG",
    "udp_lib_hash",
    "udp_lib_hash",
    "udp_lib_hash",
    "udp_lib_hash",
    # .cold fragments that start with the ud2 of an unlikely BUG_ON (not entries: FBT206 will deny them)
    "addr_from_call.cold",
    "alg_test.cold",
    "ftrace_init_array_ops.cold",
    "ftrace_shutdown.part.0.cold",
    "pci_add_new_bus.cold",
    "pirq_vlsi_get.cold",
    "pirq_vlsi_set.cold",
    "qi_flush_piotlb.cold",
    "rcu_gp_cleanup.cold",
    "rcu_implicit_dynticks_qs.cold",
    "transfer_surpluses.cold",
]
# Entry assembly that starts with swapgs (the seed's native_load_gs_index became asm_load_gs_index).
SWAPGS_ENTRIES = [
    "asm_load_gs_index",
    "entry_SYSCALL_64",
    "entry_SYSCALL_compat",
    "entry_SYSENTER_compat",
    "entry_SYSRETQ_unsafe_stack",
    "nmi_swapgs",
]
# Labels whose address holds int3: the ends of entry code, and the int3 self-test site. (The linker's section
# markers in int3 padding, __sched_text_end and the like, are not patchpoints: tests/kernel/test_signal_kernel.py.)
INT3_LABELS_61 = [
    "entry_SYSRETL_compat_end",
    "entry_SYSRETQ_end",
    "int3_selftest_ip",
]
# Return thunks that start inside the first instruction of the function before them (retbleed/SRSO
# untraining: `test $0xcc,%bl` holds `ret; int3`): an int3 there would change the other instruction.
MID_INSTRUCTION = ["retbleed_return_thunk", "srso_safe_ret"]
PUSHF_AFTER_BOOT_61 = ["__sev_get_ghcb", "rcu_preempt_deferred_qs.part.0", "xen_halt"]
PUSHF_61 = ["ftrace_regs_caller", "native_save_fl", "this_cpu_cmpxchg16b_emu", "verify_cpu"]


# The exact findings below are the instruction rules' (FBT1xx), table by table; the site rules
# (FBT2xx) do not depend on the table and are pinned by name in test_vmlinux_sites.py. Boot-time
# variants (alternatives, paravirt, return thunks) are judged here too: none changes a verdict.
INSN = ["FBT1"]


def findings(result) -> Counter:
    return Counter((j.pp.name, j.verdict.label, ",".join(j.rule_ids)) for j in result.judgements if j.findings)


def test_61_legacy_2011_seed_class(k61):
    r = api.audit(k61, "legacy-2011", select=INSN)
    unsafe = Counter((n, v, rules) for (n, v, rules), c in findings(r).items() for _ in range(c) if v == "unsafe")
    want = Counter()
    want.update((n, "unsafe", "FBT102") for n in PUSHF_61)  # pushf TF-stepped, pushed flags unrepaired: the seed
    want.update((n, "unsafe", "FBT105") for n in UD2_ENTRIES_61)  # ud2 stepped: BUG handling keys on the IP
    want.update((n, "unsafe", "FBT107") for n in SWAPGS_ENTRIES)  # swapgs replayed out of line
    want[("xen_hypercall_intel", "unsafe", "FBT107")] += 1  # vmcall stepped
    want.update((n, "unsafe", "FBT111") for n in MID_INSTRUCTION)
    # Boot-time variants: these entries are `call *pv_ops.irq.save_fl(%rip)` on disk (refused: FBT114)
    # and an ALTERNATIVE(..., "pushf; pop %rax", ALT_NOT(X86_FEATURE_XENPV)) site, so on bare metal
    # their first instruction is the seed's pushf after boot: FBT102 on variant alt(!8*32+16).
    want.update((n, "unsafe", "FBT102,FBT114") for n in PUSHF_AFTER_BOOT_61)
    assert unsafe == want
    # Every PUSHF patchpoint, whatever its name, is unsafe with FBT102, exactly as in the seed.
    pushf = [j for j in r.judgements if j.pp.insn.classes & IC.PUSHES_FLAGS]
    assert sorted(j.pp.name for j in pushf) == PUSHF_61
    assert all(j.verdict.label == "unsafe" and "FBT102" in j.rule_ids for j in pushf)
    # call rel32 (e8) is refused by dtrace4linux, so every ftrace site is refused, not unsafe.
    vfs_read = next(j for j in r.judgements if j.pp.name == "vfs_read")
    assert (vfs_read.verdict.label, vfs_read.rule_ids) == ("refused", ["FBT114"])


def test_61_reference_refusals_each_explained(k61):
    r = api.audit(k61, "reference", select=INSN)
    want = Counter()
    want.update((n, "refused", "FBT114") for n in UD2_ENTRIES_61 + SWAPGS_ENTRIES + INT3_LABELS_61)
    want[("xen_hypercall_intel", "refused", "FBT114")] += 1  # vmcall: VM exit, never replayed
    want[("native_irq_return_iret", "refused", "FBT114")] += 1  # iretq: a far transfer
    want.update((n, "unsafe", "FBT111") for n in MID_INSTRUCTION)
    assert findings(r) == want
    # Ordinary entries are safe: push, mov, sub, lea and the ftrace site (probed through ftrace).
    ordinary = ("pushq", "movq", "movl", "subq", "leaq", "callq", "xorl", "jmp")
    checked = 0
    for j in r.judgements:
        if j.pp.insn.mnemonic in ordinary and j.pp.name not in MID_INSTRUCTION:
            assert j.verdict.label == "safe", (j.pp.name, j.pp.insn.text, j.rule_ids)
            checked += 1
    assert checked == 48544  # of 49,578 entries
    vfs_read = next(j for j in r.judgements if j.pp.name == "vfs_read")
    assert vfs_read.handling == "ftrace" and vfs_read.verdict.label == "safe"
    native = next(j for j in r.judgements if j.pp.name == "native_save_fl")
    assert native.handling == "emulate" and native.verdict.label == "safe"


def test_612_reference(k612):
    r = api.audit(k612, "reference", select=INSN)
    want = Counter()
    want.update(
        (n, "refused", "FBT114")
        for n in [
            "BUG_func",
            "dummy_handler",
            "ftrace_modify_call",
            *["udp_lib_hash"] * 4,  # ud2
            *SWAPGS_ENTRIES,
            "entry_SYSRETL_compat_end",
            "entry_SYSRETQ_end",
            "int3_selftest_ip",  # int3
            "xen_hypercall_intel",
            "native_irq_return_iret",
        ]
    )
    want.update((n, "unsafe", "FBT111") for n in MID_INSTRUCTION)
    assert findings(r) == want
    # IBT: the patchpoint moves past endbr64 and lands on the ftrace site.
    vfs_read = next(j for j in r.judgements if j.pp.name == "vfs_read")
    assert vfs_read.pp.symoff == 4 and vfs_read.handling == "ftrace" and vfs_read.verdict.label == "safe"
    # native_lkgs+0x4: LKGS (f2 0f 00 /6), newer than capstone 5 and binutils 2.40, decoded by hand and stepped.
    lkgs = next(j for j in r.judgements if j.pp.name == "native_lkgs")
    assert (lkgs.pp.symoff, lkgs.pp.insn.text, lkgs.pp.insn.length) == (4, "lkgs %di", 4)
    assert lkgs.handling == "step" and lkgs.verdict.label == "safe"


# An Example's line for a locked kernel: `vmlinux-<release>: func+0x0 (.text+0x...): FBTnnn ... [verdict]`.
KERNEL_LINE = re.compile(r"^\s*(vmlinux-(\S+): \S+\+0x[0-9a-f]+ \(\S+\+0x[0-9a-f]+\): FBT\d{3} .+ \[\w+\])$", re.M)


def test_rule_example_lines_for_the_locked_kernels(k61, k612):
    """A rule docstring's Example line quoted for a locked vmlinux is what the text report prints for it under
    the Example's table (the fixture lines are checked by tests/test_rule_examples.py)."""
    kernels = {k.display: k for k in (k61, k612)}
    checked = []
    for rid, (_, cls) in REGISTRY.items():
        text = cls.doc_sections()["Example"]
        for line, release in KERNEL_LINE.findall(text):
            for spec in example_tables(text):
                out = render("text", [api.audit(kernels[f"vmlinux-{release}"], spec)]).splitlines()
                assert line in out, (rid, spec, line)
            checked.append(rid)
    assert checked == ["FBT102"]
