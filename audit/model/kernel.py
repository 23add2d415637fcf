"""kernel.py: the loaded image (vmlinux or module) as the later stages see it: sections, symbols, sites, identity."""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

from fbt_audit.model.abi import Target, target_class
from fbt_audit.model.core import IC, Insn, Symbol

_ADDR = attrgetter("addr")


@dataclass(frozen=True, slots=True)
class Section:
    name: str
    addr: int  # link-time address (vmlinux) or the base fbt-audit assigned (module)
    size: int
    offset: int  # file offset of the contents
    flags: int
    executable: bool
    nobits: bool


_SET_SECTION = tuple(getattr(Section, f).__set__ for f in Section.__slots__)
_S0, _S1, _S2, _S3, _S4, _S5, _S6 = _SET_SECTION


def new_section(name: str, addr: int, size: int, offset: int, flags: int, executable: bool, nobits: bool) -> Section:
    """Section(name, addr, ...), the same object (tests/test_elf_sections.py), for the loader's ~25 a module: the frozen
    dataclass's __init__ sets each field through object.__setattr__ (0.8 us a Section); its slots' own setters take
    half that (callgrind, load and tables of every 16th 6.1 module: 3.12M instructions a module before, 3.01M after)."""
    s = object.__new__(Section)
    _S0(s, name)
    _S1(s, addr)
    _S2(s, size)
    _S3(s, offset)
    _S4(s, flags)
    _S5(s, executable)
    _S6(s, nobits)
    return s


@dataclass(frozen=True, slots=True)
class SymbolColumns:
    """The text symbols as parallel lists sorted by (addr, name): what enumeration walks, without
    building a Symbol per entry (100,000 of them on a 6.12 vmlinux). Sizes are final (never 0)."""

    addr: list[int]
    name: list[str]
    size: list[int]
    kind: list[str]
    bind: list[str]
    section: list[str]
    sized: list[bool]
    # A vmlinux's .symtab (input/bigsymtab.py): the same columns as numpy arrays, and each name's first 8 bytes, length
    # and whether it holds a '.' (sites/annotate.py's tests of 50,000 names over arrays); None elsewhere.
    arrays: Any = field(default=None, compare=False, repr=False)

    @classmethod
    def of(cls, symbols: list[Symbol]) -> SymbolColumns:
        return cls(
            [s.addr for s in symbols],
            [s.name for s in symbols],
            [s.size for s in symbols],
            [s.kind for s in symbols],
            [s.bind for s in symbols],
            [s.section for s in symbols],
            [s.sized for s in symbols],
        )

    def symbols(self) -> list[Symbol]:
        return list(map(Symbol, self.name, self.addr, self.size, self.kind, self.bind, self.section, self.sized))


