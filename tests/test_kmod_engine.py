"""test_kmod_engine.py: kmod/'s emulation engine against the CPU, against the SDM's states, and against fbt-audit."""

from __future__ import annotations

import ctypes
import platform
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from fbt_audit.decode.insn import decode
from fbt_audit.judge import registry
from fbt_audit.judge.judge import judge
from fbt_audit.model import abi
from fbt_audit.model.abi import Fixup, Handling
from fbt_audit.model.core import Patchpoint, Variant
from fbt_audit.report.table_text import format_table
from fbt_audit.table import emulation as table

from .helpers_kmod import (
    AC,
    CF,
    DF,
    EESCAPED,
    ENOTSUPP,
    ERANGE,
    FIXED,
    ID,
    IF,
    IOPL,
    NT,
    RF,
    RSP,
    STEP_AGAIN,
    STEP_DONE,
    TF,
    VIF,
    VIP,
    VM,
    ZF,
    Engine,
    Machine,
    Regs,
    build_engine,
    build_native,
)

pytestmark = [
    pytest.mark.skipif(platform.machine() != "x86_64", reason="runs x86-64 instructions on the CPU"),
]

STATES = 1000  # random states per emulate entry
STEP_STATES = 500  # random states per (table, stepped instruction)
KERNEL_CS = 0x10
EMULATED_TABLES = ("reference", "kprobes-6.12")
# CLI and STI fault in user mode (IOPL 0): test_architectural_* checks them against the SDM instead.
USER_UNRUNNABLE = {b"\xfa", b"\xfb"}


@pytest.fixture(scope="session")
def libs(tmp_path_factory):
    out = tmp_path_factory.mktemp("kmod-engine")
    return {
        "engine": build_engine(out),
        "broken": build_engine(out, "FBT_BREAK_PUSHF_REPAIR"),
        "native": build_native(out),
    }


@pytest.fixture(scope="session")
def engine(libs) -> Engine:
    return Engine(libs["engine"])


@pytest.fixture(scope="session")
def broken(libs) -> Engine:
    return Engine(libs["broken"])


@pytest.fixture(scope="session")
def machine(libs) -> Machine:
    return Machine(libs["native"])


# --- random instructions and states --------------------------------------------------------------

Make = Callable[[random.Random, Machine], tuple[bytes, Regs, list[tuple[int, bytes]]]]


@dataclass(frozen=True)
class Case:
    """An instruction family: a canonical encoding (to find its table entry) and a random generator."""

    name: str
    canonical: bytes
    make: Make


def u64(v: int) -> bytes:
    return (v & ((1 << 64) - 1)).to_bytes(8, "little")


def u32(v: int) -> bytes:
    return (v & 0xFFFFFFFF).to_bytes(4, "little")


def s32(v: int) -> bytes:
    return v.to_bytes(4, "little", signed=True)


def s8(v: int) -> bytes:
    return v.to_bytes(1, "little", signed=True)


def stack_noise(rng: random.Random, m: Machine, r: Regs) -> list[tuple[int, bytes]]:
    lo, n = m.window(r)
    return [(lo, rng.randbytes(n))]


def rel(rng: random.Random, m: Machine, length: int, width: int) -> int:
    """A branch displacement whose target is an int3 in the code region, never inside the branch."""
    nxt = m.P + length
    while True:
        if width == 1:
            d = rng.randint(-128, 127)
        elif rng.random() < 0.5:
            d = rng.randint(-4096, 4096)
        else:
            d = m.landing(rng) - nxt
        if not m.P <= nxt + d < nxt:
            return d


def prefixed(rng, choices, body: bytes) -> bytes:
    return rng.choice(choices) + body


def case_pushf(rng, m):
    r = m.regs(rng)
    return rng.choice([b"\x9c", b"\x48\x9c"]), r, stack_noise(rng, m, r)


def case_popf(rng, m):
    r = m.regs(rng)
    # Any popped value but TF, AC and NT, which would trap or fault in the harness itself.
    popped = rng.getrandbits(64) & ~(TF | AC | NT)
    return rng.choice([b"\x9d", b"\x48\x9d"]), r, stack_noise(rng, m, r) + [(r.gpr[RSP], u64(popped))]


def case_ret(rng, m):
    r = m.regs(rng)
    code = rng.choice([b"\xc3", b"\xf3\xc3", b"\xf2\xc3", b"\x48\xc3"])
    return code, r, stack_noise(rng, m, r) + [(r.gpr[RSP], u64(m.landing(rng)))]


def case_ret_imm(rng, m):
    r = m.regs(rng)
    code = b"\xc2" + rng.getrandbits(16).to_bytes(2, "little")
    return code, r, stack_noise(rng, m, r) + [(r.gpr[RSP], u64(m.landing(rng)))]


def _lret(rng, m, op: bytes, imm: bool):
    r = m.regs(rng)
    w = rng.getrandbits(1)
    code = (b"\x48" if w else b"") + op + (rng.getrandbits(16).to_bytes(2, "little") if imm else b"")
    sp, target = r.gpr[RSP], m.landing(rng)
    if w:
        frame = u64(target) + u64(m.cs | rng.getrandbits(48) << 16)
    else:
        frame = u32(target) + u32(m.cs | rng.getrandbits(16) << 16)
    return code, r, stack_noise(rng, m, r) + [(sp, frame)]


def case_lret(rng, m):
    return _lret(rng, m, b"\xcb", False)


def case_lret_imm(rng, m):
    return _lret(rng, m, b"\xca", True)


def case_call_rel32(rng, m):
    r = m.regs(rng)
    return b"\xe8" + s32(rel(rng, m, 5, 4)), r, stack_noise(rng, m, r)


def case_jmp_rel32(rng, m):
    r = m.regs(rng)
    return b"\xe9" + s32(rel(rng, m, 5, 4)), r, stack_noise(rng, m, r)


