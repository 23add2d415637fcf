"""test_rules_unit.py: every FBT1xx rule and the judge, on hand-built instructions and emulation tables."""

from __future__ import annotations

import dataclasses

import pytest

from fbt_audit.judge import registry
from fbt_audit.judge.judge import Judge, judge
from fbt_audit.judge.rule import Site
from fbt_audit.model import abi
from fbt_audit.model.abi import EmuFlags, Fixup, Handling, StepIF, StepMechanism, Target
from fbt_audit.model.core import IC, Insn, Level, Patchpoint, Variant, Verdict
from fbt_audit.table import emulation as fbt_table
from fbt_audit.table.emulation import EmulationTable

RULES = registry.all_rules()
OWN = abi.MATCH_OWN_FIXUPS
ALL_FIXUPS = Fixup(0x7F)  # every fixup the ABI defines: nothing is left unrepaired


# --- building tables ----------------------------------------------------------------------------


def entry(
    opcode: bytes,
    handling: Handling,
    fixups: Fixup | int = 0,
    mnemonic: str = "",
    *,
    prefix: bytes = b"",
    rex_mask: int = 0,
    rex_value: int = 0,
    opcode_mask: int = 0xFF,
    modrm_mask: int = 0,
    modrm_value: int = 0,
    target: Target = Target.ANY,
    match_flags: int = 0,
) -> bytes:
    """One struct fbt_emu_entry, packed with the ABI descriptor."""
    return abi.ENTRY_STRUCT.pack(
        prefix, rex_mask, rex_value, opcode, len(opcode), opcode_mask, modrm_mask, modrm_value,
        target, handling, match_flags, 0, int(fixups), mnemonic.encode(),
    )  # fmt: skip


def make_table(
    *entries: bytes,
    default: Handling = Handling.STEP,
    mechanism: StepMechanism = StepMechanism.INT3,
    step_if: StepIF = StepIF.PRESERVED,
    emu: EmuFlags = EmuFlags.SAVED,
    step_fixups: Fixup | int = ALL_FIXUPS,
    name: str = "unit",
    patch_len: int = 0,
) -> EmulationTable:
    """A table parsed from packed bytes: by default a safe one that steps everything with every fixup."""
    header = abi.HEADER_STRUCT.pack(
        abi.MAGIC, abi.ABI_VERSION, abi.HEADER_SIZE, abi.ENTRY_SIZE, len(entries),
        default, mechanism, step_if, emu, 1, patch_len, b"", int(step_fixups), 0, name.encode(),
    )  # fmt: skip
    return fbt_table.parse(header + b"".join(entries), f"unit:{name}")


SAFE = make_table()


def legacy_2011_like() -> EmulationTable:
    """dtrace4linux before aa60b7f, as the brief describes legacy-2011: TF step with IF masked,
    CLI/STI emulated, PUSHF stepped without repair, e8/IRET/HLT/RIP-relative refused."""
    return make_table(
        entry(b"\xfa", Handling.EMULATE, 0, "cli"),
        entry(b"\xfb", Handling.EMULATE, 0, "sti"),
        entry(b"\x9c", Handling.STEP, 0, "pushf"),
        entry(b"\xe8", Handling.REFUSE, 0, "call"),
        entry(b"\xcf", Handling.REFUSE, 0, "iret"),
        entry(b"\xf4", Handling.REFUSE, 0, "hlt"),
        entry(b"\x00", Handling.REFUSE, 0, "rip-rel", opcode_mask=0, modrm_mask=0xC7, modrm_value=0x05),
        default=Handling.STEP,
        mechanism=StepMechanism.TF,
        step_if=StepIF.MASKED,
        emu=EmuFlags.SAVED,
        step_fixups=Fixup.LIVE_IF | Fixup.BRANCH_TARGET | Fixup.TRANSFER_IP | Fixup.RETURN_ADDR,
        name="legacy-2011-like",
    )


# --- building instructions and patchpoints ------------------------------------------------------


def insn(
    raw_hex: str,
    mnemonic: str,
    operands: str = "",
    classes: IC = IC.NONE,
    *,
    prefixes: str = "",
    rex: int = 0,
    opcode: str | None = None,
    modrm_off: int = -1,
    target_class: Target = Target.ANY,
    target_name: str | None = None,
) -> Insn:
    raw = bytes.fromhex(raw_hex)
    op = bytes.fromhex(opcode) if opcode is not None else raw[len(bytes.fromhex(prefixes)) + (rex != 0) :][:1]
    return Insn(
        addr=0x1000, raw=raw, mnemonic=mnemonic, operands=operands, prefixes=bytes.fromhex(prefixes),
        rex=rex, opcode=op, modrm_off=modrm_off, classes=classes, target_class=target_class,
        target_name=target_name,
    )  # fmt: skip


