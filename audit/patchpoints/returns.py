"""returns.py: return patchpoints (ret, ret imm16, jmp __x86_return_thunk): linear decode checked with .return_sites."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from fbt_audit.decode.insn import decode_fields, insn_length, sweep
from fbt_audit.model.core import IC, Insn, Patchpoint, Variant
from fbt_audit.model.kernel import Kernel, Section
from fbt_audit.sites.tables import Tables, read_tables

THUNKS = ("__x86_return_thunk",)
# The vectorised sweep keeps addresses as int64 offsets from the lowest text symbol: text spread over more
# than this (only a hostile image: a kernel's text spans megabytes) takes the per-chunk sweep instead.
_SPAN = 1 << 62


@dataclass
class ReturnStats:
    """What the sweep found, for --statistics and the cross-check."""

    returns: int = 0  # ret / ret imm16
    thunk_jumps: int = 0  # jmp __x86_return_thunk
    tail_calls: int = 0  # jmp to the start of another function: not a return
    undecodable: int = 0  # bytes skipped to stay in sync
    return_sites: int = 0  # .return_sites entries
    return_sites_missed: list[int] = field(default_factory=list)  # entries the decode did not find


# One chunk of the sweep: (section, start, end, index in the symbol columns of the symbol that names it)
Chunk = tuple[Section, int, int, int]


@dataclass
class Chunks:
    """The sweep's chunks as columns, in address order: per chunk its section (index into the kernel's sorted
    sections), start and end addresses, and the symbol (index in the symbol columns) that names it."""

    sec: np.ndarray
    start: np.ndarray
    end: np.ndarray
    sym: np.ndarray

    def __len__(self) -> int:
        return len(self.start)

    def chunk(self, kernel: Kernel, c: int) -> Chunk:
        return kernel._sec_sorted[self.sec[c]], int(self.start[c]), int(self.end[c]), int(self.sym[c])


def return_patchpoints(kernel: Kernel, *, vectorised: bool = True) -> tuple[list[Patchpoint], ReturnStats]:
    """Every return patchpoint of return_rows built (facts and boot-time variants not added), and the statistics."""
    rows = return_rows(kernel, vectorised=vectorised)
    return rows.patchpoints(), rows.stats


def return_rows(kernel: Kernel, *, vectorised: bool = True) -> ReturnRows:
    """Decode each text symbol from its address to the next symbol's (one chunk per symbol, so the
    sweep restarts at every boundary) and make a `return` row of every ret and thunk jump.
    With numpy the chunks are decoded together (audit/decode/lengths.py); without it, or with not vectorised,
    one capstone sweep per chunk. Both give the same rows and statistics."""
    st = ReturnStats()
    t = read_tables(kernel)
    thunk = {a for n in THUNKS if (a := kernel.symbol_address(n)) is not None}
    chunks = _chunks(kernel)
    found: list[tuple] = []  # (chunk index, address, length) of the rows, per section swept
    xlen = None
    if vectorised:
        try:
            from fbt_audit.decode import lengths as xlen
        except ImportError:  # numpy missing: the capstone sweep gives the same answer, ten times slower
            pass
    cols = kernel.columns
    if xlen is not None and (not cols.addr or cols.addr[-1] - cols.addr[0] < _SPAN):
        _vectorised(xlen, kernel, chunks, thunk, t, st, found)
    else:
        starts = set(kernel.columns.addr)
        got: tuple[list[int], list[int], list[int]] = ([], [], [])
        for c in range(len(chunks)):
            _sweep_chunk(kernel, chunks.chunk(kernel, c), c, starts, thunk, st, got)
        found.append(got)
    cols = [np.concatenate([np.asarray(f[i], dtype=d) for f in found]) if found else np.zeros(0, dtype=d)
            for i, d in enumerate((np.int64, np.uint64, np.int64))]  # fmt: skip
    rows = ReturnRows(kernel, chunks, *cols)
    sites = t.s32.get("return_sites", [])
    st.return_sites = len(sites)
    try:
        listed = np.array(sites, dtype=np.uint64)
        st.return_sites_missed = sorted(listed[~np.isin(listed, rows.addr)].tolist())
    except OverflowError:  # a hostile entry below 0 or past 2**64
        addrs = set(rows.addr.tolist())
        st.return_sites_missed = sorted(a for a in sites if a not in addrs)
    kernel.return_stats = rows.stats = st
    return rows


class ReturnRows:
    """The return patchpoints of one image as columns, in address order (row i: the i-th ret or thunk jump).

    Per row: `addr`, `length` (1, 3 or 5), `chunk` (index into `chunks`: the section, the chunk's start, which is
    the row's `sym_addr`, and the symbol that names it), `offset` (file offset of addr), `op` (the first byte),
    `imm` (ret imm16's), `target` (jmp rel32's) and `whole` (all its bytes in the file). A row becomes a
    Patchpoint only when asked (patchpoint()). The site-fact pass sets `rs` (the row is a .return_sites entry:
    the return-thunk fact and variant), `fact_id` (index into `factsets`: the row's facts) and `objs`: the rows
    it built and annotated as Patchpoints, the row's truth from then on."""

    def __init__(self, kernel: Kernel, chunks: Chunks, chunk: np.ndarray, addr: np.ndarray, length: np.ndarray):
        self.kernel, self.chunks = kernel, chunks
        self.chunk, self.length = chunk, length
        self.addr = addr
        self.sym_addr = chunks.start[chunk]
        self.sym = chunks.sym[chunk]
        secs = kernel._sec_sorted
        sec = chunks.sec[chunk]
        sec_addr = np.array([x.addr for x in secs] + [0], dtype=np.uint64)[sec]
        sec_off = np.array([x.offset for x in secs] + [0], dtype=np.int64)[sec]
        self.offset = (addr - sec_addr).astype(np.int64) + sec_off
        buf = np.frombuffer(kernel.data, dtype=np.uint8) if len(kernel.data) else np.zeros(1, dtype=np.uint8)
        last = len(buf) - 1
        self.whole = self.offset + length <= len(kernel.data)  # not cut short by the file's end (a hostile image)
        self.op = buf[np.minimum(self.offset, last)]
        jmp = np.flatnonzero(self.op == 0xE9)
        disp = buf[np.minimum(self.offset[jmp, None] + np.arange(1, 5), last)].copy().view("<i4").reshape(-1)
        self.target = np.zeros(len(addr), dtype=np.uint64)
        self.target[jmp] = self.addr[jmp] + (disp.astype(np.int64) + 5).astype(np.uint64)  # wraps as the sweep's mask
        self.imm = np.zeros(len(addr), dtype=np.int64)  # ret imm16's immediate
        c2 = np.flatnonzero(self.op == 0xC2)
        lo, hi = buf[np.minimum(self.offset[c2] + 1, last)], buf[np.minimum(self.offset[c2] + 2, last)]
        self.imm[c2] = lo.astype(np.int64) | hi.astype(np.int64) << 8
        self.objs: dict[int, Patchpoint] = {}
        self.rs = np.zeros(len(addr), dtype=bool)
        self.fact_id = np.zeros(len(addr), dtype=np.int64)
        self.factsets: list[frozenset[str]] = [frozenset()]
        self.rs_variant: Callable[[int], Variant] | None = None  # the return-thunk variant at an address
        self.make = _builder(kernel)
        self.raw_at: dict | None = None  # set by detach(): every row is then in objs
        self.stats = ReturnStats()

    @property
    def n(self) -> int:
        return len(self.addr)

    def name(self, i: int) -> str:
        pp = self.objs.get(i)
        return pp.name if pp is not None else self.kernel.symbol_columns().name[self.sym[i]]

    def built(self, i: int) -> Patchpoint:
        """Row i as the sweep finds it: no site facts, the disk form alone."""
        c = self.chunks.chunk(self.kernel, self.chunk[i])
        off, n = int(self.offset[i]), int(self.length[i])
        return self.make(c, int(self.addr[i]), bytes(self.kernel.data[off : off + n]))

    def patchpoint(self, i: int) -> Patchpoint:
        """Row i as a Patchpoint (the one already built, or a new one with the facts and variants of its columns)."""
        pp = self.objs.get(i)
        if pp is not None:
            return pp
        pp = self.built(i)
        if self.rs[i]:
            pp.variants = (*pp.variants, self.rs_variant(pp.addr))
        pp.facts = self.factsets[self.fact_id[i]]
        return pp

    def patchpoints(self) -> list[Patchpoint]:
        return self.build(list(range(self.n)))

    def build(self, idx: list[int]) -> list[Patchpoint]:
        """Rows idx as Patchpoints (EntryRows.build's interface, for judge/rows.py)."""
        return [self.patchpoint(i) for i in idx]

    def detach(self, kernel: Kernel) -> None:
        """Let the image go: every row built (a module's few hundred), `kernel` the detached one."""
        self.objs = {i: self.patchpoint(i) for i in range(self.n)}
        self.kernel, self.chunks, self.make, self.rs_variant, self.raw_at = kernel, None, None, None, {}


def _chunks(kernel: Kernel) -> Chunks:
    """One chunk per distinct text symbol address in an executable section, to the next symbol's address (to
    the furthest end of the last's symbols), within the section; named by the sized FUNC among the aliases,
    else the first. Over the columns: aliases (a few thousand) one by one."""
    cols = kernel.symbol_columns()
    n = len(cols.addr)
    addr = _u64s(cols.addr)
    first = np.flatnonzero(np.r_[True, addr[1:] != addr[:-1]]) if n else np.zeros(0, dtype=np.intp)
    stop = np.r_[first[1:], n]
    sym = first.copy()
    kind = cols.kind
    for g in np.flatnonzero(stop - first > 1).tolist():
        i, j = int(first[g]), int(stop[g])
        if kind[i] != "FUNC":
            sym[g] = next((x for x in range(i, j) if kind[x] == "FUNC"), i)
    a0 = addr[first]
    # to the next symbol, not the size: code after a sized symbol's end with no symbol of its own
    # (an alias's tail, objtool's unnamed pieces) is still this chunk's
    end = np.r_[a0[1:], _u64s([max(cols.addr[x] + cols.size[x] for x in range(first[-1], n))] if n else [])]
    secs = kernel._sec_sorted
    s_start = _u64s([x.addr for x in secs])
    s_end = _u64s([x.addr + x.size for x in secs] + [0])
    s = np.searchsorted(s_start, a0, side="right").astype(np.int64) - 1
    ok = (s >= 0) & (a0 < s_end[s]) & np.array([x.executable for x in secs] + [False], dtype=bool)[s] & (end > a0)
    s = s[ok]
    return Chunks(s, a0[ok], np.minimum(end[ok], s_end[s]), sym[ok].astype(np.int64))


def _u64s(values: list[int]) -> np.ndarray:
    """values as uint64, those past 2**64 (a hostile image's sums) clipped to its end."""
    try:
        return np.array(values, dtype=np.uint64)
    except OverflowError:
        return np.array([min(v, (1 << 64) - 1) for v in values], dtype=np.uint64)


def _builder(kernel: Kernel):
    """make(chunk, address, bytes) -> the return Patchpoint: resolve(decode()) with the target names
    asked once per target, and one Insn built per site. Without relocations (a vmlinux) a jmp rel32's
    fields after its address and bytes depend on its target alone: 50,000 thunk jumps share them."""
    cols, module, call_targets, name_target = kernel.columns, kernel.module, kernel.call_targets, kernel.name_target
    jumps: dict[int, tuple] = {}  # jmp rel32 target -> Insn fields from mnemonic on

    def insn_of(a: int, raw: bytes) -> Insn:
        f = decode_fields(raw, a)
        if not f[8] & _REL:
            return Insn(*f)
        return Insn(*f, *name_target(a, len(f[1]), f[9]))

    def make(chunk: Chunk, a: int, raw: bytes) -> Patchpoint:
        sec, a0, _end, k = chunk
        if raw[0] == 0xE9 and not call_targets:
            target = (a + 5 + int.from_bytes(raw[1:5], "little", signed=True)) & 0xFFFFFFFFFFFFFFFF
            tail = jumps.get(target)
            if tail is None:
                i = insn_of(a, raw)
                tail = jumps[target] = (
                    i.mnemonic, i.operands, i.prefixes, i.rex, i.opcode, i.modrm_off, i.classes, i.target,
                    i.target_name, i.target_class,
                )  # fmt: skip
            insn = Insn(a, raw, *tail)
        else:
            insn = insn_of(a, raw)
        name, kind, variants = cols.name[k], cols.kind[k], (Variant("disk", insn),)
        return Patchpoint(module, name, (), kind, "return", a0, a, sec.name, a - sec.addr, insn, variants)

    return make


_REL = IC.REL_CALL | IC.REL_BRANCH


def _sweep_chunk(kernel: Kernel, chunk: Chunk, c: int, starts: set[int], thunk: set[int], st, got) -> None:
    """One chunk (index c) by capstone's linear sweep (the reference the vectorised decode is tested against):
    its rows' chunk index, address and length appended to the lists `got`."""
    sec, a0, end, _k = chunk
    base = sec.offset - sec.addr
    code = bytes(kernel.data[base + a0 : base + end])
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
        got[0].append(c)
        got[1].append(a)
        got[2].append(size)


def _hints(t: Tables) -> list[int]:
    """Addresses the kernel's tables say are instruction starts: where the vectorised sweep's
    segments start (a wrong one costs a re-walk, never a different answer)."""
    h = [a.instr for a in t.alts] + [a for a, _n, _t in t.para] + t.jump + [a for a, _tail in t.static_calls]
    h += t.mcount + t.extable + t.bugs
    for sites in t.s32.values():
        h += sites
    return h


def _vectorised(xlen, kernel: Kernel, chunks: Chunks, thunk: set[int], t: Tables, st, found) -> None:
    """The sweep of all chunks of each section at once (audit/decode/lengths.py), then its ret, ret imm16 and
    jmp rel8/rel32 instructions, in address order: the same as _sweep_chunk over every chunk."""
    cols = kernel.columns
    g = cols.addr[0] if cols.addr else 0  # addresses as int64 offsets from the lowest symbol
    starts = np.sort((_u64s(cols.addr) - np.uint64(g)).astype(np.int64))  # sorted (_member needs no more)
    thunks = np.array(sorted(a - g for a in thunk if -_SPAN <= a - g < _SPAN), dtype=np.int64)
    hints = _offsets(_hints(t), g)
    module = kernel.kind == "module"
    known = _Known()
    cut = np.flatnonzero(np.r_[True, chunks.sec[1:] != chunks.sec[:-1], True])  # chunks are in address order
    cut = cut if len(chunks) else cut[:0]
    for lo, hi in zip(cut[:-1].tolist(), cut[1:].tolist(), strict=True):
        sec = kernel._sec_sorted[chunks.sec[lo]]
        code = kernel.data[sec.offset : sec.offset + sec.size]

        def slow(off: int, chunk_end: int, code=code) -> int:
            return known.length(bytes(code[off : min(off + 15, chunk_end)]))

        c_start = (chunks.start[lo:hi] - np.uint64(sec.addr)).astype(np.intp)
        c_end = (chunks.end[lo:hi] - np.uint64(sec.addr)).astype(np.intp)
        h = hints - (sec.addr - g)
        h = h[(h >= 0) & (h < sec.size)]
        marks, bad = xlen.boundaries(code, c_start, c_end, slow, h)
        st.undecodable += len(bad)
        tb = np.frombuffer(code, dtype=np.uint8)
        at = np.flatnonzero(marks == 1)
        op = tb[at]
        at = at[(op == 0xC3) | (op == 0xC2) | (op == 0xE9) | (op == 0xEB)]
        op = tb[at]
        ci = np.searchsorted(c_start, at, side="right") - 1  # the chunk of each
        a0, end = c_start[ci], c_end[ci]
        jmp = op == 0xE9
        rel = np.zeros(len(at), dtype=np.int64)
        if jmp.any():
            rel32 = np.ndarray((max(len(tb) - 3, 0),), dtype="<i4", buffer=tb, strides=(1,))
            rel[jmp] = rel32[at[jmp] + 1] + 5
        short = op == 0xEB
        rel[short] = tb[at[short] + 1].view(np.int8).astype(np.int64) + 2
        target = at + rel  # section offsets
        tgt = target + (sec.addr - g)
        is_start = _member(np, starts, tgt)
        is_thunk = jmp & _member(np, thunks, tgt)
        if module and jmp.any():
            names = kernel.call_targets
            for i in np.flatnonzero(jmp & ~is_thunk).tolist():
                if names.get(sec.addr + int(at[i]) + 1) in THUNKS:
                    is_thunk[i] = True
        branch = (jmp & ~is_thunk) | short
        st.tail_calls += int((branch & is_start & ~((a0 <= target) & (target < end))).sum())
        ret = ~(jmp | short)
        st.returns += int(ret.sum())
        st.thunk_jumps += int(is_thunk.sum())
        keep = np.flatnonzero(ret | is_thunk)
        size = np.where(op[keep] == 0xC3, 1, np.where(op[keep] == 0xC2, 3, 5))
        found.append((lo + ci[keep], at[keep].astype(np.uint64) + np.uint64(sec.addr), size))


def _offsets(addrs: list[int], g: int) -> np.ndarray:
    """addrs - g as int64, sorted and unique, those a table's hostile entries put beyond +-_SPAN left out."""
    try:
        d = (np.array(addrs, dtype=np.uint64) - np.uint64(g)).view(np.int64)  # wraps: the span check below
    except OverflowError:  # an entry past 2**64 or below 0
        d = np.array([a - g for a in addrs if -_SPAN <= a - g < _SPAN], dtype=np.int64)
    d = np.sort(d[(d >= -_SPAN) & (d < _SPAN)])
    return d[np.r_[True, d[1:] != d[:-1]]] if len(d) else d


class _Known:
    """Instruction lengths capstone gave, by the instruction's bytes: bytes that begin with a known instruction
    decode to it whatever follows (a decoder reads an instruction's own bytes only). Undecodable bytes are not
    kept: how many bytes decide that is not known."""

    def __init__(self) -> None:
        self.seen: dict[bytes, int] = {}
        self.lengths: list[int] = []

    def length(self, code: bytes) -> int:
        seen = self.seen
        for n in self.lengths:
            if seen.get(code[:n]) == n:  # (code may be shorter than n)
                return n
        n = insn_length(code)
        if n:
            seen[code[:n]] = n
            if n not in self.lengths:
                self.lengths.append(n)
        return n


def _member(np, sorted_values, x):
    """x in sorted_values, elementwise."""
    if not len(sorted_values):
        return np.zeros(len(x), dtype=bool)
    i = np.minimum(np.searchsorted(sorted_values, x), len(sorted_values) - 1)
    return sorted_values[i] == x