def case_jmp_rel8(rng, m):
    r = m.regs(rng)
    return b"\xeb" + s8(rel(rng, m, 2, 1)), r, stack_noise(rng, m, r)


def case_jcc_rel8(rng, m):
    r = m.regs(rng)
    pfx = rng.choice([b"", b"", b"\x2e", b"\x3e", b"\xf2"])  # branch hints, BND
    body = bytes([0x70 | rng.randrange(16)])
    return pfx + body + s8(rel(rng, m, len(pfx) + 2, 1)), r, stack_noise(rng, m, r)


def case_jcc_rel32(rng, m):
    r = m.regs(rng)
    pfx = rng.choice([b"", b"", b"\x2e", b"\x3e"])
    body = bytes([0x0F, 0x80 | rng.randrange(16)])
    return pfx + body + s32(rel(rng, m, len(pfx) + 6, 4)), r, stack_noise(rng, m, r)


def case_loop(rng, m):
    r = m.regs(rng)
    pfx = rng.choice([b"", b"\x67"])
    lo = rng.choice([0, 1, 2, 3, rng.getrandbits(32), 0xFFFFFFFF])
    r.gpr[1] = rng.choice([lo, lo | rng.getrandbits(32) << 32, rng.getrandbits(64)])
    body = bytes([0xE0 | rng.randrange(4)])
    return pfx + body + s8(rel(rng, m, len(pfx) + 2, 1)), r, stack_noise(rng, m, r)


def _indirect_reg(rng, m, reg_field: int):
    r = m.regs(rng)
    reg = rng.choice([i for i in range(16) if i != RSP])  # %rsp holds the stack, not a target
    rex = (0x41 if reg >= 8 else rng.choice([0, 0x40])) | rng.choice([0, 0x48])
    pfx = rng.choice([b"", b"", b"\x67"])  # a32: no effect on a register operand (kprobes refuses it)
    code = pfx + (bytes([rex]) if rex else b"") + bytes([0xFF, 0xC0 | reg_field << 3 | (reg & 7)])
    r.gpr[reg] = m.landing(rng)
    return code, r, stack_noise(rng, m, r)


def case_call_reg(rng, m):
    return _indirect_reg(rng, m, 2)


def case_jmp_reg(rng, m):
    return _indirect_reg(rng, m, 4)


def _reg_op(rng, base: int) -> bytes:
    reg = rng.randrange(16)
    return (b"\x41" if reg >= 8 else b"") + bytes([base | (reg & 7)])


def case_push(rng, m):
    r = m.regs(rng)
    return _reg_op(rng, 0x50), r, stack_noise(rng, m, r)


def case_pop(rng, m):
    r = m.regs(rng)
    return _reg_op(rng, 0x58), r, stack_noise(rng, m, r)


def case_mov(rng, m):
    r = m.regs(rng)
    if rng.random() < 0.25:
        return b"\x48\x89\xe5", r, stack_noise(rng, m, r)  # mov %rsp,%rbp
    rex = 0x40 | rng.getrandbits(1) << 3 | rng.getrandbits(1) << 2 | rng.getrandbits(1)
    code = (bytes([rex]) if rex != 0x40 or rng.getrandbits(1) else b"") + bytes(
        [rng.choice([0x89, 0x8B]), 0xC0 | rng.randrange(64)]
    )
    return code, r, stack_noise(rng, m, r)


NOPS = [bytes.fromhex(h) for h in (
    "90", "6690", "0f1f00", "0f1f4000", "0f1f440000", "660f1f440000", "0f1f8000000000", "0f1f840000000000",
    "660f1f840000000000", "662e0f1f840000000000", "660f1f00",
)]  # fmt: skip


def case_nop(rng, m):
    r = m.regs(rng)
    return rng.choice(NOPS), r, stack_noise(rng, m, r)


def case_endbr(rng, m):
    r = m.regs(rng)
    return rng.choice([b"\xf3\x0f\x1e\xfa", b"\xf3\x0f\x1e\xfb"]), r, stack_noise(rng, m, r)


EMULATION_CASES = [
    Case("pushf", b"\x9c", case_pushf),
    Case("popf", b"\x9d", case_popf),
    Case("ret", b"\xc3", case_ret),
    Case("ret imm16", b"\xc2\x08\x00", case_ret_imm),
    Case("lret", b"\xcb", case_lret),
    Case("lret imm16", b"\xca\x08\x00", case_lret_imm),
    Case("call rel32", b"\xe8\x00\x00\x00\x00", case_call_rel32),
    Case("jmp rel32", b"\xe9\x00\x00\x00\x00", case_jmp_rel32),
    Case("jmp rel8", b"\xeb\x00", case_jmp_rel8),
    Case("jcc rel8", b"\x74\x00", case_jcc_rel8),
    Case("jcc rel32", b"\x0f\x84\x00\x00\x00\x00", case_jcc_rel32),
    Case("loop", b"\xe2\x00", case_loop),
    Case("call *reg", b"\xff\xd0", case_call_reg),
    Case("jmp *reg", b"\xff\xe0", case_jmp_reg),
]
# What the engine emulates beyond the tables' emulate entries (the module's step tables may use them).
ENGINE_CASES = [
    Case("push reg", b"\x55", case_push),
    Case("pop reg", b"\x5d", case_pop),
    Case("mov reg,reg", b"\x48\x89\xe5", case_mov),
    Case("nop", b"\x90", case_nop),
    Case("endbr", b"\xf3\x0f\x1e\xfa", case_endbr),
]


def cases_for(t: table.EmulationTable, e: table.Entry) -> list[Case]:
    return [c for c in EMULATION_CASES if t.lookup(decode(c.canonical, 0x1000)) is e]


