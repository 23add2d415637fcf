"""entry.py: Kernel + table -> entry patchpoints, column-wise: one row per text address, moved past `move` entries.

The entry pass runs over arrays (numpy): symbols grouped by address, the first bytes of every entry gathered
in one fancy index, `call rel32` decoded in numpy, every other encoding decoded once per distinct bytes. An image
of fewer than SMALL_ROWS rows (most modules) goes through the same steps row by row in Python lists (_Small), where
numpy's fixed cost per call would be most of the pass; both give the same rows, shapes and names in the same order.
A row becomes a Patchpoint (Insn, Variants) only when something asks for it: the site-fact pass for the rows
a kernel table or a name may touch, the judge for one row per distinct judgement key, the report for the
rows it prints (EntryRows.patchpoint). Rows that move past a `move` entry or run into the next symbol are
built as objects at once (a few, and none on most kernels).
"""

from __future__ import annotations

import gc
import re
from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import compress

import numpy as np

from fbt_audit.decode.insn import MAX_INSN, decode_fields, decode_many, insn_length, shape_key
from fbt_audit.model.abi import Handling, Target, target_class
from fbt_audit.model.arrays import member
from fbt_audit.model.core import IC, Insn, Patchpoint, Variant
from fbt_audit.model.facts import FTRACE_SITE, MID_INSTRUCTION
from fbt_audit.model.kernel import Kernel, SymbolColumns
from fbt_audit.table.emulation import EmulationTable

FTRACE_NOP = bytes.fromhex("0f1f440000")  # ftrace_nop_replace(): what `call __fentry__` becomes at boot
GROUP_FROM = 64  # rows from which _decode_exact groups them by their bytes (numpy's fixed cost is ~0.25 ms)
SMALL_ROWS = 64  # rows under which entry_rows goes row by row in Python lists (_Small)
SMALL_SYMBOLS = 128  # symbols under which _group_symbols goes over Python lists
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
    """The cyclic collector off while an audit builds its objects (~10 per reported patchpoint, none in a
    cycle): it would rescan all of them each time the heap grows by a quarter, and could free nothing."""
    paused = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()


def entry_patchpoints(kernel: Kernel, table: EmulationTable) -> list[Patchpoint]:
    """One patchpoint per distinct text symbol address, in address order (every row of entry_rows built)."""
    with gc_paused():
        return entry_rows(kernel, table).patchpoints()


_E8, _U64 = np.uint64(5), np.uint64
_REL = IC.REL_CALL | IC.REL_BRANCH
_CALL_SHAPE = (None, "callq", None, b"", 0, b"\xe8", -1, IC.REL_CALL | IC.STACK, 5)


