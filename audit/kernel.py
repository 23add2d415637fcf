"""kernel.py: the loaded image (vmlinux or module) as the later stages see it: sections, symbols, sites, identity."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from .model import Symbol


@dataclass(frozen=True, slots=True)
class Section:
    name: str
    addr: int  # link-time address (vmlinux) or the base fbt-audit assigned (module)
    size: int
    offset: int  # file offset of the contents
    flags: int
    executable: bool
    nobits: bool


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
    symbols: list[Symbol]  # text symbols, sorted by (addr, name)
    data: bytes | memoryview  # whole file contents (mmap-backed)
    mcount_sites: frozenset[int] = frozenset()  # addresses of ftrace call sites (__mcount_loc)
    call_targets: dict[int, str] = field(default_factory=dict)  # insn address -> relocated call/jmp target name
    names: dict[str, int] = field(default_factory=dict)  # every symbol name -> address (all symbol types)
    _sec_starts: list[int] = field(default_factory=list, repr=False)
    _sec_sorted: list[Section] = field(default_factory=list, repr=False)
    _addr_names: dict[int, str] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._sec_sorted = sorted((s for s in self.sections if not s.nobits and s.size), key=lambda s: s.addr)
        self._sec_starts = [s.addr for s in self._sec_sorted]

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

    def read(self, addr: int, n: int) -> bytes:
        """Up to n bytes at addr, stopping at the end of the containing section."""
        s = self.section_at(addr)
        if s is None:
            return b""
        off = addr - s.addr
        n = min(n, s.size - off)
        return bytes(self.data[s.offset + off : s.offset + off + n])

    def name_at(self, addr: int) -> str | None:
        """A symbol name at exactly addr (any type), for naming direct call targets."""
        if self._addr_names is None:
            self._addr_names = {}
            for name, a in sorted(self.names.items(), key=lambda kv: (kv[1], kv[0].startswith("_"), kv[0])):
                self._addr_names.setdefault(a, name)
        return self._addr_names.get(addr)