PUSHF = insn("9c", "pushfq", classes=IC.READS_FLAGS | IC.PUSHES_FLAGS | IC.STACK)
POPF = insn("9d", "popfq", classes=IC.WRITES_IF | IC.WRITES_TF | IC.STACK)
CLI = insn("fa", "cli", classes=IC.WRITES_IF)
STI = insn("fb", "sti", classes=IC.WRITES_IF)
IRETQ = insn(
    "48cf", "iretq", rex=0x48, classes=IC.WRITES_IF | IC.WRITES_TF | IC.IRET | IC.FAR_TRANSFER | IC.STACK
)
PUSH_RBP = insn("55", "pushq", "%rbp", IC.STACK)
MOV = insn("4889e5", "movq", "%rsp, %rbp", rex=0x48, modrm_off=2)
LEA_RIP = insn("488d0500000000", "leaq", "(%rip), %rax", IC.RIP_RELATIVE, rex=0x48, modrm_off=2)
CALL_REL = insn("e800000000", "callq", "0x1005", IC.REL_CALL | IC.STACK)
JMP_REL = insn("e9fbffffff", "jmp", "0x1000", IC.REL_BRANCH)
JE_REL32 = insn("0f8400000000", "je", "0x1006", IC.REL_BRANCH | IC.READS_FLAGS, opcode="0f84")
INT3 = insn("cc", "int3", classes=IC.TRAP)
UD2 = insn("0f0b", "ud2", classes=IC.TRAP, opcode="0f0b")
MOV_SS = insn("8ed0", "movl", "%eax, %ss", IC.TRAP_SHADOW, modrm_off=1)
HLT = insn("f4", "hlt", classes=IC.PRIVILEGED)
SWAPGS = insn("0f01f8", "swapgs", classes=IC.PRIVILEGED, opcode="0f01", modrm_off=2)
RDMSR = insn("0f32", "rdmsr", opcode="0f32")
LRET = insn("cb", "lretl", classes=IC.FAR_TRANSFER | IC.STACK)
LCALL_MEM = insn("ff18", "lcalll", "*(%rax)", IC.FAR_TRANSFER | IC.STACK, modrm_off=1)
REP_STOSB = insn("f3aa", "rep stosb", "%al, (%rdi)", IC.REP_STRING, prefixes="f3")
RET = insn("c3", "retq", classes=IC.RETURN | IC.STACK)
CALL_REG = insn("ffd0", "callq", "*%rax", IC.INDIRECT_CALL | IC.STACK, modrm_off=1)
JMP_REG = insn("ffe0", "jmpq", "*%rax", IC.INDIRECT_JUMP, modrm_off=1)
CPUID = insn("0fa2", "cpuid", opcode="0fa2")
BAD = insn("06", "(bad)", classes=IC.INVALID, opcode="")
NOTHING = insn("", "(bad)", classes=IC.INVALID, opcode="")
FENTRY_CALL = insn(
    "e800000000",
    "callq",
    "0x1005",
    IC.REL_CALL | IC.STACK,
    target_class=Target.FENTRY,
    target_name="__fentry__",
)
NOP5 = insn("0f1f440000", "nopl", "(%rax,%rax)", IC.NOP, opcode="0f1f", modrm_off=2)


def patchpoint(disk: Insn, *live: tuple[str, Insn], name: str = "f") -> Patchpoint:
    variants = (Variant("disk", disk),) + tuple(Variant(label, i) for label, i in live)
    return Patchpoint(
        module="kernel", name=name, aliases=(), kind="FUNC", site="entry", sym_addr=disk.addr,
        addr=disk.addr, section=".text", sec_off=0, insn=disk, variants=variants,
    )  # fmt: skip


def run(i: Insn, t: EmulationTable, rules=RULES):
    """Judge a one-variant patchpoint; returns (rule ids, verdict label, judgement)."""
    j = judge(patchpoint(i), t, rules)
    return [f.rule_id for f in j.findings], j.verdict.label, j


def site(i: Insn, t: EmulationTable) -> Site:
    """The Site the judge would build for the disk form of i."""
    e, h, f = Judge(t, RULES).handling(i)
    return Site(patchpoint(i), "disk", i, e, t, h, f)


