"""helpers_report.py: synthetic AuditResults for the report tests: kernel, table, patchpoints, judged by real rules."""

from __future__ import annotations

import dataclasses

from fbt_audit.judge import registry
from fbt_audit.judge.judge import Judge
from fbt_audit.judge.result import AuditResult
from fbt_audit.model import abi
from fbt_audit.model.abi import EmuFlags, Handling, StepIF, StepMechanism, Target
from fbt_audit.model.core import IC, Insn, Judgement, Patchpoint, Variant
from fbt_audit.model.kernel import Kernel
from fbt_audit.table.emulation import EmulationTable, parse

TEXT = 0xFFFFFFFF81000000  # .text of the synthetic vmlinux
MODULE_TEXT = 0x10000000  # the synthetic base fbt-audit would give a module's .text
BUILD_ID = "3a1f0c5e9b7d2468ace013579bdf2468ace01357"
MODULE_BUILD_ID = "77aa55cc33ee1100ffddbb99775533110022aabb"
RELEASE = "6.1.0-56-amd64"


# The four rules the report tests exercise: the registry's own objects, so their levels, names, summaries,
# tags and docstrings are the ones every report shows.
RULES = [registry.get(rid) for rid in ("FBT102", "FBT110", "FBT202", "FBT204")]


def _entry(opcode: str, mnemonic: str, mask: int = 0xFF) -> bytes:
    op = bytes.fromhex(opcode)
    return abi.ENTRY_STRUCT.pack(
        b"", 0, 0, op, len(op), mask, 0, 0, Target.ANY, Handling.STEP, 0, 0, 0, mnemonic.encode(),
    )  # fmt: skip


# Steps push (50-57), mov (8b), call rel32 (e8), the 5-byte nop and pushf with no fixups; no default handling,
# so swapgs is not in the table.
ENTRIES = (_entry("50", "push", 0xF8), _entry("8b", "mov"), _entry("e8", "call"), _entry("0f1f", "nop"),
           _entry("9c", "pushf"))  # fmt: skip


def table(name: str = "legacy-2011") -> EmulationTable:
    """A valid table packed with abi.HEADER_STRUCT and abi.ENTRY_STRUCT: TF step, IF masked, no default."""
    raw = abi.HEADER_STRUCT.pack(
        abi.MAGIC, abi.ABI_VERSION, abi.HEADER_SIZE, abi.ENTRY_SIZE, len(ENTRIES),
        Handling.NONE, StepMechanism.TF, StepIF.MASKED, EmuFlags.LIVE, 0, 0, b"\0" * 2, 0, 0,
        name.encode(),
    )  # fmt: skip
    return parse(raw + b"".join(ENTRIES), f"named:{name}")


def judged(pps: list[Patchpoint]) -> list[Judgement]:
    """The real judge with the real rules (RULES) under table()."""
    judge = Judge(table(), RULES)
    return [judge(pp) for pp in pps]


def kernel(
    kind: str = "vmlinux",
    module: str = "kernel",
    display: str | None = None,
    release: str | None = RELEASE,
    build_id: str | None = BUILD_ID,
    path: str = "/home/someone/secret/vmlinux",
) -> Kernel:
    display = display or ("vmlinux" if kind == "vmlinux" else f"{module}.ko")
    return Kernel(path, display, kind, module, release, build_id, sections=[], symbols=[], data=b"")


def insn(
    addr: int,
    hexbytes: str,
    mnemonic: str,
    operands: str = "",
    *,
    prefixes: bytes = b"",
    rex: int = 0,
    opcode: bytes | None = None,
    modrm_off: int = -1,
    classes: IC = IC.NONE,
    target_name: str | None = None,
) -> Insn:
    raw = bytes.fromhex(hexbytes)
    skip = len(prefixes) + (1 if rex else 0)
    return Insn(
        addr=addr,
        raw=raw,
        mnemonic=mnemonic,
        operands=operands,
        prefixes=prefixes,
        rex=rex,
        opcode=opcode if opcode is not None else raw[skip : skip + 1],
        modrm_off=modrm_off,
        classes=classes,
        target_name=target_name,
    )