def emulate_entries() -> list:
    out = []
    for name in EMULATED_TABLES:
        t = table.load(name)
        for e in t.entries:
            if e.handling == Handling.EMULATE and e.opcode not in USER_UNRUNNABLE:
                out.append(pytest.param(name, e.index, id=f"{name}:{e.index}:{e.mnemonic}"))
    return out


# --- one differential run ------------------------------------------------------------------------


def run_native(m: Machine, r: Regs, writes) -> tuple[int, int, Regs, bytes]:
    """Apply writes, run the code at P on the CPU, and put the stack window back as it was.
    Returns the window (lo, n), the native registers and the window's contents after the run."""
    for addr, b in writes:
        m.put(addr, b)
    lo, n = m.window(r)
    before = m.get(lo, n)
    native = m.run(r)
    native_mem = m.get(lo, n)
    m.put(lo, before)
    return lo, n, native, native_mem


def differential(eng: Engine, m: Machine, raw: bytes, code: bytes, r: Regs, writes, live: int | None = None):
    """Run code at P natively and through the engine from the same state; None when they agree."""
    try:
        m.put(m.P, code)
        lo, n, native, native_mem = run_native(m, r, writes)
        got = r.copy()
        rc, _ = eng.emulate(raw, code, got, (r.flags & ~IF) | TF if live is None else live)
        if rc != 0:
            return f"{code.hex()}: engine refused ({rc}); the CPU ran it to {native.trap}"
        want = native.final()
        if native.trap not in ("int3", "SIGSEGV"):
            return f"{code.hex()}: the CPU stopped with {native.trap}"
        problems = want.diff(got)
        if m.get(lo, n) != native_mem:
            problems.append("stack memory differs")
        return f"{code.hex()}: " + "; ".join(problems) if problems else None
    finally:
        m.clean()


def run_states(eng: Engine, m: Machine, raw: bytes, cases: list[Case], seed: str, states: int, index=None):
    """Run states random states of cases; with index, only encodings the C lookup gives that entry."""
    rng = random.Random(seed)
    failures = []
    ran = k = 0
    while ran < states:
        case = cases[k % len(cases)]
        k += 1
        assert k < 4 * states, f"too few encodings of entry {index}"
        code, r, writes = case.make(rng, m)
        if index is not None:
            got, h, _ = eng.lookup(raw, code)
            if got != index:
                continue  # a variant this table handles by another entry (kprobes refuses a32 call *%reg)
            assert h == Handling.EMULATE
        ran += 1
        msg = differential(eng, m, raw, code, r, writes)
        if msg:
            failures.append(msg)
    return failures


# --- differential: every emulate entry of reference and kprobes-6.12 ------------------------------


@pytest.mark.parametrize("tname,index", emulate_entries())
def test_emulation_matches_cpu(engine, machine, tname, index):
    t = table.load(tname)
    e = t.entries[index]
    cases = cases_for(t, e)
    assert cases, f"{tname}: no differential case covers entry {index} ({e.mnemonic})"
    failures = run_states(engine, machine, t.raw, cases, f"{tname}:{index}", STATES, index)
    assert not failures, f"{len(failures)}/{STATES} states differ, e.g. {failures[:3]}"


def test_every_emulate_entry_is_covered():
    """Each emulate entry has a differential case, or (CLI, STI) an architectural test."""
    for name in EMULATED_TABLES:
        t = table.load(name)
        for e in t.entries:
            if e.handling == Handling.EMULATE:
                assert e.opcode in USER_UNRUNNABLE or cases_for(t, e), (name, e.mnemonic)


@pytest.mark.parametrize("case", ENGINE_CASES, ids=lambda c: c.name)
def test_engine_only_emulation_matches_cpu(engine, machine, case):
    """push/pop of a register, mov between registers, the NOP family, ENDBR: the engine's other forms."""
    raw = table.load("reference").raw
    failures = run_states(engine, machine, raw, [case], f"engine:{case.name}", 500)
    assert not failures, f"{len(failures)}/500 states differ, e.g. {failures[:3]}"


def test_broken_engine_fails_the_differential(broken, machine):
    """-DFBT_BREAK_PUSHF_REPAIR pushes the handler's flags (IF masked, TF set): the CPU disagrees."""
    t = table.load("reference")
    e = next(e for e in t.entries if e.opcode == b"\x9c")
    failures = run_states(broken, machine, t.raw, cases_for(t, e), "broken", 200, e.index)
    assert len(failures) == 200
    assert all("flags" not in f and "stack memory differs" in f for f in failures)


def test_differential_budget(engine, machine):
    """The whole differential suite stays small: time one entry's 1,000 states."""
    t = table.load("reference")
    e = next(e for e in t.entries if e.opcode == b"\xe8" and e.handling == Handling.EMULATE)
    start = time.perf_counter()
    assert not run_states(engine, machine, t.raw, cases_for(t, e), "budget", STATES, e.index)
    assert time.perf_counter() - start < 5


# --- out-of-line steps: the prepared copy plus fixups, against the original run in place ---------


def _mem_target(rng, m, r: Regs, form: str) -> tuple[bytes, list[tuple[int, bytes]]]:
    """A ModRM memory operand that reads a pointer to a landing int3 from the data block."""
    slot = m.data + 8 * rng.randrange(64)
    ptr = [(slot, u64(m.landing(rng)))]
    if form == "rip":
        return b"\x15", ptr  # disp32(%rip): displacement filled in by the caller
    if form == "rax":
        r.gpr[0] = slot
        return b"\x10", ptr
    if form == "rbx+8":
        r.gpr[3] = slot - 8
        return b"\x53\x08", ptr
    if form == "r12":
        r.gpr[12] = slot
        return b"\x14\x24", ptr  # with REX.B: (%r12) through a SIB
    r.gpr[1] = rng.randrange(64)  # disp32(,%rcx,8)
    return b"\x14\xcd" + s32(slot - 8 * r.gpr[1]), ptr


