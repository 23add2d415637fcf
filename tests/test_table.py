"""test_table.py: the emulation tables: shipped bytes = fresh C build, C/Python ABI sync, reader errors, matching."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import pytest

from fbt_audit.model import abi
from fbt_audit.model.abi import Fixup, Handling, Target
from fbt_audit.model.core import IC, Insn
from fbt_audit.model.errors import TableFormatError
from fbt_audit.report.table_text import fixup_names, format_table
from fbt_audit.table import emulation as table

ROOT = Path(__file__).resolve().parent.parent
KMOD = ROOT / "kmod"
SOURCES = sorted((KMOD / "tables").glob("*.c"))
SHIPPED = ROOT / "audit" / "table" / "named"

def compile_c(src: Path, out: Path) -> Path:
    subprocess.run(
        ["gcc", "-c", "-O2", "-Wall", "-Wextra", "-Werror", "-I", str(KMOD), "-o", str(out), str(src)],
        check=True,
        capture_output=True,
        text=True,
    )
    return out


# --- (a) the shipped .fbt files are exactly what the C sources compile to ---------------------------


def test_every_named_table_has_a_source():
    assert {p.stem for p in SOURCES} == set(table.NAMED.values())


def test_kprobes_is_the_newest_kprobes_table():
    t = table.load("kprobes")
    assert t.name == "kprobes-6.12" and t.raw == table.load("kprobes-6.12").raw
    assert t.source == "named:kprobes"


def test_shipped_tables_equal_a_fresh_build(tmp_path):
    subprocess.run([str(ROOT / "scripts" / "build-tables"), str(tmp_path)], check=True, capture_output=True)
    for src in SOURCES:
        fresh = (tmp_path / f"{src.stem}.fbt").read_bytes()
        shipped = (SHIPPED / f"{src.stem}.fbt").read_bytes()
        assert fresh == shipped, f"audit/table/named/{src.stem}.fbt is stale: run scripts/build-tables"


@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.stem)
def test_table_name_is_its_file_name(src, tmp_path):
    t = table.load(str(compile_c(src, tmp_path / f"{src.stem}.o")))
    assert t.name == src.stem


def test_long_mnemonic_does_not_compile(tmp_path):
    src = tmp_path / "long.c"
    src.write_text(
        '#include "fbt_table_def.h"\n'
        "FBT_EMU_TABLE(fbt_emu_table,\n"
        '\tFBT_HEADER("long", FBT_H_STEP, FBT_STEP_INT3, FBT_IF_MASKED, FBT_EMU_SAVED, 1, 0),\n'
        '\tFBT_OP1(0x90, FBT_H_STEP, 0, "twelve chars"),\n'
        ");\n"
    )
    with pytest.raises(subprocess.CalledProcessError):
        compile_c(src, tmp_path / "long.o")


# --- (b) C sizeof/offsetof and constants agree with audit/model/abi.py ------------------------------------


def test_c_layout_matches_python_descriptor(tmp_path):
    lines = ["#include <stdio.h>", "#include <stddef.h>", '#include "fbt_table.h"', "int main(void)", "{"]
    for struct, fields in (("fbt_emu_header", abi.HEADER_FIELDS), ("fbt_emu_entry", abi.ENTRY_FIELDS)):
        lines.append(f'\tprintf("{struct} sizeof %zu\\n", sizeof(struct {struct}));')
        for name, _ in fields:
            lines.append(f'\tprintf("{struct} {name} %zu\\n", offsetof(struct {struct}, {name}));')
    lines.append('\tprintf("fbt_emu_table entries %zu\\n", offsetof(struct fbt_emu_table, entries));')
    constants = {
        "FBT_EMU_ABI_VERSION": abi.ABI_VERSION,
        "FBT_M_EXACT_PREFIX": abi.MATCH_EXACT_PREFIX,
        "FBT_M_OWN_FIXUPS": abi.MATCH_OWN_FIXUPS,
    }
    prefixes = (
        ("FBT_H_", abi.Handling),
        ("FBT_STEP_", abi.StepMechanism),
        ("FBT_IF_", abi.StepIF),
        ("FBT_EMU_", abi.EmuFlags),
        ("FBT_T_", abi.Target),
        ("FBT_FX_", abi.Fixup),
    )
    for prefix, kind in prefixes:
        for m in kind:
            constants[prefix + m.name] = int(m.value)
    for cname in constants:
        lines.append(f'\tprintf("const {cname} %ld\\n", (long)({cname}));')
    lines.append('\tprintf("const FBT_EMU_SECTION %s\\n", FBT_EMU_SECTION);')
    lines.append('\tprintf("const FBT_EMU_MAGIC %s\\n", FBT_EMU_MAGIC);')
    lines += ["\treturn 0;", "}"]
    src = tmp_path / "layout.c"
    src.write_text("\n".join(lines) + "\n")
    exe = tmp_path / "layout"
    subprocess.run(["gcc", "-Wall", "-Werror", "-I", str(KMOD), "-o", str(exe), str(src)], check=True)
    got: dict[tuple[str, str], str] = {}
    for line in subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout.splitlines():
        a, b, c = line.split(" ", 2)
        got[a, b] = c

    assert int(got["fbt_emu_header", "sizeof"]) == abi.HEADER_SIZE == 64
    assert int(got["fbt_emu_entry", "sizeof"]) == abi.ENTRY_SIZE == 32
    assert int(got["fbt_emu_table", "entries"]) == abi.HEADER_SIZE
    for struct, fields in (("fbt_emu_header", abi.HEADER_FIELDS), ("fbt_emu_entry", abi.ENTRY_FIELDS)):
        for name, off in abi.offsets(fields).items():
            assert int(got[struct, name]) == off, f"{struct}.{name}"
    for cname, value in constants.items():
        assert int(got["const", cname]) == value, cname
    assert got["const", "FBT_EMU_SECTION"] == abi.SECTION
    assert got["const", "FBT_EMU_MAGIC"].encode() == abi.MAGIC


# --- (c) reading tables, and the errors for broken ones ---------------------------------------------


NAMES = ["reference", "legacy-2011", "kprobes-6.1", "kprobes-6.12"]


@pytest.mark.parametrize("name", NAMES)
def test_named_tables_parse(name):
    t = table.load(name)
    assert t.name == name
    assert t.source == f"named:{name}"
    assert t.entries
    assert len(t.raw) == abi.HEADER_SIZE + len(t.entries) * abi.ENTRY_SIZE
    assert all(e.mnemonic and e.handling != Handling.NONE for e in t.entries)
    assert [e.index for e in t.entries] == list(range(len(t.entries)))


def test_default_table_is_reference():
    assert table.load(None).name == "reference"


def test_headers():
    ref, leg = table.load("reference"), table.load("legacy-2011")
    assert (ref.default_handling, ref.step_mechanism, ref.step_if, ref.emu_flags, ref.fault_fixup) == (
        Handling.STEP,
        abi.StepMechanism.INT3,
        abi.StepIF.MASKED,
        abi.EmuFlags.SAVED,
        True,
    )
    assert ref.step_fixups == Fixup.LIVE_IF | Fixup.RIP_DISP
    assert (leg.default_handling, leg.step_mechanism, leg.step_if, leg.emu_flags, leg.fault_fixup) == (
        Handling.STEP,
        abi.StepMechanism.TF,
        abi.StepIF.MASKED,
        abi.EmuFlags.SAVED,
        False,
    )
    assert leg.step_fixups == Fixup.LIVE_IF | Fixup.RIP_DISP
    assert not any(e.fixups & Fixup.REP_CONT for e in leg.entries)
    # kprobes: out of line with a trailing int3, IF cleared then ORed back, disp32(%rip) rebased,
    # emulation on regs->flags, faults fixed up at the original IP (kprobe_fault_handler).
    for name in ("kprobes-6.1", "kprobes-6.12"):
        k = table.load(name)
        assert (k.default_handling, k.step_mechanism, k.step_if, k.emu_flags, k.fault_fixup) == (
            Handling.STEP,
            abi.StepMechanism.INT3,
            abi.StepIF.MASKED,
            abi.EmuFlags.SAVED,
            True,
        )
        assert k.step_fixups == Fixup.LIVE_IF | Fixup.RIP_DISP
        assert all(e.fixups == 0 for e in k.entries)  # every fixup is the header's


def test_load_from_object_file(tmp_path):
    obj = compile_c(KMOD / "tables" / "reference.c", tmp_path / "reference.o")
    t = table.load(str(obj))
    assert t.source == str(obj)
    assert t.raw == table.load("reference").raw


def _raw() -> bytearray:
    return bytearray(table.named_bytes("reference"))


def test_bad_magic():
    raw = _raw()
    raw[0:8] = b"NOTATABL"
    with pytest.raises(TableFormatError, match="bad magic"):
        table.parse(bytes(raw), "t")


def test_wrong_abi_version():
    raw = _raw()
    raw[8:10] = (abi.ABI_VERSION + 1).to_bytes(2, "little")
    with pytest.raises(TableFormatError, match="ABI version"):
        table.parse(bytes(raw), "t")


@pytest.mark.parametrize("delta", [-abi.ENTRY_SIZE, -1, 1, abi.ENTRY_SIZE])
def test_size_not_header_plus_entries(delta):
    raw = _raw()
    raw = raw[:delta] if delta < 0 else raw + bytes(delta)
    with pytest.raises(TableFormatError, match="section is"):
        table.parse(bytes(raw), "t")


def test_count_disagrees_with_size():
    raw = _raw()
    count = int.from_bytes(raw[14:16], "little")
    raw[14:16] = (count + 1).to_bytes(2, "little")
    with pytest.raises(TableFormatError):
        table.parse(bytes(raw), "t")


def test_shorter_than_header():
    with pytest.raises(TableFormatError, match="shorter than its header"):
        table.parse(bytes(_raw()[:10]), "t")


def test_file_without_section(tmp_path):
    src = tmp_path / "plain.c"
    src.write_text("int plain(int x) { return x + 1; }\n")
    obj = tmp_path / "plain.o"
    subprocess.run(["gcc", "-c", "-O2", "-o", str(obj), str(src)], check=True)
    with pytest.raises(TableFormatError, match="no .fbt_emu_table section"):
        table.load(str(obj))


def test_not_an_elf_file(tmp_path):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"this is not ELF")
    with pytest.raises(TableFormatError):
        table.load(str(junk))


def test_missing_path(tmp_path):
    with pytest.raises(TableFormatError, match="no such table"):
        table.load(str(tmp_path / "absent.ko"))


# --- (d) lookups: which handling each table gives each instruction ---------------------------------


def mk(raw_hex: str, prefixes: str, rex: int, opcode: str, modrm_off: int, target=Target.ANY) -> Insn:
    """An Insn as the decoder models it: legacy prefixes, REX, opcode bytes, ModRM offset (-1: none)."""
    return Insn(
        addr=0x1000,
        raw=bytes.fromhex(raw_hex),
        mnemonic="",
        operands="",
        prefixes=bytes.fromhex(prefixes),
        rex=rex,
        opcode=bytes.fromhex(opcode),
        modrm_off=modrm_off,
        classes=IC.NONE,
        target_class=target,
    )


INSNS = {
    "pushf": mk("9c", "", 0, "9c", -1),
    "popf": mk("9d", "", 0, "9d", -1),
    "cli": mk("fa", "", 0, "fa", -1),
    "sti": mk("fb", "", 0, "fb", -1),
    "push %rbp": mk("55", "", 0, "55", -1),
    "push %r12": mk("4154", "", 0x41, "54", -1),
    "sub $0x10,%rsp": mk("4883ec10", "", 0x48, "83", 2),
    "call __fentry__": mk("e800000000", "", 0, "e8", -1, Target.FENTRY),
    "call rel32": mk("e800000000", "", 0, "e8", -1),
    "endbr64": mk("f30f1efa", "f3", 0, "0f1e", 3),
    "endbr seal": mk("660f1f00", "66", 0, "0f1f", 3),
    "ud2": mk("0f0b", "", 0, "0f0b", -1),
    "int3": mk("cc", "", 0, "cc", -1),
    "mov %eax,%ss": mk("8ed0", "", 0, "8e", 1),
    "rep movsb": mk("f3a4", "f3", 0, "a4", -1),
    "call *%rax": mk("ffd0", "", 0, "ff", 1),
    "call *(%rax)": mk("ff10", "", 0, "ff", 1),
    "mov 0(%rip),%rax": mk("488b0500000000", "", 0x48, "8b", 2),
    "ret": mk("c3", "", 0, "c3", -1),
    "iretq": mk("48cf", "", 0x48, "cf", -1),
    "hlt": mk("f4", "", 0, "f4", -1),
    "swapgs": mk("0f01f8", "", 0, "0f01", 2),
    # more shapes the tables distinguish
    "je rel8": mk("7405", "", 0, "74", -1),
    "je rel32": mk("0f8400000000", "", 0, "0f84", -1),
    "jmp *%r11": mk("41ffe3", "", 0x41, "ff", 2),
    "jmp *(%rax)": mk("ff20", "", 0, "ff", 1),
    "iret": mk("cf", "", 0, "cf", -1),
    "nopl 0(%rax)": mk("0f1f00", "", 0, "0f1f", 2),
    "nopl 0(%rax,%rax)": mk("0f1f440000", "", 0, "0f1f", 2),
    "movdqa 0(%rip),%xmm0": mk("660f6f0500000000", "66", 0, "0f6f", 3),
    "vmcall": mk("0f01c1", "", 0, "0f01", 2),
    "mwait": mk("0f01c9", "", 0, "0f01", 2),
    "mov %rax,%dr7": mk("0f23f8", "", 0, "0f23", 2),
    "sysretq": mk("480f07", "", 0x48, "0f07", -1),
    "jmp __x86_return_thunk": mk("e900000000", "", 0, "e9", -1, Target.RETURN_THUNK),
    # shapes the kprobes tables distinguish
    "lret": mk("cb", "", 0, "cb", -1),
    "ret $8": mk("c20800", "", 0, "c2", -1),
    "int $0x80": mk("cd80", "", 0, "cd", -1),
    "int1": mk("f1", "", 0, "f1", -1),
    "ud1": mk("0fb9", "", 0, "0fb9", -1),
    "pop %ds": mk("1f", "", 0, "1f", -1),
    "call *%eax (a32)": mk("67ffd0", "67", 0, "ff", 2),
    "call *0(%rip)": mk("ff1500000000", "", 0, "ff", 1),
}

S, E, R, M, F = Handling.STEP, Handling.EMULATE, Handling.REFUSE, Handling.MOVE, Handling.FTRACE

# name: (reference, legacy-2011, kprobes-6.1, kprobes-6.12)
EXPECTED = {
    "pushf": (E, S, E, E),  # kprobe_emulate_ifmodifiers
    "popf": (E, S, E, E),
    "cli": (E, E, E, E),
    "sti": (E, E, E, E),
    "push %rbp": (S, S, S, S),  # no emulate_op: out of line
    "push %r12": (S, S, S, S),
    "sub $0x10,%rsp": (S, S, S, S),
    "call __fentry__": (F, R, F, F),  # check_ftrace_location: kprobes on ftrace
    "call rel32": (E, R, E, E),  # kprobe_emulate_call
    "endbr64": (M, S, M, M),  # arch_adjust_kprobe_addr
    "endbr seal": (M, S, M, M),
    "ud2": (R, S, S, R),  # 6.1 steps it; 6.12: is_exception_insn (and the emulate prefix)
    "int3": (R, R, R, R),  # __copy_instruction; prepare_emulation
    "mov %eax,%ss": (R, S, R, R),  # insn_masking_exception
    "rep movsb": (S, S, S, S),
    "call *%rax": (E, S, E, E),  # kprobe_emulate_call_indirect
    "call *(%rax)": (S, S, R, R),  # "TODO: support memory addressing"
    "mov 0(%rip),%rax": (S, R, S, S),  # __copy_instruction rebases the displacement
    "ret": (E, S, E, E),  # kprobe_emulate_ret
    "iretq": (R, R, R, R),  # "in-kernel IRET is not supported"
    "hlt": (R, R, S, S),  # kprobes steps it (FBT107 flags that)
    "swapgs": (R, S, S, S),  # 0f 01 /7: not the VMX group kprobes refuses
    "je rel8": (E, S, E, E),  # kprobe_emulate_jcc
    "je rel32": (E, S, E, E),
    "jmp *%r11": (E, S, E, E),  # kprobe_emulate_jmp_indirect
    "jmp *(%rax)": (S, S, R, R),
    "iret": (R, R, R, R),
    "nopl 0(%rax)": (S, S, S, S),
    "nopl 0(%rax,%rax)": (S, S, S, S),
    "movdqa 0(%rip),%xmm0": (S, R, S, S),
    "vmcall": (R, S, R, R),  # "VM extensions - not supported"
    "mwait": (R, S, S, S),
    "mov %rax,%dr7": (R, S, S, S),
    "sysretq": (R, S, S, S),
    "jmp __x86_return_thunk": (E, S, E, E),  # kprobe_emulate_jmp
    "lret": (R, S, E, E),  # kprobe_emulate_ret: a near ret (FBT108 flags it)
    "ret $8": (E, S, E, E),
    "int $0x80": (R, S, S, R),  # 6.12: is_exception_insn
    "int1": (R, S, S, R),
    "ud1": (R, S, S, R),
    "pop %ds": (S, S, R, R),  # kprobes' POP_SS_OPCODE is 0x1f
    "call *%eax (a32)": (E, S, R, R),  # "insn->addr_bytes != sizeof(unsigned long)"
    "call *0(%rip)": (S, R, R, R),
}


def effective(t: table.EmulationTable, insn: Insn) -> tuple[Handling, Fixup]:
    """Handling and fixups as DESIGN.md "How a site is judged" derives them from the match."""
    e = t.lookup(insn)
    if e is None:
        h = t.default_handling
        return h, (t.step_fixups if h == Handling.STEP else Fixup(0))
    fx = e.fixups
    if e.handling == Handling.STEP and not e.match_flags & abi.MATCH_OWN_FIXUPS:
        fx |= t.step_fixups
    return e.handling, fx


def test_expectations_cover_every_insn():
    assert set(EXPECTED) == set(INSNS)


@pytest.mark.parametrize("col,name", list(enumerate(NAMES)))
@pytest.mark.parametrize("insn_name", list(INSNS))
def test_lookup(col, name, insn_name):
    h, _ = effective(table.load(name), INSNS[insn_name])
    assert h == EXPECTED[insn_name][col], f"{name}: {insn_name}"


def fx(name: str, insn_name: str) -> Fixup:
    return effective(table.load(name), INSNS[insn_name])[1]


def test_reference_fixups():
    assert fx("reference", "mov 0(%rip),%rax") & Fixup.RIP_DISP
    assert fx("reference", "push %rbp") == Fixup.LIVE_IF | Fixup.RIP_DISP
    assert fx("reference", "rep movsb") & Fixup.LIVE_IF


def test_kprobes_fixups():
    for name in ("kprobes-6.1", "kprobes-6.12"):
        assert fx(name, "push %rbp") == Fixup.LIVE_IF | Fixup.RIP_DISP  # resume_singlestep, __copy_instruction
        assert fx(name, "mov 0(%rip),%rax") & Fixup.RIP_DISP
        assert fx(name, "pushf") == Fixup(0)  # emulated on regs->flags: nothing to repair


def test_kprobes_tables_differ_only_by_is_exception_insn():
    k61, k612 = table.load("kprobes-6.1"), table.load("kprobes-6.12")
    added = {e.mnemonic for e in k612.entries} - {e.mnemonic for e in k61.entries}
    assert added == {"int n", "into", "int1", "ud2", "ud1", "ud0"}
    assert all(e.handling == Handling.REFUSE for e in k612.entries if e.mnemonic in added)
    common = [dataclasses.replace(e, index=0) for e in k612.entries if e.mnemonic not in added]
    assert common == [dataclasses.replace(e, index=0) for e in k61.entries]


def test_legacy_fixups():
    # PUSHF: stepped without the pushed-flags repair (FBT102), but the live IF is restored (no FBT103).
    assert not fx("legacy-2011", "pushf") & Fixup.PUSHED_FLAGS
    assert fx("legacy-2011", "pushf") & Fixup.LIVE_IF
    assert fx("legacy-2011", "je rel8") & Fixup.BRANCH_TARGET
    assert not fx("legacy-2011", "je rel32") & Fixup.BRANCH_TARGET
    assert fx("legacy-2011", "call *%rax") & (Fixup.RETURN_ADDR | Fixup.TRANSFER_IP) == (
        Fixup.RETURN_ADDR | Fixup.TRANSFER_IP
    )
    assert fx("legacy-2011", "jmp *%r11") & Fixup.TRANSFER_IP
    assert not fx("legacy-2011", "jmp *%r11") & Fixup.RETURN_ADDR
    assert fx("legacy-2011", "ret") & Fixup.TRANSFER_IP
    assert not fx("legacy-2011", "rep movsb") & Fixup.REP_CONT


def test_decoder_models_bytes_as_the_tables_expect():
    """The hand-built Insns above use the decoder's representation (prefixes, REX, opcode, ModRM)."""
    from fbt_audit.decode.insn import decode

    for name, want in INSNS.items():
        got = decode(want.raw, 0x1000)
        key = (got.prefixes, got.rex, got.opcode, got.modrm_off)
        assert key == (want.prefixes, want.rex, want.opcode, want.modrm_off), name


# --- the text listing ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_format_table(name):
    t = table.load(name)
    text = format_table(t)
    assert text == format_table(table.load(name))
    lines = text.splitlines()
    assert lines[0].split() == ["table:", name]
    assert any(line.startswith("sha256:") and line.endswith(t.sha256) for line in lines)
    rows = lines[lines.index("") + 2 :]
    assert len(rows) == len(t.entries)
    for e, row in zip(t.entries, rows, strict=True):
        assert row.split()[0] == str(e.index)
        assert e.describe_match() in row and e.mnemonic in row and e.handling.name.lower() in row
    header = lines[lines.index("") + 1]
    assert header.split() == ["#", "match", "mnemonic", "handling", "fixups"]
    col = header.index("handling")
    assert all(row[col:].startswith(e.handling.name.lower()) for e, row in zip(t.entries, rows, strict=True))


def test_fixup_names():
    assert fixup_names(Fixup(0)) == "-"
    assert fixup_names(Fixup.RETURN_ADDR | Fixup.LIVE_IF) == "live_if,return_addr"
