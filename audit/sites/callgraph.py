"""callgraph.py: FBT207's set from the image's own direct-call graph (--deep): roots, modelled indirect edges, cuts.

Nodes are the sweep's pieces (sites/branches.py): one per text symbol address, an alternative
replacement counting as the function that holds its site (`.altinstr_aux` only jumps back, so it is
left out). Edges: every `call rel32` to the piece holding its target, and every `jmp`/`jcc` to the
start of another piece (tail calls, `foo` -> `foo.cold`). Indirect calls are modelled where they
matter: the die notifier chain (each `struct notifier_block` whose address is loaded into %rdi for
`register_die_notifier`, read from the image: notify_die -> its `notifier_call`), paravirt call sites
(`call *pv_ops+N(%rip)` -> the slot's native function), and the FBT module's own handler callees
(read from a built `kmod/fbt.ko`, else `audit/data/fbt-handler-callees.txt`).

A breadth-first walk from the trap roots gives the set. It is cut (the function is on the path, its
callees are not followed) where the trap context ends or cannot go on: the user-mode branch of
exc_int3 (task context after irqentry_enter_from_user_mode), functions that return at once in NMI
context (exc_int3/exc_debug from kernel mode run between irqentry_nmi_enter and _exit) and the
preemption points preempt_count keeps off. Fatal paths (panic, die, printk, oops) are cut before
the function: a probe there only recurses in a kernel that is already dying.
"""

from __future__ import annotations

import re
import struct
from collections import deque
from dataclasses import dataclass, field
from functools import cache
from importlib import resources

import numpy as np

from fbt_audit.decode.insn import decode, sweep
from fbt_audit.model.kernel import Kernel
from fbt_audit.sites.branches import CALL, branches
from fbt_audit.sites.handler_path import handler_path
from fbt_audit.sites.tables import read_tables

# The trap roots (audit/data/handler-path.txt says why each is one) and the ftrace callers a probe
# handled through ftrace runs (and create_trampoline copies): not reached by any call.
ROOTS = ("exc_int3", "exc_debug", "exc_nmi", "notify_die", "kprobe_int3_handler", "poke_int3_handler", "do_int3",
         "ftrace_caller", "ftrace_regs_caller")  # fmt: skip
# Fatal paths: left out with everything below them.
FATAL = frozenset(
    "panic nmi_panic nmi_panic_self_stop die die_addr __die oops_begin oops_end __warn __warn_printk _printk "
    "printk vprintk vprintk_emit vprintk_default _printk_deferred __printk_ratelimit dump_stack dump_stack_lvl "
    "show_regs __show_regs dump_kprobe __stack_chk_fail ftrace_dump run_crash_ipi_callback crash_nmi_callback "
    "kgdb_handle_exception kdb_main_loop".split()
)
# Cut points: on the path, their callees are not.
BOUNDARY = {
    "do_trap": "exc_int3 from user mode: SIGTRAP in task context",
    "irqentry_enter_from_user_mode": "exc_int3 from user mode: task context from here on",
    "irqentry_exit_to_user_mode": "the return to user mode: task context",
    "rcu_read_unlock_special": "returns at once in NMI context (in_nmi())",
    "preempt_schedule": "never schedules with the NMI count raised",
    "preempt_schedule_notrace": "never schedules with the NMI count raised",
    "preempt_schedule_thunk": "never schedules with the NMI count raised",
    "preempt_schedule_notrace_thunk": "never schedules with the NMI count raised",
    "__perf_event_overflow": "a perf hw-breakpoint event's sampling, perf's NMI-safe overflow path (6.12: 3,300 more)",
}
_RDI = re.compile(r"%(rdi|edi|di|dil)\b")
FBT_HANDLER = "fbt_die_notify"  # kmod/fbt_probe.c: the die notifier that takes DIE_INT3 and DIE_DEBUG


@dataclass
class HandlerGraph:
    """The graph's size, FBT207's set (symbol address -> why), the cut points met and the modelled edges."""

    nodes: int
    edges: int
    reached: dict[int, str] = field(default_factory=dict)
    cuts: dict[str, str] = field(default_factory=dict)  # name -> fatal | boundary reason, as met by the walk
    models: list[str] = field(default_factory=list)  # one line per modelled indirect edge
    missing_roots: list[str] = field(default_factory=list)


def handler_graph(kernel: Kernel, fbt_callees: tuple[str, ...] | None = None) -> HandlerGraph:
    """FBT207's set of a vmlinux from its call graph (kept on the Kernel per callee list)."""
    callees = fbt_callees if fbt_callees is not None else shipped_callees()
    memo = kernel.__dict__.setdefault("deep_handler_graph", {})
    if callees not in memo:
        memo[callees] = _build(kernel, callees)
    return memo[callees]