def _indirect_mem(rng, m, reg_field: int):
    r = m.regs(rng)
    form = rng.choice(["rip", "rax", "rbx+8", "r12", "sib"])
    modrm, writes = _mem_target(rng, m, r, form)
    modrm = bytes([(modrm[0] & ~0x38) | reg_field << 3]) + modrm[1:]
    code = (b"\x41" if form == "r12" else b"") + b"\xff" + modrm
    if form == "rip":
        code += s32(writes[0][0] - (m.P + len(code) + 4))
    return code, r, stack_noise(rng, m, r) + writes


def step_push_rbp(rng, m):
    r = m.regs(rng)
    return rng.choice([b"\x55", b"\x41\x54"]), r, stack_noise(rng, m, r)


def step_sub_rsp(rng, m):
    r = m.regs(rng)
    return b"\x48\x83\xec" + bytes([rng.randrange(256)]), r, stack_noise(rng, m, r)


def step_alu(rng, m):
    r = m.regs(rng)
    return rng.choice([b"\x31\xc0", b"\x48\x01\xd8", b"\x48\x89\xf8", b"\x48\x0f\xaf\xc3"]), r, stack_noise(rng, m, r)


def step_lea_rip(rng, m):
    r = m.regs(rng)
    return b"\x48\x8d\x05" + s32(rng.randint(-(1 << 30), 1 << 30)), r, stack_noise(rng, m, r)


def step_load_rip(rng, m):
    r = m.regs(rng)
    target = m.code + rng.randrange(0, m.CODE_SIZE - 8)
    return b"\x48\x8b\x05" + s32(target - (m.P + 7)), r, stack_noise(rng, m, r)


def step_call_mem(rng, m):
    return _indirect_mem(rng, m, 2)


def step_jmp_mem(rng, m):
    return _indirect_mem(rng, m, 4)


def step_rep_movsb(rng, m):
    r = m.regs(rng)
    sp = r.gpr[RSP]
    r.gpr[6] = sp + rng.randrange(-64, 64)  # %rsi
    r.gpr[7] = sp + rng.randrange(-64, 64)  # %rdi
    r.gpr[1] = rng.randrange(0, 48)  # %rcx
    return b"\xf3\xa4", r, stack_noise(rng, m, r)


STEP_CASES = [
    Case("push", b"\x55", step_push_rbp),
    Case("sub rsp", b"\x48\x83\xec\x10", step_sub_rsp),
    Case("alu", b"\x31\xc0", step_alu),
    Case("lea rip", b"\x48\x8d\x05\x00\x00\x00\x00", step_lea_rip),
    Case("load rip", b"\x48\x8b\x05\x00\x00\x00\x00", step_load_rip),
    Case("call *mem", b"\xff\x10", step_call_mem),
    Case("jmp *mem", b"\xff\x20", step_jmp_mem),
    Case("rep movsb", b"\xf3\xa4", step_rep_movsb),
    *EMULATION_CASES,  # legacy-2011 steps most of these
]
STEP_TABLES = ("reference", "legacy-2011", "kprobes-6.1", "kprobes-6.12")
# The rules whose hazard user mode can see (IF itself it cannot: FBT101 and FBT103 are ring-0 only).
OBSERVABLE = {"FBT102", "FBT104", "FBT109", "FBT113"}


def step_params() -> list:
    out = []
    for name in STEP_TABLES:
        t = table.load(name)
        for c in STEP_CASES:
            e = t.lookup(decode(c.canonical, 0x1000))
            if (e.handling if e else t.default_handling) == Handling.STEP:
                out.append(pytest.param(name, c, id=f"{name}:{c.name}"))
    return out


def auditor_rules(t: table.EmulationTable, code: bytes) -> set[str]:
    i = decode(code, 0x1000)
    pp = Patchpoint(
        module="kernel", name="f", aliases=(), kind="FUNC", site="entry", sym_addr=i.addr, addr=i.addr,
        section=".text", sec_off=0, insn=i, variants=(Variant("disk", i),),
    )  # fmt: skip
    return set(judge(pp, t, registry.all_rules()).rule_ids)


SKIP = object()


def step_differential(eng: Engine, m: Machine, raw: bytes, code: bytes, r: Regs, writes, fixups=None):
    """Step code out of line with the table's fixups (or the given ones); None when it matches the CPU."""
    if fixups is None:
        idx, h, fx = eng.lookup(raw, code)
        if h != Handling.STEP:
            return SKIP  # a form this table handles otherwise (legacy-2011 refuses RIP-relative ones)
    else:
        fx = int(fixups)
    rc, st, copy = eng.step_prepare(raw, code, fx, m.P, m.S)
    assert rc == 0, f"{code.hex()}: step_prepare {rc}"
    try:
        m.put(m.P, code)
        m.put(m.S, copy)
        lo, n, native, native_mem = run_native(m, r, writes)
        got = r.copy()
        eng.step_begin(st, got)
        for _ in range(100):
            got = m.run(got).final()
            rc = eng.step_end(st, got)
            if rc != STEP_AGAIN:
                break
        if rc != STEP_DONE:
            return f"{code.hex()}: step_end {rc}"
        problems = native.final().diff(got)
        if m.get(lo, n) != native_mem:
            problems.append("stack memory differs")
        return f"{code.hex()}: " + "; ".join(problems) if problems else None
    finally:
        m.clean()