def fires(rule_id: str, i: Insn, t: EmulationTable) -> str | None:
    return registry.get(rule_id).check(site(i, t))


# --- the brief's worked example -----------------------------------------------------------------


def test_worked_example_pushf_under_legacy_2011_is_unsafe_with_fbt102():
    ids, verdict, j = run(PUSHF, legacy_2011_like())
    assert ids == ["FBT102"]
    assert verdict == "unsafe"
    assert j.verdict is Verdict.UNSAFE
    assert j.handling == "step"
    (f,) = j.findings
    assert f.level is Level.ERROR
    assert f.message == "pushfq stepped without flags repair"
    assert f.variant == "disk"


def test_worked_example_other_legacy_handlings():
    t = legacy_2011_like()
    assert run(CLI, t)[:2] == ([], "safe")  # emulated on the saved flags
    assert run(CALL_REL, t)[:2] == (["FBT114"], "refused")
    assert run(LEA_RIP, t)[:2] == (["FBT114"], "refused")
    assert run(IRETQ, t)[0] == ["FBT114"]  # 48 cf: the cf entry ignores REX
    assert run(PUSH_RBP, t)[:2] == ([], "safe")
    assert run(REP_STOSB, t)[:2] == (["FBT109"], "unsafe")


def test_safe_table_passes_ordinary_entries():
    for i in (PUSH_RBP, MOV, LEA_RIP, CALL_REL, JMP_REL, PUSHF, RET, CALL_REG, REP_STOSB, RDMSR, NOP5):
        assert run(i, SAFE)[:2] == ([], "safe"), i.text


# --- FBT101 if-modifier-stepped -----------------------------------------------------------------


@pytest.mark.parametrize("i", [POPF, CLI, STI, IRETQ], ids=lambda i: i.mnemonic)
def test_fbt101_fires_when_stepped(i):
    ids, verdict, j = run(i, SAFE)
    assert "FBT101" in ids and verdict == "unsafe"
    assert fires("FBT101", i, SAFE).startswith(f"{i.text} stepped while it writes if")


def test_fbt101_emulation_on_saved_flags_passes_on_live_flags_fires():
    saved = make_table(
        entry(b"\x9d", Handling.EMULATE, 0, "popf"), entry(b"\xfa", Handling.EMULATE, 0, "cli")
    )
    live = dataclasses.replace(saved, emu_flags=EmuFlags.LIVE)
    for i in (POPF, CLI):
        assert run(i, saved)[:2] == ([], "safe")
        assert run(i, live)[:2] == (["FBT101"], "unsafe")
        assert fires("FBT101", i, live) == f"{i.text} emulated on the handler's live flags"


def test_fbt101_message_names_the_flags():
    assert fires("FBT101", POPF, SAFE) == "popfq stepped while it writes if and tf"
    assert fires("FBT101", CLI, SAFE) == "cli stepped while it writes if"
    tf_only = insn("9d", "popfq", classes=IC.WRITES_TF)
    assert fires("FBT101", tf_only, SAFE) == "popfq stepped while it writes tf"


def test_fbt101_ignores_other_instructions_and_refusals():
    assert fires("FBT101", PUSH_RBP, SAFE) is None
    refusing = make_table(entry(b"\x9d", Handling.REFUSE, 0, "popf"))
    assert run(POPF, refusing)[0] == ["FBT114"]


# --- FBT102 pushed-flags-leak -------------------------------------------------------------------


def test_fbt102_stepped_without_repair_fires_with_repair_passes():
    unrepaired = make_table(entry(b"\x9c", Handling.STEP, 0, "pushf", match_flags=OWN))
    repaired = make_table(entry(b"\x9c", Handling.STEP, Fixup.PUSHED_FLAGS, "pushf", match_flags=OWN))
    assert run(PUSHF, unrepaired)[:2] == (["FBT102"], "unsafe")
    assert run(PUSHF, repaired)[:2] == ([], "safe")


def test_fbt102_header_step_fixups_repair_unless_entry_owns_its_fixups():
    t = make_table(entry(b"\x9c", Handling.STEP, 0, "pushf"), step_fixups=Fixup.PUSHED_FLAGS)
    assert run(PUSHF, t)[0] == []
    own = make_table(
        entry(b"\x9c", Handling.STEP, 0, "pushf", match_flags=OWN), step_fixups=Fixup.PUSHED_FLAGS
    )
    assert run(PUSHF, own)[0] == ["FBT102"]
    default_step = make_table(step_fixups=Fixup.PUSHED_FLAGS)  # unmatched: the default's step fixups
    assert run(PUSHF, default_step)[0] == []
    assert run(PUSHF, make_table(step_fixups=0))[0] == ["FBT102"]