class EntryRows:
    """The entry patchpoints of one image as columns (row i: the i-th distinct text address).

    Per row: the primary symbol's index `first`, `sym_addr`, effective `addr`, `length` of the displaced
    instruction, its `shape` (index into `shapes`: the Insn fields after addr, raw and operands None for a
    relative branch, whose bytes and target are the row's), `target` and `tname` (index into `tnames`,
    -1 without a name) for relative branches, `ftrace` (an ftrace site: the ftrace-nop variant and fact),
    `sec` (index into the kernel's sorted sections, -1 outside them), `offset` (file offset of addr) and
    `moved` (row -> the instructions moved past, as (addr, shape, target, tname, offset)). `objs` holds the
    rows already built as Patchpoints (overlapping, annotated): those are the row's truth from then on."""

    def __init__(self, kernel: Kernel, table: EmulationTable) -> None:
        self.kernel, self.table = kernel, table
        self.objs: dict[int, Patchpoint] = {}
        # Rows whose site facts (sites/annotate.py) are all that sets them apart: row -> the whole facts set; the
        # row stays a column (judged with the rows of its shape and facts), built with these when asked.
        self.site_facts: dict[int, frozenset[str]] = {}
        self.aliases: dict[int, tuple[str, ...]] = {}
        self.moved: dict[int, list[tuple]] = {}
        self.shapes: list[tuple] = [_CALL_SHAPE]
        self.shape_ids: dict[tuple, int] = {_CALL_SHAPE: 0}
        self.tnames: list[tuple] = []
        self.tname_ids: dict[tuple, int] = {}
        self.nop_tail = decode_fields(FTRACE_NOP, 0)[1:]
        # Set by detach(): what patchpoint() reads of the image, kept once the image is let go.
        self.names: list[str] | None = None
        self.fallback: dict[int, str] = {}
        self.raw_at: dict[int, bytes] | None = None
        # A vmlinux's `first` and `end` as arrays too (_group_symbols makes them from its own; None elsewhere).
        self.first_idx: np.ndarray | None = None
        self.end_arr: np.ndarray | None = None
        self.sec_arrays: tuple[np.ndarray, ...] | None = None  # _place's: the sorted sections' starts, ends, offsets

    @property
    def n(self) -> int:
        return len(self.sym_addr)

    def name(self, i: int) -> str:
        return self.names[i] if self.names is not None else self.kernel.symbol_columns().name[self.first[i]]

    def detach(self, kernel: Kernel) -> None:
        """Let the image go (for a module's result sent from a worker): keep the row names, the sections of the
        rows outside every section, and the bytes of each relative branch; `kernel` is the detached one (its
        identity and sections). patchpoint() then builds the same Patchpoints as before."""
        cols = self.kernel.symbol_columns()
        self.names = [cols.name[k] for k in self.first]
        self.fallback = {i: cols.section[self.first[i]] for i in np.flatnonzero(self.sec < 0).tolist()}
        own = np.array([s[0] is None for s in self.shapes], dtype=bool)[self.shape]  # bytes read from the image
        spans = set(zip([self.offset[i] for i in np.flatnonzero(own).tolist()], self.length[own].tolist(), strict=True))
        spans |= {(st[4], self.shapes[st[1]][8]) for steps in self.moved.values() for st in steps
                  if self.shapes[st[1]][0] is None}  # fmt: skip
        data = self.kernel.data
        self.raw_at = {off: bytes(data[off : off + n]) for off, n in spans}
        self.moved = {i: steps for i, steps in self.moved.items() if i not in self.objs}  # a built row has its own
        self.kernel, self.table = kernel, None
        self.first = self.end = self.avail = self.shape_ids = self.tname_ids = self.first_idx = self.end_arr = None
        self.sec_arrays = None

    def insn(self, at: int, sid: int, target: int, t: int, off: int) -> Insn:
        """The Insn of shape sid at address at (file offset off), with a relative branch's target and name."""
        sh = self.shapes[sid]
        raw = sh[0]
        if raw is None:
            raw = self.raw_at[off] if self.raw_at is not None else bytes(self.kernel.data[off : off + sh[8]])
        if sh[7] & _REL:
            name, cls = self.tnames[t] if t >= 0 else (None, Target.ANY)
            return Insn(at, raw, sh[1], sh[2] if sh[2] is not None else hex(target), *sh[3:8], target, name, cls)
        return Insn(at, raw, *sh[1:8])

    def row_insn(self, i: int) -> Insn:
        return self.insn(int(self.addr[i]), int(self.shape[i]), int(self.target[i]), int(self.tname[i]), self.offset[i])

    def patchpoint(self, i: int) -> Patchpoint:
        """Row i as a Patchpoint (the one already built, or a new one from the columns)."""
        pp = self.objs.get(i)
        if pp is not None:
            return pp
        return self._make(i, int(self.addr[i]), int(self.shape[i]), int(self.target[i]), int(self.tname[i]),
                          bool(self.ftrace[i]), int(self.sec[i]), int(self.sym_addr[i]))  # fmt: skip

    def build(self, idx: list[int]) -> list[Patchpoint]:
        """Rows idx as Patchpoints, as patchpoint() builds them one by one, with the columns read once for all of
        them (a numpy element read costs more than building a Variant): judge/rows.py builds thousands."""
        if not idx:
            return []
        sel = np.array(idx, dtype=np.int64)
        cols = zip(idx, self.addr[sel].tolist(), self.shape[sel].tolist(), self.target[sel].tolist(),
                   self.tname[sel].tolist(), self.ftrace[sel].tolist(), self.sec[sel].tolist(),
                   self.sym_addr[sel].tolist(), strict=True)  # fmt: skip
        objs, make = self.objs, self._make
        return [objs.get(c[0]) or make(*c) for c in cols]

    def variant_inputs(self, idx: list[int]) -> list[tuple[list[tuple[str, Insn]], frozenset[str]] | None]:
        """Per row of idx, what the judge reads of its Patchpoint (Judge.alike): its (label, instruction) variants
        and its facts, as _make gives them, without building the Patchpoint; None for a row built already (the judge
        then meets its Patchpoint). A row moved past instructions is one too: the judge reads its variants and
        facts, not the instructions it moved past (Judge.alike's stand-ins have neither)."""
        sel = np.array(idx, dtype=np.int64)
        nop = Insn(0, *self.nop_tail)  # the ftrace-nop variant's fields but its address, which the judge does not read
        objs, inputs = self.objs, self._inputs
        return [None if i in objs else inputs(i, at, sid, target, t, ftrace, nop)
                for i, at, sid, target, t, ftrace in zip(idx, self.addr[sel].tolist(), self.shape[sel].tolist(),
                                                         self.target[sel].tolist(), self.tname[sel].tolist(),
                                                         self.ftrace[sel].tolist(), strict=True)]  # fmt: skip

    def variant_keys(self, idx: list[int]) -> list[tuple | None]:
        """Per row of idx, what variant_inputs' answer follows from, as a key equal across images: the shape, the
        target's (name, class), the ftrace site and the facts (an address or a displacement is not read by the
        judge's alike()); None where variant_inputs answers None."""
        sel = np.array(idx, dtype=np.int64)
        objs, shapes, tnames, facts = self.objs, self.shapes, self.tnames, self.site_facts
        return [None if i in objs else
                (shapes[sid], tnames[t] if t >= 0 else None, ft, facts.get(i, _FTRACE_SITE if ft else _NO_FACTS))
                for i, sid, t, ft in zip(idx, self.shape[sel].tolist(), self.tname[sel].tolist(),
                                         self.ftrace[sel].tolist(), strict=True)]  # fmt: skip

    def _inputs(self, i: int, at: int, sid: int, target: int, t: int, ftrace: bool,
                nop: Insn | None = None) -> tuple[list[tuple[str, Insn]], frozenset[str]]:  # fmt: skip
        """Row i's (label, instruction) variants and facts, from its columns' values (nop: the ftrace-nop variant's
        instruction, else one at the row's address)."""
        disk = self.insn(at, sid, target, t, self.offset[i])
        if ftrace:
            nop = nop or Insn(at, *self.nop_tail)
            return [("disk", disk), ("ftrace-nop", nop)], self.site_facts.get(i, _FTRACE_SITE)
        return [("disk", disk)], self.site_facts.get(i, _NO_FACTS)

    def _make(self, i: int, at: int, sid: int, target: int, t: int, ftrace: bool, s: int, sym_addr: int) -> Patchpoint:
        """Row i as a new Patchpoint, from its columns' values."""
        pairs, facts = self._inputs(i, at, sid, target, t, ftrace)
        variants = tuple(Variant(label, x) for label, x in pairs)
        insn = variants[0].insn
        section, sec_off = self._section(i, s, at)
        steps = self.moved.get(i)
        moved = tuple(self.insn(*st) for st in steps) if steps else ()
        return Patchpoint(self.kernel.module, self.name(i), self.aliases.get(i, ()), self.kind[i], "entry", sym_addr,
                          at, section, sec_off, insn, variants, moved, facts)  # fmt: skip

    def section(self, i: int) -> tuple[str, int]:
        """Row i's section name and its offset there (outside every section: its symbol's section, offset 0)."""
        return self._section(i, int(self.sec[i]), int(self.addr[i]))

    def _section(self, i: int, s: int, at: int) -> tuple[str, int]:
        if s >= 0:
            sec = self.kernel._sec_sorted[s]
            return sec.name, at - sec.addr
        if self.names is not None:
            return self.fallback[i], 0
        return self.kernel.symbol_columns().section[self.first[i]], 0

    def base_facts(self, i: int) -> frozenset[str]:
        """The facts row i has before the site facts: an ftrace site's, or none."""
        return _FTRACE_SITE if self.ftrace[i] else _NO_FACTS

    def patchpoints(self) -> list[Patchpoint]:
        return self.build(list(range(self.n)))

    def build_all(self) -> None:
        """Every row as a Patchpoint of its own (objs): for what reads or changes one row's variants and facts
        outside the columns (--platform, --deep); each is then annotated and judged on its own."""
        for i in range(self.n):
            if i not in self.objs:
                self.objs[i] = self.patchpoint(i)

    def shape_column(self, index: int) -> np.ndarray:
        """Field `index` of each row's shape (7: the IC bits), as an array."""
        return np.array([s[index] for s in self.shapes], dtype=np.int64)[self.shape]


