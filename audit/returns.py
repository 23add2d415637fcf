"""returns.py: return patchpoints (ret, ret imm16, jmp __x86_return_thunk): linear decode checked with .return_sites."""

from __future__ import annotations

from dataclasses import dataclass, field

from .decode import decode, sweep
from .enumerate import resolve
from .kernel import Kernel
from .model import Patchpoint, Variant
from .sites import _Reader, read_tables

THUNKS = ("__x86_return_thunk",)


@dataclass
class ReturnStats:
    """What the sweep found, for --statistics and the cross-check."""

    returns: int = 0  # ret / ret imm16
    thunk_jumps: int = 0  # jmp __x86_return_thunk
    tail_calls: int = 0  # jmp to the start of another function: not a return
    undecodable: int = 0  # bytes skipped to stay in sync
    return_sites: int = 0  # .return_sites entries
    return_sites_missed: list[int] = field(default_factory=list)  # entries the decode did not find


def return_patchpoints(kernel: Kernel) -> tuple[list[Patchpoint], ReturnStats]:
    """Decode each text symbol from its address to the next symbol's (one chunk per symbol, so the
    sweep restarts at every boundary) and make a `return` patchpoint of every ret and thunk jump."""
    st = ReturnStats()
    t = read_tables(kernel)
    cols = kernel.symbol_columns()
    starts = set(cols.addr)
    thunk = {a for n in THUNKS if (a := _Reader(kernel).sym(n)) is not None}
    found: set[int] = set()
    out: list[Patchpoint] = []
    addrs = cols.addr
    n = len(addrs)
    i = 0
    data = kernel.data
    while i < n:
        a0 = addrs[i]
        j = i
        while j + 1 < n and addrs[j + 1] == a0:
            j += 1
        # the symbol that names this chunk: the sized FUNC among the aliases, else the first
        k = next((x for x in range(i, j + 1) if cols.kind[x] == "FUNC"), i)
        name = cols.name[k]
        # to the next symbol, not the size: code after a sized symbol's end with no symbol of its own
        # (an alias's tail, objtool's unnamed pieces) is still this chunk's
        end = addrs[j + 1] if j + 1 < n else max(a0 + cols.size[x] for x in range(i, j + 1))
        i = j + 1
        sec = kernel.section_at(a0)
        if sec is None or not sec.executable or end <= a0:
            continue
        end = min(end, sec.addr + sec.size)
        base = sec.offset - sec.addr
        code = bytes(data[base + a0 : base + end])
        for a, size in sweep(code, a0):
            if not size:
                st.undecodable += 1
                continue
            b = code[a - a0]
            if b == 0xC3 or b == 0xC2:
                st.returns += 1
            elif b == 0xE9 and size == 5:
                target = (a + 5 + int.from_bytes(code[a - a0 + 1 : a - a0 + 5], "little", signed=True)) & (2**64 - 1)
                tname = kernel.call_targets.get(a + 1) if kernel.kind == "module" else None
                if target in thunk or tname in THUNKS:
                    st.thunk_jumps += 1
                else:
                    if target in starts and not a0 <= target < end:
                        st.tail_calls += 1
                    continue
            elif b == 0xEB and size == 2:
                target = a + 2 + int.from_bytes(code[a - a0 + 1 : a - a0 + 2], "little", signed=True)
                if target in starts and not a0 <= target < end:
                    st.tail_calls += 1
                continue
            else:
                continue
            found.add(a)
            insn = resolve(kernel, decode(code[a - a0 : a - a0 + size], a))
            out.append(
                Patchpoint(
                    kernel.module, name, (), cols.kind[k], "return", a0, a, sec.name, a - sec.addr, insn,
                    (Variant("disk", insn),),
                )
            )  # fmt: skip
    sites = t.s32.get("return_sites", [])
    st.return_sites = len(sites)
    st.return_sites_missed = sorted(a for a in sites if a not in found)
    kernel.__dict__["_fbt_returns"] = st
    return out, st