def test_fbt102_emulation_live_flags_fires_saved_flags_passes():
    saved = make_table(entry(b"\x9c", Handling.EMULATE, 0, "pushf"), emu=EmuFlags.SAVED)
    live = make_table(entry(b"\x9c", Handling.EMULATE, 0, "pushf"), emu=EmuFlags.LIVE)
    assert run(PUSHF, saved)[:2] == ([], "safe")
    assert run(PUSHF, live)[:2] == (["FBT102"], "unsafe")
    assert fires("FBT102", PUSHF, live) == "pushfq emulated from the handler's live flags"


def test_fbt102_only_for_pushf():
    t = make_table(step_fixups=0)
    assert fires("FBT102", PUSH_RBP, t) is None
    assert fires("FBT102", POPF, t) is None


# --- FBT103 live-if-not-restored ----------------------------------------------------------------


def test_fbt103_masked_fires_preserved_passes():
    masked = make_table(step_if=StepIF.MASKED, step_fixups=ALL_FIXUPS & ~Fixup.LIVE_IF)
    preserved = dataclasses.replace(masked, step_if=StepIF.PRESERVED)
    assert run(PUSH_RBP, masked)[:2] == (["FBT103"], "unsafe")
    assert fires("FBT103", PUSH_RBP, masked) == "pushq %rbp stepped with if masked and not restored"
    assert run(PUSH_RBP, preserved)[:2] == ([], "safe")


def test_fbt103_live_if_fixup_passes():
    assert run(PUSH_RBP, make_table(step_if=StepIF.MASKED, step_fixups=Fixup.LIVE_IF))[0] == []


def test_fbt103_dtrace4linux_after_fix_pushf_returns_before_if_restore():
    # aa60b7f: PUSHF repaired, but its case returns before the IF-restore path.
    t = make_table(
        entry(b"\x9c", Handling.STEP, Fixup.PUSHED_FLAGS, "pushf", match_flags=OWN),
        mechanism=StepMechanism.TF,
        step_if=StepIF.MASKED,
        step_fixups=Fixup.LIVE_IF,
    )
    assert run(PUSHF, t)[0] == ["FBT103"]
    assert run(PUSH_RBP, t)[0] == []


def test_fbt103_not_for_emulation():
    t = make_table(entry(b"\x55", Handling.EMULATE, 0, "push"), step_if=StepIF.MASKED, step_fixups=0)
    assert run(PUSH_RBP, t)[0] == []


# --- FBT104 pc-relative-unfixed -----------------------------------------------------------------


def test_fbt104_rip_relative_without_disp_fixup():
    t = make_table(step_fixups=ALL_FIXUPS & ~Fixup.RIP_DISP)
    assert run(LEA_RIP, t)[:2] == (["FBT104"], "unsafe")
    assert fires("FBT104", LEA_RIP, t) == "leaq (%rip), %rax stepped without rip-disp fixup"
    assert run(LEA_RIP, SAFE)[0] == []


def test_fbt104_relative_branch_and_call():
    no_branch = make_table(step_fixups=ALL_FIXUPS & ~Fixup.BRANCH_TARGET)
    no_ret = make_table(step_fixups=ALL_FIXUPS & ~Fixup.RETURN_ADDR)
    assert fires("FBT104", JMP_REL, no_branch) == "jmp 0x1000 stepped without branch-target fixup"
    assert fires("FBT104", JE_REL32, no_branch) == "je 0x1006 stepped without branch-target fixup"
    assert fires("FBT104", JMP_REL, no_ret) is None
    assert fires("FBT104", CALL_REL, no_ret) == "callq 0x1005 stepped without return-addr fixup"
    none = make_table(step_fixups=0)
    assert (
        fires("FBT104", CALL_REL, none) == "callq 0x1005 stepped without branch-target and return-addr fixups"
    )


def test_fbt104_emulated_or_refused_branches_pass():
    t = make_table(
        entry(b"\xe8", Handling.EMULATE, 0, "call"),
        entry(b"\xe9", Handling.REFUSE, 0, "jmp"),
        step_fixups=0,
    )
    assert run(CALL_REL, t)[0] == []
    assert run(JMP_REL, t)[0] == ["FBT114"]
    assert fires("FBT104", MOV, make_table(step_fixups=0)) is None