def entry_rows(kernel: Kernel, table: EmulationTable) -> EntryRows:
    """The entry patchpoints of kernel, column-wise (EntryRows): symbols grouped by address, the displaced
    instruction of each decoded (call rel32 in numpy, every other encoding once per distinct bytes), the
    call targets named once per distinct target, moved past `move` entries, ftrace sites marked."""
    rows = EntryRows(kernel, table)
    _group_symbols(rows, kernel.symbol_columns())
    n = len(rows.sym_addr)
    if n < SMALL_ROWS:  # most modules: the same pass row by row in Python (numpy's fixed cost per call dominates)
        _Small(rows).run(table)
        _overlaps(rows)
        return rows
    rows.addr = rows.sym_addr.copy()
    rows.sec, rows.avail = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    rows.offset = [0] * n
    rows.shape, rows.length = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    rows.target, rows.tname = np.zeros(n, dtype=np.uint64), np.full(n, -1, dtype=np.int64)
    every = np.arange(n)
    _decode(rows, every, _place(rows, every))
    _name_targets(rows, every)
    _moves(rows, table)
    mcount = _u64_sites(kernel.mcount_sites)
    fentry = np.array([c == Target.FENTRY for _n, c in rows.tnames] + [False], dtype=bool)
    rows.ftrace = member(rows.addr, mcount) | fentry[rows.tname]
    _overlaps(rows)
    return rows


def _u64_sites(sites: frozenset[int]) -> np.ndarray:
    """The sites as uint64 (in one pass: a vmlinux has 40,000), those outside u64 left out (they match nothing)."""
    try:
        return np.fromiter(sites, dtype=np.uint64, count=len(sites))
    except OverflowError:  # a malformed table's
        return np.array([a for a in sites if 0 <= a < 1 << 64], dtype=np.uint64)


