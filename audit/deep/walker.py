"""walker.py: the stack walker: where the word a PUSHF put on the stack goes, path by path, over decoded instructions.

By hand (no library tracks x86 stack slots over capstone's output): the walk follows the stack pointer as an
offset from its value before the patchpoint, and the set of stack slots and registers that hold the pushed word
(or a copy of it), through direct branches inside the function. A jump-label site is both its fall-through and
its jump. It ends a path where the word is consumed (popf, iret, pop into a register) or lost, and records what it
had to assume (a call that receives a pointer into the frame may rewrite the word). It proves nothing about
values: memory written through other pointers is not followed; that is what value tracking (values.py) adds."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from fbt_audit.decode.insn import decode
from fbt_audit.deep.model import FlagsPath, Step
from fbt_audit.model.core import IC, Insn

MAX_PATHS = 16  # paths per patchpoint
MAX_STEPS = 20_000  # instructions walked per patchpoint, all paths together

_GPR = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", *(f"r{n}" for n in range(8, 16)))
_FAMILY: dict[str, str] = {}
for _r in ("ax", "bx", "cx", "dx"):
    for _n in (f"r{_r}", f"e{_r}", _r, f"{_r[0]}l", f"{_r[0]}h"):
        _FAMILY[_n] = f"r{_r}"
for _r in ("si", "di", "bp", "sp"):
    for _n in (f"r{_r}", f"e{_r}", _r, f"{_r}l"):
        _FAMILY[_n] = f"r{_r}"
for _k in range(8, 16):
    for _s in ("", "d", "w", "b"):
        _FAMILY[f"r{_k}{_s}"] = f"r{_k}"
CALLER_SAVED = frozenset(("rax", "rcx", "rdx", "rsi", "rdi", "r8", "r9", "r10", "r11"))
ARG_REGS = ("rdi", "rsi", "rdx", "rcx", "r8", "r9")
# Instructions that write registers their operands do not name (cpuid, rdmsr, mul ...): their copies are dropped.
_IMPLICIT = {"cpuid": "rax rbx rcx rdx", "rdmsr": "rax rdx", "rdtsc": "rax rdx", "rdtscp": "rax rcx rdx",
             "xgetbv": "rax rdx", "mul": "rax rdx", "imul": "rax rdx", "div": "rax rdx", "idiv": "rax rdx",
             "cqto": "rdx", "cltd": "rdx", "cmpxchg": "rax", "cmpxchg16b": "rax rdx", "cmpxchg8b": "rax rdx",
             "syscall": "rcx r11", "lods": "rax rsi", "stos": "rdi rcx", "movs": "rsi rdi rcx", "scas": "rdi rcx",
             "cmps": "rsi rdi rcx", "xchg": "", "rep": "rcx rsi rdi"}  # fmt: skip
_READ_ONLY = ("cmp", "test", "bt", "nop", "prefetch", "lfence", "mfence", "sfence", "pause", "endbr", "ud", "clflush")
_MEM = re.compile(r"^(?:%(?P<seg>\w+):)?(?P<disp>-?(?:0x[0-9a-f]+|\d+))?\((?P<base>%\w+)?(?P<rest>[^)]*)\)$")


def operands(text: str) -> list[str]:
    """AT&T operands split at the commas outside parentheses."""
    out, depth, cur = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    if "".join(cur).strip():
        out.append("".join(cur).strip())
    return out


def reg(op: str) -> str | None:
    """The 64-bit register an operand names (`%eax` -> rax), or None."""
    return _FAMILY.get(op[1:]) if op.startswith("%") else None


def base_mnemonic(m: str) -> str:
    """`pushfq` -> pushf, `popq` -> pop, `movq` -> mov, `iretq` -> iret (AT&T size suffixes off)."""
    for stem in ("pushf", "popf", "iret", "push", "pop", "mov", "lea", "add", "sub", "ret", "call", "leave"):
        if m == stem or (m.startswith(stem) and len(m) == len(stem) + 1 and m[-1] in "bwlq"):
            return stem
    return m


@dataclass(frozen=True, slots=True)
class _State:
    addr: int
    sp: int  # %rsp as an offset from its value before the patchpoint
    slots: frozenset[int]  # stack offsets that hold the word or a copy
    regs: frozenset[str]  # registers that hold it
    ptrs: tuple[tuple[str, int], ...] = ()  # registers that hold a stack address (offset), e.g. %rbp, lea'd args
    steps: tuple[Step, ...] = ()
    trace: tuple[int, ...] = ()
    caveats: tuple[str, ...] = ()
    visited: frozenset = frozenset()  # the (addr, sp, slots, regs, ptrs) keys this path has been through

    def ptr(self, r: str) -> int | None:
        return next((off for name, off in self.ptrs if name == r), None)

    def with_ptr(self, r: str, off: int | None) -> tuple[tuple[str, int], ...]:
        rest = tuple(p for p in self.ptrs if p[0] != r)
        return rest if off is None else (*rest, (r, off))


@dataclass
class Walk:
    """The walk of one patchpoint: the function's bytes [start, end), the jump-label sites (site -> target)."""

    code: bytes
    start: int
    end: int
    jumps: dict[int, int] = field(default_factory=dict)
    namer: Callable[[int], str | None] = lambda _a: None
    insns: dict[int, Insn] = field(default_factory=dict)
    paths: list[FlagsPath] = field(default_factory=list)
    steps: int = 0
    cut: str = ""

    def insn(self, addr: int) -> Insn | None:
        got = self.insns.get(addr)
        if got is None and self.start <= addr < self.end:
            got = decode(self.code[addr - self.start : addr - self.start + 15], addr)
            if got.classes & IC.INVALID or addr + got.length > self.end:
                return None
            self.insns[addr] = got
        return got

    def run(self, origin: int) -> list[FlagsPath]:
        """Every path of the word pushed by the PUSHF at origin."""
        first = self.insn(origin)
        if first is None or not first.classes & IC.PUSHES_FLAGS:
            return []
        step = Step(origin, first.text, "pushes the flags word")
        todo = [_State(origin + first.length, -8, frozenset((-8,)), frozenset(), (), (step,), (origin,))]
        while todo:
            s = todo.pop()
            key = (s.addr, s.sp, s.slots, s.regs, s.ptrs)
            if key in s.visited:
                continue  # around a loop to a state this path was in: the loop's other exits are walked
            if len(self.paths) >= MAX_PATHS or self.steps >= MAX_STEPS:
                self.cut = f"walk cut at {len(self.paths)} paths and {self.steps} instructions"
                break
            self.steps += 1
            todo.extend(reversed([replace(n, visited=s.visited | {key}) for n in self.step(s)]))
        self.paths.sort(key=lambda p: p.trace)
        return self.paths

    def finish(self, s: _State, insn: Insn | None, consumer: str, note: str) -> list[_State]:
        steps = s.steps if insn is None else (*s.steps, Step(insn.addr, insn.text, note))
        done = insn is None or (s.trace and s.trace[-1] == insn.addr)  # the state after insn has it in its trace
        trace = s.trace if done else (*s.trace, insn.addr)
        self.paths.append(FlagsPath(steps, consumer, trace, caveats=s.caveats))
        return []

    def step(self, s: _State) -> list[_State]:
        """The states after the instruction at s.addr (none when a path ends there)."""
        i = self.insn(s.addr)
        if i is None:
            return self.finish(s, None, "lost", f"the walk cannot decode 0x{s.addr:x}")
        m = base_mnemonic(i.mnemonic)
        ops = operands(i.operands)
        nxt = replace(s, addr=s.addr + i.length, trace=(*s.trace, s.addr))
        if m in ("popf", "iret", "pop", "ret", "leave"):
            return self._pops(nxt, i, m, ops)
        if m == "push":
            return self._push(nxt, i, ops)
        if i.classes & (IC.REL_BRANCH | IC.INDIRECT_JUMP) or s.addr in self.jumps:
            return self._branch(s, nxt, i)
        if m == "call":
            return [self._call(nxt, i)]
        if i.classes & (IC.TRAP | IC.FAR_TRANSFER):
            return self.finish(s, i, "leaves", "ends the path with the word unconsumed")
        return self._data(nxt, i, m, ops)

    # --- the stack ---------------------------------------------------------------------------------

    def _released(self, s: _State, sp: int, i: Insn) -> list[_State]:
        """s with %rsp moved up to sp: slots below it are released (the word is lost if nothing holds it)."""
        slots = frozenset(o for o in s.slots if o >= sp)
        s = replace(s, sp=sp, slots=slots)
        if not slots and not s.regs:
            return self.finish(s, i, "lost", "releases the stack slot holding the word before any consumer")
        return [s]

    def _pops(self, s: _State, i: Insn, m: str, ops: list[str]) -> list[_State]:
        if m == "popf":
            if s.sp in s.slots:
                return self.finish(s, i, i.mnemonic, "consumes the word")
            return self._released(s, s.sp + 8, i)
        if m == "iret":
            if s.sp + 16 in s.slots:
                return self.finish(s, i, i.mnemonic, "takes the word as RFLAGS")
            return self.finish(s, i, "leaves", "leaves with the word unconsumed")
        if m == "ret":
            return self.finish(s, i, "returns", "returns with the word unconsumed")
        if m == "leave":
            rbp = s.ptr("rbp")
            if rbp is None:
                return self.finish(s, i, "lost", "leave: %rbp does not hold a known stack address")
            s = replace(s, sp=rbp, regs=s.regs - {"rbp"})
            ops = ["%rbp"]
        r = reg(ops[0]) if ops else None
        if s.sp in s.slots:
            if r is not None:
                return self.finish(s, i, f"pop %{r}", f"takes the word into %{r}")
            slot = self._slot(s, ops[0], pop=True) if ops else None
            if slot is None:
                return self.finish(s, i, "copy", "copies the word where the walk cannot follow")
            s = replace(s, slots=s.slots | {slot}, steps=(*s.steps, Step(i.addr, i.text, "copies the word")))
        elif r is not None:
            s = replace(s, regs=s.regs - {r}, ptrs=s.with_ptr(r, None))
        return self._released(s, s.sp + 8, i)

    def _push(self, s: _State, i: Insn, ops: list[str]) -> list[_State]:
        sp = s.sp - 8
        src = ops[0] if ops else ""
        held = (reg(src) in s.regs) or (self._slot(s, src) in s.slots)
        if i.classes & IC.PUSHES_FLAGS or not held:
            return [replace(s, sp=sp, slots=s.slots - {sp})]
        step = Step(i.addr, i.text, f"copies the word to {sp - s.sp}(%rsp) after the push")
        return [replace(s, sp=sp, slots=s.slots | {sp}, steps=(*s.steps, step))]

    def _slot(self, s: _State, op: str, pop: bool = False) -> int | None:
        """The stack offset a memory operand names (through %rsp, or a register holding a stack address)."""
        mm = _MEM.match(op)
        if mm is None or mm["seg"] or (mm["rest"] and mm["rest"].strip(", ")):
            return None
        base = reg(mm["base"] or "")
        disp = int(mm["disp"], 0) if mm["disp"] else 0
        if base == "rsp":
            return s.sp + disp + (8 if pop else 0)  # pop to mem: the address is computed after %rsp moves
        off = s.ptr(base) if base else None
        return None if off is None else off + disp

    # --- control -----------------------------------------------------------------------------------

    def _branch(self, s: _State, nxt: _State, i: Insn) -> list[_State]:
        target = self.jumps.get(s.addr, i.target)
        inside = target is not None and self.start <= target < self.end
        label = s.addr in self.jumps
        conditional = label or (i.classes & IC.REL_BRANCH and i.mnemonic not in ("jmp", "jmpq"))
        out = []
        if target is not None and inside:
            why = "jump-label site: jumps" if label else "branch taken"
            out.append(replace(nxt, addr=target, steps=(*s.steps, Step(i.addr, i.text, why))))
        elif not conditional or target is None:
            what = i.target_name or self.namer(target) if target is not None else "an indirect target"
            return self.finish(s, i, "leaves", f"leaves the function ({what}) with the word unconsumed")
        if conditional:
            why = "jump-label site: falls through" if label else "branch not taken"
            out.append(replace(nxt, steps=(*s.steps, Step(i.addr, i.text, why))))
            if not inside and target is not None:
                self.finish(s, i, "leaves", "taken, leaves the function with the word unconsumed")
        return out

    def _call(self, s: _State, i: Insn) -> _State:
        """A call returns with %rsp where it was; it may write the caller-saved registers, and anything it is
        handed a pointer to: a pointer into the frame at or below the word is recorded as a caveat."""
        callee = i.target_name or (self.namer(i.target) if i.target is not None else None) or i.operands
        escaped = [f"%{r}" for r, off in s.ptrs if r in ARG_REGS and off <= max(s.slots, default=s.sp)]
        caveats = s.caveats
        steps = s.steps
        if escaped and s.slots:
            note = f"the frame reaches {callee} in {', '.join(escaped)}: it may rewrite the word"
            caveats = (*caveats, f"{note} (call at 0x{i.addr:x})")
            steps = (*steps, Step(i.addr, i.text, note))
        ptrs = tuple(p for p in s.ptrs if p[0] not in CALLER_SAVED)
        return replace(s, regs=s.regs - CALLER_SAVED, ptrs=ptrs, caveats=caveats, steps=steps)

    # --- data ----------------------------------------------------------------------------------------

    def _data(self, s: _State, i: Insn, m: str, ops: list[str]) -> list[_State]:
        dst = ops[-1] if ops else ""
        dreg = reg(dst)
        if dreg == "rsp":
            return self._rsp(s, i, m, ops)
        if m in ("mov", "lea") and len(ops) == 2:
            return [self._move(s, i, m, ops[0], dst, dreg)]
        if any(m.startswith(p) for p in _READ_ONLY):
            return [s]
        regs, ptrs = set(s.regs), dict(s.ptrs)
        word = m.split()[0] if m.split() else m
        if word not in _IMPLICIT and word[-1:] in ("b", "w", "l", "q"):
            word = word[:-1]
        for r in _IMPLICIT.get(word, "").split():
            regs.discard(r)
            ptrs.pop(r, None)
        if m == "xchg" and len(ops) == 2:  # both operands are written
            for op in ops:
                regs.discard(reg(op) or "")
                ptrs.pop(reg(op) or "", None)
        slots = s.slots
        if dreg is not None:
            regs.discard(dreg)
            ptrs.pop(dreg, None)
        elif ops:
            slot = self._slot(s, dst)
            if slot in slots:
                slots = slots - {slot}
        return self._alive(replace(s, slots=slots, regs=frozenset(regs), ptrs=tuple(ptrs.items())), i)

    def _alive(self, s: _State, i: Insn) -> list[_State]:
        if not s.slots and not s.regs:
            return self.finish(s, i, "lost", "overwrites the last copy of the word")
        return [s]

    def _move(self, s: _State, i: Insn, m: str, src: str, dst: str, dreg: str | None) -> _State:
        """mov/lea: copies of the word and of stack addresses follow the data."""
        sreg = reg(src)
        if m == "lea":
            off = self._slot(s, src)
            return replace(s, regs=s.regs - {dreg}, ptrs=s.with_ptr(dreg, off)) if dreg else s
        held = sreg in s.regs if sreg else (self._slot(s, src) in s.slots)
        ptr = s.ptr(sreg) if sreg else None
        if sreg == "rsp":
            ptr = s.sp
        if dreg is not None:
            regs = s.regs | {dreg} if held else s.regs - {dreg}
            s2 = replace(s, regs=regs, ptrs=s.with_ptr(dreg, ptr))
            if held:
                s2 = replace(s2, steps=(*s.steps, Step(i.addr, i.text, f"copies the word to %{dreg}")))
            return s2
        slot = self._slot(s, dst)
        if slot is None:
            return s  # a store through another pointer: not followed (the walk's one blind spot)
        if held:
            note = f"copies the word to {slot - s.sp:#x}(%rsp)"
            return replace(s, slots=s.slots | {slot}, steps=(*s.steps, Step(i.addr, i.text, note)))
        return replace(s, slots=s.slots - {slot})

    def _rsp(self, s: _State, i: Insn, m: str, ops: list[str]) -> list[_State]:
        """An instruction that writes %rsp: add/sub of a constant, lea off(%rsp), mov of a known stack address."""
        src = ops[0] if ops else ""
        sp: int | None = None
        if m in ("add", "sub") and src.startswith("$"):
            n = int(src[1:], 0)
            sp = s.sp + n if m == "add" else s.sp - n
        elif m == "lea":
            sp = self._slot(s, src)
        elif m == "mov":
            sp = s.ptr(reg(src) or "")
        if sp is None:
            return self.finish(s, i, "lost", "the walk loses track of %rsp")
        if sp > s.sp:
            return self._released(s, sp, i)
        return [replace(s, sp=sp)]