def patchpoint(
    name: str,
    addr: int,
    ins: Insn,
    *,
    module: str = "kernel",
    section: str = ".text",
    sec_base: int = TEXT,
    sym_addr: int | None = None,
    kind: str = "FUNC",
    site: str = "entry",
    live: tuple[Variant, ...] = (),
    facts: frozenset[str] = frozenset(),
    source: tuple[str, int] | None = None,
) -> Patchpoint:
    return Patchpoint(
        module=module,
        name=name,
        aliases=(),
        kind=kind,
        site=site,
        sym_addr=addr if sym_addr is None else sym_addr,
        addr=addr,
        section=section,
        sec_off=addr - sec_base,
        insn=ins,
        variants=(Variant("disk", ins), *live),
        facts=facts,
        source=source,
    )


def vmlinux_result(
    shift: int = 0, release: str | None = RELEASE, display: str = "vmlinux", errors: list[str] | None = None
) -> AuditResult:
    """Five patchpoints: safe push, safe rip-relative mov, deny ftrace site, unsafe pushf, refused swapgs.
    `shift` moves every address (as a rebuild would) without changing anything else."""
    base = TEXT + shift
    a_push, a_mov, a_fentry, a_pushf, a_entry = (
        TEXT + 0x100000 + shift,
        TEXT + 0x100040 + shift,
        TEXT + 0x123450 + shift,
        TEXT + 0x1E2C70 + shift,
        TEXT + 0xE00000 + shift,
    )
    fentry = insn(a_fentry, "e8 00 00 00 00", "call", "0x0", classes=IC.REL_CALL, target_name="__fentry__")
    nop = insn(a_fentry, "0f 1f 44 00 00", "nop", "dword ptr [rax + rax]", opcode=b"\x0f\x1f", modrm_off=2,
               classes=IC.NOP)  # fmt: skip
    pushf = insn(a_pushf, "9c", "pushfq", classes=IC.PUSHES_FLAGS | IC.READS_FLAGS | IC.STACK)
    j = judged([
        patchpoint("do_one_initcall", a_push, insn(a_push, "55", "push", "rbp"), sec_base=base),
        patchpoint("read_tsc", a_mov,
                   insn(a_mov, "48 8b 05 10 20 30 00", "mov", "rax, qword ptr [rip + 0x302010]", rex=0x48,
                        modrm_off=2, classes=IC.RIP_RELATIVE),
                   sec_base=base),
        patchpoint("vfs_read", a_fentry, fentry, sec_base=base, live=(Variant("ftrace-nop", nop),),
                   facts=frozenset({"ftrace-site"})),
        patchpoint("native_save_fl", a_pushf, pushf, sec_base=base, facts=frozenset({"deny:noinstr"})),
        patchpoint("entry_SYSCALL_64", a_entry, insn(a_entry, "0f 01 f8", "swapgs", opcode=b"\x0f\x01", modrm_off=2,
                                                      classes=IC.PRIVILEGED),
                   sec_base=base, kind="NOTYPE"),
    ])  # fmt: skip
    return AuditResult(
        kernel=kernel(display=display, release=release),
        table=table(),
        judgements=j,
        rules=list(RULES),
        errors=list(errors or []),
    )


def module_result(shift: int = 0, source: tuple[str, int] | None = ("arch/x86/kvm/x86.c", 1234)) -> AuditResult:
    """kvm.ko: an unsafe pushf in an .isra clone (with a DWARF line), and a safe function."""
    base = MODULE_TEXT + shift
    a1, a2 = base + 0x40, base + 0x1A0
    j = judged([
        patchpoint("kvm_save_flags.isra.0", a1, insn(a1, "9c", "pushfq", classes=IC.PUSHES_FLAGS), module="kvm",
                   sec_base=base, source=source),
        patchpoint("kvm_arch_init", a2, insn(a2, "41 57", "push", "r15", rex=0x41), module="kvm", sec_base=base),
    ])  # fmt: skip
    return AuditResult(
        kernel=kernel(kind="module", module="kvm", build_id=MODULE_BUILD_ID, path="/lib/modules/x/kvm.ko"),
        table=table(),
        judgements=j,
        rules=list(RULES),
    )


def with_judgements(result: AuditResult, judgements: list[Judgement]) -> AuditResult:
    return dataclasses.replace(result, judgements=judgements)