def _group_symbols(rows: EntryRows, cols: SymbolColumns) -> None:
    """Rows from the symbols: one per distinct address (the primary symbol's index, the others as aliases,
    FUNC if any is, the furthest end); linker section markers are never rows."""
    arrays = cols.arrays  # a vmlinux's symbol table gives the columns as arrays already
    if arrays is None and len(cols.addr) < SMALL_SYMBOLS:  # most modules: in Python lists (numpy's fixed cost)
        al, sizes = cols.addr, cols.size
        starts = [k for k in range(len(al)) if not k or al[k] != al[k - 1]]
        ends = [*starts[1:], len(al)] if al else []
        multi = [g for g, (a, b) in enumerate(zip(starts, ends, strict=True)) if b - a > 1]
        end = [(al[k] + sizes[k]) & _M64 for k in starts]
        first = _merge_groups(rows, cols, starts, ends, end, multi)[0]
        rows.sym_addr = np.array([al[k] for k in first], dtype=np.uint64)
        return
    addr = arrays.addr if arrays is not None else np.array(cols.addr, dtype=np.uint64)
    n = len(addr)
    starts = np.flatnonzero(np.concatenate(([True], addr[1:] != addr[:-1]))) if n else np.zeros(0, dtype=np.int64)
    ends = np.append(starts[1:], n).astype(np.int64)  # np.append, not np.r_: ~10 us less a call (a module's rows)
    size = arrays.size if arrays is not None else np.array(cols.size, dtype=np.uint64)
    end = (addr[starts] + size[starts]).tolist() if n else []
    multi = np.flatnonzero(ends - starts > 1).tolist()
    first, primary, furthest, drop = _merge_groups(rows, cols, starts.tolist(), ends, end, multi)
    if arrays is not None:  # first and end as arrays from starts (a vmlinux's 50,000 rows: not from the lists)
        pick = starts.copy()
        pick[list(primary)] = list(primary.values())
        rows.first_idx = np.delete(pick, drop) if drop else pick
        rows.sym_addr = addr[rows.first_idx]
        if all(0 <= e < 1 << 64 for e in furthest.values()):
            ends_at = addr[starts] + size[starts]
            ends_at[list(furthest)] = list(furthest.values())
            rows.end_arr = np.delete(ends_at, drop) if drop else ends_at
    else:
        rows.sym_addr = addr[np.array(first, dtype=np.int64)]


def _merge_groups(rows: EntryRows, cols: SymbolColumns, first: list[int], ends, end: list[int],
                  multi: list[int]) -> tuple[list[int], dict[int, int], dict[int, int], list[int]]:  # fmt: skip
    """_group_symbols' rows from the groups of symbols at one address (group g: symbols first[g] to ends[g], first
    its row's symbol then, end its end; multi: the groups of several): the primary symbol, aliases, kind and furthest
    end of each of multi, markers dropped. Sets rows.first, kind, end and aliases; returns first, the rows whose
    primary is not their first symbol (row -> primary) and their furthest ends, and the groups dropped."""
    first = first[:]
    kinds = list(map(cols.kind.__getitem__, first))
    drop: list[int] = []
    primary: dict[int, int] = {}  # row -> its primary symbol, where not the first at its address
    furthest: dict[int, int] = {}  # row -> its furthest end, where several symbols share its address
    for g in multi:  # addresses several symbols share
        members = [k for k in range(first[g], int(ends[g])) if not is_marker(cols, k)]
        if not members:
            drop.append(g)
            continue
        p = _primary(cols, members)
        first[g] = primary[g] = p
        rows.aliases[g] = tuple(cols.name[k] for k in members if k != p)
        kinds[g] = "FUNC" if any(cols.kind[k] == "FUNC" for k in members) else "NOTYPE"
        end[g] = furthest[g] = max(cols.addr[k] + cols.size[k] for k in members)
    shared = set(multi)
    drop += [g for g in compress(range(len(kinds)), map("NOTYPE".__eq__, kinds))
             if g not in shared and is_marker(cols, first[g])]  # fmt: skip
    if drop:  # a few: deleted in place, the aliases' rows renumbered
        drop.sort()
        for g in reversed(drop):
            del first[g], kinds[g], end[g]
        rows.aliases = {g - bisect_left(drop, g): a for g, a in rows.aliases.items()}
    rows.first, rows.kind, rows.end = first, kinds, end
    return first, primary, furthest, drop


def _place(rows: EntryRows, idx: np.ndarray) -> np.ndarray:
    """For rows idx at their addr: the section (index into the kernel's sorted sections, -1 outside), the file
    offset and the bytes available to decode there (up to MAX_INSN, stopping at the section's end); the offsets
    returned as an array too (what _decode reads)."""
    if rows.sec_arrays is None:  # the sections as arrays, once per image (_moves places rows again)
        secs = rows.kernel._sec_sorted
        rows.sec_arrays = (np.array([s.addr for s in secs], dtype=np.uint64),
                           np.array([min(s.addr + s.size, (1 << 64) - 1) for s in secs] + [0], dtype=np.uint64),
                           np.array([s.offset for s in secs] + [0], dtype=np.uint64))  # fmt: skip
    starts, ends, fileoff = rows.sec_arrays
    at = rows.addr[idx]
    s = np.searchsorted(starts, at, side="right").astype(np.int64) - 1
    inside = (s >= 0) & (at < ends[s])
    s[~inside] = -1
    start = np.append(starts, _U64(0))[s]
    rows.sec[idx] = s
    off = np.where(inside, at - np.minimum(start, at) + fileoff[s], 0).astype(np.int64)
    offset = off.tolist()
    if len(offset) == len(rows.offset):  # every row (idx: the distinct rows, ascending)
        rows.offset[:] = offset
    else:
        for i, o in zip(idx.tolist(), offset, strict=True):
            rows.offset[i] = o
    avail = np.minimum(ends[s] - np.minimum(at, ends[s]), MAX_INSN).astype(np.int64)
    avail[~inside] = 0
    rows.avail[idx] = avail
    return off


