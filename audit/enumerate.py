"""enumerate.py: Kernel + table -> entry patchpoints: one per text address, moved past `move` entries, with variants."""

from __future__ import annotations

import dataclasses
from itertools import groupby

from .abi import Handling, Target
from .decode import decode
from .kernel import Kernel
from .model import IC, Insn, Patchpoint, Symbol, Variant
from .table import EmulationTable

FTRACE_NOP = bytes.fromhex("0f1f440000")  # ftrace_nop_replace(): what `call __fentry__` becomes at boot
MAX_MOVES = 4  # ENDBR, then at most a few more: a table that moves further is broken


def target_class(name: str | None) -> Target:
    if name is None:
        return Target.ANY
    if name in ("__fentry__", "mcount", "__mcount"):
        return Target.FENTRY
    if name == "__x86_return_thunk":
        return Target.RETURN_THUNK
    if name.startswith("__x86_indirect_thunk_"):
        return Target.INDIRECT_THUNK
    return Target.ANY


def resolve(kernel: Kernel, insn: Insn) -> Insn:
    """Name a direct call/jump target: from the relocation at the rel32 (modules) or the address."""
    if not insn.classes & (IC.REL_CALL | IC.REL_BRANCH):
        return insn
    name = kernel.call_targets.get(insn.addr + len(insn.raw) - 4) if len(insn.raw) >= 5 else None
    if name is None and insn.target is not None:
        name = kernel.name_at(insn.target)
    if name is None:
        return insn
    i = insn  # built directly: dataclasses.replace() costs 10 us, and this runs once per call site
    return Insn(
        i.addr,
        i.raw,
        i.mnemonic,
        i.operands,
        i.prefixes,
        i.rex,
        i.opcode,
        i.modrm_off,
        i.classes,
        i.target,
        name,
        target_class(name),
    )


def _primary(group: list[Symbol]) -> Symbol:
    """The name a patchpoint carries when several symbols share its address: a sized FUNC first,
    global before weak before local, then the name with fewest leading underscores."""
    bind_rank = {"GLOBAL": 0, "WEAK": 1}
    return min(
        group,
        key=lambda s: (
            s.kind != "FUNC",
            not s.sized,
            bind_rank.get(s.bind, 2),
            len(s.name) - len(s.name.lstrip("_")),
            s.name,
        ),
    )


def entry_patchpoints(kernel: Kernel, table: EmulationTable) -> list[Patchpoint]:
    out: list[Patchpoint] = []
    read, mcount = kernel.read, kernel.mcount_sites
    nop = None
    for addr, grp in groupby(kernel.symbols, key=lambda s: s.addr):
        group = list(grp)
        sym = _primary(group)
        end = max(s.addr + s.size for s in group)
        at = addr
        moved: list[Insn] = []
        while True:
            insn = resolve(kernel, decode(read(at, 15), at))
            if len(moved) < MAX_MOVES and not insn.classes & IC.INVALID and at + insn.length < end:
                entry = table.lookup(insn)
                if entry is not None and entry.handling == Handling.MOVE:
                    moved.append(insn)
                    at += insn.length
                    continue
            break
        variants = [Variant("disk", insn)]
        facts = set()
        if at in mcount or insn.target_class == Target.FENTRY:
            facts.add("ftrace-site")
            if nop is None:
                nop = decode(FTRACE_NOP, 0)
            variants.append(Variant("ftrace-nop", dataclasses.replace(nop, addr=at)))
        sec = kernel.section_at(at)
        out.append(
            Patchpoint(
                module=kernel.module,
                name=sym.name,
                aliases=tuple(s.name for s in group if s is not sym),
                kind="FUNC" if any(s.kind == "FUNC" for s in group) else "NOTYPE",
                site="entry",
                sym_addr=addr,
                addr=at,
                section=sec.name if sec else sym.section,
                sec_off=at - sec.addr if sec else 0,
                insn=insn,
                variants=tuple(variants),
                moved=tuple(moved),
                facts=frozenset(facts),
            )
        )
    _mark_overlaps(out)
    return out


def _mark_overlaps(pps: list[Patchpoint]) -> None:
    """Instructions that run into the next symbol (retbleed_untrain_ret's `test $0xcc,%bl` holds
    __x86_return_thunk's `ret` at +1): the later patchpoint is not on an instruction boundary of the
    earlier code, so an int3 there would corrupt it."""
    for cur, nxt in zip(pps, pps[1:], strict=False):
        if cur.addr + cur.insn.length > nxt.sym_addr:
            cur.facts = cur.facts | {f"crosses-symbol:{nxt.name}"}
            nxt.facts = nxt.facts | {f"mid-instruction:{cur.name}"}
