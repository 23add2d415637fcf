"""enumerate.py: Kernel + table -> entry patchpoints: one per text address, moved past `move` entries, with variants."""

from __future__ import annotations

import gc
import re
from collections.abc import Iterator
from contextlib import contextmanager

from fbt_audit.decode.insn import decode_fields
from fbt_audit.model.abi import Handling, Target
from fbt_audit.model.core import IC, Insn, Patchpoint, Variant
from fbt_audit.model.facts import FTRACE_SITE, MID_INSTRUCTION
from fbt_audit.model.kernel import Kernel, SymbolColumns
from fbt_audit.table.emulation import EmulationTable

FTRACE_NOP = bytes.fromhex("0f1f440000")  # ftrace_nop_replace(): what `call __fentry__` becomes at boot
MAX_MOVES = 4  # ENDBR, then at most a few more: a table that moves further is broken


_BIND_RANK = {"GLOBAL": 0, "WEAK": 1}


def _primary(cols: SymbolColumns, members: list[int]) -> int:
    """The symbol (index in cols) whose name a patchpoint carries when the symbols `members` share its
    address: a sized FUNC first, global before weak before local, then the name with fewest
    leading underscores."""
    return min(
        members,
        key=lambda k: (
            cols.kind[k] != "FUNC",
            not cols.sized[k],
            _BIND_RANK.get(cols.bind[k], 2),
            len(cols.name[k]) - len(cols.name[k].lstrip("_")),
            cols.name[k],
        ),
    )


@contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic collector off while an audit builds its objects (~10 per patchpoint, a million on
    a 6.12 vmlinux, none freed before the end and none in a cycle): it would rescan all of them
    each time the heap grows by a quarter, half of the run time, and could free nothing."""
    paused = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()


def entry_patchpoints(kernel: Kernel, table: EmulationTable) -> list[Patchpoint]:
    """One patchpoint per distinct text symbol address, in address order. Walks the symbol columns
    and builds each Insn once (name included); the decoder caches shapes, names are asked once
    per target, and the table lookup is memoised, because ~50,000 entries repeat a few shapes."""
    with gc_paused():
        return _entry_patchpoints(kernel, table)


def _entry_patchpoints(kernel: Kernel, table: EmulationTable) -> list[Patchpoint]:
    out: list[Patchpoint] = []
    cols = kernel.symbol_columns()
    c_name, c_size, c_kind = cols.name, cols.size, cols.kind
    c_addr = [*cols.addr, -1]  # a sentinel ends the last group
    nsyms = len(cols.addr)
    module, mcount, data = kernel.module, kernel.mcount_sites, kernel.data
    lookup, name_target = table.lookup, kernel.name_target
    nop_tail = decode_fields(FTRACE_NOP, 0)[1:]
    rel, invalid, move, fentry, max_moves = _REL, IC.INVALID, Handling.MOVE, Target.FENTRY, MAX_MOVES
    movable = _movable_bytes(table)
    sec, lo, hi, base, sec_end = None, 0, -1, 0, 0  # the section that holds [lo, hi)
    prev: Patchpoint | None = None
    prev_end = 0
    i = 0
    while i < nsyms:
        addr = c_addr[i]
        if c_addr[i + 1] != addr:
            name, aliases, kind, end, first = c_name[i], (), c_kind[i], addr + c_size[i], i
            i += 1
            if kind == "NOTYPE" and is_marker(cols, first):
                continue
        else:
            i, first, name, aliases, kind, end = _aliases(cols, c_addr, i)
            if first < 0:
                continue
        at = addr
        moved: tuple[Insn, ...] = ()
        while True:
            if not lo <= at < hi:
                sec, lo, hi = kernel.section_span(at)
                if sec is not None:
                    base, sec_end = sec.offset - sec.addr, sec.addr + sec.size
            stop = at + 15
            if stop > sec_end:
                stop = sec_end
            code = data[base + at : base + stop] if sec is not None else b""
            f = decode_fields(code, at)
            insn = Insn(*f, *name_target(at, len(f[1]), f[9])) if f[8] & rel else Insn(*f)
            length = 0 if f[8] & invalid else len(f[1])
            if length and f[6][-1] in movable and at + length < end and len(moved) < max_moves:
                entry = lookup(insn)
                if entry is not None and entry.handling == move:
                    moved += (insn,)
                    at += length
                    continue
            break
        if at in mcount or insn.target_class == fentry:
            facts = _FTRACE_SITE
            variants = (Variant("disk", insn), Variant("ftrace-nop", Insn(at, *nop_tail)))
        else:
            facts = _NO_FACTS
            variants = (Variant("disk", insn),)
        if not lo <= at < hi:
            sec, lo, hi = kernel.section_span(at)
            if sec is not None:
                base, sec_end = sec.offset - sec.addr, sec.addr + sec.size
        section, sec_off = (sec.name, at - sec.addr) if sec is not None else (cols.section[first], 0)
        pp = Patchpoint(module, name, aliases, kind, "entry", addr, at, section, sec_off, insn, variants, moved, facts)
        if prev_end > addr and prev is not None:
            _overlap(prev, pp)
        out.append(pp)
        prev, prev_end = pp, at + length
    return out


def _movable_bytes(table: EmulationTable) -> set[int]:
    """The last opcode bytes a `move` entry accepts: any other instruction cannot move the patchpoint, so
    most never need the table lookup (ENDBR is the only move in the shipped tables)."""
    return {
        b
        for e in table.entries
        if e.handling == Handling.MOVE
        for b in range(256)
        if (b & e.opcode_mask) == (e.opcode[-1] & e.opcode_mask)
    }


def _aliases(cols: SymbolColumns, c_addr: list[int], i: int) -> tuple[int, int, str, tuple[str, ...], str, int]:
    """Symbols i.. sharing one address: (the index after them, the primary's index, its name, the other
    names, FUNC if any of them is, the furthest end). Linker section markers are none of these; when
    only markers share the address, the primary's index is -1 (no patchpoint)."""
    addr, j = c_addr[i], i + 1
    while c_addr[j] == addr:
        j += 1
    members = [k for k in range(i, j) if not is_marker(cols, k)]
    if not members:
        return j, -1, "", (), "", addr
    first = _primary(cols, members)
    aliases = tuple(cols.name[k] for k in members if k != first)
    kind = "FUNC" if any(cols.kind[k] == "FUNC" for k in members) else "NOTYPE"
    end = max(addr + cols.size[k] for k in members)
    return j, first, cols.name[first], aliases, kind, end


# Linker-defined section boundaries in text (vmlinux.lds.h, arch/x86/kernel/vmlinux.lds.S): labels that
# mark where .sched.text, .noinstr.text, .entry.text ... begin and end, not code. Unsized NOTYPE only:
# a FUNC may be called __foo_start.
_MARKER = re.compile(r"__\w+_text_(?:start|end)|_s?text|_etext|_[se]inittext|__indirect_thunk_(?:start|end)")


def is_marker(cols: SymbolColumns, k: int) -> bool:
    """Symbol k is a linker section marker: never a patchpoint (a provider must not probe it either)."""
    return cols.kind[k] == "NOTYPE" and not cols.sized[k] and _MARKER.fullmatch(cols.name[k]) is not None


_FTRACE_SITE = frozenset({FTRACE_SITE})
_NO_FACTS: frozenset[str] = frozenset()
_REL = IC.REL_CALL | IC.REL_BRANCH


def _overlap(cur: Patchpoint, nxt: Patchpoint) -> None:
    """cur's instruction runs into the next symbol (retbleed_untrain_ret's `test $0xcc,%bl` holds
    __x86_return_thunk's `ret` at +1): the later patchpoint is not on an instruction boundary of the
    earlier code, so an int3 there would corrupt it."""
    cur.facts = cur.facts | {f"crosses-symbol:{nxt.name}"}
    nxt.facts = nxt.facts | {f"{MID_INSTRUCTION}{cur.name}"}