@dataclass
class Kernel:
    """An image to audit. Addresses are link-time addresses for vmlinux; a module's sections get
    disjoint synthetic bases so that one address space covers them all (Patchpoint.sec_off is
    then the offset the brief's list prints)."""

    path: str
    display: str  # the name used in reports: file name for vmlinux, 'modules/<name>.ko' style for modules
    kind: str  # 'vmlinux' | 'module'
    module: str  # 'kernel' for vmlinux, else the module name
    release: str | None
    build_id: str | None
    sections: list[Section]
    symbols: list[Symbol]  # text symbols, sorted by (addr, name); None: built from `columns` when first read
    data: bytes | memoryview  # whole file contents (mmap-backed)
    mcount_sites: frozenset[int] = frozenset()  # addresses of ftrace call sites (__mcount_loc)
    call_targets: dict[int, str] = field(default_factory=dict)  # insn address -> relocated call/jmp target name
    names: dict[str, int] = field(default_factory=dict)  # every symbol name -> address (all symbol types)
    columns: SymbolColumns | None = field(default=None, repr=False)  # the text symbols, column-wise
    symbol_source: str = ".symtab"  # where the symbols came from: .symtab, a System.map, a kallsyms dump ...
    # Builders of fields passed as None, run when the field is first read: a vmlinux has 130,000
    # names that nothing on the audit's path reads, and 50,000 Symbols that enumeration reads as columns.
    lazy: dict[str, Callable[[], object]] = field(default_factory=dict, repr=False, compare=False)
    # One name's address without building `names` (a vmlinux's loader looks it up in .symtab by name).
    finder: Callable[[str], int | None] | None = field(default=None, repr=False, compare=False)
    # What later stages read once and keep with the image: sites.tables.Tables (the kernel's own tables)
    # and patchpoints.returns.ReturnStats (--returns). Typed loosely: the model comes before those stages.
    site_tables: Any = field(default=None, repr=False, compare=False)
    return_stats: Any = field(default=None, repr=False, compare=False)
    _sec_starts: list[int] = field(default_factory=list, repr=False)
    _sec_sorted: list[Section] = field(default_factory=list, repr=False)
    _addr_names: dict[int, str | None] = field(default_factory=dict, repr=False)
    _targets: dict[int, tuple[str | None, Target]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._sec_sorted = sorted([s for s in self.sections if not s.nobits and s.size], key=_ADDR)
        self._sec_starts = [s.addr for s in self._sec_sorted]
        if self.symbols is None and self.columns is not None:
            self.lazy.setdefault("symbols", self.columns.symbols)
        for name in self.lazy:
            if getattr(self, name) is None:
                delattr(self, name)  # so that __getattr__ runs the builder on the first read

    def __getattr__(self, name: str):
        build = self.__dict__.get("lazy", {}).get(name)
        if build is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        value = build()
        setattr(self, name, value)
        return value

    def symbol_address(self, name: str) -> int | None:
        """The address of any symbol by name (all symbol types), without building `names` when a finder can."""
        if "names" not in self.__dict__ and self.finder is not None:
            return self.finder(name)
        return self.names.get(name)

    def symbol_columns(self) -> SymbolColumns:
        if self.columns is None:
            self.columns = SymbolColumns.of(self.symbols)
        return self.columns

    @property
    def flavour(self) -> str:
        """'amd64', 'cloud-amd64', 'rt-amd64' ... from the release; 'unknown' without one."""
        if not self.release:
            return "unknown"
        parts = self.release.split("-")
        for i, p in enumerate(parts):
            if p in ("amd64", "x86_64"):
                j = i
                while j > 0 and not parts[j - 1][:1].isdigit() and "+" not in parts[j - 1]:
                    j -= 1
                return "-".join(parts[j : i + 1])
        return parts[-1]

    def section_at(self, addr: int) -> Section | None:
        i = bisect.bisect_right(self._sec_starts, addr) - 1
        if i >= 0:
            s = self._sec_sorted[i]
            if s.addr <= addr < s.addr + s.size:
                return s
        return None

    def section_span(self, addr: int) -> tuple[Section | None, int, int]:
        """section_at(addr), and the range [lo, hi) around addr over which section_at gives that
        same answer, so that a caller walking addresses upwards asks once per section."""
        starts = self._sec_starts
        i = bisect.bisect_right(starts, addr) - 1
        nxt = starts[i + 1] if i + 1 < len(starts) else 1 << 64
        if i < 0:
            return None, -1, nxt
        s = self._sec_sorted[i]
        end = s.addr + s.size
        if addr < end:
            return s, starts[i], min(end, nxt)
        return None, end, nxt

    def read(self, addr: int, n: int) -> bytes:
        """Up to n bytes at addr, stopping at the end of the containing section."""
        s = self.section_at(addr)
        if s is None:
            return b""
        off = addr - s.addr
        n = min(n, s.size - off)
        return bytes(self.data[s.offset + off : s.offset + off + n])

    def read_many(self, addrs: list[int], n: int) -> list[bytes]:
        """read(a, n) of each of addrs, the sections found over arrays (a table's thousands of sites: jump labels);
        addresses that are not all u64 (a malformed table's) read one by one."""
        import numpy as np  # here: the model's other users need no numpy

        try:
            a = np.array(addrs, dtype=np.uint64)
        except OverflowError:
            return [self.read(x, n) for x in addrs]
        secs = self._sec_sorted
        if not len(a) or not secs:
            return [b""] * len(a)
        starts = np.array(self._sec_starts, dtype=np.uint64)
        i = np.searchsorted(starts, a, side="right") - 1
        k = np.maximum(i, 0)
        rel = a - np.minimum(starts[k], a)  # 0 below the first section (i < 0: not inside)
        size = np.array([s.size for s in secs], dtype=np.uint64)[k]
        inside = (i >= 0) & (rel < size)
        count = np.where(inside, np.minimum(np.uint64(n), size - np.minimum(rel, size)), 0).tolist()
        offs = (np.array([s.offset for s in secs], dtype=np.uint64)[k] + rel).tolist()
        data = self.data
        return [bytes(data[o : o + c]) if c else b"" for o, c in zip(offs, count, strict=True)]

    def name_at(self, addr: int) -> str | None:
        """The name of a text symbol at exactly addr, for naming direct call and jump targets (which
        are code): one without a leading underscore first, then the least."""
        try:
            return self._addr_names[addr]
        except KeyError:
            pass
        cols = self.symbol_columns()
        lo = bisect.bisect_left(cols.addr, addr)
        hi = bisect.bisect_right(cols.addr, addr, lo)
        best = min(cols.name[lo:hi], key=_preference) if hi > lo else None
        self._addr_names[addr] = best
        return best

    def name_target(self, addr: int, length: int, target: int | None) -> tuple[str | None, Target]:
        """The name and class of a direct call/jump's target: the relocation at its rel32 (a module's calls
        to other modules and the kernel), else the text symbol at the target address. The one call-target
        namer: enumeration, return sites and boot-time variants all ask it."""
        if length >= 5 and self.call_targets:
            nm = self.call_targets.get(addr + length - 4)
            if nm is not None:
                return nm, target_class(nm)
        if target is None:
            return None, Target.ANY
        hit = self._targets.get(target)
        if hit is None:
            nm = self.name_at(target)
            hit = self._targets[target] = (nm, target_class(nm))
        return hit

    def resolve_target(self, insn: Insn) -> Insn:
        """insn with its direct call/jump target named (name_target)."""
        if not insn.classes & (IC.REL_CALL | IC.REL_BRANCH):
            return insn
        name, cls = self.name_target(insn.addr, len(insn.raw), insn.target)
        if name is None:
            return insn
        i = insn  # built directly: dataclasses.replace() costs 10 us, and this runs once per call site
        return Insn(i.addr, i.raw, i.mnemonic, i.operands, i.prefixes, i.rex, i.opcode, i.modrm_off, i.classes,
                    i.target, name, cls)  # fmt: skip

def _preference(name: str) -> tuple[bool, str]:
    return name.startswith("_"), name
