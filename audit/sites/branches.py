"""branches.py: every direct call, jump and conditional branch of an image, from one vectorised sweep (--deep).

Instruction boundaries are the linear sweep of audit/decode/lengths.py (capstone's boundaries by
construction), restarted at every text symbol as objdump restarts at its labels; the two sections no
symbol names are swept from their start (`.altinstr_aux`, static_cpu_has' slow paths) or from each
replacement (`.altinstr_replacement`, whose branches keep their absolute target when apply_alternatives
copies them). At each instruction start the prefixes are skipped and `call rel32`, `jmp rel32/rel8`,
`jcc rel8/rel32` and `loop`/`jrcxz` give their targets with numpy; nothing is decoded one by one.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np

from fbt_audit.decode import lengths as xlen
from fbt_audit.decode.insn import insn_length
from fbt_audit.model.kernel import Kernel, Section
from fbt_audit.sites.tables import read_tables

CALL, JMP, JCC, LOOP = 0, 1, 2, 3  # Branches.kind (LOOP: loop, loope, loopne, jrcxz)
UNNAMED = (".altinstr_aux", ".altinstr_replacement")  # swept without symbols
_PREFIX = np.zeros(256, dtype=bool)
_PREFIX[list(b"\x26\x2e\x36\x3e\x64\x65\x66\x67\xf0\xf2\xf3") + list(range(0x40, 0x50))] = True


@dataclass
class Branches:
    """The direct branches of one image. Addresses are int64 offsets from `base` (a vmlinux lives at the top
    of the address space, past int64); `src` is the instruction's address, `dst` its target, `end` the
    address after it. `chunk_start`/`chunk_end`: the swept pieces, each from a symbol (or an unnamed
    section's start) to the next, as offsets; `src_chunk` the piece each branch is in (-1: none)."""

    base: int
    src: np.ndarray
    dst: np.ndarray
    end: np.ndarray
    kind: np.ndarray
    chunk_start: np.ndarray
    chunk_end: np.ndarray
    src_chunk: np.ndarray
    instructions: int  # instruction starts swept
    undecodable: int

    def addr(self, off: int) -> int:
        return self.base + int(off)


def branches(kernel: Kernel) -> Branches:
    """The image's direct branches (one sweep per image, kept on the Kernel)."""
    got = kernel.__dict__.get("deep_branches")
    if got is None:
        got = kernel.__dict__["deep_branches"] = _sweep(kernel)
    return got


def _chunks(kernel: Kernel) -> dict[int, tuple[Section, list[int], list[int]]]:
    """Per executable section (by index in kernel.sections): the sweep's chunk starts and ends (addresses)."""
    cols = kernel.symbol_columns()
    t = read_tables(kernel)
    out: dict[int, tuple[Section, list[int], list[int]]] = {}
    for i, sec in enumerate(kernel.sections):
        if not sec.executable or sec.nobits or not sec.size:
            continue
        lo = bisect.bisect_left(cols.addr, sec.addr)
        hi = bisect.bisect_left(cols.addr, sec.addr + sec.size)
        starts = sorted(set(cols.addr[lo:hi]))
        if sec.name in UNNAMED and not starts:
            starts = [sec.addr]
            if sec.name == ".altinstr_replacement":
                starts = sorted({sec.addr} | {a.repl for a in t.alts if sec.addr <= a.repl < sec.addr + sec.size})
        if starts:
            out[i] = (sec, starts, [*starts[1:], sec.addr + sec.size])
    return out


def _sweep(kernel: Kernel) -> Branches:
    secs = _chunks(kernel)
    base = min((s.addr for s, _a, _b in secs.values()), default=0)
    parts: list[tuple[np.ndarray, ...]] = []
    cstart, cend = [], []
    n_insn = n_bad = 0
    for sec, starts, ends in secs.values():
        code = kernel.data[sec.offset : sec.offset + sec.size]

        def slow(off: int, chunk_end: int, code=code) -> int:
            return insn_length(bytes(code[off : min(off + 15, chunk_end)]))

        s = np.array(starts, dtype=object) - sec.addr
        e = np.array(ends, dtype=object) - sec.addr
        s, e = s.astype(np.intp), e.astype(np.intp)
        marks, bad = xlen.boundaries(code, s, e, slow)
        at = np.flatnonzero(marks == 1)
        n_insn += len(at)
        n_bad += len(bad)
        src, dst, end, kind = _direct(np.frombuffer(code, dtype=np.uint8), at)
        shift = sec.addr - base
        parts.append((src + shift, dst + shift, end + shift, kind))
        cstart.append(s + shift)
        cend.append(e + shift)
    src, dst, end = (_cat([p[i] for p in parts], np.int64) for i in range(3))
    kind = _cat([p[3] for p in parts], np.uint8)
    cs, ce = _cat(cstart, np.int64).astype(np.int64), _cat(cend, np.int64).astype(np.int64)
    order = np.argsort(cs, kind="stable")
    cs, ce = cs[order], ce[order]
    ci = np.searchsorted(cs, src, side="right") - 1
    ci[(ci < 0) | (src >= ce[np.maximum(ci, 0)])] = -1
    return Branches(base, src, dst, end, kind, cs, ce, ci, n_insn, n_bad)


def _cat(xs: list[np.ndarray], dtype) -> np.ndarray:
    return np.concatenate(xs) if xs else np.zeros(0, dtype=dtype)


def _direct(tb: np.ndarray, at: np.ndarray) -> tuple[np.ndarray, ...]:
    """(source, target, end, kind) offsets of the direct branches among the instruction starts `at` of a
    section's bytes tb: up to four prefixes skipped, then e8/e9 rel32, eb/70-7f/e0-e3 rel8, 0f 80-8f rel32."""
    n = len(tb)
    pad = np.zeros(n + 24, dtype=np.uint8)
    pad[:n] = tb
    op = at.copy()
    for _ in range(4):
        more = _PREFIX[pad[op]]
        if not more.any():
            break
        op[more] += 1
    b0, b1 = pad[op], pad[op + 1]
    rel32 = (b0 == 0xE8) | (b0 == 0xE9)
    jcc32 = (b0 == 0x0F) & ((b1 & 0xF0) == 0x80)
    rel8 = (b0 == 0xEB) | ((b0 & 0xF0) == 0x70) | ((b0 & 0xFC) == 0xE0)
    keep = rel32 | jcc32 | rel8
    at, op, b0 = at[keep], op[keep], b0[keep]
    rel32, jcc32, rel8 = rel32[keep], jcc32[keep], rel8[keep]
    i32 = np.ndarray((n + 24 - 3,), dtype="<i4", buffer=pad, strides=(1,))
    end = np.where(rel32, op + 5, np.where(jcc32, op + 6, op + 2)).astype(np.int64)
    disp = np.where(rel32, i32[op + 1], np.where(jcc32, i32[op + 2], pad[op + 1].view(np.int8))).astype(np.int64)
    kind = np.where(b0 == 0xE8, CALL, np.where((b0 == 0xE9) | (b0 == 0xEB), JMP, JCC)).astype(np.uint8)
    kind[(b0 & 0xFC) == 0xE0] = LOOP
    return at.astype(np.int64), end + disp, end, kind
