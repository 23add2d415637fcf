"""tables.py: the kernel's own tables (patched sites, trap sites, deny lists, text ranges) from a vmlinux or .ko."""

from __future__ import annotations

import operator
import struct
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import compress, repeat
from operator import attrgetter

import numpy as np

from fbt_audit.input.elf import section_headers
from fbt_audit.input.rela import Relocations
from fbt_audit.model.kernel import Kernel
from fbt_audit.sites.layouts import ALT_LAYOUTS, BUG_ENTRY, choose_alt_layout

SHF_ALLOC = 0x2
_NAME, _EXECUTABLE = attrgetter("name"), attrgetter("executable")  # of a model Section (_NAME: of a header too)

# table -> (vmlinux start/stop symbols, section name in a .ko and, when kept, in a vmlinux).
# A vmlinux merges __jump_table, .static_call_sites, __mcount_loc and _kprobe_blacklist into
# .rodata/.init.data (vmlinux.lds.h), so the symbols are the only way in; the rest keep a section.
TABLES: dict[str, tuple[tuple[str, str], str]] = {
    "altinstructions": (("__alt_instructions", "__alt_instructions_end"), ".altinstructions"),
    "parainstructions": (("__parainstructions", "__parainstructions_end"), ".parainstructions"),
    "jump_table": (("__start___jump_table", "__stop___jump_table"), "__jump_table"),
    "static_call_sites": (("__start_static_call_sites", "__stop_static_call_sites"), ".static_call_sites"),
    "mcount_loc": (("__start_mcount_loc", "__stop_mcount_loc"), "__mcount_loc"),
    "smp_locks": (("__smp_locks", "__smp_locks_end"), ".smp_locks"),
    "retpoline_sites": (("__retpoline_sites", "__retpoline_sites_end"), ".retpoline_sites"),
    "return_sites": (("__return_sites", "__return_sites_end"), ".return_sites"),
    "call_sites": (("__call_sites", "__call_sites_end"), ".call_sites"),
    "ibt_endbr_seal": (("__ibt_endbr_seal", "__ibt_endbr_seal_end"), ".ibt_endbr_seal"),
    "cfi_sites": (("__cfi_sites", "__cfi_sites_end"), ".cfi_sites"),
    "ex_table": (("__start___ex_table", "__stop___ex_table"), "__ex_table"),
    "bug_table": (("__start___bug_table", "__stop___bug_table"), "__bug_table"),
    "kprobe_blacklist": (("__start_kprobe_blacklist", "__stop_kprobe_blacklist"), "_kprobe_blacklist"),
}
# Tables of one self-relative s32 per entry (objtool's create_*_sections).
S32_TABLES = ("smp_locks", "retpoline_sites", "return_sites", "call_sites", "ibt_endbr_seal", "cfi_sites")
# vmlinux text ranges (start, end symbols); module equivalents are sections of the same name.
RANGES = {
    "noinstr": ("__noinstr_text_start", "__noinstr_text_end", ".noinstr.text"),
    "entry": ("__entry_text_start", "__entry_text_end", ".entry.text"),
    "kprobes": ("__kprobes_text_start", "__kprobes_text_end", ".kprobes.text"),
    "cpuidle": ("__cpuidle_text_start", "__cpuidle_text_end", ".cpuidle.text"),
    "static_call_text": ("__static_call_text_start", "__static_call_text_end", ".static_call.text"),
}


@dataclass
class Alt:
    """One struct alt_instr: `instrlen` bytes at `instr` become the replacement when the feature is (not) set."""

    instr: int
    repl: int
    feature: int  # X86_FEATURE_* number (word*32+bit)
    negated: bool
    instrlen: int
    repllen: int
    flags: int = 0


