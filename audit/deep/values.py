"""values.py: value tracking with angr (the optional [deep] extra; the one module that imports it, lazily).

One function at a time, from a blob of the image's own bytes (angr's ELF loader takes a minute and 1.3 GB on a
vmlinux). A symbolic run from the function's entry, a VEX block per step, each run's instructions recorded so
that its trace matches the stack walker's paths exactly (runs that leave them are dropped). The PUSHF at the
patchpoint pushes a fresh symbol W; at every POPF, IRET and `pop reg` the word taken is compared with W by the
solver: proven when it cannot differ, refuted when it does not depend on W.

What VEX cannot lift, or lifts wrongly for this question, is handled before the run, per instruction:
- cli, sti: patched to NOP (same length). They change IF only: no register, memory or stack effect.
- iretq: hooked (VEX lifts it without its stack pops): it takes RFLAGS from 16(%rsp), which is recorded; the run
  ends there (it leaves the function).
- rep string instructions: hooked (VEX makes them self-loops that fork on %rcx): %rcx becomes 0, %rsi/%rdi fresh.
  A store through %rdi into the frame is a caveat on the path.
- other instructions VEX refuses (wrmsr, debug/control register moves, ...): hooked: every register but %rsp
  becomes a fresh symbol (a sound over-approximation: none of them writes the stack); one that names %rsp in a
  memory operand is a caveat.
- traps and hlt end the run.
- calls are hooked: %rsp is unchanged, the caller-saved registers become fresh symbols. A call that receives a
  pointer into the frame may rewrite the word: a caveat, and such a path is never more than unknown.
- jump-label sites are hooked with both successors.
Registers start as symbols that do not point into the new frame (a caller cannot hold a pointer below its own
%rsp), %gs has a fixed base; stores through other pointers are assumed not to hit the frame (the walker makes the
same assumption; angr concretises such addresses away from the stack)."""

from __future__ import annotations

import importlib.util
import io
import logging
from dataclasses import dataclass

from fbt_audit.deep.model import PROVEN, REFUTED, UNKNOWN, FlagsPath
from fbt_audit.deep.walker import base_mnemonic, operands, reg
from fbt_audit.model.core import IC, Insn

STACK_TOP = 0x7FF0_0000_0000  # %rsp at the function's entry in the model
FRAME = 0x1_0000  # the frame below it that incoming pointers cannot reach
GS_BASE = 0x6000_0000_0000
MAX_WORK = 300  # block runs per function (a run stepped by one VEX block is one)
MAX_ACTIVE = 64  # runs at once
DEADLINE_S = 30  # wall-clock safety net per function
_REGS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", *(f"r{n}" for n in range(8, 16)))
_CALLER_SAVED = ("rax", "rcx", "rdx", "rsi", "rdi", "r8", "r9", "r10", "r11")
_ARGS = ("rdi", "rsi", "rdx", "rcx", "r8", "r9")
# VEX runs these with the values of one model CPU (a concrete CPUID, a zero MSR): hooked as opaque instead, so
# that both sides of a feature test are followed.
_MODELLED = frozenset(("cpuid", "rdmsr", "rdtsc", "rdtscp", "xgetbv", "rdpid", "rdrand", "rdseed", "rdpmc"))
EXTRA_HINT = "value tracking needs the [deep] extra (pip install 'fbt-audit[deep]')"


def available() -> bool:
    return importlib.util.find_spec("angr") is not None


_mods: dict = {}