def _decode(rows: EntryRows, idx: np.ndarray, off: np.ndarray) -> None:
    """The displaced instruction of rows idx (file offsets off, from _place): `call rel32` (four in five) in numpy,
    the others through decode_fields, whose cache decodes each distinct encoding once."""
    k = rows.kernel
    buf = np.frombuffer(k.data, dtype=np.uint8) if len(k.data) else np.zeros(1, dtype=np.uint8)
    # (offsets are never negative: np.minimum, not np.clip, whose Python wrapper costs ~5 us a call)
    head = buf[np.minimum(off[:, None] + np.arange(5), len(buf) - 1)] if len(idx) else np.zeros((0, 5), np.uint8)
    call = (head[:, 0] == 0xE8) & (rows.avail[idx] >= 5)
    disp = head[:, 1:5].copy().view("<i4").reshape(-1).astype(np.int64)
    ci = idx[call]
    rows.shape[ci], rows.length[ci] = 0, 5
    rows.target[ci] = rows.addr[ci] + _E8 + disp[call].astype(np.uint64)
    rest = _decode_exact(rows, idx[~call], buf)
    got = [_decode_one(rows, rows.offset[i], a, v) for i, a, v in _where(rows, rest)]
    rows.shape[rest] = [g[0] for g in got]
    rows.length[rest] = [g[1] for g in got]
    rows.target[rest] = [g[2] for g in got]


def _where(rows: EntryRows, idx: np.ndarray):
    """(row, addr, bytes available) of rows idx, as Python ints."""
    return zip(idx.tolist(), rows.addr[idx].tolist(), rows.avail[idx].tolist(), strict=True)


def _decode_exact(rows: EntryRows, idx: np.ndarray, buf: np.ndarray) -> np.ndarray:
    """Rows idx grouped by their exact instruction bytes (lengths from decode/lengths.py's tables, in numpy), each
    group decoded once at its first row: that instruction at each row's address, when capstone agrees on the length
    and it is not a relative branch (bytes that decoded to an n-byte instruction decode the same whatever follows).
    Returns the rows left (int3, undecodable, relative branches, a length the tables got otherwise)."""
    if idx.size < GROUP_FROM:  # a few rows: each through decode_fields' cache costs less than the grouping
        return idx
    try:
        from fbt_audit.decode import lengths as xlen
    except ImportError:  # numpy < 2: every row decoded on its own
        return idx
    off = np.array([rows.offset[i] for i in idx.tolist()], dtype=np.int64)
    av = rows.avail[idx]
    win = buf[np.minimum(off[:, None] + np.arange(16), len(buf) - 1)] * (np.arange(16) < av[:, None])
    w0, w1 = (win[:, s : s + 8].copy().view("<u8").reshape(-1) for s in (0, 8))

    def slow(i: int, end: int) -> int:  # lengths_at's row i, which ends at i + its avail
        return insn_length(win[i, : end - i].tobytes())

    n, bad = xlen.lengths_at(w0, av, slow)
    ok = ~bad & (win[:, 0] != 0xCC) & (n <= av)
    cand = np.flatnonzero(ok)
    nb = n[cand].astype(np.uint64) * np.uint64(8)
    full = np.uint64(0xFFFFFFFFFFFFFFFF)
    m0 = np.where(nb >= 64, full, (np.uint64(1) << np.minimum(nb, np.uint64(63))) - np.uint64(1))
    nb1 = np.where(nb > 64, nb - np.uint64(64), np.uint64(0))
    m1 = np.where(nb1 >= 64, full, (np.uint64(1) << np.minimum(nb1, np.uint64(63))) - np.uint64(1))
    keys = np.stack([n[cand].astype(np.uint64), w0[cand] & m0, w1[cand] & m1], axis=1)
    first, inv = _unique_rows(keys)
    reps = idx[cand[first]]
    want = n[cand[first]].tolist()
    data, offs = rows.kernel.data, [rows.offset[i] for i in reps.tolist()]
    fields = decode_many([data[o : o + v] for o, v in zip(offs, rows.avail[reps].tolist(), strict=True)],
                         rows.addr[reps].tolist(), want)  # fmt: skip
    got = [_shape_of(rows, f) for f in fields]
    good = np.array([ln == w and ln > 0 and not rows.shapes[sid][7] & _REL
                     for (sid, ln, _t), w in zip(got, want, strict=True)], dtype=bool)  # fmt: skip
    hit = good[inv]
    sel = idx[cand[hit]]
    rows.shape[sel] = np.array([g[0] for g in got], dtype=np.int64)[inv[hit]]
    rows.length[sel] = np.array([g[1] for g in got], dtype=np.int64)[inv[hit]]
    rows.target[sel] = 0
    left = np.ones(len(idx), dtype=bool)
    left[cand[hit]] = False
    return idx[left]