@dataclass
class Tables:
    """Every table of one image, decoded: site addresses (link-time for vmlinux, synthetic for a
    module, as Kernel addresses are), the layouts chosen, entry counts and what could not be read."""

    counts: dict[str, int] = field(default_factory=dict)  # entries per table (present tables only)
    layouts: dict[str, str] = field(default_factory=dict)  # table -> layout name chosen
    problems: list[str] = field(default_factory=list)  # a table no known layout fits, and why
    alts: list[Alt] = field(default_factory=list)
    para: list[tuple[int, int, int]] = field(default_factory=list)  # (addr, len, type)
    jump: list[int] = field(default_factory=list)  # jump_entry.code
    jump_targets: list[int] = field(default_factory=list)  # jump_entry.target, in the order of jump
    static_calls: list[tuple[int, bool]] = field(default_factory=list)  # (site, tail)
    mcount: list[int] = field(default_factory=list)
    s32: dict[str, list[int]] = field(default_factory=dict)  # S32_TABLES -> sites
    runtime_const: list[tuple[str, int]] = field(default_factory=list)  # (section, site)
    extable: list[int] = field(default_factory=list)
    extable_fixups: list[int] = field(default_factory=list)  # exception_table_entry.fixup, in the order of extable
    bugs: list[int] = field(default_factory=list)
    blacklist: list[int] = field(default_factory=list)
    ranges: dict[str, list[tuple[int, int]]] = field(default_factory=dict)


def _version(release: str | None) -> tuple[int, int] | None:
    if not release:
        return None
    parts = release.split("-", 1)[0].split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (ValueError, IndexError):
        return None


def _s32_sites(blob: bytes, base: int) -> list[int]:
    """Self-relative s32 fields at base, base+4, ...: each field's address plus its value."""
    vals = array("i", blob[: len(blob) - len(blob) % 4])
    return [base + 4 * i + v for i, v in enumerate(vals)]


class _Reader:
    """The bytes of each table: between its symbols in a vmlinux, its section (relocated) in a module."""

    def __init__(self, kernel: Kernel):
        self.k = kernel
        self.module = kernel.kind == "module"
        self.secs = dict(zip(map(_NAME, kernel.sections), kernel.sections, strict=True))  # (in C; a later name wins)
        # A vmlinux's loader looks one name up without decoding all 130,000 (Kernel.finder)
        self.sym = kernel.symbol_address
        if self.module:
            self._load_module()

    def _load_module(self) -> None:
        """Section headers (elf.section_headers, as the loader read them) and relocations (input/rela.py)
        of the .ko, for the dozen small sections the tables live in."""
        data = self.k.data
        hdrs = getattr(self.k, "elf_headers", None)
        self.names = list(map(_NAME, hdrs or ()))
        relocs = getattr(self.k, "relocations", None)
        if hdrs and relocs is not None:  # elf.load's: its relocations hold the bases it gave the sections
            self.hdrs, self.base, self.relocs = hdrs, relocs.bases, relocs
        else:
            self.hdrs = hdrs = hdrs or section_headers(self.k.path, data, len(data))
            self.names = list(map(_NAME, hdrs))
            # The synthetic bases elf.load gave the SHF_ALLOC sections, in index order.
            alloc = [i for i, h in enumerate(hdrs) if h.sh_flags & SHF_ALLOC]
            self.base = {i: s.addr for i, s in zip(alloc, self.k.sections, strict=False)}
            self.relocs = relocs or Relocations(data, hdrs, self.base)
        # each name's first section (a dict built backwards: the first index of a name written last)
        self.index: dict[str, int] = dict(zip(reversed(self.names), range(len(self.names) - 1, -1, -1), strict=True))
        # The tables' sections that relocations patch, relocated together (Relocations.applied_many).
        parts = [(i, self._contents(i), self.base[i]) for i in map(self.index.get, _TABLE_SECTIONS)
                 if i is not None and i in self.relocs.patching and self.hdrs[i].sh_size and i in self.base]
        self.pre: dict[int, bytes] = {}
        try:
            if parts:
                self.pre = dict(zip([i for i, _c, _b in parts], self.relocs.applied_many(parts), strict=True))
        except _DAMAGED:  # a damaged module: each table read on its own, failing where it did (read_tables)
            pass

    def _contents(self, i: int):
        h = self.hdrs[i]
        return self.k.data[h.sh_offset : h.sh_offset + h.sh_size]

    def section_bytes(self, name: str) -> tuple[bytes, int] | None:
        """(relocated contents, address) of a module section, or None."""
        i = self.index.get(name)
        if i is None:
            return None
        h = self.hdrs[i]
        if not h.sh_size or i not in self.base:
            return b"", self.base.get(i, 0)
        base = self.base[i]
        got = self.pre.get(i)
        return (got if got is not None else self.relocs.applied(i, self._contents(i), base)), base

    def table(self, key: str) -> tuple[bytes, int] | None:
        (start, stop), secname = TABLES[key]
        if self.module:
            return self.section_bytes(secname)
        a, b = self.sym(start), self.sym(stop)
        if a is None or b is None or b < a:
            s = self.secs.get(secname)
            if s is None:
                return None
            a, b = s.addr, s.addr + s.size
        return self.k.read(a, b - a), a

    def ranges(self, key: str) -> list[tuple[int, int]]:
        start, stop, secname = RANGES[key]
        if self.module:
            s = self.secs.get(secname)
            return [(s.addr, s.addr + s.size)] if s is not None and s.size else []
        a, b = self.sym(start), self.sym(stop)
        return [(a, b)] if a is not None and b is not None and b > a else []


