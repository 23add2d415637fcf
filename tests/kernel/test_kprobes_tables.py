"""test_kprobes_tables.py: kprobes-6.1 and kprobes-6.12 on real bookworm kernels, where they differ from reference."""

from __future__ import annotations

import pytest

from fbt_audit.model.core import IC
from fbt_audit.pipeline import api

pytestmark = pytest.mark.kernel

PUSHF_61 = ["ftrace_regs_caller", "native_save_fl", "this_cpu_cmpxchg16b_emu", "verify_cpu"]


# These tests compare instruction handling between tables, so they run the FBT1xx rules alone; the
# site rules (FBT2xx: blacklist, run-time writers...) do not depend on the table and are pinned in
# test_vmlinux_sites.py.
INSN = ["FBT1"]


def audit(kernel, table):
    return api.audit(kernel, table, select=INSN)


def by_addr(result) -> dict:
    return {j.pp.addr: j for j in result.judgements}


def memory_indirect_call(j) -> bool:
    i = j.pp.insn
    return i.opcode == b"\xff" and i.modrm is not None and (i.modrm >> 3) & 7 == 2 and i.modrm >> 6 != 3


def test_61_kprobes_emulates_pushf_and_refuses_memory_calls(k61):
    ref, kp = by_addr(audit(k61, "reference")), by_addr(audit(k61, "kprobes-6.1"))
    # prepare_emulation emulates PUSHF on regs->flags: the seed's entries are safe under kprobes.
    pushf = sorted(j.pp.name for j in kp.values() if j.pp.insn.classes & IC.PUSHES_FLAGS)
    assert pushf == PUSHF_61
    assert all(j.verdict.label == "safe" for j in kp.values() if j.pp.name in PUSHF_61)
    # The paravirt entries `call *pv_ops+N(%rip)`: reference steps them, kprobes refuses them
    # ("TODO: support memory addressing").
    calls = [a for a, j in kp.items() if memory_indirect_call(j)]
    assert len(calls) == 76
    assert all(kp[a].verdict.label == "refused" and ref[a].verdict.label == "safe" for a in calls)


def test_61_kprobes_steps_ud2_and_612_refuses_it(k61, k612):
    """v6.1 has no is_exception_insn: a ud2 entry is stepped out of line (FBT105); 6.12 refuses it."""
    kp61 = audit(k61, "kprobes-6.1").judgements
    ud2 = [j for j in kp61 if j.pp.insn.opcode == b"\x0f\x0b"]
    assert ud2 and all(j.verdict.label == "unsafe" and "FBT105" in j.rule_ids for j in ud2)
    kp612 = audit(k612, "kprobes-6.12").judgements
    ud2 = [j for j in kp612 if j.pp.insn.opcode == b"\x0f\x0b"]
    assert ud2 and all(j.verdict.label == "refused" for j in ud2)


@pytest.mark.parametrize("name", ["kprobes-6.1", "kprobes-6.12"])
def test_kprobes_steps_swapgs(k61, name):
    """kprobes refuses only the 0f 01 reg=0 VMX group; swapgs (0f 01 /7) would be stepped. In the
    kernel those entries sit in .entry.text, which kprobes' blacklist covers: a site rule."""
    swapgs = [j for j in audit(k61, name).judgements if j.pp.insn.mnemonic == "swapgs"]
    assert swapgs and all("FBT107" in j.rule_ids for j in swapgs)