def _angr():
    """angr, claripy and pyvex, imported once, with their loggers quieted (a failed unicorn load logs at ERROR)."""
    if not _mods:
        for name in ("angr", "cle", "pyvex", "claripy", "archinfo"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
        import angr
        import archinfo
        import claripy
        import pyvex

        _mods.update(angr=angr, claripy=claripy, pyvex=pyvex, arch=archinfo.ArchAMD64())
    return _mods


def version() -> str:
    from importlib.metadata import version as v

    return v("angr")


@dataclass
class Record:
    """The word one run took at one consumer: the run's trace, the solver's answer, the caveats."""

    addr: int
    trace: tuple[int, ...]
    answer: str  # proven | refuted | unknown
    caveats: tuple[str, ...]


def _procedures():
    """The SimProcedure classes, built once angr is imported."""
    if "procs" not in _mods:
        hook = _hook_base()
        _mods["procs"] = {**_word_hooks(hook), **_other_hooks(hook)}
    return _mods["procs"]


def _hook_base():
    """The base of every hook: it ends by jumping to the next instruction (a SimProcedure would return)."""
    angr, claripy = _mods["angr"], _mods["claripy"]

    class _Hook(angr.SimProcedure):
        NO_RET = True

        def __init__(self, nxt: int, **kw):
            super().__init__(**kw)
            self.nxt = nxt

        def go(self):
            self.jump(claripy.BVV(self.nxt, 64))

        def caveat(self, text: str):
            self.state.globals["caveats"] = (*self.state.globals.get("caveats", ()), text)

    return _Hook


def _word_hooks(_Hook) -> dict:
    """The PUSHF at the patchpoint (a fresh word W) and the consumers, which record what they take."""
    claripy = _mods["claripy"]

    class Origin(_Hook):
        def run(self):
            word = claripy.BVS("pushed_flags", 64)
            self.state.regs.rsp = self.state.regs.rsp - 8
            self.state.memory.store(self.state.regs.rsp, word, endness="Iend_LE")
            self.state.globals["word"] = word
            self.go()

    class Consumer(_Hook):
        def __init__(self, nxt: int, kind: str, dst: str | None, records: list, **kw):
            super().__init__(nxt, **kw)
            self.kind, self.dst, self.records = kind, dst, records

        def run(self):
            st = self.state
            sp = st.regs.rsp
            value = st.memory.load(sp + (16 if self.kind == "iret" else 0), 8, endness="Iend_LE")
            word = st.globals.get("word")
            if word is not None:
                trace = (*st.globals.get("trace", ()), st.addr)
                self.records.append(Record(st.addr, tuple(trace), _answer(st, value, word),
                                           tuple(st.globals.get("caveats", ()))))  # fmt: skip
            if self.kind == "iret":
                self.exit(0)
                return
            st.regs.rsp = sp + 8
            if self.kind == "popf":  # the arithmetic flags from the popped word (AMD64G_CC_OP_COPY)
                st.regs.cc_op, st.regs.cc_dep1 = 0, value & 0x8D5
                st.regs.cc_dep2, st.regs.cc_ndep = 0, 0
            elif self.dst:
                st.registers.store(self.dst, value)
            self.go()

    return {"Origin": Origin, "Consumer": Consumer}


def _other_hooks(_Hook) -> dict:
    """Calls, jump-label sites, what VEX cannot lift (or lifts wrongly), and traps."""
    claripy = _mods["claripy"]

    class Call(_Hook):
        def __init__(self, nxt: int, callee: str, **kw):
            super().__init__(nxt, **kw)
            self.callee = callee

        def run(self):
            st = self.state
            sp = st.solver.eval(st.regs.rsp)
            escaped = [r for r in _ARGS if _in_frame(st, st.registers.load(r), sp)]
            if escaped:
                names = ", ".join(f"%{r}" for r in escaped)
                note = f"the frame reaches {self.callee} in {names}: it may rewrite the word"
                self.caveat(f"{note} (call at 0x{st.addr:x})")
                low = min(st.solver.eval(st.registers.load(r)) for r in escaped)
                st.memory.store(low, claripy.BVS("callee_wrote", 8 * (STACK_TOP - low)))  # what it may write
            for r in _CALLER_SAVED:
                st.registers.store(r, claripy.BVS(f"ret_{r}", 64))
            self.go()

    class Either(_Hook):
        def __init__(self, nxt: int, target: int, **kw):
            super().__init__(nxt, **kw)
            self.target = target

        def run(self):
            pick = claripy.BoolS("jump_label")
            self.jump(claripy.If(pick, claripy.BVV(self.target, 64), claripy.BVV(self.nxt, 64)))

    class Opaque(_Hook):
        def __init__(self, nxt: int, text: str, stack: bool, rep: bool, **kw):
            super().__init__(nxt, **kw)
            self.text, self.stack, self.rep = text, stack, rep

        def run(self):
            st = self.state
            if self.rep:
                sp = st.solver.eval(st.regs.rsp)
                if _in_frame(st, st.regs.rdi, sp):
                    self.caveat(f"{self.text} writes through %rdi into the frame")
                st.regs.rcx = 0
                for r in ("rsi", "rdi"):
                    st.registers.store(r, claripy.BVS(f"after_{r}", 64))
            else:
                if self.stack:
                    self.caveat(f"{self.text} (not lifted) may write the frame")
                for r in _REGS:
                    st.registers.store(r, claripy.BVS(f"after_{r}", 64))
            self.go()

    class Stop(_Hook):
        def run(self):
            self.exit(0)

    return {"Call": Call, "Either": Either, "Opaque": Opaque, "Stop": Stop}


def _in_frame(st, value, sp: int) -> bool:
    """A concrete register value inside the frame (from %rsp up to the entry's %rsp)."""
    if value.symbolic:
        return False
    v = st.solver.eval(value)
    return sp <= v < STACK_TOP


def _answer(st, value, word) -> str:
    """proven: the word taken equals W on every run; refuted: it does not depend on W at all (another word,
    whatever the flags were); unknown: it depends on W but may differ (a partial or conditional copy)."""
    if not st.solver.satisfiable(extra_constraints=[value != word]):
        return PROVEN
    if not word.variables & value.variables:
        return REFUTED
    return UNKNOWN


def plan(insns: list[Insn], origin: int, jumps: dict[int, int], namer) -> tuple[dict[int, tuple], dict[int, bytes]]:
    """How each instruction is run: address -> (hook kind, arguments), and address -> patched bytes."""
    pyvex, arch = _mods["pyvex"], _mods["arch"]
    hooks: dict[int, tuple] = {}
    patches: dict[int, bytes] = {}
    for i in insns:
        a, nxt = i.addr, i.addr + i.length
        m = base_mnemonic(i.mnemonic)
        ops = operands(i.operands)
        if a == origin:
            hooks[a] = ("Origin", nxt)
        elif a in jumps:
            hooks[a] = ("Either", nxt, jumps[a])
        elif m in ("popf", "iret") or (m == "pop" and ops and reg(ops[0])):
            hooks[a] = ("Consumer", nxt, m, reg(ops[0]) if m == "pop" else None)
        elif i.classes & (IC.REL_CALL | IC.INDIRECT_CALL):
            callee = i.target_name or (namer(i.target) if i.target is not None else None) or i.operands
            hooks[a] = ("Call", nxt, callee)
        elif i.classes & IC.REP_STRING:
            hooks[a] = ("Opaque", nxt, i.text, False, True)
        elif i.mnemonic in _MODELLED:
            hooks[a] = ("Opaque", nxt, i.text, False, False)
        elif i.raw in (b"\xfa", b"\xfb"):
            patches[a] = b"\x90"
        elif i.classes & IC.TRAP or i.mnemonic == "hlt":
            hooks[a] = ("Stop", nxt)
        else:
            irsb = pyvex.lift(i.raw + b"\x90", a, arch, max_inst=1)
            if irsb.jumpkind in ("Ijk_NoDecode", "Ijk_Privileged") or irsb.size != i.length:
                hooks[a] = ("Opaque", nxt, i.text, "%rsp" in i.operands and "(" in i.operands, False)
    return hooks, patches


def track(code: bytes, base: int, entry: int, origin: int, insns: list[Insn], jumps: dict[int, int], namer,
          traces: list[tuple[int, ...]]):
    """Run the function from entry along the walker's traces; the records of every consumer reached, and a note
    when the run was cut."""
    mods = _angr()
    angr, claripy = mods["angr"], mods["claripy"]
    procs = _procedures()
    hooks, patches = plan(insns, origin, jumps, namer)
    blob = bytearray(code)
    for a, raw in patches.items():
        blob[a - base : a - base + len(raw)] = raw
    opts = {"backend": "blob", "arch": "amd64", "base_addr": base, "entry_point": entry}
    proj = angr.Project(io.BytesIO(bytes(blob)), auto_load_libs=False, main_opts=opts)
    records: list[Record] = []
    lengths = {i.addr: i.length for i in insns}
    for a, (kind, *args) in hooks.items():
        extra = {"records": records} if kind == "Consumer" else {}
        proj.hook(a, procs[kind](*args, **extra), length=lengths[a])
    quiet = {angr.options.SYMBOL_FILL_UNCONSTRAINED_MEMORY, angr.options.SYMBOL_FILL_UNCONSTRAINED_REGISTERS}
    st = proj.factory.blank_state(addr=entry, add_options=quiet)
    st.regs.rsp = STACK_TOP
    st.regs.gs = GS_BASE
    for r in _REGS:
        v = claripy.BVS(f"entry_{r}", 64)
        st.registers.store(r, v)
        st.solver.add(claripy.UGE(v - (STACK_TOP - FRAME), FRAME))  # v is not in [STACK_TOP - FRAME, STACK_TOP)
    order = [i.addr for i in insns]
    paths = _Paths(order, {a: n for n, a in enumerate(order)}, set(hooks), origin, _trie(traces))
    return records, _explore(proj, st, base, base + len(code), paths)


def _trie(traces: list[tuple[int, ...]]) -> dict:
    """The walker's traces as a trie of addresses: the runs are kept on them once the PUSHF has run."""
    root: dict = {}
    for t in traces:
        node = root
        for a in t:
            node = node.setdefault(a, {})
    return root


@dataclass
class _Paths:
    """The function's instruction order (to expand a VEX block into its instructions) and the walker's trie."""

    order: list[int]
    index: dict[int, int]
    hooked: set[int]
    origin: int
    trie: dict

    def executed(self, s) -> list[int]:
        """The instructions of the block s has just run: a hook is one, a VEX block its count from its start."""
        a = s.history.addr
        if a is None:
            return []
        if a in self.hooked or a not in self.index:
            return [a]
        i = self.index[a]
        # angr 9.2's count leaves out the block's last instruction (measured on blocks ending at a branch and at a hook)
        return self.order[i : i + max(0, s.history.recent_instruction_count) + 1]

    def keep(self, s) -> bool:
        """Record the block in the run's trace; keep the run while it follows the trie (from the PUSHF on)."""
        node = s.globals.get("node")
        ran = self.executed(s)
        s.globals["trace"] = (*s.globals.get("trace", ()), *ran)
        for a in ran:
            if node is None and a == self.origin:
                node = self.trie
            if node is not None:
                node = node.get(a)
                if node is None:
                    return False
        s.globals["node"] = node
        return node is None or s.addr in node


def _explore(proj, st, lo: int, hi: int, paths: _Paths) -> str:
    """Step every run a VEX block at a time; a run leaves when it leaves the function or the walker's paths.
    The work is bounded by a count of block runs (deterministic: the same answer on a loaded machine), and by a
    wall-clock safety net that only a pathological function reaches."""
    import time

    simgr = proj.factory.simgr(st)
    deadline = time.monotonic() + DEADLINE_S
    work = 0
    while simgr.active:
        if work >= MAX_WORK:
            return f"value tracking stopped after {work} block runs"
        if time.monotonic() > deadline:
            return f"value tracking stopped after {DEADLINE_S} s ({work} block runs)"
        work += len(simgr.active)
        simgr.step()
        simgr.move("active", "left", lambda s: s.regs.ip.symbolic or not lo <= s.addr < hi)
        simgr.move("active", "off", lambda s: not paths.keep(s))
        if len(simgr.active) > MAX_ACTIVE:
            return f"value tracking stopped at {len(simgr.active)} runs at once"
    return ""


def judge_paths(paths: list[FlagsPath], records: list[Record], origin: int, cut: str, ver: str) -> None:
    """Each consumer path's state from the runs whose trace (from the last PUSHF at origin) is the path's."""
    by_trace: dict[tuple[int, ...], list[Record]] = {}
    for r in records:
        t = r.trace
        start = len(t) - 1 - t[::-1].index(origin) if origin in t else 0
        by_trace.setdefault(t[start:], []).append(r)
    for p in paths:
        if p.consumer in ("copy", "returns", "leaves", "lost"):
            p.state, p.why = UNKNOWN, f"the path ends without a consumer: {p.end.text}: {p.end.note}"
            continue
        got = by_trace.get(p.trace, [])
        caveats = tuple(dict.fromkeys((*p.caveats, *(c for r in got for c in r.caveats))))
        answers = {r.answer for r in got}
        if not got:
            p.state = UNKNOWN
            reason = cut or "infeasible under the model"
            p.why = f"value tracking (angr {ver}) found no run along this path ({reason})"
        elif caveats:
            p.state = UNKNOWN
            p.why = f"value tracking (angr {ver}) cannot tell: {'; '.join(caveats)}"
        elif answers == {PROVEN}:
            p.state, p.why = PROVEN, f"value tracking (angr {ver}): {p.consumer} takes the pushed word on every run"
        elif answers == {REFUTED}:
            p.state, p.why = REFUTED, f"value tracking (angr {ver}): {p.consumer} takes another word, not the pushed"
        else:
            p.state, p.why = UNKNOWN, f"value tracking (angr {ver}): the word taken is the pushed one on some runs only"