def table_bytes(kernel: Kernel, key: str) -> tuple[bytes, int] | None:
    """(contents, address) of one of the kernel's TABLES (relocated in a module), or None when absent."""
    return _Reader(kernel).table(key)


def _in_text(kernel: Kernel, addr: int) -> bool:
    s = kernel.section_at(addr)
    return s is not None and s.executable


def read_tables(kernel: Kernel) -> Tables:
    """Decode every table of kernel (cached on it). Layouts are chosen from the release and the
    table size (audit/sites/layouts.py); a table no layout fits is left out and named in `problems`."""
    if kernel.site_tables is not None:
        return kernel.site_tables
    t = kernel.site_tables = Tables()
    if not len(kernel.data):  # an image built in memory (tests): no file, no tables
        return t
    try:
        _read(kernel, t)
    except _DAMAGED as e:  # a damaged image: say so
        t.problems.append(f"kernel tables unreadable ({type(e).__name__}: {e})")
    return t


_TABLE_SECTIONS = tuple(dict.fromkeys(secname for _k, secname in TABLES.values()))  # a module's, in TABLES' order
_DAMAGED = (struct.error, ValueError, IndexError, KeyError, OverflowError)  # what a damaged image's tables raise
SMALL_TABLE = 2048  # bytes under which a table's entries are read by struct, not numpy
_S32 = struct.Struct("<i")
PARA_ENTRY = struct.Struct("<QBB6x")  # struct paravirt_patch_site (6.1): u64 instr, u8 type, u8 len, padded to 16
JUMP_ENTRY = struct.Struct("<iiq")  # struct jump_entry: s32 code, s32 target, long key
STATIC_CALL_SITE = struct.Struct("<ii")  # struct static_call_site: s32 addr, s32 key
EX_ENTRY = struct.Struct("<iii")  # struct exception_table_entry: s32 insn, s32 fixup, s32 data


def _fixed(rd, t: Tables, key: str, label: str, st: struct.Struct, ctype: str) -> tuple[bytes, int] | None:
    """A fixed-size table's bytes and address; None when absent, or when its size does not divide by the
    entry size (then a problem is recorded: never a silent guess)."""
    got = rd.table(key)
    if got is None or not got[0]:
        return None
    blob, base = got
    if len(blob) % st.size:
        t.problems.append(f"{label}: size {len(blob)} is not a multiple of {st.size} (struct {ctype})")
        return None
    t.layouts[key] = f"{ctype}/{st.size}"
    return blob, base


def _read(kernel: Kernel, t: Tables) -> None:
    """Every table into t, in this order (the order of t.counts, t.layouts and t.problems)."""
    rd = _Reader(kernel)
    _read_alts(rd, t, kernel)
    _read_fixed(rd, t, ("parainstructions", "jump_table", "static_call_sites"))
    t.mcount = _u64_sites(rd, t, "mcount_loc")
    _read_s32(rd, t, kernel)
    _read_fixed(rd, t, ("ex_table", "bug_table"))
    t.blacklist = _u64_sites(rd, t, "kprobe_blacklist")
    _read_ranges(rd, t, kernel)