# --- FBT105 trap-instruction --------------------------------------------------------------------


def test_fbt105_stepped_or_emulated_fires_refused_passes():
    assert run(UD2, SAFE)[:2] == (["FBT105"], "unsafe")
    assert fires("FBT105", UD2, SAFE) == "trap instruction ud2 stepped"
    emulating = make_table(entry(b"\xcc", Handling.EMULATE, 0, "int3"))
    assert fires("FBT105", INT3, emulating) == "trap instruction int3 emulated"
    refusing = make_table(entry(b"\x0f\x0b", Handling.REFUSE, 0, "ud2"))
    assert run(UD2, refusing)[:2] == (["FBT114"], "refused")


# --- FBT106 trap-shadow -------------------------------------------------------------------------


def test_fbt106_mov_ss():
    assert run(MOV_SS, SAFE)[:2] == (["FBT106"], "unsafe")
    assert fires("FBT106", MOV_SS, SAFE) == "movl %eax, %ss stepped in its own trap shadow"
    refusing = make_table(entry(b"\x8e", Handling.REFUSE, 0, "mov ss", modrm_mask=0x38, modrm_value=0x10))
    assert run(MOV_SS, refusing)[0] == ["FBT114"]
    mov_ds = insn("8ed8", "movl", "%eax, %ds", modrm_off=1)  # 8e /3: no shadow
    assert run(mov_ds, refusing)[0] == []


# --- FBT107 privileged-instruction --------------------------------------------------------------


def test_fbt107_privileged_fires_ring0_steps_pass():
    assert run(HLT, SAFE)[:2] == (["FBT107"], "unsafe")
    assert fires("FBT107", HLT, SAFE) == "privileged instruction hlt stepped"
    emulating = make_table(
        entry(b"\x0f\x01", Handling.EMULATE, 0, "swapgs", modrm_mask=0xFF, modrm_value=0xF8)
    )
    assert fires("FBT107", SWAPGS, emulating) == "privileged instruction swapgs emulated"
    assert run(RDMSR, SAFE)[0] == []  # ring-0 steps of rdmsr/wrmsr, in/out and CR moves are fine
    refusing = make_table(entry(b"\xf4", Handling.REFUSE, 0, "hlt"))
    assert run(HLT, refusing)[0] == ["FBT114"]


# --- FBT108 far-transfer ------------------------------------------------------------------------


def test_fbt108_far_transfer():
    assert run(LRET, SAFE)[:2] == (["FBT108"], "unsafe")
    assert fires("FBT108", LRET, SAFE) == "far transfer lretl stepped"
    assert fires("FBT108", LCALL_MEM, SAFE) == "far transfer lcalll *(%rax) stepped"
    refusing = make_table(entry(b"\xff", Handling.REFUSE, 0, "lcall", modrm_mask=0x38, modrm_value=0x18))
    assert run(LCALL_MEM, refusing)[0] == ["FBT114"]
    assert fires("FBT108", RET, SAFE) is None


# --- FBT109 rep-string-stepped ------------------------------------------------------------------


def test_fbt109_tf_step_fires_int3_step_passes():
    tf = make_table(mechanism=StepMechanism.TF, step_fixups=ALL_FIXUPS & ~Fixup.REP_CONT)
    int3 = dataclasses.replace(tf, step_mechanism=StepMechanism.INT3)
    assert run(REP_STOSB, tf)[:2] == (["FBT109"], "unsafe")
    assert fires("FBT109", REP_STOSB, tf) == "rep stosb %al, (%rdi) tf-stepped for one iteration"
    assert run(REP_STOSB, int3)[:2] == ([], "safe")


def test_fbt109_rep_continuation_passes():
    t = make_table(mechanism=StepMechanism.TF, step_fixups=ALL_FIXUPS)
    assert run(REP_STOSB, t)[0] == []
    stosb = insn("aa", "stosb", "%al, (%rdi)")
    assert run(stosb, make_table(mechanism=StepMechanism.TF, step_fixups=0))[0] == []


# --- FBT110 not-in-table ------------------------------------------------------------------------