@cache
def shipped_callees() -> tuple[str, ...]:
    """The kernel functions fbt.ko's handler calls, as scripts/handler-callees read them from a build."""
    text = resources.files("fbt_audit").joinpath("data", "fbt-handler-callees.txt").read_text()
    return tuple(ln.split()[0] for ln in text.splitlines() if ln.strip() and not ln.startswith("#"))


class _Graph:
    """Pieces, their names, and the direct edges between them."""

    def __init__(self, kernel: Kernel) -> None:
        b = self.b = branches(kernel)
        self.kernel = kernel
        cs, ce = b.chunk_start, b.chunk_end
        self.names = [kernel.name_at(int(a) + b.base) for a in cs]
        owner = np.arange(len(cs))
        unnamed = np.array([n is None for n in self.names], dtype=bool)
        owner[unnamed] = -1
        for alt in read_tables(kernel).alts:  # a replacement's calls are its site's function's
            r, f = self.piece(alt.repl), self.piece(alt.instr)
            if r >= 0 and f >= 0 and unnamed[r] and int(cs[r]) + b.base == alt.repl:
                owner[r] = owner[f]
        src = np.where(b.src_chunk >= 0, owner[np.maximum(b.src_chunk, 0)], -1)
        di = np.searchsorted(cs, b.dst, side="right") - 1
        ok = (di >= 0) & (src >= 0)
        ok[ok] &= (b.dst[ok] < ce[di[ok]]) & ~unnamed[di[ok]]
        start = np.zeros(len(ok), dtype=bool)
        start[ok] = cs[di[ok]] == b.dst[ok]
        edge = ok & ((b.kind == CALL) | start) & (di != src)
        n = len(cs)
        key = np.unique(src[edge].astype(np.int64) * n + di[edge])  # one int per (caller, callee): a 1-d unique
        self.adj: dict[int, list[int]] = {}
        for s, d in zip((key // n).tolist(), (key % n).tolist(), strict=True):
            self.adj.setdefault(s, []).append(d)
        self.edges = len(key)

    def piece(self, addr: int) -> int:
        """The piece holding addr, or -1."""
        cs, off = self.b.chunk_start, addr - self.b.base
        i = int(np.searchsorted(cs, off, side="right")) - 1
        return i if i >= 0 and off < int(self.b.chunk_end[i]) else -1

    def by_name(self, name: str) -> int:
        a = self.kernel.symbol_address(name)
        i = self.piece(a) if a is not None else -1
        return i if i >= 0 and int(self.b.chunk_start[i]) + self.b.base == a else -1

    def add(self, s: int, d: int) -> bool:
        if s < 0 or d < 0 or s == d or d in self.adj.get(s, ()):
            return False
        self.adj.setdefault(s, []).append(d)
        self.edges += 1
        return True


def _build(kernel: Kernel, callees: tuple[str, ...]) -> HandlerGraph:
    g = _Graph(kernel)
    out = HandlerGraph(nodes=len(g.names), edges=0)
    why: dict[int, str] = {}
    for name in ROOTS:
        i = g.by_name(name)
        if i < 0:
            out.missing_roots.append(name)
        elif i not in why:
            reason = handler_path().get(name, "a trap root")
            why[i] = reason if reason.startswith("root") else f"root: {reason}"
    _die_notifiers(kernel, g, out)
    _paravirt(kernel, g, out)
    for name in callees:
        i = g.by_name(name)
        if name in FATAL:
            out.cuts[name] = "fatal path"
        elif i >= 0 and i not in why:
            why[i] = f"called by fbt.ko's {FBT_HANDLER}"
    out.edges = g.edges
    _walk(g, why, out)
    return out


def _walk(g: _Graph, why: dict[int, str], out: HandlerGraph) -> None:
    """Breadth first from the roots: each function's reason is its shortest call path."""
    parent: dict[int, int] = {}
    q = deque(why)
    while q:
        i = q.popleft()
        name = g.names[i]
        if name in BOUNDARY:
            out.cuts[name] = BOUNDARY[name]
            continue
        for d in g.adj.get(i, ()):
            if d in why or d in parent:
                continue
            if g.names[d] in FATAL:
                out.cuts[g.names[d]] = "fatal path"
                continue
            parent[d] = i
            q.append(d)
    for i, reason in why.items():
        out.reached[int(g.b.chunk_start[i]) + g.b.base] = reason
    for d in parent:
        path, j = [g.names[d]], parent[d]
        while j in parent:
            path.append(g.names[j])
            j = parent[j]
        path.append(g.names[j])
        out.reached[int(g.b.chunk_start[d]) + g.b.base] = "called on the trap path: " + " -> ".join(reversed(path))


def _die_notifiers(kernel: Kernel, g: _Graph, out: HandlerGraph) -> None:
    """notify_die -> each notifier_call whose notifier_block the image registers with register_die_notifier."""
    b, reg, root = g.b, kernel.symbol_address("register_die_notifier"), g.by_name("notify_die")
    if reg is None or root < 0:
        return
    for k in np.flatnonzero(b.dst == reg - b.base).tolist():
        nb = _rdi_before(kernel, g, k)
        raw = kernel.read(nb, 8) if nb is not None else b""
        if len(raw) == 8:
            cb = struct.unpack("<Q", raw)[0]
            d = g.piece(cb)
            if d >= 0 and int(b.chunk_start[d]) + b.base == cb and g.add(root, d):
                out.models.append(f"die notifier: notify_die -> {g.names[d]}")


def _rdi_before(kernel: Kernel, g: _Graph, k: int) -> int | None:
    """The address loaded into %rdi by the last instruction before branch k that writes it (mov $imm32 or
    lea rip-relative), decoded by capstone's sweep of the piece."""
    b = g.b
    c = int(b.src_chunk[k])
    if c < 0:
        return None
    lo, at = int(b.chunk_start[c]) + b.base, int(b.src[k]) + b.base
    code = kernel.read(lo, at - lo)
    got = None
    for a, size in sweep(code, lo):
        raw = code[a - lo : a - lo + size]
        if raw[:3] == b"\x48\xc7\xc7" and size == 7:
            got = (struct.unpack_from("<i", raw, 3)[0]) & 0xFFFFFFFFFFFFFFFF
        elif raw[:3] == b"\x48\x8d\x3d" and size == 7:
            got = a + 7 + struct.unpack_from("<i", raw, 3)[0]
        elif size and (raw[:1] == b"\xe8" or _RDI.search(decode(raw, a).operands.rsplit(",", 1)[-1])):
            got = None  # a call, or something else, wrote %rdi last
    return got


def _paravirt(kernel: Kernel, g: _Graph, out: HandlerGraph) -> None:
    """Each `call *pv_ops+N(%rip)` site (.parainstructions) -> the slot's initial (native) function."""
    n = 0
    for a, _ln, _ty in read_tables(kernel).para:
        raw = kernel.read(a, 6)
        if raw[:2] != b"\xff\x15" or len(raw) != 6:
            continue
        ptr = kernel.read(a + 6 + struct.unpack_from("<i", raw, 2)[0], 8)
        if len(ptr) != 8:
            continue
        target = struct.unpack("<Q", ptr)[0]
        d = g.piece(target)
        if d >= 0 and g.names[d] not in ("_paravirt_nop", "paravirt_nop") and g.add(g.piece(a), d):
            n += 1
    if n:
        out.models.append(f"paravirt: {n} call *pv_ops sites -> the slot's native function")


def module_callees(module: Kernel, entry: str = FBT_HANDLER) -> tuple[str, ...]:
    """The functions outside a module (its relocated calls and tail calls by name) that its function `entry`
    and the module's own functions it reaches call, sorted: what kmod/fbt.ko's int3 path runs in the kernel."""
    g = _Graph(module)
    b, targets = g.b, module.call_targets
    start = g.by_name(entry)
    if start < 0:
        return ()
    seen, q = {start}, deque([start])
    while q:
        for d in g.adj.get(q.popleft(), ()):
            if d not in seen:
                seen.add(d)
                q.append(d)
    own = set(g.names)
    out = set()
    for k in np.flatnonzero(np.isin(b.src_chunk, list(seen))).tolist():
        name = targets.get(int(b.end[k]) - 4 + b.base)
        if name and name not in own:
            out.add(name)
    return tuple(sorted(out))


def cross_check(kernel: Kernel, graph: HandlerGraph, listed: dict[str, str] | None = None) -> dict[str, str]:
    """Each name of audit/data/handler-path.txt the graph does not cover (the name or a suffixed clone of it
    reached), with why: a fatal cut, no such symbol, or no direct call or modelled edge reaching it."""
    listed = handler_path() if listed is None else listed
    reached = {kernel.name_at(a) for a in graph.reached}
    bases = {n.split(".", 1)[0] for n in reached if n}
    out = {}
    for name in sorted(listed):
        if name in reached or name in bases:
            continue
        if name in FATAL:
            out[name] = "fatal path: cut"
        elif kernel.symbol_address(name) is None:
            out[name] = "no such symbol in this image"
        else:
            out[name] = "no direct call or modelled edge from the roots reaches it (inlined, or called by pointer)"
    return out