def _read_alts(rd: _Reader, t: Tables, kernel: Kernel) -> None:
    """.altinstructions, by the layout its size, the release and its sites fit (layouts.py)."""
    got = rd.table("altinstructions")
    if got is None or not got[0]:
        return
    blob, base = got
    layout, why = choose_alt_layout(blob, base, _version(kernel.release), lambda a: _in_text(kernel, a))
    if layout is None:
        t.problems.append(f".altinstructions: {why}")
        return
    t.layouts["altinstructions"] = layout.name
    ci, ii, ri, il, rl = map(layout.fields.index, ("cpuid", "instr", "repl", "instrlen", "repllen"))
    size, alts = layout.size, t.alts
    for at, rec in zip(range(base, base + len(blob), size), layout.struct.iter_unpack(blob), strict=True):
        feat = rec[ci] & 0xFFFF
        if size == 14:
            flags = rec[ci] >> 16
            negated = bool(flags & 1)
        else:
            flags, negated = 0, bool(feat & 0x8000)
            feat &= 0x7FFF
        alts.append(Alt(at + rec[ii], at + 4 + rec[ri], feat, negated, rec[il], rec[rl], flags))
    t.counts["altinstructions"] = len(t.alts)


def _read_fixed(rd: _Reader, t: Tables, keys: tuple[str, ...]) -> None:
    """The fixed-size tables among keys: each entry's site, from the entry's address and its fields."""
    for key in keys:
        label, st, ctype, field_name, sites = _FIXED[key]
        raw = _fixed(rd, t, key, label, st, ctype)
        if raw is not None:
            got = sites(*raw, st)
            setattr(t, field_name, got)
            t.counts[key] = len(got)
            if key in _TARGETS:  # where the entry sends execution: --deep's branch targets (sites/branches.py)
                setattr(t, _TARGETS[key], _second_targets(*raw, st))


def _second_targets(blob: bytes, base: int, st: struct.Struct) -> list[int]:
    """Each entry's self-relative second field (s32 at +4: jump_entry.target, exception_table_entry.fixup) as
    the address it names."""
    return _rel_sites(blob, base, st.size, 4)


