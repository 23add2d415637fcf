"""window.py: branch targets strictly inside a patchpoint's multi-byte patch window (FBT115's facts, --deep).

The targets are every direct branch of the image (sites/branches.py: other functions, `.cold` parts,
`.altinstr_aux`, alternative replacements) and what the kernel's tables send execution to without a
branch on disk: `__jump_table` targets (a static key's `jmp` is a NOP until enabled) and `__ex_table`
fixups (where a faulting instruction resumes). One sorted array and two binary searches per patchpoint
(all at once with numpy), so no pre-filter is needed; the functions whose first instruction is shorter
than the window are counted for --statistics as the cheap candidates.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np

from fbt_audit.model.core import Patchpoint
from fbt_audit.model.facts import WINDOW_TARGET
from fbt_audit.model.kernel import Kernel
from fbt_audit.sites.branches import CALL, JMP, LOOP, Branches, branches
from fbt_audit.sites.tables import read_tables

_KIND = {CALL: "call", JMP: "jmp", LOOP: "loop"}


@dataclass
class WindowStats:
    window: int
    short_first: int  # patchpoints whose first instruction is shorter than the window
    targets: int  # distinct branch and table targets
    hits: int  # patchpoints with a target strictly inside their window


def add_window_facts(kernel: Kernel, pps: list[Patchpoint], window: int) -> WindowStats:
    """Give each patchpoint with a target in (addr, addr + window) the fact `window-target:<off>:<what>`."""
    b = branches(kernel)
    dst, what = _targets(kernel, b)
    order = np.argsort(dst, kind="stable")
    dst = dst[order]
    at = np.fromiter((pp.addr - b.base for pp in pps), dtype=np.int64, count=len(pps))
    lo = np.searchsorted(dst, at + 1, side="left")
    hi = np.searchsorted(dst, at + window, side="left")
    hit = np.flatnonzero(hi > lo)
    for i in hit.tolist():
        pp = pps[i]
        first = int(order[lo[i]])
        off = int(dst[lo[i]]) - int(at[i])
        n = int(hi[i] - lo[i])
        more = f" (and {n - 1} more)" if n > 1 else ""
        pp.facts = pp.facts | {f"{WINDOW_TARGET}{off}:{what(first)}{more}"}
    short = sum(1 for pp in pps if 0 < pp.insn.length < window)
    return WindowStats(window, short, len(np.unique(dst)), len(hit))


def _targets(kernel: Kernel, b: Branches):
    """(targets as offsets from b.base, describe(index) -> 'jmp from f+0x12'): the sweep's branches first,
    then the jump-label targets and the exception fixups."""
    t = read_tables(kernel)
    jl = np.array([a - b.base for a in t.jump_targets], dtype=np.int64)
    ex = np.array([a - b.base for a in t.extable_fixups], dtype=np.int64)
    n0, n1 = len(b.dst), len(b.dst) + len(jl)

    def describe(i: int) -> str:
        if i < n0:
            return f"{_KIND.get(int(b.kind[i]), 'jcc')} from {_where(kernel, b.addr(b.src[i]))}"
        if i < n1:
            return f"the jump-label target of the static branch at {_where(kernel, t.jump[i - n0])}"
        return f"the exception fixup of {_where(kernel, t.extable[i - n1])}"

    return np.concatenate([b.dst, jl, ex]), describe


def _where(kernel: Kernel, addr: int) -> str:
    """function+0xoff of an address (the nearest text symbol at or below it), or the section and offset."""
    cols = kernel.symbol_columns()
    i = bisect.bisect_right(cols.addr, addr) - 1
    sec = kernel.section_at(addr)
    if i >= 0 and (sec is None or cols.addr[i] >= sec.addr):
        return f"{kernel.name_at(cols.addr[i])}+{addr - cols.addr[i]:#x}"
    return f"{sec.name}+{addr - sec.addr:#x}" if sec is not None else f"{addr:#x}"