def test_fbt110_default_none_fires_default_step_passes():
    none = make_table(entry(b"\x55", Handling.STEP, 0, "push"), default=Handling.NONE)
    step = dataclasses.replace(none, default_handling=Handling.STEP)
    ids, verdict, j = run(CPUID, none)
    assert (ids, verdict) == (["FBT110"], "refused")
    assert j.findings[0].level is Level.NOTE
    assert j.findings[0].message == "no table entry for cpuid, no default handling"
    assert j.handling == "none"
    assert run(CPUID, step)[:2] == ([], "safe")
    assert run(PUSH_RBP, none)[0] == []  # listed


def test_fbt110_is_the_only_insn_rule_on_an_unlisted_instruction():
    none = make_table(default=Handling.NONE, step_fixups=0, step_if=StepIF.MASKED)
    for i in (PUSHF, POPF, UD2, HLT, LRET, REP_STOSB, RET):
        assert run(i, none)[0] == ["FBT110"], i.text


# --- FBT111 undecodable -------------------------------------------------------------------------


def test_fbt111_invalid_bytes_alone():
    for t in (
        SAFE,
        make_table(default=Handling.NONE),
        make_table(default=Handling.REFUSE),
        legacy_2011_like(),
    ):
        ids, verdict, j = run(BAD, t)
        assert (ids, verdict) == (["FBT111"], "unsafe")
        assert j.findings[0].message == "undecodable bytes 06"
        assert j.handling == "none"


def test_fbt111_no_bytes_and_valid_bytes():
    assert fires("FBT111", NOTHING, SAFE) == "no instruction bytes at the patchpoint"
    assert fires("FBT111", PUSH_RBP, SAFE) is None


def test_fbt111_skips_the_table_lookup():
    # An entry that would match anything, refusing it: an invalid instruction never reaches it.
    t = make_table(entry(b"\x00", Handling.REFUSE, 0, "anything", opcode_mask=0))
    assert run(insn("06", "(bad)", classes=IC.INVALID), t)[0] == ["FBT111"]
    assert run(PUSH_RBP, t)[0] == ["FBT114"]


# --- FBT113 control-transfer-unfixed ------------------------------------------------------------


def test_fbt113_ret_and_indirect_jump_need_transfer_ip():
    t = make_table(step_fixups=ALL_FIXUPS & ~Fixup.TRANSFER_IP)
    assert run(RET, t)[:2] == (["FBT113"], "unsafe")
    assert fires("FBT113", RET, t) == "retq stepped without transfer-ip fixup"
    assert fires("FBT113", JMP_REG, t) == "jmpq *%rax stepped without transfer-ip fixup"
    assert run(RET, SAFE)[0] == [] and run(JMP_REG, SAFE)[0] == []


def test_fbt113_indirect_call_needs_return_addr_and_transfer_ip():
    only_ip = make_table(step_fixups=Fixup.TRANSFER_IP)
    only_ret = make_table(step_fixups=Fixup.RETURN_ADDR)
    both = make_table(step_fixups=Fixup.TRANSFER_IP | Fixup.RETURN_ADDR)
    assert fires("FBT113", CALL_REG, only_ip) == "callq *%rax stepped without return-addr fixup"
    assert fires("FBT113", CALL_REG, only_ret) == "callq *%rax stepped without transfer-ip fixup"
    assert fires("FBT113", CALL_REG, make_table(step_fixups=0)) == (
        "callq *%rax stepped without return-addr and transfer-ip fixups"
    )
    assert fires("FBT113", CALL_REG, both) is None


def test_fbt113_emulated_passes():
    t = make_table(entry(b"\xc3", Handling.EMULATE, 0, "ret"), step_fixups=0)
    assert run(RET, t)[0] == []


# --- FBT114 table-refusal -----------------------------------------------------------------------


def test_fbt114_entry_refusal_names_the_entry():
    t = make_table(entry(b"\xe8", Handling.REFUSE, 0, "call"))
    ids, verdict, j = run(CALL_REL, t)
    assert (ids, verdict) == (["FBT114"], "refused")
    assert j.findings[0].level is Level.NOTE
    assert j.findings[0].message == "callq 0x1005 refused by table entry 'call'"
    assert j.handling == "refuse"


def test_fbt114_default_refusal():
    t = make_table(default=Handling.REFUSE)
    assert run(CPUID, t)[0] == ["FBT114"]
    assert fires("FBT114", CPUID, t) == "cpuid refused by table default"


