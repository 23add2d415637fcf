"""annotate.py: patchpoints + the kernel's tables -> site facts and the boot-time variants each site can take."""

from __future__ import annotations

import bisect
import struct
from array import array
from itertools import chain, compress
from typing import Any

import numpy as np

from fbt_audit.decode.insn import decode
from fbt_audit.model.arrays import dotted, member, name_heads
from fbt_audit.model.core import IC, Insn, Patchpoint, Variant
from fbt_audit.model.facts import (
    BOOT_REWRITES,
    BUG_SITE,
    DENY,
    EXTABLE,
    HANDLER_PATH,
    IBT_KERNEL,
    INIT,
    MID_INSTRUCTION,
    NON_ENTRY,
    RUNTIME_WRITERS,
    STATIC_CALL_TRAMP,
)
from fbt_audit.model.kernel import Kernel
from fbt_audit.sites.handler_path import handler_path
from fbt_audit.sites.tables import Tables, read_tables

# x86 NOPs as apply_alternatives pads a shorter replacement (arch/x86/include/asm/nops.h, BYTES_NOP1..8).
_NOPS = {
    1: "90", 2: "6690", 3: "0f1f00", 4: "0f1f4000", 5: "0f1f440000", 6: "660f1f440000",
    7: "0f1f8000000000", 8: "0f1f840000000000",
}  # fmt: skip
SEAL_POISON = bytes.fromhex("660f1f00")  # apply_seal_endbr: ENDBR64 -> 4-byte NOP
RET_INT3 = bytes.fromhex("c3cc")  # patch_return: `jmp __x86_return_thunk` -> ret; int3


def _nops(n: int) -> bytes:
    out = b""
    while n > 0:
        k = min(n, 8)
        out += bytes.fromhex(_NOPS[k])
        n -= k
    return out


def _segments(ranges: list[tuple[str, tuple[int, int]]]) -> tuple[list[int], list[frozenset[str]]]:
    """Boundaries and, for each gap between them, the facts of the ranges covering it: one bisect
    per patchpoint answers every range (segs[bisect_right(points, a)])."""
    points = sorted({x for _f, (lo, hi) in ranges for x in (lo, hi)})
    segs = [frozenset()]
    for i, lo in enumerate(points):
        hi = points[i + 1] if i + 1 < len(points) else lo + 1
        segs.append(frozenset(f for f, (a, b) in ranges if a <= lo and hi <= b))
    return points, segs


def add_site_facts(kernel: Kernel, pps: list[Patchpoint], rows: Any = None, returns: Any = None) -> Tables:
    """Add site facts and boot-time variants to every patchpoint of pps, and to the entry rows and the return
    rows (in place); return the tables. rows: a patchpoints.entry.EntryRows, returns: a
    patchpoints.returns.ReturnRows (a later stage, so not named here).

    One bisect per patchpoint into all table sites merged, one into the text ranges; the facts set is built
    only for the patchpoints something applies to. Of `rows`, only those a table site, a text range, IBT or
    their name may touch (found over the columns at once) are built as Patchpoints and annotated: a few
    thousand of 100,000; the others keep the facts and variants their columns give."""
    t = read_tables(kernel)
    sites = _SiteIndex(kernel, t)
    pairs = [(pp.name, pp.sym_addr) for pp in pps]
    if rows is not None and t.blacklist:  # (a module's is empty)
        black = member(rows.sym_addr, np.array(sorted(t.blacklist), dtype=np.uint64))
        pairs += [(rows.name(i), int(rows.sym_addr[i])) for i in np.flatnonzero(black).tolist()]
    if returns is not None and t.blacklist:
        black = member(returns.sym_addr, np.array(sorted(t.blacklist), dtype=np.uint64))
        pairs += [(returns.name(i), int(returns.sym_addr[i])) for i in np.flatnonzero(black).tolist()]
    names = _NameFacts(kernel, t, pairs)
    ibt = bool(t.counts.get("ibt_endbr_seal"))  # objtool --ibt ran: the kernel enforces IBT
    if rows is not None:
        near, far, keys = _candidates(rows, sites, names, ibt)
        for i in near:
            pp = rows.objs.get(i)
            if pp is None:  # a row that only gains facts stays a column (EntryRows.site_facts)
                add, extra = _site_facts(_Row(rows, i), sites, names, ibt)
                if not extra:
                    if add:
                        rows.site_facts[i] = rows.base_facts(i) | frozenset(add)
                    continue
                pp = rows.patchpoint(i)  # boot-time variants: the row becomes a Patchpoint, annotated as one
            if _annotate(pp, sites, names, ibt):
                rows.objs[i] = pp
        _column_facts(rows, far, keys)
    for pp in pps:
        _annotate(pp, sites, names, ibt)
    if returns is not None:
        _annotate_returns(returns, sites, names, ibt)
    return t