@pytest.mark.parametrize("tname,case", step_params())
def test_step_matches_cpu_exactly_when_the_auditor_says_safe(engine, machine, tname, case):
    """Run the prepared copy at S with the table's fixups and compare with the original run at P.

    The CPU and fbt-audit must agree: the copy reproduces the original in every state exactly when
    no user-observable rule fires (legacy-2011's PUSHF leaks TF into the pushed image: FBT102; its
    jcc rel32 loses the branch: FBT104; its rep movsb runs once: FBT109)."""
    t = table.load(tname)
    rng = random.Random(f"step:{tname}:{case.name}")
    failures, ran = [], 0
    for _ in range(4 * STEP_STATES):
        code, r, writes = case.make(rng, machine)
        msg = step_differential(engine, machine, t.raw, code, r, writes)
        if msg is SKIP:
            continue
        ran += 1
        if msg:
            failures.append(msg)
        if ran == STEP_STATES:
            break
    assert ran == STEP_STATES
    flagged = auditor_rules(t, case.canonical) & OBSERVABLE
    if flagged:
        assert failures, f"fbt-audit flags {sorted(flagged)}, but every state matched the CPU"
    else:
        assert not failures, f"{len(failures)}/{STEP_STATES} states differ, e.g. {failures[:3]}"


CASES = {c.name: c for c in STEP_CASES}
BRANCHES = [CASES[n] for n in ("jcc rel8", "jcc rel32", "jmp rel8", "jmp rel32", "call rel32", "loop")]
INDIRECT = [CASES[n] for n in ("call *reg", "jmp *reg", "call *mem", "jmp *mem")]
REPAIRS = Fixup.BRANCH_TARGET | Fixup.RETURN_ADDR | Fixup.TRANSFER_IP | Fixup.LIVE_IF | Fixup.RIP_DISP


@pytest.mark.parametrize(
    "tname,case,fixups,equal",
    [
        # int3 stepping (reference's header): the branch aims at a second int3, the target is recomputed
        *[("reference", c, REPAIRS, True) for c in BRANCHES],
        # TF stepping (legacy-2011's header): the target is translated from the copy
        *[("legacy-2011", c, REPAIRS, True) for c in BRANCHES],
        # ff /2, ff /4: int3 stepping pushes the target (ff /6); TF stepping keeps the IP it set
        *[(t, c, REPAIRS, True) for t in ("reference", "legacy-2011") for c in INDIRECT],
        # REP continuation under TF runs every iteration; without it, one (FBT109)
        ("legacy-2011", CASES["rep movsb"], Fixup.REP_CONT | Fixup.LIVE_IF, True),
        ("legacy-2011", CASES["rep movsb"], Fixup.LIVE_IF, False),
        # a call without RETURN_ADDR returns into the copy (FBT104)
        *[(t, CASES["call rel32"], Fixup.BRANCH_TARGET, False) for t in ("reference", "legacy-2011")],
        # a taken branch without BRANCH_TARGET is lost (FBT104)
        ("legacy-2011", CASES["jcc rel8"], Fixup.LIVE_IF, False),
    ],
    ids=lambda v: v.name if isinstance(v, Case) else str(v),
)
def test_step_fixups_match_cpu(engine, machine, tname, case, fixups, equal):
    """Each fixup fbt_step_prepare/fbt_step_end implement, under both step mechanisms, against the CPU."""
    raw = table.load(tname).raw
    rng = random.Random(f"fixups:{tname}:{case.name}:{int(fixups)}")
    failures = []
    for _ in range(STEP_STATES):
        code, r, writes = case.make(rng, machine)
        msg = step_differential(engine, machine, raw, code, r, writes, fixups)
        if msg:
            failures.append(msg)
    if equal:
        assert not failures, f"{len(failures)}/{STEP_STATES} states differ, e.g. {failures[:3]}"
    else:
        assert failures


def test_legacy_pushf_step_is_the_seed(engine, broken, machine):
    """legacy-2011 steps PUSHF under TF without repair: the pushed image carries TF (and, in ring 0,
    IF=0). With PUSHED_FLAGS the copy matches the CPU; the broken engine skips that repair."""
    t = table.load("legacy-2011")
    rng = random.Random("seed-step")
    repaired = t.step_fixups | Fixup.PUSHED_FLAGS
    for eng, want_equal in ((engine, True), (broken, False)):
        for _ in range(50):
            code, r, writes = case_pushf(rng, machine)
            rc, st, copy = eng.step_prepare(t.raw, code, int(repaired), machine.P, machine.S)
            assert rc == 0
            machine.put(machine.P, code)
            machine.put(machine.S, copy)
            for addr, b in writes:
                machine.put(addr, b)
            lo, n = machine.window(r)
            before = machine.get(lo, n)
            native_mem = (machine.run(r), machine.get(lo, n))[1]
            machine.put(lo, before)
            got = r.copy()
            eng.step_begin(st, got)
            got = machine.run(got).final()
            assert eng.step_end(st, got) == STEP_DONE
            assert (machine.get(lo, n) == native_mem) == want_equal
            machine.clean()


# --- explicit architectural states: what user mode cannot run or see -----------------------------