def test_fbt114_is_the_only_insn_rule_on_a_refusal():
    t = make_table(
        entry(b"\x00", Handling.REFUSE, 0, "any 1-byte", opcode_mask=0),
        entry(b"\x0f\x00", Handling.REFUSE, 0, "any 0f xx", opcode_mask=0),
        step_if=StepIF.MASKED,
        step_fixups=0,
    )
    for i in (PUSHF, POPF, UD2, HLT, LRET, RET, LEA_RIP):
        assert run(i, t)[0] == ["FBT114"], i.text


def test_fbt114_passes_when_handled():
    assert fires("FBT114", CALL_REL, SAFE) is None


# --- the judge: variants, ftrace, ordering, selection -------------------------------------------


def ftrace_table(**header) -> EmulationTable:
    return make_table(entry(b"\xe8", Handling.FTRACE, 0, "fentry", target=Target.FENTRY), **header)


def test_judge_ftrace_handling_fires_no_insn_rule():
    t = ftrace_table(default=Handling.NONE, step_fixups=0, step_if=StepIF.MASKED)
    ids, verdict, j = run(FENTRY_CALL, t)
    assert (ids, verdict) == ([], "safe")
    assert j.handling == "ftrace"


def test_judge_ftrace_site_skips_live_forms():
    # the ftrace site's disk form goes through ftrace, so the int3 never meets its boot-time NOP
    t = ftrace_table(step_if=StepIF.MASKED, step_fixups=0)
    j = judge(patchpoint(FENTRY_CALL, ("ftrace-nop", NOP5)), t, RULES)
    assert (j.findings, j.handling, j.verdict) == ([], "ftrace", Verdict.SAFE)


def test_judge_live_only_finding_names_its_variant():
    # emulating the disk call is fine; the boot-time NOP is then stepped with IF lost
    t = make_table(entry(b"\xe8", Handling.EMULATE, 0, "call"), step_if=StepIF.MASKED, step_fixups=0)
    j = judge(patchpoint(FENTRY_CALL, ("ftrace-nop", NOP5)), t, RULES)
    assert [f.rule_id for f in j.findings] == ["FBT103"]
    (f,) = j.findings
    assert f.variant == "ftrace-nop"
    assert f.message == "nopl (%rax,%rax) stepped with if masked and not restored"
    assert j.handling == "emulate"
    assert j.verdict is Verdict.UNSAFE


def test_judge_disk_finding_wins_over_the_same_rule_on_a_live_variant():
    t = make_table(step_if=StepIF.MASKED, step_fixups=0)
    j = judge(patchpoint(PUSH_RBP, ("alt", MOV)), t, RULES)
    assert [(f.rule_id, f.variant) for f in j.findings] == [("FBT103", "disk")]
    assert "[live" not in j.findings[0].message


def test_judge_one_finding_per_rule_sorted_by_id_across_variants():
    t = make_table(step_fixups=0, mechanism=StepMechanism.TF)
    j = judge(patchpoint(RET, ("live-a", REP_STOSB), ("live-b", PUSHF), ("live-c", CALL_REG)), t, RULES)
    assert [f.rule_id for f in j.findings] == ["FBT102", "FBT109", "FBT113"]
    assert {f.rule_id: f.variant for f in j.findings} == {
        "FBT102": "live-b",
        "FBT109": "live-a",
        "FBT113": "disk",
    }
    assert j.handling == "step"


def test_judge_worst_variant_decides_the_verdict():
    # disk refused (note), live variant stepped unsafely (error): the patchpoint is unsafe
    t = make_table(entry(b"\x55", Handling.REFUSE, 0, "push"), step_fixups=0)
    j = judge(patchpoint(PUSH_RBP, ("alt", PUSHF)), t, RULES)
    assert [f.rule_id for f in j.findings] == ["FBT102", "FBT114"]
    assert j.verdict.label == "unsafe"
    assert j.handling == "refuse"


def test_judge_respects_the_selected_rules():
    t = legacy_2011_like()
    assert run(PUSHF, t, registry.select(ignore=["FBT10"]))[0] == []
    assert run(PUSHF, t, registry.select(["FBT102"]))[0] == ["FBT102"]
    assert run(CALL_REL, t, registry.select(["FBT104"]))[0] == []  # refusal plan without FBT114


def test_judge_without_variants_judges_the_disk_insn():
    pp = dataclasses.replace(patchpoint(PUSHF), variants=())
    j = judge(pp, legacy_2011_like(), RULES)
    assert [f.rule_id for f in j.findings] == ["FBT102"]