def _annotate_returns(rets: Any, sites: _SiteIndex, names: _NameFacts, ibt: bool) -> None:
    """The return rows' site facts and variants, over the columns. Each row's facts are its text ranges', its
    symbol's (once per symbol) and, for a .return_sites entry at the row alone (every thunk jump), the
    return-thunk fact and variant (rets.rs): rets.fact_id indexes rets.factsets. The rows any other table
    site may touch, or a .return_sites entry that is not the row's alone, are built and annotated one by one
    (rets.objs), as are the rows already built and those the file's end cuts short."""
    a = rets.addr
    stop = a + rets.length.astype(np.uint64)
    cand = np.zeros(rets.n, dtype=bool)
    if sites.items:  # as _candidates
        reach = np.maximum.accumulate(_u64s([s + ln for s, ln, _k, _p in sites.items]))
        hi = np.searchsorted(_u64s(sites.starts), stop, side="left")
        cand |= (hi > 0) & (reach[np.maximum(hi - 1, 0)] > a)
    for kind, ln, arr in sites.points_tables:
        pts = _u64s(arr)
        lo = np.searchsorted(pts, np.where(a >= ln - 1, a - np.uint64(ln - 1), np.uint64(0)), side="left")
        hit = np.searchsorted(pts, stop, side="left") - lo
        if kind == "return_sites" and ln == 5:  # the row's own entry, alone in reach: what _point_facts adds
            rets.rs = (hit == 1) & (pts[np.minimum(lo, len(pts) - 1)] == a)
            hit[rets.rs] = 0
        cand |= hit > 0
    cand[list(rets.objs)] = True  # (a ret or jmp is never ENDBR: IBT adds nothing to a row)
    cand |= ~rets.whole | (stop < a)  # cut short by the file's end (its length is not the column's), or at 2**64
    rets.rs &= ~cand
    cols = rets.kernel.symbol_columns()
    syms, first, inv = np.unique(rets.sym, return_index=True, return_inverse=True)
    special = np.array(sorted(names.black | set(names.containers)), dtype=np.uint64)
    own = member(rets.sym_addr[first], special) | np.array([names.named(cols.name[k]) for k in syms.tolist()], bool)
    name_facts = np.zeros(len(syms), dtype=np.int64)  # per symbol: 0 none, else index into sets
    sets: list[frozenset[str]] = [frozenset()]
    for s in np.flatnonzero(own).tolist():
        add: list[str] = []
        names.facts(_Named(cols.name[int(syms[s])], int(rets.sym_addr[first[s]])), add)
        if add:
            name_facts[s] = len(sets)
            sets.append(frozenset(add))
    seg = np.searchsorted(_u64s(sites.points), a, side="right") if sites.points else np.zeros(rets.n, np.int64)
    key = (seg * len(sets) + name_facts[inv.reshape(-1)]) * 2 + rets.rs
    uniq, rets.fact_id = np.unique(key, return_inverse=True)
    rets.fact_id = rets.fact_id.reshape(-1)
    rs_fact = frozenset([BOOT_REWRITES["return_sites"]])
    rets.factsets = [sites.segs[k // 2 // len(sets)] | sets[k // 2 % len(sets)] | (rs_fact if k & 1 else frozenset())
                     for k in uniq.tolist()]  # fmt: skip
    rets.rs_variant = return_thunk_variant
    for i in np.flatnonzero(cand).tolist():
        pp = rets.objs.get(i) or rets.built(i)
        _annotate(pp, sites, names, ibt)
        rets.objs[i] = pp


class _Named:
    """What _NameFacts.facts reads of a patchpoint: its symbol's name and address."""

    __slots__ = ("name", "sym_addr")

    def __init__(self, name: str, sym_addr: int) -> None:
        self.name, self.sym_addr = name, sym_addr


def return_thunk_variant(a: int) -> Variant:
    """patch_return's form of a .return_sites entry at a: `ret; int3` in place of `jmp __x86_return_thunk`."""
    return Variant("return-thunk(ret)", decode(RET_INT3, a))


def _site_facts(pp: Patchpoint | _Row, sites: _SiteIndex, names: _NameFacts, ibt: bool) -> tuple[list, list]:
    """pp's site facts and boot-time variants (the facts of an entry row read from its columns: _Row)."""
    add: list[str] = []
    extra: list[Variant] = []
    sites.facts(pp, add, extra)
    if ibt and pp.insn.classes & IC.ENDBR:
        add.append(IBT_KERNEL)
    names.facts(pp, add)
    return add, extra


def _annotate(pp: Patchpoint, sites: _SiteIndex, names: _NameFacts, ibt: bool) -> bool:
    """Add pp's site facts and boot-time variants; whether there were any."""
    add, extra = _site_facts(pp, sites, names, ibt)
    if add:
        pp.facts = pp.facts | frozenset(add)
    if extra:
        _add_variants(pp, extra)
    return bool(add or extra)


def _column_facts(rows: Any, far: np.ndarray, keys: _FarKeys) -> None:
    """The facts of the `far` rows (_candidates): what _annotate would add, set over the columns (EntryRows.site_facts,
    with the row's own facts) without building the rows: no boot-time variant comes from a _FACT_ONLY site, a range or
    a name. The rows alike in all of these and their ftrace site share one set, made once per distinct key (a 6.12
    module's rows repeat a few): the per-row work is numpy's and dicts' (keys as ints, rows as lists)."""
    if not len(far):
        return
    k = keys
    key = rows.ftrace[far].astype(np.int64)  # ((quiet bits * segments + segment) * name sets + name set) * 2 + ftrace
    width = len(k.name_sets)
    if width > 1:
        key += k.name_code[far] * 2
    if len(k.segs) > 1:
        key += k.seg[far] * (2 * width)
    width *= len(k.segs)
    if k.code is not None:
        key += k.code[far] * (2 * width)
    keyl, farl = key.tolist(), far.tolist()
    sets: dict[int, frozenset[str] | None] = {}
    own: dict[int, frozenset[str]] = {}  # the row's own facts (EntryRows.base_facts) by its ftrace site
    nseg, nname = len(k.segs), len(k.name_sets)
    for kv in set(keyl):
        if kv & 1 not in own:  # from a row of that key
            own[kv & 1] = rows.base_facts(farl[keyl.index(kv)])
        q, rest = divmod(kv >> 1, nseg * nname)
        sg, nc = divmod(rest, nname)
        add = [*(f for b, f in enumerate(k.qfacts) if q >> b & 1), *k.segs[sg], *k.name_sets[nc]]
        sets[kv] = own[kv & 1] | frozenset(add) if add else None
    got = map(sets.__getitem__, keyl)
    if None in sets.values():  # (a far row always has a fact: kept for safety)
        rows.site_facts.update((i, fs) for i, fs in zip(farl, got, strict=True) if fs is not None)
    else:
        rows.site_facts.update(zip(farl, got, strict=True))


class _FarKeys:
    """What sets apart the facts of rows no table site touches but for _FACT_ONLY ones, per row (_candidates): `code`
    a bit per _FACT_ONLY table hit (None without such tables) with `qfacts` each table's fact, `seg` the text-range
    segment (index into `segs`), `name_code` the facts _NameFacts gives (index into `name_sets`, 0: none)."""

    __slots__ = ("code", "qfacts", "seg", "segs", "name_code", "name_sets")

    def __init__(self, code: np.ndarray | None, qfacts: list[str], seg: np.ndarray | None, segs: list[frozenset[str]],
                 name_code: np.ndarray, name_sets: list[tuple[str, ...]]) -> None:  # fmt: skip
        self.code, self.qfacts, self.seg, self.segs = code, qfacts, seg, segs
        self.name_code, self.name_sets = name_code, name_sets


class _Row:
    """Entry row i as _site_facts reads a patchpoint, from the columns: its address, name, symbol address, and
    an instruction whose length and classes come from the row's shape (the Insn is built only if more is read)."""

    __slots__ = ("addr", "name", "sym_addr", "insn")

    def __init__(self, rows: Any, i: int) -> None:
        self.addr, self.name, self.sym_addr = int(rows.addr[i]), rows.name(i), int(rows.sym_addr[i])
        self.insn = _RowInsn(rows, i)


class _RowInsn:
    __slots__ = ("rows", "i", "length", "classes", "_insn")

    def __init__(self, rows: Any, i: int) -> None:
        self.rows, self.i, self._insn = rows, i, None
        self.length, self.classes = int(rows.length[i]), rows.shapes[rows.shape[i]][7]

    def __getattr__(self, name: str):
        if self._insn is None:
            self._insn = self.rows.row_insn(self.i)
        return getattr(self._insn, name)


def _candidates(rows: Any, sites: _SiteIndex, names: _NameFacts, ibt: bool) -> tuple[list[int], np.ndarray, _FarKeys]:
    """The rows whose patchpoint _annotate may change, over the columns: `near` (a list) a table site the displaced
    instruction overlaps, ENDBR under IBT, or a row already built (annotated as objects, for their boot-time
    variants); `far` (an array) the others in a text range, with a fact _NameFacts gives, or overlapping only sites
    of _FACT_ONLY tables (facts only: _column_facts, from the keys: per row a bit per _FACT_ONLY table it hits, with
    those tables' facts (6.12's .call_sites holds every module function's first call), its text-range segment, its
    name facts (_name_rows)). A superset of the rows _annotate changes (it decides), but a close one."""
    a = rows.addr
    stop = a + np.maximum(rows.length, 1).astype(np.uint64)
    cand = np.zeros(rows.n, dtype=bool)
    if sites.items:  # some site starts before the instruction ends and ends after it starts: a prefix maximum
        starts = _u64s(sites.starts)
        reach = np.maximum.accumulate(_u64s([s + ln for s, ln, _k, _p in sites.items]))
        hi = np.searchsorted(starts, stop, side="left")
        cand |= (hi > 0) & (reach[np.maximum(hi - 1, 0)] > a)
    quiet: list[tuple[str, np.ndarray]] = []  # (fact, rows hit) of each _FACT_ONLY table, in _point_facts' order
    lows: dict[int, np.ndarray] = {}  # per site length, the lowest start of a site that reaches each row
    for kind, ln, arr in sites.points_tables:  # a site in [a - ln + 1, a + n), as _point_facts asks
        pts = _u64s(arr, top=True)  # (2**64 - 1 last: what the rows past every site meet)
        lo = lows.get(ln)
        if lo is None:
            lo = lows[ln] = np.maximum(a, np.uint64(ln - 1)) - np.uint64(ln - 1) if ln > 1 else a
        hit = pts[np.searchsorted(pts, lo, side="left")] < stop  # the first site at or past lo is before stop
        if kind in _FACT_ONLY:
            quiet.append((_FACT_ONLY[kind], hit))
        else:
            cand |= hit
    if ibt:
        cand |= (rows.shape_column(7) & IC.ENDBR) != 0
    if rows.objs:
        cand[list(rows.objs)] = True
    seg = None
    name_code, name_sets = _name_rows(rows, names)
    far = name_code != 0
    if sites.points:
        seg = np.searchsorted(_u64s(sites.points), a, side="right")
        some = np.array([bool(sg) for sg in sites.segs], dtype=bool)
        far |= some[seg]
    code = np.zeros(rows.n, dtype=np.int64) if quiet else None  # (read at the far rows only)
    for b, (_fact, hit) in enumerate(quiet):
        code[hit] |= 1 << b
        far |= hit
    far &= ~cand
    keys = _FarKeys(code, [f for f, _h in quiet], seg, sites.segs, name_code, name_sets)
    return np.flatnonzero(cand).tolist(), np.flatnonzero(far), keys


def _name_rows(rows: Any, names: _NameFacts) -> tuple[np.ndarray, list[tuple[str, ...]]]:
    """Per row, the facts _NameFacts gives it (by its symbol's address, or by name), as an index into the distinct
    fact tuples returned with it (0: none). A __pfx_ name without a '.' that is no handler's (6.12: every other row)
    is told with the names (facts_of's first step, the one fact such a name gives); facts_of runs for the other
    names it may give a fact (named(), or a few more) and for the rows at a blacklisted or a label's address (its
    answer overrides)."""
    special = names.black | set(names.containers)
    by_addr = []
    if special:  # a blacklisted symbol's or a label's address
        by_addr = np.flatnonzero(member(rows.sym_addr, np.array(sorted(special), dtype=np.uint64))).tolist()
    cols = rows.kernel.symbol_columns()
    nm, handlers = cols.name, names.handlers
    heads = _NameHeads.of(rows.kernel)
    code = np.zeros(rows.n, dtype=np.int64)
    sets: list[tuple[str, ...]] = [(), (_PFX,)]
    if heads is not None:  # the rows whose name has a '.', a _NAMED prefix or is a handler's: over the columns
        handler = heads.equal(handlers)
        pfx = heads.prefixed(("__pfx_",))
        some = heads.dotted | heads.prefixed(_NAMED) | handler
        pfx &= ~(heads.dotted | handler)
        first = rows.first_idx if rows.first_idx is not None else np.fromiter(rows.first, np.int64, count=rows.n)
        code[pfx[first]] = 1
        some &= ~pfx
        named, nm_at = names.named, map(nm.__getitem__, first[some[first]].tolist())
        pick = list(compress(np.flatnonzero(some[first]).tolist(), map(named, nm_at)))  # (a vmlinux's 5,000 of 50,000)
    else:
        pfx, pick = [], []
        for i, s in enumerate(map(nm.__getitem__, rows.first)):
            if s[:2] == "__":
                if s[:6] == "__pfx_" and "." not in s and s not in handlers:
                    pfx.append(i)
                elif s.startswith(_NAMED) or "." in s or s in handlers:
                    pick.append(i)
            elif "." in s or s in handlers:
                pick.append(i)
        if pfx:
            code[pfx] = 1
    some_rows = sorted({*pick, *by_addr}) if by_addr else pick
    if not some_rows:
        return code, sets
    first, facts_of = rows.first, names.facts_of  # (a name not named() has no fact but its address's)
    ids = {t: k for k, t in enumerate(sets)}
    got = []
    for i, a in zip(some_rows, rows.sym_addr[some_rows].tolist(), strict=True):
        add: list[str] = []
        facts_of(nm[first[i]], a, add)
        t = tuple(add)
        k = ids.get(t)
        if k is None:
            k = ids[t] = len(sets)
            sets.append(t)
        got.append(k)
    code[some_rows] = got
    return code, sets


# Point tables whose sites give a patchpoint a fact and never a boot-time variant (_point_facts: a run-time writer's,
# or a rewrite _boot_variant makes no instruction of): their rows keep to the columns (_column_facts).
_NONE = object()
_FACT_ONLY = {"smp_locks": RUNTIME_WRITERS["smp_locks"], "call_sites": BOOT_REWRITES["call_sites"],
              "cfi_sites": BOOT_REWRITES["cfi_sites"]}  # fmt: skip


def _u64s(values: list[int], top: bool = False) -> np.ndarray:
    """values as uint64, those a malformed table puts below 0 or past 2**64 clipped to the ends (order kept); with
    `top`, 2**64 - 1 after them (a sentinel no address is below). Through array('Q') from 16 values: numpy's own
    conversion of a list of ints costs ~3 times as much a value (a 6.12 module's tables: hundreds)."""
    if len(values) >= 16:
        try:
            got = array("Q", values)
        except OverflowError:
            got = array("Q", [min(max(v, 0), _U64_MAX) for v in values])
        if top:
            got.append(_U64_MAX)
        return np.frombuffer(got, dtype=np.uint64)
    try:
        return np.array([*values, _U64_MAX] if top else values, dtype=np.uint64)
    except OverflowError:
        return np.array([*(min(max(v, 0), _U64_MAX) for v in values), *([_U64_MAX] if top else [])], dtype=np.uint64)


_U64_MAX = (1 << 64) - 1
_NAMED = ("__SCT__", "__pfx_", "__cfi_")
_PFX = NON_ENTRY + "pfx"


class _SiteIndex:
    """The kernel's table sites and text ranges, indexed so that a patchpoint costs one bisect into all
    sites merged and one into the ranges."""

    def __init__(self, kernel: Kernel, t: Tables) -> None:
        self.kernel, self.t = kernel, t
        items: list[tuple[int, int, str, int]] = []  # (start, length, kind, payload)
        # A module's few jump sites read one by one: numpy's fixed cost (read_many) is more than their bisects.
        heads = [kernel.read(a, 2) for a in t.jump] if len(t.jump) < 64 else kernel.read_many(t.jump, 2)
        for a, b in zip(t.jump, heads, strict=True):
            items.append((a, 2 if b[:1] == b"\xeb" or b == b"\x66\x90" else 5, "jump_table", -1))
        items += [(a, 5, "static_call_sites", -1) for a, _tail in t.static_calls]
        # The one-field tables (100,000s of sites on 6.12) stay sorted int lists, one bisect each per
        # patchpoint: cheaper than a tuple per site in the merged list.
        self.points_tables = [
            (key, 1 if key == "smp_locks" else (4 if key == "ibt_endbr_seal" else 5), sorted(sites))
            for key, sites in t.s32.items()
            if sites
        ]
        self._all_points: list[int] | None | bool = False  # (all_points(), made when first read)
        self.max_ln = max((ln for _k, ln, _arr in self.points_tables), default=1)
        items += [(alt.instr, max(alt.instrlen, 1), "altinstructions", i) for i, alt in enumerate(t.alts)]
        items += [(a, max(ln, 1), "parainstructions", i) for i, (a, ln, _ty) in enumerate(t.para)]
        items += [(a, 10, "runtime_const", -1) for _s, a in t.runtime_const]
        items += [(a, 1, EXTABLE, -1) for a in t.extable]
        items += [(a, 2, BUG_SITE, -1) for a in t.bugs]
        items.sort()
        self.items, self.starts = items, [it[0] for it in items]
        self.maxlen = max((it[1] for it in items), default=1)
        init_key = "module-init" if kernel.kind == "module" else "init"
        ranges = [(DENY + k, r) for k in ("noinstr", "entry", "kprobes", "cpuidle") for r in t.ranges.get(k, [])]
        ranges += [(INIT + init_key, r) for r in t.ranges.get("init", [])]
        if kernel.kind == "vmlinux":
            ranges += [(INIT + "exit", r) for r in t.ranges.get("exit", [])]
        self.points, self.segs = _segments(ranges)

    def facts(self, pp: Patchpoint, add: list[str], extra: list[Variant]) -> None:
        """The facts and boot-time variants of the sites the displaced instruction overlaps, and its ranges."""
        a, n = pp.addr, pp.insn.length or 1
        items, starts = self.items, self.starts
        i = bisect.bisect_left(starts, a - self.maxlen + 1)
        while i < len(items) and starts[i] < a + n:
            start, ln, kind, payload = items[i]
            i += 1
            if start + ln <= a:
                continue
            if kind in RUNTIME_WRITERS:
                add.append(RUNTIME_WRITERS[kind])
            elif kind in BOOT_REWRITES:
                add.append(BOOT_REWRITES[kind])
                v = _boot_variant(self.kernel, self.t, kind, payload, start, pp)
                if isinstance(v, str):
                    add.append(v)
                elif v is not None:
                    extra.append(v)
            elif start == a:
                add.append(kind)  # EXTABLE, BUG_SITE: the instruction itself
        if self.points_tables:
            self._point_facts(pp, add, extra)
        seg = self.segs[bisect.bisect_right(self.points, a)]
        if seg:
            add.extend(seg)

    def all_points(self) -> list[int] | None:
        """The point tables' sites merged: one bisect tells the patchpoints near none of them (most) from the rest.
        Not a vmlinux's (tens of thousands: sorting them costs more than the few hundred rows annotated one by one
        save). Made on the first patchpoint annotated one by one (a 6.12 module has none or a few)."""
        if self._all_points is False:
            few = sum(len(arr) for _k, _ln, arr in self.points_tables) <= 4096
            merged = chain.from_iterable(arr for _k, _ln, arr in self.points_tables)
            self._all_points = sorted(merged) if few else None
        return self._all_points

    def _point_facts(self, pp: Patchpoint, add: list[str], extra: list[Variant]) -> None:
        a, n = pp.addr, pp.insn.length or 1
        merged = self.all_points()
        if merged is not None:
            j = bisect.bisect_left(merged, a - self.max_ln + 1)
            if j >= len(merged) or merged[j] >= a + n:
                return
        for kind, ln, arr in self.points_tables:
            j = bisect.bisect_left(arr, a - ln + 1)
            if j < len(arr) and arr[j] < a + n:
                start = arr[j]
                if kind in RUNTIME_WRITERS:
                    add.append(RUNTIME_WRITERS[kind])
                    continue
                add.append(BOOT_REWRITES[kind])
                if start != a and j + 1 < len(arr) and arr[j + 1] == a:
                    start = a
                v = _boot_variant(self.kernel, self.t, kind, -1, start, pp)
                if v is not None and not isinstance(v, str):
                    extra.append(v)


class _NameFacts:
    """The facts a patchpoint's symbol gives: blacklisted, a static-call trampoline, padding, a .cold part,
    a label inside another function, the trap-handling path."""

    def __init__(self, kernel: Kernel, t: Tables, pairs: list[tuple[str, int]]) -> None:
        """pairs: (name, symbol address) of the patchpoints, at least of those at a blacklisted address."""
        self.black = set(t.blacklist)
        self.black_names = {name.split(".", 1)[0] for name, addr in pairs if addr in self.black}
        self.containers = _label_containers(kernel)
        self.handlers = handler_path()

    def named(self, name: str) -> bool:
        """Whether facts() may add a fact for this name at an address neither blacklisted nor a label's."""
        if name.startswith(_NAMED) or name in self.handlers:
            return True
        if "." not in name:
            return False
        base, _, suffix = name.partition(".")
        return "cold" in suffix.split(".") or base in self.black_names or base in self.handlers

    def facts(self, pp: Patchpoint, add: list[str]) -> None:
        self.facts_of(pp.name, pp.sym_addr, add)

    def facts_of(self, name: str, sym_addr: int, add: list[str]) -> None:
        """The facts of a patchpoint of symbol `name` at sym_addr, appended to add."""
        if name[:6] == "__pfx_" and "." not in name and sym_addr not in self.black and name not in self.handlers:
            add.append(_PFX)  # padding (6.12: one per function), the one fact such a name gives (as the steps below)
            return
        if sym_addr in self.black:
            add.append(DENY + "blacklist")
        if name[:2] == "__":
            if name.startswith("__SCT__"):
                add.append(STATIC_CALL_TRAMP)
            elif name.startswith("__pfx_"):
                add.append(NON_ENTRY + "pfx")
            elif name.startswith("__cfi_"):
                add.append(NON_ENTRY + "cfi")
        base = name
        if "." in name:
            base, _, suffix = name.partition(".")
            if "cold" in suffix.split("."):
                add.append(NON_ENTRY + "cold:" + base)  # the name in the fact: judgements are memoised by facts
            if base in self.black_names and sym_addr not in self.black:
                add.append(DENY + "blacklist-suffix")  # within_kprobe_blacklist maps foo.cold -> foo
        if sym_addr in self.containers and not name.startswith(("__pfx_", "__cfi_")):
            add.append(NON_ENTRY + "label:" + self.containers[sym_addr])
        handlers = self.handlers
        if name in handlers:
            add.append(f"{HANDLER_PATH}{name}={handlers[name]}")
        elif base in handlers and not name.endswith(".cold") and ".cold." not in name:
            add.append(f"{HANDLER_PATH}{base}={handlers[base]}")


def _add_variants(pp: Patchpoint, extra: list[Variant]) -> None:
    """Append the boot-time variants not already there (same label and bytes), in order."""
    seen = {(v.label, v.insn.raw) for v in pp.variants}
    uniq = []
    for v in extra:
        if (v.label, v.insn.raw) not in seen:
            seen.add((v.label, v.insn.raw))
            uniq.append(v)
    pp.variants = (*pp.variants, *uniq)


def _label_containers(kernel: Kernel) -> dict[int, str]:
    """Symbol address -> the sized function whose body holds it (SYM_INNER_LABEL and the like):
    a label inside another function, not an entry. Padding and section markers never hold one."""
    cols = kernel.symbol_columns()
    heads = _NameHeads.of(kernel)
    if heads is not None:
        got = _label_containers_over_columns(cols, heads)
        if got is not None:
            return got
    return _label_walk(cols)


def _label_walk(cols: Any) -> dict[int, str]:
    """_label_containers by a walk of the symbols in Python (the arrays' path is checked against it)."""
    out: dict[int, str] = {}
    cur_end, cur_name, cur_addr = 0, "", 0
    for addr, name, size, sized in zip(cols.addr, cols.name, cols.size, cols.sized, strict=True):
        if cur_addr < addr < cur_end and addr not in out:
            out[addr] = cur_name
            continue
        if sized and addr + size > cur_end and not name.startswith(("__pfx_", "__cfi_")):
            cur_end, cur_name, cur_addr = addr + size, name, addr
    return out


def _label_containers_over_columns(cols: Any, heads: _NameHeads) -> dict[int, str] | None:
    """_label_containers' walk over arrays: the holder of each symbol is the last one before it that ends past every
    one before it (sized, not padding); the symbols strictly inside their holder are labels, the first at an address
    winning. None when a label would itself end past its holder (the walk keeps the holder: it decides then)."""
    arr = cols.arrays
    addr = arr.addr if arr is not None else np.array(cols.addr, dtype=np.uint64)
    size = arr.size if arr is not None else np.array(cols.size, dtype=np.uint64)
    sized = arr.sized if arr is not None else np.array(cols.sized, dtype=bool)
    n = len(addr)
    end = np.where(sized & ~heads.prefixed(("__pfx_", "__cfi_")), addr + size, np.uint64(0))
    before = np.zeros(n, dtype=np.uint64)  # the furthest end of the symbols before each
    np.maximum.accumulate(end[:-1], out=before[1:])
    record = end > before
    last = np.maximum.accumulate(np.where(record, np.arange(n), -1))
    holder = np.r_[-1, last[:-1]]
    inside = (holder >= 0) & (addr[np.maximum(holder, 0)] < addr) & (addr < before)
    if (inside & record).any():
        return None
    out: dict[int, str] = {}
    names = cols.name
    for a, h in zip(addr[inside].tolist(), holder[inside].tolist(), strict=True):
        out.setdefault(a, names[h])
    return out


class _NameHeads:
    """Per text symbol of a vmlinux (tens of thousands: a Python test per name costs more than these): its name's
    first 8 bytes as a little-endian u64 (zeros past its end), its length, whether it holds a '.'; from the symbol
    table's arrays (SymbolColumns.arrays), else over one join of the names. Kept on the kernel; None for a small
    image (numpy's fixed cost) or a name that is not ASCII."""

    MANY = 4096

    def __init__(self, names: list[str], heads: np.ndarray, lens: np.ndarray, dotted: np.ndarray) -> None:
        self.names, self.heads, self.lens, self.dotted = names, heads, lens, dotted

    @classmethod
    def joined(cls, names: list[str]) -> _NameHeads | None:
        text = "\0".join(names).encode("ascii")
        sb = np.frombuffer(text, dtype=np.uint8)
        nuls = np.flatnonzero(sb == 0)
        if len(nuls) != len(names) - 1:
            return None  # a NUL in a name
        starts = np.r_[0, nuls + 1]
        lens = np.r_[nuls, len(text)] - starts
        words = np.ndarray(shape=(len(text) + 1,), dtype="<u8", buffer=text + bytes(8), strides=(1,))
        return cls(names, name_heads(words[starts], lens), lens, dotted(text, starts))

    @classmethod
    def of(cls, kernel: Kernel) -> _NameHeads | None:
        cols = kernel.symbol_columns()
        if cols.arrays is None and len(cols.name) < cls.MANY:
            return None
        got = kernel.__dict__.get("name_heads", False)
        if got is False:
            got = None
            if cols.arrays is not None:
                got = cls(cols.name, cols.arrays.heads, cols.arrays.lens, cols.arrays.dotted)
            else:
                try:
                    got = cls.joined(cols.name)
                except UnicodeEncodeError:
                    pass
            kernel.__dict__["name_heads"] = got
        return got

    @staticmethod
    def _key(text: str) -> int:
        return int.from_bytes(text.encode("ascii", "replace")[:8], "little")

    def prefixed(self, prefixes: tuple[str, ...]) -> np.ndarray:
        """Whether each name starts with one of prefixes (each of at most 8 characters)."""
        out = np.zeros(len(self.heads), dtype=bool)
        for p in prefixes:
            mask = np.uint64((1 << (8 * len(p))) - 1)
            out |= ((self.heads & mask) == np.uint64(self._key(p))) & (self.lens >= len(p))
        return out

    def equal(self, names) -> np.ndarray:
        """Whether each name is one of names: its first 8 bytes and length, then the name itself."""
        out = np.zeros(len(self.heads), dtype=bool)
        for name in names:
            hit = (self.heads == np.uint64(self._key(name))) & (self.lens == len(name))
            for i in np.flatnonzero(hit).tolist():
                if self.names[i] == name:
                    out[i] = True
        return out


def _at(kernel: Kernel, insn: Insn, addr: int) -> Insn:
    """insn moved to addr, keeping its target (alternatives and paravirt fix up relative branches)."""
    i = insn
    moved = Insn(addr, i.raw, i.mnemonic, i.operands, i.prefixes, i.rex, i.opcode, i.modrm_off, i.classes, i.target)
    return kernel.resolve_target(moved)


def _boot_variant(
    kernel: Kernel, t: Tables, kind: str, payload: int, start: int, pp: Patchpoint
) -> Variant | str | None:
    """The instruction at pp.addr once the boot-time rewrite of one site has run; a fact instead
    when the rewrite leaves no instruction boundary at pp.addr."""
    a = pp.addr
    if kind == "altinstructions":
        alt = t.alts[payload]
        repl = kernel.read(alt.repl, alt.repllen) if alt.repllen else b""
        new = repl + _nops(alt.instrlen - len(repl))
        feat = f"{'!' if alt.negated else ''}{alt.feature >> 5}*32+{alt.feature & 31}"
        off = a - alt.instr
        if off < 0:
            return None  # the site starts inside the displaced instruction: the window overlap is the fact
        at = 0
        while at < off:  # the replacement's instruction boundaries up to the patchpoint
            i = decode(new[at:], alt.repl + at)
            if i.classes & IC.INVALID:
                break
            at += i.length
        if at != off:  # no instruction starts here once the replacement is in: FBT111's fact
            return f"{MID_INSTRUCTION}the alt({feat}) replacement"
        src = alt.repl + off if off < len(repl) else a
        return Variant(f"alt({feat})", _at(kernel, decode(new[off:], src), a))
    if kind == "parainstructions":
        _addr, ln, _ty = t.para[payload]
        if start != a:
            return None
        insn = pp.insn
        # `call *pv_ops+N(%rip)` becomes a direct call to the op's native function, or NOPs for
        # paravirt_nop (paravirt_patch): read the pv_ops slot's initial value from the image.
        if kernel.kind != "vmlinux" or insn.raw[:2] != b"\xff\x15" or len(insn.raw) != 6:
            return None
        slot = a + 6 + struct.unpack_from("<i", insn.raw, 2)[0]
        ptr = kernel.read(slot, 8)
        if len(ptr) != 8:
            return None
        target = struct.unpack("<Q", ptr)[0]
        tname = kernel.name_at(target)
        if tname in ("_paravirt_nop", "paravirt_nop"):
            return Variant("paravirt(nop)", decode(_nops(ln), a))
        rel = (target - (a + 5)) & 0xFFFFFFFF
        call = decode(b"\xe8" + struct.pack("<I", rel) + _nops(ln - 5), a)
        return Variant("paravirt(call)", kernel.resolve_target(call))
    if kind == "return_sites" and start == a:
        return return_thunk_variant(a)
    if kind == "ibt_endbr_seal" and start == a:
        return Variant("ibt-seal", decode(SEAL_POISON, a))
    if kind == "retpoline_sites" and start == a:
        name = pp.insn.target_name or ""
        reg = name.rsplit("_", 1)[-1] if name.startswith("__x86_indirect_thunk_") else ""
        regs = ["rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi"]
        num = regs.index(reg) if reg in regs else (int(reg[1:]) if reg[1:].isdigit() else -1)
        if num < 0:
            return None
        op = 0xD0 if pp.insn.opcode == b"\xe8" else 0xE0  # call *%reg / jmp *%reg
        raw = (b"\x41" if num >= 8 else b"") + bytes([0xFF, op | (num & 7)])
        return Variant("retpoline(indirect)", decode(raw, a))
    return None