class Stack:
    """A small stack in a ctypes buffer; top is where %rsp starts."""

    def __init__(self, words=8):
        self.buf = (ctypes.c_uint64 * words)()
        self.base = ctypes.addressof(self.buf)
        self.top = self.base + 8 * (words // 2)

    def __getitem__(self, addr):
        return self.buf[(addr - self.base) // 8]

    def __setitem__(self, addr, v):
        self.buf[(addr - self.base) // 8] = v


def kregs(flags: int, sp: int, cs: int = KERNEL_CS, ip: int = 0x1000) -> Regs:
    r = Regs()
    for i in range(16):
        r.gpr[i] = 0x1111 * (i + 1)
    r.gpr[RSP] = sp
    r.ip, r.flags, r.cs = ip, flags, cs
    return r


def with_header(name: str, **fields) -> bytes:
    """A named table with header fields replaced (emu_flags, step_mechanism, ...)."""
    raw = bytearray(table.named_bytes(name))
    offs = abi.offsets(abi.HEADER_FIELDS)
    for k, v in fields.items():
        raw[offs[k]] = v
    return bytes(raw)


def ref() -> bytes:
    return table.load("reference").raw


def test_pinned_seed_pushf_emulated(engine, broken):
    """The seed: PUSHF with IF masked and TF set in the handler's flags must push the interrupted
    context's IF, and the context must resume with that IF."""
    saved = FIXED | IF | ZF  # 0x246
    live = (saved & ~IF) | TF  # 0x146: the handler's flags
    for eng, pushed in ((engine, saved), (broken, live)):
        s = Stack()
        r = kregs(saved, s.top)
        rc, _ = eng.emulate(ref(), b"\x9c", r, live)
        assert rc == 0
        assert (r.ip, r.gpr[RSP]) == (0x1001, s.top - 8)
        assert s[s.top - 8] == pushed
        assert r.flags == saved  # the interrupted IF is what the context resumes with
    assert saved != live


def test_pinned_seed_pushf_stepped(engine, broken):
    """The same instruction stepped (TF, IF masked): the copy pushes the step's flags, the fixups put
    the interrupted IF and TF back into the pushed image (PUSHED_FLAGS) and into the context (LIVE_IF)."""
    raw = table.load("legacy-2011").raw
    saved = FIXED | IF | ZF
    for eng, fixups, pushed, resumed in (
        (engine, Fixup.PUSHED_FLAGS | Fixup.LIVE_IF, saved, saved),
        (engine, Fixup.LIVE_IF, (saved & ~IF) | TF, saved),  # legacy-2011's PUSHF: FBT102
        (engine, Fixup.PUSHED_FLAGS, saved, saved & ~IF),  # IF left masked: FBT103
        (broken, Fixup.PUSHED_FLAGS | Fixup.LIVE_IF, (saved & ~IF) | TF, saved),
    ):
        s = Stack()
        rc, st, copy = eng.step_prepare(raw, b"\x9c", int(fixups), 0x1000, 0x9000)
        assert (rc, copy) == (0, b"\x9c")  # TF step: the copy alone
        r = kregs(saved, s.top)
        eng.step_begin(st, r)
        assert (r.ip, r.flags) == (0x9000, (saved & ~IF) | TF)
        # The CPU runs pushfq at ring 0 with those flags, then #DB after one instruction.
        r.gpr[RSP] -= 8
        s[r.gpr[RSP]] = r.flags & ~(RF | VM)
        r.ip = 0x9001
        assert eng.step_end(st, r) == STEP_DONE
        assert (r.ip, s[s.top - 8], r.flags) == (0x1001, pushed, resumed)


@pytest.mark.parametrize(
    "code,cs,before,after",
    [
        (b"\xfa", KERNEL_CS, FIXED | IF | ZF, FIXED | ZF),  # cli at CPL 0
        (b"\xfb", KERNEL_CS, FIXED | ZF, FIXED | IF | ZF),  # sti at CPL 0
        (b"\xfa", 0x33, FIXED | IF | IOPL, FIXED | IOPL),  # cli at CPL 3 with IOPL 3
        (b"\xfb", KERNEL_CS, FIXED | IF | TF, FIXED | IF | TF),  # sti with IF already set
    ],
)
def test_architectural_cli_sti(engine, code, cs, before, after):
    s = Stack()
    r = kregs(before, s.top, cs)
    rc, _ = engine.emulate(ref(), code, r, 0)
    assert rc == 0 and (r.ip, r.flags, r.gpr[RSP]) == (0x1001, after, s.top)


@pytest.mark.parametrize("code", [b"\xfa", b"\xfb"])
def test_architectural_cli_sti_fault_in_user_mode(engine, code):
    """CPL 3 > IOPL 0: the CPU raises #GP, so the engine refuses and leaves the state alone."""
    s = Stack()
    r = kregs(FIXED | IF, s.top, 0x33)
    before = r.key()
    assert engine.emulate(ref(), code, r, 0)[0] == ENOTSUPP
    assert r.key() == before


POPPED = CF | ZF | DF | IOPL | NT | AC | ID | RF | VM | VIP | (1 << 40) | (1 << 3)


@pytest.mark.parametrize(
    "cs,old,popped,after",
    [
        # CPL 0: IF and IOPL follow the popped value; RF cleared; VM, VIF, VIP, reserved bits kept.
        (KERNEL_CS, FIXED | IF | VIF, POPPED, FIXED | VIF | CF | ZF | DF | IOPL | NT | AC | ID),
        (KERNEL_CS, FIXED, FIXED | IF | TF, FIXED | IF | TF),
        # CPL 3, IOPL 0: IF and IOPL keep their values.
        (0x33, FIXED | IF, POPPED & ~IF, FIXED | IF | CF | ZF | DF | NT | AC | ID),
        # CPL 3, IOPL 3: IF follows the popped value, IOPL does not.
        (0x33, FIXED | IF | IOPL, FIXED | ZF, FIXED | ZF | IOPL),
    ],
)
def test_architectural_popf(engine, cs, old, popped, after):
    s = Stack()
    r = kregs(old, s.top, cs)
    s[s.top] = popped
    rc, _ = engine.emulate(ref(), b"\x9d", r, 0)
    assert rc == 0 and (r.ip, r.flags, r.gpr[RSP]) == (0x1001, after, s.top + 8)


def test_architectural_pushf_image(engine):
    """PUSHF clears VM and RF in the image it stores, and keeps everything else, IF included."""
    s = Stack()
    flags = FIXED | IF | CF | RF | VM | AC | ID | IOPL
    r = kregs(flags, s.top)
    assert engine.emulate(ref(), b"\x9c", r, 0)[0] == 0
    assert s[s.top - 8] == flags & ~(RF | VM) and r.flags == flags


def test_live_emulation_flags_reproduce_the_seed(engine):
    """A table whose header says emu_flags=LIVE pushes the handler's flags and edits only them."""
    raw = with_header("reference", emu_flags=abi.EmuFlags.LIVE)
    saved, live = FIXED | IF | ZF, FIXED | TF
    s = Stack()
    r = kregs(saved, s.top)
    rc, live_after = engine.emulate(raw, b"\x9c", r, live)
    assert rc == 0 and s[s.top - 8] == live and r.flags == saved and live_after == live
    r = kregs(saved, s.top)
    rc, live_after = engine.emulate(raw, b"\xfa", r, live | IF)
    assert rc == 0 and r.flags == saved and live_after == live  # cli reached the handler only


@pytest.mark.parametrize(
    "hexcode",
    [
        "f4",  # hlt
        "0f01f8",  # swapgs
        "0f01c1",  # vmcall
        "0f30",  # wrmsr
        "0f22d8",  # mov %rax,%cr3
        "0f23f8",  # mov %rax,%dr7
        "48cf",  # iretq
        "cc",  # int3
        "cd80",  # int $0x80
        "0f0b",  # ud2
        "0f05",  # syscall
        "480f07",  # sysretq
        "ff10",  # call *(%rax): memory forms are stepped, never emulated
        "ff18",  # lcall *(%rax)
        "66e800000000",  # callw: 16-bit operand, vendor-dependent
        "66c3",  # retw
        "6655",  # pushw %bp
        "f390",  # pause
        "4190",  # xchg %eax,%r8d, not a nop
        "678b00",  # a memory mov
        "f0ff00",  # lock incl (%rax)
        "c5f877",  # vzeroupper
    ],
)
def test_engine_refuses_what_it_cannot_emulate(engine, hexcode):
    s = Stack()
    r = kregs(FIXED | IF, s.top)
    before = r.key()
    rc, _ = engine.emulate(ref(), bytes.fromhex(hexcode), r, 0)
    assert rc == ENOTSUPP and r.key() == before


def test_lret_to_another_selector_is_refused(engine):
    s = Stack()
    r = kregs(FIXED | IF, s.top)
    s[s.top] = 0x2000 | (0x23 << 32)  # 32-bit lret: EIP 0x2000, CS 0x23
    before = r.key()
    assert engine.emulate(ref(), b"\xcb", r, 0)[0] == ENOTSUPP and r.key() == before
    s[s.top] = 0x2000 | (KERNEL_CS << 32)
    assert engine.emulate(ref(), b"\xcb", r, 0)[0] == 0 and (r.ip, r.gpr[RSP]) == (0x2000, s.top + 8)


def test_step_prepare_refusals(engine):
    raw = ref()
    # ret stepped under the INT3 mechanism would leave the copy before its trailing int3.
    assert engine.step_prepare(raw, b"\xc3", int(Fixup.TRANSFER_IP), 0x1000, 0x9000)[0] == ENOTSUPP
    # A RIP-relative displacement that no longer fits in 32 bits once rebased.
    load = b"\x48\x8b\x05" + s32(0x7FFFFFF0)
    assert engine.step_prepare(raw, load, int(Fixup.RIP_DISP), 0x1000, 0x1000 - 0x100)[0] == ERANGE
    rc, _, copy = engine.step_prepare(raw, load, 0, 0x1000, 0x1000 - 0x100)
    assert rc == 0 and copy[:7] == load  # without RIP_DISP: copied as is (FBT104)


def test_step_copies(engine):
    """The copies fbt_step_prepare builds, byte for byte."""
    raw = ref()
    orig, slot = 0x100000, 0x100000 + 0x1000
    # RIP-relative: displacement rebased by orig - slot, then the trailing int3.
    rc, _, copy = engine.step_prepare(raw, b"\x48\x8b\x05" + s32(0x10), int(Fixup.RIP_DISP), orig, slot)
    assert (rc, copy) == (0, b"\x48\x8b\x05" + s32(0x10 - 0x1000) + b"\xcc")
    # call *disp(%rip) under INT3 with TRANSFER_IP: ff /2 becomes ff /6, push the target.
    rc, _, copy = engine.step_prepare(raw, b"\xff\x15" + s32(0x10), int(Fixup.RIP_DISP | Fixup.TRANSFER_IP),
                                      orig, slot)  # fmt: skip
    assert (rc, copy) == (0, b"\xff\x35" + s32(0x10 - 0x1000) + b"\xcc")
    # jcc rel8 under INT3 with BRANCH_TARGET: branch to the second int3.
    rc, _, copy = engine.step_prepare(raw, b"\x74\x40", int(Fixup.BRANCH_TARGET), orig, slot)
    assert (rc, copy) == (0, b"\x74\x01\xcc\xcc")
    # An escaped copy is reported, not fixed up.
    rc, st, _ = engine.step_prepare(raw, b"\x90", 0, orig, slot)
    r = kregs(FIXED | IF, Stack().top)
    engine.step_begin(st, r)
    r.ip = slot + 0x40
    assert engine.step_end(st, r) == EESCAPED


# --- the decoder and the table lookup agree with fbt-audit ---------------------------------------


def _corpus() -> list[bytes]:
    """Encodings across the opcode maps, with the prefixes and ModRM forms the tables distinguish."""
    tail = bytes(range(0x11, 0x1D))
    modrms = (0x00, 0x05, 0x10, 0x14, 0x20, 0x44, 0x80, 0xC0, 0xC8, 0xD0, 0xD8, 0xE0, 0xE8, 0xF0, 0xF8, 0xFA)
    out = []
    for b in range(256):
        for m in modrms:
            out.append(bytes([b, m]) + tail)
            out.append(bytes([0x0F, b, m]) + tail)
    for pfx in (b"\xf3", b"\x66", b"\x67", b"\xf2", b"\x2e", b"\x41", b"\x48", b"\x66\x2e", b"\xf3\x48"):
        for body in (b"\x0f\x1e\xfa", b"\x0f\x1f\x00", b"\xff\xd0", b"\xff\x10", b"\xff\x20", b"\xc3", b"\xcf",
                     b"\x9c", b"\xa4", b"\xe2\x00", b"\x0f\x0b", b"\x8e\xd0", b"\x90"):  # fmt: skip
            out.append(pfx + body + tail)
    return out


def rex_then_prefix(code: bytes) -> bool:
    """REX followed by a legacy prefix or another REX: the CPU ignores the first REX, the engine
    refuses the encoding (no compiler emits it), capstone decodes it."""
    return len(code) > 1 and code[0] & 0xF0 == 0x40 and (code[1] & 0xF0 == 0x40 or code[1] in LEGACY)


LEGACY = b"\xf0\xf2\xf3\x2e\x36\x3e\x26\x64\x65\x66\x67"
# ud0 (0f ff) and ud1 (0f b9) take a ModRM byte (Intel SDM; the kernel's UBSAN traps encode their
# type in it). capstone 5 decodes both without one. Both are trap instructions every table refuses
# or fbt-audit flags (FBT105), so the length never reaches a step.
UD01 = (b"\x0f\xff", b"\x0f\xb9")


def test_decoder_agrees_with_fbt_audit(engine):
    """Length, prefixes, REX, opcode bytes and ModRM offset as audit/decode/insn.py models them."""
    checked = 0
    for code in _corpus():
        want = decode(code, 0x1000)
        if want.length == 0:
            continue
        got = engine.decode(code)
        if rex_then_prefix(code):
            assert got is None, code.hex()
            continue
        if code[:2] in UD01:
            assert got.modrm_off == 2, code.hex()
            continue
        assert got is not None, code.hex()
        key = (got.len, bytes(got.prefix[: got.nprefix]), got.rex, bytes(got.opcode[: got.opcode_len]), got.modrm_off)
        assert key == (want.length, want.prefixes, want.rex, want.opcode, want.modrm_off), code.hex()
        checked += 1
    assert checked > 7000


@pytest.mark.parametrize("name", sorted(set(table.NAMED.values())))
def test_c_lookup_agrees_with_python(engine, name):
    t = table.load(name)
    for code in _corpus() + [c.canonical for c in EMULATION_CASES + STEP_CASES]:
        insn = decode(code, 0x1000)
        if insn.length == 0:
            continue
        e = t.lookup(insn)
        idx, h, fx = engine.lookup(t.raw, code)
        if rex_then_prefix(code):
            assert idx < -1, code.hex()  # undecodable: the module refuses the probe
            continue
        if code[:2] in UD01 and idx != (e.index if e else -1):
            # The ModRM capstone does not see can make legacy-2011's RIP-relative refusal match.
            assert h == Handling.REFUSE, code.hex()
            continue
        assert idx == (e.index if e else -1), code.hex()
        want_h = e.handling if e else t.default_handling
        assert h == want_h, code.hex()


def test_decoder_lengths_match_capstone_on_system_code(engine):
    """A linear sweep over real compiled code (libc's .text): the C decoder's lengths equal capstone's."""
    import capstone
    from elftools.elf.elffile import ELFFile

    libc = next((p for p in ("/lib/x86_64-linux-gnu/libc.so.6", "/usr/lib/x86_64-linux-gnu/libc.so.6")
                 if Path(p).exists()), None)  # fmt: skip
    assert libc, "no libc.so.6 to sweep"
    with open(libc, "rb") as f:
        text = ELFFile(f).get_section_by_name(".text").data()[: 1 << 18]
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    off = n = 0
    while off < len(text) - 16:
        got = next(md.disasm(text[off : off + 16], off, 1), None)
        if got is None:
            off += 1
            continue
        d = engine.decode(text[off : off + 16])
        where = f"+{off:#x}: {got.mnemonic} {got.op_str} {text[off : off + got.size].hex()}"
        assert d is not None and d.len == got.size, where
        off += got.size
        n += 1
    assert n > 50000


# --- the listing the module prints equals `fbt-audit table` ---------------------------------------


@pytest.mark.parametrize("name", sorted(set(table.NAMED.values())))
def test_listing_matches_fbt_audit_table(engine, name):
    t = table.load(name)
    assert engine.table_check(t.raw) == 0
    assert engine.format(t.raw, t.source, t.sha256) == format_table(t)


def test_table_check_rejects_broken_tables(engine):
    raw = bytearray(ref())
    assert engine.table_check(bytes(raw[:-1])) != 0
    bad = bytearray(raw)
    bad[0] = ord("X")
    assert engine.table_check(bytes(bad)) != 0
    bad = bytearray(raw)
    bad[abi.HEADER_SIZE + abi.offsets(abi.ENTRY_FIELDS)["handling"]] = 0
    assert engine.table_check(bytes(bad)) != 0


@pytest.mark.kernel
@pytest.mark.parametrize("name", ["reference", "legacy-2011", "kprobes-6.1"])
def test_module_and_auditor_agree_on_every_61_entry(engine, vmlinux61, name):
    """Every entry instruction of bookworm's 6.1 vmlinux (and its run-time variants): the module's C
    decoder and lookup reach the entry fbt-audit's Python lookup reaches, with the same length."""
    from fbt_audit.pipeline import api

    t = table.load(name)
    checked = 0
    for j in api.audit(vmlinux61, t).judgements:
        for v in j.pp.variants:
            i = v.insn
            if i.length == 0:
                continue
            idx, h, _ = engine.lookup(t.raw, i.raw, int(i.target_class))
            e = t.lookup(i)
            assert idx == (e.index if e else -1), (j.pp.name, i.raw.hex())
            assert engine.decode(i.raw).len == i.length, (j.pp.name, i.raw.hex())
            checked += 1
    assert checked > 80000