def test_judge_reuses_its_preparation_and_memoises_lookups():
    t = legacy_2011_like()
    j = Judge(t, RULES)
    assert j.handling(PUSHF) is j.handling(dataclasses.replace(PUSHF, addr=0x2000))  # the table's memo
    assert j.handling(PUSHF) is t.handling(PUSHF)
    a, b = judge(patchpoint(PUSHF), t, RULES), judge(patchpoint(PUSHF), t, RULES)
    assert a.findings == b.findings


def test_judge_memo_distinguishes_what_matching_reads():
    # same opcode, different ModRM / REX / prefix / target class: different entries
    t = make_table(
        entry(b"\x8e", Handling.REFUSE, 0, "mov ss", modrm_mask=0x38, modrm_value=0x10),
        entry(b"\xe8", Handling.FTRACE, 0, "fentry", target=Target.FENTRY),
        entry(b"\xaa", Handling.REFUSE, 0, "rep stos", prefix=b"\xf3"),
        entry(b"\xcf", Handling.REFUSE, 0, "iretq", rex_mask=0x08, rex_value=0x08),
    )
    j = Judge(t, RULES)
    assert j.handling(MOV_SS)[1] is Handling.REFUSE
    assert j.handling(insn("8ed8", "movl", "%eax, %ds", modrm_off=1))[1] is Handling.STEP
    assert j.handling(FENTRY_CALL)[1] is Handling.FTRACE
    assert j.handling(CALL_REL)[1] is Handling.STEP
    assert j.handling(REP_STOSB)[1] is Handling.REFUSE
    assert j.handling(insn("aa", "stosb", "%al, (%rdi)"))[1] is Handling.STEP
    assert j.handling(IRETQ)[1] is Handling.REFUSE
    assert j.handling(insn("cf", "iretl"))[1] is Handling.STEP


def test_judge_step_fixups_only_for_step():
    t = make_table(entry(b"\x9c", Handling.EMULATE, 0, "pushf"), step_fixups=ALL_FIXUPS)
    e, h, f = Judge(t, RULES).handling(PUSHF)
    assert (e.mnemonic, h, f) == ("pushf", Handling.EMULATE, Fixup(0))
    e, h, f = Judge(make_table(default=Handling.NONE), RULES).handling(PUSHF)
    assert (e, h, f) == (None, Handling.NONE, Fixup(0))
    e, h, f = Judge(make_table(step_fixups=Fixup.LIVE_IF), RULES).handling(PUSHF)
    assert (e, h, f) == (None, Handling.STEP, Fixup.LIVE_IF)


def test_fbt111_patchpoint_inside_another_instruction():
    pp = dataclasses.replace(patchpoint(RET, name="f_thunk"), facts=frozenset({"mid-instruction:f_untrain"}))
    j = judge(pp, SAFE, RULES)
    assert [(f.rule_id, f.message) for f in j.findings] == [
        ("FBT111", "patchpoint inside an instruction of f_untrain")
    ]
    assert j.verdict.label == "unsafe"
    other = dataclasses.replace(pp, facts=frozenset({"crosses-symbol:f_next", "ftrace-site"}))
    # No FBT111 without the mid-instruction fact; the emulated ret on an ftrace site is FBT202's.
    assert [f.rule_id for f in judge(other, SAFE, RULES).findings] == ["FBT202"]


# --- FBT115: a branch into the patch window (--deep facts) -----------------------------------------------


def test_fbt115_fires_only_with_a_window_a_fact_inside_it_and_a_placed_site():
    from fbt_audit.model.facts import WINDOW_TARGET

    wide = make_table(patch_len=5)
    pp = patchpoint(PUSH_RBP)
    pp.facts = frozenset({f"{WINDOW_TARGET}2:jmp from g+0x10"})
    j = judge(pp, wide, RULES)
    assert [(f.rule_id, f.message) for f in j.findings] == [
        ("FBT115", "jmp from g+0x10 lands at +2, inside the 5-byte window")
    ]
    assert [f.rule_id for f in judge(pp, SAFE, RULES).findings] == []  # int3 only: no window
    refusing = make_table(entry(b"\x55", Handling.REFUSE, mnemonic="push"), patch_len=5)
    assert [f.rule_id for f in judge(pp, refusing, RULES).findings] == ["FBT114"]
    outside = patchpoint(PUSH_RBP)
    outside.facts = frozenset({f"{WINDOW_TARGET}5:jmp from g+0x10"})  # the window is [0, 5): +5 is past it
    assert [f.rule_id for f in judge(outside, wide, RULES).findings] == []