def _u64_sites(rd: _Reader, t: Tables, key: str) -> list[int]:
    """A table of u64 addresses (zeros left out), counted when present."""
    got = rd.table(key)
    if got is None or not got[0]:
        return []
    blob = got[0]
    if len(blob) < SMALL_TABLE:  # struct in C beats numpy's fixed cost on a module's few dozen entries
        sites = list(filter(None, struct.unpack_from(f"<{len(blob) // 8}Q", blob)))
    else:
        vals = np.frombuffer(blob, dtype="<u8", count=len(blob) // 8)
        sites = vals[vals != 0].tolist()
    t.counts[key] = len(sites)
    return sites


def _read_s32(rd: _Reader, t: Tables, kernel: Kernel) -> None:
    """objtool's tables of self-relative s32 sites, then runtime-const's sections (6.11+)."""
    for key in S32_TABLES:
        got = rd.table(key)
        if got is None or not got[0]:
            continue
        blob, base = got
        # A zero field points at itself: page-alignment padding (.smp_locks) or a site in code the
        # linker discarded (ld resolves it to 0). The kernel skips those; so do we.
        if len(blob) < SMALL_TABLE:
            vals = struct.unpack_from(f"<{len(blob) // 4}i", blob)
            sites = list(compress(map(operator.add, range(base, base + 4 * len(vals), 4), vals), vals))  # in C
        else:
            vals = np.frombuffer(blob, dtype="<i4", count=len(blob) // 4).astype(np.int64)
            nz = np.flatnonzero(vals)
            sites = _plus(base, 4 * nz + vals[nz])
        t.s32[key] = sites
        t.counts[key] = len(sites)
    # runtime-const (6.11+): one section per constant, runtime_ptr_<sym> / runtime_shift_<sym>.
    secs = kernel.sections
    for s in compress(secs, map(str.startswith, map(_NAME, secs), repeat(("runtime_ptr_", "runtime_shift_")))):
        if s.size:  # (the sections named so picked out by map, in C: most images have none)
            for a in _s32_sites(kernel.read(s.addr, s.size) if not rd.module else rd.section_bytes(s.name)[0], s.addr):
                t.runtime_const.append((s.name, a))
    if t.runtime_const:
        t.counts["runtime_const"] = len(t.runtime_const)


def _read_ranges(rd: _Reader, t: Tables, kernel: Kernel) -> None:
    """The deny text ranges (RANGES), and init/exit text by section."""
    for key in RANGES:
        t.ranges[key] = rd.ranges(key)
    init, exit_ = [], []
    for s in compress(kernel.sections, map(_EXECUTABLE, kernel.sections)):  # (picked out by map, in C)
        if s.size and (s.name == ".init.text" or s.name.startswith(".init.text.")):
            init.append((s.addr, s.addr + s.size))
        elif s.size and s.name == ".exit.text":
            exit_.append((s.addr, s.addr + s.size))
    t.ranges["init"] = init
    t.ranges["exit"] = exit_


# Fixed-size table -> (label, entry struct, C type, Tables field, the field's value from (entry address, fields) rows)
def _plus(base: int, rel: np.ndarray) -> list[int]:
    """base + each of rel (int64 offsets, |rel| < 2**40), exactly, as Python ints: past 2**64 or below 0 too,
    as a malformed table may say (no site is there: nothing matches it)."""
    if base < 1 << 62:
        return (rel.astype(np.int64) + base).tolist()
    out = (np.uint64(base) + rel.astype(np.int64).astype(np.uint64)).tolist()  # wraps only past 2**64
    for i in np.flatnonzero(rel > 0).tolist():
        if out[i] < base:
            out[i] += 1 << 64
    return out


def _s32_at(blob: bytes, size: int, field: int) -> np.ndarray:
    """The s32 at byte `field` of each entry of `size` bytes, with each entry's offset from the table's start added."""
    n = len(blob) // size
    vals = np.frombuffer(blob, dtype="<i4").reshape(n, size // 4)[:, field // 4] if n else np.zeros(0, np.int32)
    return np.arange(n, dtype=np.int64) * size + field + vals.astype(np.int64)


def _rel_sites(blob: bytes, base: int, size: int, field: int) -> list[int]:
    """Each entry's address (entries of `size` bytes from base) plus its s32 at byte `field`, exactly; a small table
    by struct (numpy's fixed cost is most of a module's table), a large one over arrays."""
    if len(blob) >= SMALL_TABLE:
        return _plus(base, _s32_at(blob, size, field))
    if not size % 4 and not field % 4 and not len(blob) % size:  # every entry's s32 by an array slice, added in C
        at = base + field
        return list(map(operator.add, range(at, at + len(blob), size), array("i", blob)[field // 4 :: size // 4]))
    unpack = _S32.unpack_from
    return [base + k + field + unpack(blob, k + field)[0] for k in range(0, len(blob) - size + 1, size)]


def _self_relative(blob: bytes, base: int, st: struct.Struct) -> list[int]:
    """Each entry's address plus its first s32 field: the site of a jump, exception-table or bug entry."""
    return _rel_sites(blob, base, st.size, 0)


def _static_calls(blob: bytes, base: int, st: struct.Struct) -> list[tuple[int, bool]]:
    """(site, whether the key's low bit marks a tail call) of each static_call_site."""
    sites, keys = _rel_sites(blob, base, st.size, 0), _rel_sites(blob, base, st.size, 4)
    return [(a, bool(k & 1)) for a, k in zip(sites, keys, strict=True)]


_FIXED: dict[str, tuple[str, struct.Struct, str, str, Callable[[bytes, int, struct.Struct], list]]] = {
    "parainstructions": (".parainstructions", PARA_ENTRY, "paravirt_patch_site", "para",
                         lambda blob, _base, st: [(a, ln, ty) for a, ty, ln in st.iter_unpack(blob)]),
    "jump_table": ("__jump_table", JUMP_ENTRY, "jump_entry", "jump", _self_relative),
    "static_call_sites": (".static_call_sites", STATIC_CALL_SITE, "static_call_site", "static_calls", _static_calls),
    "ex_table": ("__ex_table", EX_ENTRY, "exception_table_entry", "extable", _self_relative),
    "bug_table": ("__bug_table", BUG_ENTRY, "bug_entry", "bugs", _self_relative),
}  # fmt: skip
# Fixed-size table -> the Tables field of its second s32, a target relative to its own address
_TARGETS = {"jump_table": "jump_targets", "ex_table": "extable_fixups"}


__all__ = ["ALT_LAYOUTS", "Alt", "Tables", "read_tables", "TABLES"]