def _unique_rows(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """np.unique(keys, axis=0, return_index=True, return_inverse=True)'s index and inverse (the distinct rows in
    lexicographic order, each at its first occurrence) by one stable lexsort: np.unique's row sort costs 4x more."""
    order = np.lexsort(keys.T[::-1])
    s = keys[order]
    new = np.ones(len(s), dtype=bool)
    new[1:] = (s[1:] != s[:-1]).any(axis=1)
    inv = np.empty(len(s), dtype=np.int64)
    inv[order] = np.cumsum(new) - 1
    return order[new], inv


def _decode_one(rows: EntryRows, o: int, at: int, av: int) -> tuple[int, int, int]:
    """The instruction at address at (file offset o, av bytes available) through decode_fields: (shape id,
    length, relative branch target or 0)."""
    return _shape_of(rows, decode_fields(rows.kernel.data[o : o + av] if av else b"", at))


def _shape_of(rows: EntryRows, f: tuple) -> tuple[int, int, int]:
    """_decode_one's answer for decode_fields' fields f."""
    raw, classes = f[1], f[8]
    if classes & _REL and f[3] == hex(f[9]):  # bytes and operand text follow from the row's target
        key = (None, f[2], None, *f[4:9], len(raw))
    elif classes & _REL:  # a relative branch printed otherwise: its own shape
        key = (raw, *f[2:9], len(raw), f[9])
    else:
        key = (raw, *f[2:9], len(raw))
    sid = rows.shape_ids.get(key)
    if sid is None:
        sid = rows.shape_ids[key] = len(rows.shapes)
        rows.shapes.append(key)
    return sid, 0 if classes & IC.INVALID else len(raw), f[9] if classes & _REL else 0


def _name_targets(rows: EntryRows, idx: np.ndarray) -> None:
    """The target name and class of each relative branch among rows idx (Kernel.name_target), asked once per
    distinct target when no relocation names call sites (vmlinux), else once per site."""
    k = rows.kernel
    rel = np.array([bool(s[7] & _REL) for s in rows.shapes], dtype=bool)[rows.shape[idx]]
    sel = idx[rel]
    rows.tname[idx[~rel]] = -1
    if not sel.size:  # (6.12's first pass: endbr64 and NOP padding)
        return
    names_at = getattr(k.call_targets, "names_at", None)
    if k.call_targets and names_at is not None:  # a module's relocations (input/calltargets.py), found at once
        ln = rows.length[sel]
        site = rows.addr[sel] + ln.astype(np.uint64) - np.uint64(4)
        names = names_at(np.where(ln >= 5, site, np.uint64(0)))  # (no call relocation at address 0)
        at, tg = rows.addr[sel].tolist(), rows.target[sel].tolist()
        named = {nm: (nm, target_class(nm)) for nm in dict.fromkeys(names) if nm is not None}
        got = [named[nm] if nm is not None else k.name_target(a, 0, t) for nm, a, t in zip(names, at, tg, strict=True)]
    elif k.call_targets:
        at, ln, tg = rows.addr[sel].tolist(), rows.length[sel].tolist(), rows.target[sel].tolist()
        got = [k.name_target(a, n, t) for a, n, t in zip(at, ln, tg, strict=True)]
    else:  # a vmlinux: each distinct target named once, in the order its first row meets it, the rows in numpy
        uniq, first, inv = np.unique(rows.target[sel], return_index=True, return_inverse=True)
        per = [k.name_target(0, 0, t) for t in uniq.tolist()]
        tid = np.zeros(len(per), dtype=np.int64)
        order = np.argsort(first, kind="stable").tolist()
        tid[order] = _tname_ids(rows, [per[u] for u in order])
        rows.tname[sel] = tid[inv.reshape(-1)]
        return
    rows.tname[sel] = _tname_ids(rows, got)


def _tname_ids(rows: EntryRows, got: list[tuple]) -> list[int]:
    """The index into rows.tnames of each (name, class) of got, in order (-1 without a name), new ones appended."""
    ids, tnames = rows.tname_ids, rows.tnames
    vals = []
    for hit in got:
        t = ids.get(hit)
        if t is None:
            t = ids[hit] = len(tnames) if hit[0] is not None else -1
            if hit[0] is not None:
                tnames.append(hit)
        vals.append(t)
    return vals


def _moves(rows: EntryRows, table: EmulationTable) -> None:
    """Rows whose instruction a `move` entry covers (ENDBR under the shipped tables) move past it, up to
    MAX_MOVES times within their symbol: the table is asked once per distinct instruction (shape and
    target name: all that its match reads), the moved rows placed and decoded again together."""
    movable = _movable_bytes(table)
    if not movable:
        return
    last = np.zeros(256, dtype=bool)
    last[list(movable)] = True
    end = rows.end_arr if rows.end_arr is not None else _u64_ends(rows.end)
    active = np.arange(rows.n)
    for _step in range(MAX_MOVES):
        op_last = np.array(list(map(_last_op, rows.shapes)), dtype=np.int64)[rows.shape[active]]
        ln = rows.length[active]
        active = active[(ln > 0) & last[op_last] & (rows.addr[active] + ln.astype(np.uint64) < end[active])]
        if not active.size:
            return
        keys = (rows.shape[active] * (len(rows.tnames) + 1) + rows.tname[active] + 1).tolist()
        first: dict[int, int] = {}
        for p, key in enumerate(keys):  # (a dict, not np.unique: a module moves a few dozen rows)
            first.setdefault(key, p)
        entries = {key: table.lookup(rows.row_insn(int(active[p]))) for key, p in first.items()}
        move = {key: e is not None and e.handling == Handling.MOVE for key, e in entries.items()}
        active = active[np.array([move[key] for key in keys], dtype=bool)]
        if not active.size:
            return
        act = active.tolist()
        steps = zip(rows.addr[active].tolist(), rows.shape[active].tolist(), rows.target[active].tolist(),
                    rows.tname[active].tolist(), [rows.offset[i] for i in act], strict=True)  # fmt: skip
        moved = rows.moved
        for i, step in zip(act, steps, strict=True):
            got = moved.get(i)
            if got is None:
                moved[i] = [step]
            else:
                got.append(step)
        rows.addr[active] += rows.length[active].astype(np.uint64)
        _decode(rows, active, _place(rows, active))
        _name_targets(rows, active)


def _u64_ends(end: list[int]) -> np.ndarray:
    """The rows' symbol ends as uint64; an end past 2**64 (a corrupt st_size on a symbol near the top of the address
    space: found by tests/test_fuzz.py) as 2**64 - 1, which no instruction reaches either."""
    try:
        return np.array(end, dtype=np.uint64)
    except OverflowError:
        return np.array([min(e, (1 << 64) - 1) for e in end], dtype=np.uint64)


_M64 = (1 << 64) - 1


class _Small:
    """entry_rows' pass over a few rows (under SMALL_ROWS) in Python lists, row by row in the order the array pass
    meets them, so that the shapes and target names are found and numbered alike (GROUP_FROM rows or more decoded
    grouped by _decode_exact, as there): _place, _decode, _name_targets and _moves without numpy's fixed cost per
    call (1-5 us: most of a small module's pass; 6.12's endbr64 moves nearly every function's row, which the array
    pass pays for a second time). Addresses wrap at 2**64 and offsets at 2**63 as the uint64 and int64 columns do."""

    def __init__(self, rows: EntryRows) -> None:
        self.rows = rows
        n = len(rows.sym_addr)
        self.addr = rows.sym_addr.tolist()
        self.sec, self.avail, self.offset = [0] * n, [0] * n, [0] * n
        self.shape, self.length, self.target, self.tname = [0] * n, [0] * n, [0] * n, [-1] * n
        self.secs, self.starts = rows.kernel._sec_sorted, rows.kernel._sec_starts
        self.memo: dict[bytes, tuple[int, int, int]] = {}  # decode's: shape_key -> the answer of a non-branch

    def run(self, table: EmulationTable) -> None:
        """The columns entry_rows sets before _overlaps."""
        every = range(len(self.addr))
        self.place(every)
        self.decode(every)
        self.name(every)
        self.moves(table)
        rows, addr, tname = self.rows, self.addr, self.tname
        rows.addr, rows.target = np.array(addr, dtype=np.uint64), np.array(self.target, dtype=np.uint64)
        rows.sec, rows.avail = np.array(self.sec, dtype=np.int64), np.array(self.avail, dtype=np.int64)
        rows.shape, rows.length = np.array(self.shape, dtype=np.int64), np.array(self.length, dtype=np.int64)
        rows.tname, rows.offset = np.array(tname, dtype=np.int64), self.offset
        sites = rows.kernel.mcount_sites
        fentry = [c == Target.FENTRY for _n, c in rows.tnames]
        rows.ftrace = np.array([a in sites or (t >= 0 and fentry[t]) for a, t in zip(addr, tname, strict=True)],
                               dtype=bool)  # fmt: skip

    def place(self, idx) -> None:
        """_place: each row's section, file offset and bytes available."""
        addr, secs, starts = self.addr, self.secs, self.starts
        sec, offset, avail = self.sec, self.offset, self.avail
        for i in idx:
            at = addr[i]
            s = bisect_right(starts, at) - 1
            if s >= 0:
                x = secs[s]
                end = x.addr + x.size
                if end > _M64:  # (the array pass holds a section's end at 2**64 - 1)
                    end = _M64
                if at < end:
                    o = (at - x.addr + x.offset) & _M64
                    sec[i], offset[i] = s, o - (1 << 64) if o >> 63 else o
                    avail[i] = end - at if end - at < MAX_INSN else MAX_INSN
                    continue
            sec[i], offset[i], avail[i] = -1, 0, 0

    def decode(self, idx) -> None:
        """_decode: `call rel32` read here, every other row through decode_fields' cache, in row order."""
        rows, addr, offset, avail = self.rows, self.addr, self.offset, self.avail
        shape, length, target = self.shape, self.length, self.target
        data = rows.kernel.data
        last = len(data) - 1
        rest = []
        for i in idx:
            o = offset[i]
            head = data[o : o + 5] if 0 <= o and o + 5 <= last + 1 else _clamped(data, o, last)
            if head[0] == 0xE8 and avail[i] >= 5:
                disp = int.from_bytes(head[1:5], "little", signed=True)
                shape[i], length[i], target[i] = 0, 5, (addr[i] + 5 + disp) & _M64
            else:
                rest.append(i)
        if len(rest) >= GROUP_FROM:  # as many as the array pass groups by their bytes: grouped alike
            rest = self.grouped(rest)
        memo = self.memo
        for i in rest:
            o, av = offset[i], avail[i]
            key = shape_key(bytes(data[o : o + av])) if av else None
            got = memo.get(key) if key is not None else None
            if got is None:
                got = _decode_one(rows, o, addr[i], av)
                if key is not None and not rows.shapes[got[0]][7] & _REL:
                    memo[key] = got
            shape[i], length[i], target[i] = got

    def grouped(self, rest: list[int]) -> list[int]:
        """_decode_exact over rows rest (the columns as arrays for it, its answers read back); the rows it leaves."""
        rows, shape, length, target = self.rows, self.shape, self.length, self.target
        rows.addr, rows.avail = np.array(self.addr, dtype=np.uint64), np.array(self.avail, dtype=np.int64)
        rows.offset = self.offset
        rows.shape, rows.length = np.array(shape, dtype=np.int64), np.array(length, dtype=np.int64)
        rows.target = np.array(target, dtype=np.uint64)
        data = rows.kernel.data
        buf = np.frombuffer(data, dtype=np.uint8) if len(data) else np.zeros(1, dtype=np.uint8)
        left = _decode_exact(rows, np.array(rest, dtype=np.int64), buf).tolist()
        got = zip(rows.shape.tolist(), rows.length.tolist(), rows.target.tolist(), strict=True)
        for i, (sid, ln, t) in enumerate(got):
            shape[i], length[i], target[i] = sid, ln, t
        return left

    def name(self, idx) -> None:
        """_name_targets: each relative branch's target name and class, asked as the array pass asks."""
        rows, addr, length, target, tname = self.rows, self.addr, self.length, self.target, self.tname
        k, shapes, shape = rows.kernel, rows.shapes, self.shape
        sel = []
        for i in idx:
            if shapes[shape[i]][7] & _REL:
                sel.append(i)
            else:
                tname[i] = -1
        if not sel:
            return
        names_at = getattr(k.call_targets, "names_at", None)
        if k.call_targets and names_at is not None:
            sites = [(addr[i] + length[i] - 4) & _M64 if length[i] >= 5 else 0 for i in sel]
            names = names_at(np.array(sites, dtype=np.uint64))
            named = {nm: (nm, target_class(nm)) for nm in dict.fromkeys(names) if nm is not None}
            got = [named[nm] if nm is not None else k.name_target(addr[i], 0, target[i])
                   for nm, i in zip(names, sel, strict=True)]  # fmt: skip
        elif k.call_targets:
            got = [k.name_target(addr[i], length[i], target[i]) for i in sel]
        else:  # a vmlinux: each distinct target named once (in address order), numbered in the order rows meet it
            per = {t: k.name_target(0, 0, t) for t in sorted({target[i] for i in sel})}
            seen = list(dict.fromkeys(target[i] for i in sel))
            ids = dict(zip(seen, _tname_ids(rows, [per[t] for t in seen]), strict=True))
            for i in sel:
                tname[i] = ids[target[i]]
            return
        for i, t in zip(sel, _tname_ids(rows, got), strict=True):
            tname[i] = t

    def moves(self, table: EmulationTable) -> None:
        """_moves: the rows a `move` entry covers moved past it (the table asked once per shape and target name),
        then placed, decoded and named again, up to MAX_MOVES times within their symbol."""
        movable = _movable_bytes(table)
        if not movable:
            return
        rows = self.rows
        addr, shape, length, target, tname = self.addr, self.shape, self.length, self.target, self.tname
        offset = self.offset
        shapes, moved = rows.shapes, rows.moved
        end = (rows.end_arr if rows.end_arr is not None else _u64_ends(rows.end)).tolist()
        active = range(len(addr))
        for _step in range(MAX_MOVES):
            can = {sid for sid, sh in enumerate(shapes) if _last_op(sh) in movable}  # (shapes: a few dozen)
            active = [i for i in active if shape[i] in can and length[i] > 0 and (addr[i] + length[i]) & _M64 < end[i]]
            if not active:
                return
            keys = [(shape[i], tname[i]) for i in active]
            first: dict[tuple, int] = {}
            for i, key in zip(active, keys, strict=True):
                first.setdefault(key, i)
            move = {}
            for key, i in first.items():
                e = table.lookup(rows.insn(addr[i], shape[i], target[i], tname[i], offset[i]))
                move[key] = e is not None and e.handling == Handling.MOVE
            active = [i for i, key in zip(active, keys, strict=True) if move[key]]
            if not active:
                return
            for i in active:
                step = (addr[i], shape[i], target[i], tname[i], offset[i])
                got = moved.get(i)
                if got is None:
                    moved[i] = [step]
                else:
                    got.append(step)
                addr[i] = (addr[i] + length[i]) & _M64
            self.place(active)
            self.decode(active)
            self.name(active)


def _last_op(shape: tuple) -> int:
    """A shape's last opcode byte (0 without an opcode): what _movable_bytes is keyed by."""
    return shape[5][-1] if shape[5] else 0


def _clamped(data, o: int, last: int) -> bytes:
    """The 5 bytes at file offset o as _decode's array index reads them: each offset held at the file's last byte
    (zeros for an empty file)."""
    if last < 0:
        return bytes(5)
    return bytes(data[min(o + j, last)] for j in range(5))


def _overlaps(rows: EntryRows) -> None:
    """Rows whose instruction runs into the next row's symbol (_overlap): both built, in address order."""
    ends = rows.addr + rows.length.astype(np.uint64)
    for i in np.flatnonzero(ends[:-1] > rows.sym_addr[1:]).tolist():
        prev, nxt = rows.patchpoint(i), rows.patchpoint(i + 1)
        _overlap(prev, nxt)
        rows.objs[i], rows.objs[i + 1] = prev, nxt


def _movable_bytes(table: EmulationTable) -> set[int]:
    """The last opcode bytes a `move` entry accepts: any other instruction cannot move the patchpoint, so
    most never need the table lookup (ENDBR is the only move in the shipped tables). Kept per entry tuple:
    a module tree asks once per module."""
    got = _MOVABLE.get(id(table.entries))
    if got is None or got[0] is not table.entries:
        moves = {
            b
            for e in table.entries
            if e.handling == Handling.MOVE
            for b in range(256)
            if (b & e.opcode_mask) == (e.opcode[-1] & e.opcode_mask)
        }
        got = _MOVABLE[id(table.entries)] = (table.entries, moves)
    return got[1]


_MOVABLE: dict[int, tuple[tuple, set[int]]] = {}


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
