"""elf.py: load an x86-64 vmlinux (ET_EXEC) or kernel module (ET_REL) into a Kernel, fast and defensively."""

from __future__ import annotations

import bisect
import mmap
import operator
import os
import re
import struct
import sys
from array import array
from collections.abc import Callable
from functools import cached_property, lru_cache
from itertools import compress, repeat
from operator import eq, itemgetter
from pathlib import Path

from fbt_audit.input.calltargets import CallTargets
from fbt_audit.input.rela import R_X86_64_64, R_X86_64_PC32, R_X86_64_PLT32, SYM, Relocations
from fbt_audit.input.rela import dtypes as rela_dtypes
from fbt_audit.input.rela import joined as rela_joined
from fbt_audit.input.strtab import BIND as _BIND
from fbt_audit.input.strtab import KIND as _KIND
from fbt_audit.input.strtab import SHF_EXECINSTR, SHN_LORESERVE
from fbt_audit.input.strtab import TEXT_TYPE as _TEXT_TYPE
from fbt_audit.input.strtab import names_at as _names_at
from fbt_audit.input.strtab import sort_aliases as _sort_aliases
from fbt_audit.input.symbols import TEXT_TYPES, ExternalSymbols
from fbt_audit.model.errors import ElfFormatError, InputError, one_line
from fbt_audit.model.kernel import Kernel, Section, SymbolColumns, new_section

SymbolSource = ExternalSymbols | Callable[[list[Section], bytes], ExternalSymbols | None] | None

SHF_ALLOC = 0x2
SHN_UNDEF = 0
STT_SECTION = 3
NT_GNU_BUILD_ID = 3
MODULE_BASE = 0x1000  # first synthetic section base in a module
MODULE_SPACE = 1 << 40  # where a module's synthetic sections must end (x86-64 gives modules 1.5 GiB)
_INDEX_FROM = 20_000  # symbols from which address_of indexes st_name at once (a vmlinux; not a module)
_SCAN_STEPS = 64  # st_name scans one address_of may do before it indexes the table (a real name takes 1-3)


_LOCAL = (".L", "$")  # names a kallsyms walker never sees: assembler locals and mapping symbols
# Section and region markers the linker script defines (_stext, __entry_text_start, __stop_mcount_loc ...)
_MARKER = re.compile(r"_s?text$|_[se]inittext$|_etext$|__\w+_text_(start|end)$|__indirect_thunk_(start|end)$")
_END_MARKER = re.compile(r"_einittext$|_etext$|__\w+_end$|__stop_\w+$")  # a section's end, not a code label
_EXT_BIND = {"T": "GLOBAL", "t": "LOCAL", "W": "WEAK", "w": "WEAK"}  # nm letter -> binding


class _Elf:
    """The raw file, its ELF header checked and its section headers read (by struct: pyelftools'
    parse was a third of the time of a module's audit, 1.2 of 3.5 s over 400 modules); the symbol
    and relocation tables are bulk-read with struct too (20x faster on 130k symbols)."""

    def __init__(self, path: Path, data: bytes | None = None):
        if data is not None:  # a decompressed module or vmlinuz payload, already in memory
            self.data, size = data, len(data)
        else:
            try:
                fd = open(path, "rb")
            except IsADirectoryError:
                raise InputError(f"{path}: is a directory") from None
            except OSError as e:
                raise InputError(f"{path}: {e.strerror}") from None
            with fd:  # the map keeps the file: the descriptor is closed at once
                size = os.fstat(fd.fileno()).st_size
                if size == 0:
                    raise InputError(f"{path}: empty file")
                try:
                    self.data = mmap.mmap(fd.fileno(), 0, access=mmap.ACCESS_READ)
                except (OSError, ValueError) as e:  # ENOMEM: a 100 GB (sparse) file under an address-space limit
                    raise InputError(
                        f"{path}: cannot map {size} bytes: {getattr(e, 'strerror', None) or e}"
                    ) from None
        if size == 0:
            raise InputError(f"{path}: empty file")
        head = self.data[:64]
        if head[:4] != b"\x7fELF":
            raise InputError(f"{path}: not an ELF file (vmlinux, vmlinuz or .ko expected)")
        if len(head) < 64:
            raise ElfFormatError(f"{path}: truncated ELF header")
        if head[4] != 2:
            raise ElfFormatError(f"{path}: 32-bit ELF; fbt-audit reads x86-64 kernels only")
        if head[5] != 1:
            raise ElfFormatError(f"{path}: big-endian ELF; fbt-audit reads x86-64 kernels only")
        machine = struct.unpack_from("<H", head, 18)[0]
        if machine != 62:
            raise ElfFormatError(f"{path}: ELF machine {machine} is not x86-64 (EM_X86_64 = 62)")
        self.type = _ET.get(struct.unpack_from("<H", head, 16)[0], "ET_OTHER")
        if self.type not in ("ET_EXEC", "ET_REL", "ET_DYN"):
            raise ElfFormatError(f"{path}: ELF type {self.type} is neither a vmlinux nor a module")
        self.sections = section_headers(path, self.data, size)

    def contents(self, s) -> memoryview:
        h = s  # a _Shdr is its own header
        if h.sh_type == "SHT_NOBITS":
            return memoryview(b"")
        return memoryview(self.data)[h.sh_offset : h.sh_offset + h.sh_size]


_ET = {1: "ET_REL", 2: "ET_EXEC", 3: "ET_DYN", 4: "ET_CORE"}
_SHT = {0: "SHT_NULL", 1: "SHT_PROGBITS", 2: "SHT_SYMTAB", 3: "SHT_STRTAB", 4: "SHT_RELA", 7: "SHT_NOTE",
        8: "SHT_NOBITS", 9: "SHT_REL", 11: "SHT_DYNSYM"}  # fmt: skip
SHDR64 = struct.Struct("<IIQQQQIIQQ")  # Elf64_Shdr
SHN_XINDEX = 0xFFFF


class _Shdr:
    """One section header, shaped as the loader reads it: `name`, and `header.sh_*` (the header is itself)."""

    __slots__ = ("name", "sh_name", "sh_type", "sh_flags", "sh_addr", "sh_offset", "sh_size", "sh_link",
                 "sh_info", "sh_addralign", "sh_entsize")  # fmt: skip

    def __init__(self, fields: tuple, name: str = "") -> None:
        (self.sh_name, sh_type, self.sh_flags, self.sh_addr, self.sh_offset, self.sh_size, self.sh_link,
         self.sh_info, self.sh_addralign, self.sh_entsize) = fields  # fmt: skip
        self.sh_type = _SHT.get(sh_type) or f"SHT_{sh_type:#x}"
        self.name = name

    @property
    def header(self) -> _Shdr:
        return self


def section_headers(path: Path | str, data, size: int) -> list[_Shdr]:
    """The section header table (extended numbering included), names from .shstrtab; every section's
    contents checked to lie within the file."""
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    if shoff == 0:
        return []
    if shentsize != SHDR64.size:
        raise ElfFormatError(f"{path}: malformed ELF (section header size {shentsize}, not {SHDR64.size})")
    if shoff + SHDR64.size > size:
        raise ElfFormatError(f"{path}: section header table past the end of the file")
    first = SHDR64.unpack_from(data, shoff)
    if shnum == 0:  # extended numbering: the count is section 0's sh_size
        shnum = first[5]
    if shstrndx == SHN_XINDEX:  # and the string table index its sh_link
        shstrndx = first[6]
    if shoff + shnum * SHDR64.size > size:
        raise ElfFormatError(f"{path}: section header table ({shnum} entries) extends past the end of the file")
    fields = list(SHDR64.iter_unpack(data[shoff : shoff + shnum * SHDR64.size]))
    strtab = b""
    if 0 < shstrndx < shnum:
        _n, st_type, _f, _a, st_offset, st_size = fields[shstrndx][:6]
        if st_type != SHT_NOBITS and st_offset + st_size <= size:
            strtab = bytes(data[st_offset : st_offset + st_size])
    # strtab.names_at: '' for sh_name 0 or past the table, each name one line (one decode of the table, by slices)
    secs = list(map(_Shdr, fields, _names_at(strtab, list(map(_FIRST, fields)))))
    if max(map(operator.add, map(_OFFSET, fields), map(_SIZE, fields)), default=0) > size:  # some section ends past
        for sec in secs:  # the file (a .bss may: it takes no room there): is it one with contents?
            if sec.sh_type != "SHT_NOBITS" and sec.sh_size and sec.sh_offset + sec.sh_size > size:
                raise ElfFormatError(f"{path}: section {sec.name or '?'} extends past the end of the file")
    return secs


SHT_NOBITS = 8
_FIRST, _OFFSET, _SIZE = itemgetter(0), itemgetter(4), itemgetter(5)  # sh_name, sh_offset, sh_size of a header's fields


def _notes(blob: bytes, align: int):
    """(name, type, desc) of each ELF note in a SHT_NOTE section; a truncated note ends the walk."""
    pos = 0
    while pos + 12 <= len(blob):
        namesz, descsz, ntype = struct.unpack_from("<III", blob, pos)
        name_at = pos + 12
        desc_at = name_at + (namesz + align - 1) // align * align
        end = desc_at + (descsz + align - 1) // align * align
        if desc_at + descsz > len(blob):
            return
        yield blob[name_at : name_at + namesz].rstrip(b"\0"), ntype, blob[desc_at : desc_at + descsz]
        pos = end


def _column(raw: bytes, code: str, index: int, stride: int) -> array:
    """One field of every fixed-size record, e.g. st_value of each Elf64_Sym: array slicing in C."""
    col = array(code, raw)
    if sys.byteorder != "little":
        col.byteswap()
    return col[index::stride]


def _in(lo: bytes, hi: bytes, allowed) -> int:
    """Per-symbol flags, one 0/1 byte each packed into an int, for st_shndx (low and high bytes,
    one per symbol) in allowed. bytes.translate and int & do in C what a loop would do per symbol."""
    acc = 0
    for t_lo, t_hi in _tables(allowed if isinstance(allowed, range) else frozenset(allowed)):
        acc |= int.from_bytes(lo.translate(t_lo), "little") & int.from_bytes(hi.translate(t_hi), "little")
    return acc


@lru_cache(maxsize=1024)
def _tables(allowed: range | frozenset[int]) -> list[tuple[bytes, bytes]]:
    """_in's translation tables (low bytes, high byte) for each high byte among `allowed` (built once: a module
    tree asks the same few)."""
    by_hi: dict[int, set[int]] = {}
    for v in allowed:
        by_hi.setdefault(v >> 8, set()).add(v & 0xFF)
    return [(bytes(b in los for b in range(256)), bytes(b == h for b in range(256))) for h, los in by_hi.items()]


def _pick(seq, idx) -> list:
    """[seq[i] for i in idx], by one itemgetter of every index (2-3x faster than map(seq.__getitem__, idx))."""
    if len(idx) > 1:
        return list(itemgetter(*idx)(seq))
    return [seq[i] for i in idx]  # itemgetter of one index gives the item, not a tuple; of none, nothing


class _Symtab:
    """.symtab column-wise (Elf64_Sym: st_name u32, st_info u8, st_other u8, st_shndx u16, st_value
    u64, st_size u64): the filters run in C over every symbol, and a name is decoded only when asked
    for (a vmlinux has 130,000 symbols, of which the audit names the 50,000 text ones)."""

    def __init__(self, raw: bytes, strtab: bytes, secs: list, bases: dict[int, int], rel: bool):
        self.raw = raw = raw[: len(raw) - len(raw) % SYM.size]
        self.strtab = strtab
        self.n = len(raw) // SYM.size
        q = _column(raw, "Q", 0, 1)
        self.st_name, self.values, self.sizes = _column(raw, "I", 0, 6), q[1::3], q[2::3]
        self.shndx, self.info = _column(raw, "H", 3, 12), raw[4::24]
        # st_value is the address in a vmlinux; a module's symbols are relative to their section (addrs, made when
        # asked: the audit of a module needs only its text symbols' addresses, addrs_of).
        self.bases, self.rel = bases, rel
        self.limit = min(len(secs), SHN_LORESERVE)  # a defined symbol's st_shndx is in [1, limit)
        self.shndx_bytes = raw[6::24], raw[7::24]  # st_shndx's low and high bytes (_in), kept for _text_columns
        self.valid = _in(*self.shndx_bytes, range(1, self.limit))

    def names_of(self, idx) -> list[str]:
        return _names_at(self.strtab, _pick(self.st_name, idx))

    @cached_property
    def addrs(self) -> list[int] | array:
        """Each symbol's address."""
        if not self.rel:
            return self.values
        get = self.bases.get
        return [get(x, 0) + v for x, v in zip(self.shndx, self.values, strict=True)]

    def addrs_of(self, idx: list[int], shndx: list[int] | None = None) -> list[int]:
        """addrs of the symbols idx (shndx: their st_shndx, when the caller has picked them already)."""
        if not self.rel or "addrs" in self.__dict__:
            return _pick(self.addrs, idx)
        get = self.bases.get
        shndx = _pick(self.shndx, idx) if shndx is None else shndx
        return [get(x, 0) + v for x, v in zip(shndx, _pick(self.values, idx), strict=True)]

    def address_of(self, name: str) -> int | None:
        """names().get(name) without decoding every name: the first defined symbol whose st_name
        points at `name` NUL-terminated, wherever the string table holds it."""
        want = name.encode() + b"\0"
        if self.n > _INDEX_FROM or "_first" in self.__dict__:
            # sites.py asks ~35 names of a vmlinux: one index (15 ms) beats a scan of st_name per name (3 ms each)
            return self._address_by_offset(want)
        best = None
        steps = 0
        at = self.strtab.find(want, 1)
        while at > 0:
            i = -1
            while True:
                steps += 1
                if steps > _SCAN_STEPS:  # a name many times over (hostile input): index the table once
                    return self._address_by_offset(want)
                try:
                    i = self.st_name.index(at, i + 1)
                except ValueError:
                    break
                if best is not None and i >= best:
                    break
                if 0 < self.shndx[i] < self.limit:
                    best = i
                    break
            at = self.strtab.find(want, at + 1)
        return None if best is None else self.addrs[best]

    def _address_by_offset(self, want: bytes) -> int | None:
        """address_of in O(symbols + string table) whatever the input: one dict of the first defined
        symbol at each st_name, built once, then one look-up per place the table holds the name."""
        first = self.__dict__.get("_first")
        if first is None:
            vidx = list(compress(range(self.n), self.valid.to_bytes(self.n, "little")))
            first = self._first = dict(zip(reversed(_pick(self.st_name, vidx)), reversed(vidx), strict=True))
        best = None
        at = self.strtab.find(want, 1)
        while at > 0:
            i = first.get(at)
            if i is not None and (best is None or i < best):
                best = i
            at = self.strtab.find(want, at + 1)
        return None if best is None else self.addrs[best]

    def names(self) -> dict[str, int]:
        """Every defined symbol's name -> its address, the first symbol of a name winning."""
        vidx = list(compress(range(self.n), self.valid.to_bytes(self.n, "little")))
        names = dict(zip(reversed(self.names_of(vidx)), reversed(_pick(self.addrs, vidx)), strict=True))
        names.pop("", None)
        return names


def _build_id(e: _Elf) -> str | None:
    for s in e.sections:
        if s.sh_type == "SHT_NOTE":
            align = 8 if s.sh_addralign == 8 else 4
            for name, ntype, desc in _notes(bytes(e.contents(s)), align):
                if name == b"GNU" and ntype == NT_GNU_BUILD_ID:
                    return desc.hex()
    return None


_MODINFO_KEYS = (b"name", b"vermagic")  # what load() reads of .modinfo: decoding its ~20 other items cost ~2% a module


def _modinfo(e: _Elf) -> dict[str, str]:
    """The first value of each of _MODINFO_KEYS in .modinfo (key=value items, NUL-separated): found, not split
    into items (the first item starting 'key=' is the first whose key is `key`)."""
    for s in e.sections:
        if s.name == ".modinfo":
            out: dict[str, str] = {}
            blob = b"\0" + bytes(e.contents(s))
            for k in _MODINFO_KEYS:
                at = blob.find(b"\0" + k + b"=")
                if at >= 0:
                    at += len(k) + 2
                    end = blob.find(b"\0", at)
                    v = blob[at : end if end >= 0 else len(blob)]
                    out[k.decode("ascii")] = one_line(v.decode("utf-8", "replace"))
            return out
    return {}


def load(path: str | Path, *, data: bytes | None = None, symbols: SymbolSource = None) -> Kernel:
    """Load a vmlinux or module from `path` (or from `data`, its already decompressed bytes).

    The ELF's own .symtab always wins. Without one, `symbols` gives the symbols: ExternalSymbols, or
    a function of (sections, data) returning them or None (loader.py tries System.map, a kallsyms
    dump, then the image's embedded kallsyms in that order)."""
    path = path if isinstance(path, Path) else Path(path)  # Path(a Path) parses it again: ~20 us a module
    e = _Elf(path, data)
    rel = e.type == "ET_REL"
    secs = e.sections
    bases, model_secs = _section_bases(path, secs, rel)
    symtab = next((s for s in secs if s.sh_type == "SHT_SYMTAB"), None)  # _Shdr: its own header
    if symtab is None:
        return _load_external(path, e, model_secs, symbols)
    if symtab.sh_link >= len(secs):
        raise ElfFormatError(f"{path}: symbol table links to a missing string table")
    raw, strtab = bytes(e.contents(symtab)), bytes(e.contents(secs[symtab.sh_link]))
    if not rel and len(raw) // SYM.size > _INDEX_FROM:  # a vmlinux: numpy columns (bigsymtab.py)
        from fbt_audit.input.bigsymtab import BigSymtab

        st = BigSymtab(raw, strtab, secs, bases, rel)
        columns = st.text_columns(secs, bases)
    else:
        st = _Symtab(raw, strtab, secs, bases, rel)
        columns = _text_columns(st, secs, bases)
    lazy = {"names": st.names}
    if rel:
        relocs = Relocations(e.data, secs, bases, st.raw)
        call_targets, mcount = _module_relocations(e, st, bases, relocs)
        # what the kernel-table reader (sites/tables.py) would otherwise parse again
        lazy.update(elf_headers=lambda: secs, relocations=lambda: relocs)
        info = _modinfo(e)
        module = info.get("name") or path.name.split(".", 1)[0].replace("-", "_")
        release = info.get("vermagic", "").split(" ", 1)[0] or None
        display = f"{module}.ko"
    else:
        call_targets, mcount = {}, _mcount_sites(model_secs, st.address_of, e.data)
        module, display = "kernel", path.name
        release = _release_from_banner(model_secs, st.address_of("linux_banner"), e.data)
    return Kernel(
        path=str(path),
        display=display,
        kind="module" if rel else "vmlinux",
        module=module,
        release=release,
        build_id=_build_id(e),
        sections=model_secs,
        symbols=None,
        columns=columns,
        data=e.data,
        mcount_sites=frozenset(mcount),  # the same object when it is one already
        call_targets=call_targets,
        names=None,
        lazy=lazy,
        finder=st.address_of,
        symbol_source=".symtab",
    )


def _section_bases(path: Path, secs: list[_Shdr], rel: bool) -> tuple[dict[int, int], list[Section]]:
    """Section index -> base, and the model's sections, for the SHF_ALLOC sections: link-time addresses
    in a vmlinux, disjoint synthetic bases from MODULE_BASE up in a module."""
    bases: dict[int, int] = {}
    nxt = MODULE_BASE
    model_secs = []
    for i, h in enumerate(secs):  # _Shdr: its own header
        if not h.sh_flags & SHF_ALLOC:
            continue
        if rel:
            align = h.sh_addralign or 1  # max(x, 1) of an unsigned field, without the call
            nxt = (nxt + align - 1) // align * align
            bases[i] = nxt
            nxt += h.sh_size or 1
            if nxt > MODULE_SPACE:  # a .bss of 2^64 bytes or an alignment of 2^63: no module is that
                raise ElfFormatError(
                    f"{path}: section {h.name or '?'} (size {h.sh_size:#x}, alignment {h.sh_addralign:#x}) "
                    f"does not fit a module's address space"
                )
        else:
            bases[i] = h.sh_addr
        model_secs.append(
            # name (one line already: section_headers), addr, size, offset, flags, executable, nobits
            new_section(h.name, bases[i], h.sh_size, h.sh_offset, h.sh_flags, bool(h.sh_flags & SHF_EXECINSTR),
                        h.sh_type == "SHT_NOBITS")  # fmt: skip
        )
    return bases, model_secs


def _text_columns(st: _Symtab, secs: list[_Shdr], bases: dict[int, int]) -> SymbolColumns:
    """Text symbols: FUNC/NOTYPE in an executable section, within it (section end markers such as
    _etext and __*_text_end label no instruction), sorted by (addr, name); an unsized one runs to the
    next text symbol or its section's end."""
    ranges = [range(0)] * len(secs)
    execs = set()
    for i, sec in enumerate(secs):
        if sec.sh_flags & SHF_EXECINSTR and i in bases:
            ranges[i] = range(bases[i], bases[i] + sec.sh_size)
            execs.add(i)
    n, st_info = st.n, st.info
    cand = st.valid & _in(*st.shndx_bytes, execs) & int.from_bytes(st_info.translate(_TEXT_TYPE), "little")
    cidx = list(compress(range(n), cand.to_bytes(n, "little")))
    # Below, lists run over the candidates (position p for symbol cidx[p]); only their names are decoded.
    c_shndx = _pick(st.shndx, cidx)
    c_name = st.names_of(cidx)
    if st.rel:  # addrs_of by map (every candidate's section has a base: execs); within its section: st_value < sh_size
        c_value = _pick(st.values, cidx)
        c_addr = list(map(operator.add, map(bases.__getitem__, c_shndx), c_value))
        inside = map(operator.lt, c_value, map(_sizes(secs).__getitem__, c_shndx))
    else:
        c_addr = st.addrs_of(cidx, c_shndx)
        inside = map(operator.contains, map(ranges.__getitem__, c_shndx), c_addr)
    keep = list(compress(range(len(cidx)), inside))
    # ... named, and not an assembler local: the few such names found by map (in C) and dropped
    if "" in c_name or any(map(str.startswith, c_name, repeat(_LOCAL))):
        keep = [p for p in keep if c_name[p] and not c_name[p].startswith(_LOCAL)]
    keep.sort(key=c_addr.__getitem__)
    _sort_aliases(keep, _pick(c_addr, keep), c_name)
    t_addr = _pick(c_addr, keep)
    t_idx = _pick(cidx, keep)
    t_shndx = _pick(c_shndx, keep)
    t_size = _pick(st.sizes, t_idx)
    t_sized = list(map(bool, t_size))
    for p in compress(range(len(keep)), map(eq, t_size, repeat(0))):
        addr = t_addr[p]
        end = ranges[t_shndx[p]].stop
        q = bisect.bisect_right(t_addr, addr)
        t_size[p] = max((min(t_addr[q], end) if q < len(t_addr) else end) - addr, 1)
    sec_names = [sec.name for sec in secs]
    t_info = bytes(_pick(st_info, t_idx))
    return SymbolColumns(
        t_addr,
        _pick(c_name, keep),
        t_size,
        _pick(_KIND, t_info),
        _pick(_BIND, t_info),
        _pick(sec_names, t_shndx),
        t_sized,
    )


def _sizes(secs: list[_Shdr]) -> list[int]:
    """Each section's sh_size, by index."""
    return list(map(_SIZE_ATTR, secs))


_SIZE_ATTR = operator.attrgetter("sh_size")


def _module_relocations(e: _Elf, st: _Symtab, bases: dict[int, int],
                        relocs: Relocations) -> tuple[CallTargets, frozenset[int]]:  # fmt: skip
    """A module's relocated call targets (PC32/PLT32 in text naming a symbol, not a section: a call out
    of the module, by name) and its ftrace sites (R_X86_64_64 in __mcount_loc: S + A). The RELA sections of
    text are read as one set of numpy columns (a module has several: .text, .init.text, .exit.text ...); the
    call targets stay columns (CallTargets), whose names are decoded when asked."""
    import numpy as np  # here, not at the top: the command line reaches this module before it parses options

    secs = e.sections
    n = st.n
    text: list[tuple[int, object]] = []  # (the patched section's base, a RELA section's header), in file order
    mc_hdrs: list = []  # __mcount_loc's RELA sections, read with text's in one rela_joined (numpy's cost is per call)
    for i, hs in relocs.patching.items():
        if i not in bases:
            continue
        if secs[i].name == "__mcount_loc":
            mc_hdrs += hs
        elif secs[i].sh_flags & SHF_EXECINSTR:
            text += [(bases[i], h) for h in hs]
    off, si, rtype, addend, counts = rela_joined(e.data, mc_hdrs + [h for _b, h in text])
    m = sum(counts[: len(mc_hdrs)])
    abs64 = (si[:m] < n) & (rtype[:m] == R_X86_64_64)
    mc_sym, mc_add = si[:m][abs64].tolist(), addend[:m][abs64].tolist()
    values, shndx = st.values, st.shndx
    at: dict[int, int] = {}  # S of each symbol the sites name (most name one: .text's section symbol)
    for s in set(mc_sym):
        x = shndx[s]
        if x in bases:  # a site in a section the module loads
            at[s] = bases[x] + values[s] if x < SHN_LORESERVE else relocs.symbol(s)
    if len(at) == len(set(mc_sym)):
        mcount = frozenset(map(operator.add, map(at.__getitem__, mc_sym), mc_add))  # Kernel's own, not copied
    else:
        mcount = frozenset(at[s] + add for s, add in zip(mc_sym, mc_add, strict=True) if s in at)
    syms = np.frombuffer(st.raw, dtype=rela_dtypes()[1], count=n) if n else None
    if not text or not n:
        return _call_targets(st, syms, [], []), mcount
    off, si, rtype, counts = off[m:], si[m:], rtype[m:], counts[len(mc_hdrs) :]
    base = np.repeat(np.array([b for b, _h in text], dtype=np.uint64), counts)
    call = (si < n) & ((rtype == R_X86_64_PC32) | (rtype == R_X86_64_PLT32))
    call[call] = (syms["info"][si[call]] & 0xF) != STT_SECTION  # intra-module branch: resolved from the bytes
    at, tb = off[call], base[call]
    site = at + tb
    if (site < at).any():  # past 2**64 (a damaged r_offset): exact, as Python ints
        site = at.astype(object) + tb.astype(object)
    return _call_targets(st, syms, site, si[call]), mcount


def _call_targets(st: _Symtab, syms, site, si) -> CallTargets:
    """CallTargets of the call relocations' sites and symbol indices, in file order (a later one wins a site)."""
    import numpy as np

    if not len(site):
        return CallTargets(np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.int64), st.names_of, False)
    order = np.argsort(site, kind="stable")
    stn = syms["name"][si]
    strtab = st.strtab
    # a name is empty when st_name is 0, past the table, or at a NUL (strtab.names_at); the first one named ends the
    # walk (a module's first call names a symbol)
    named = any(0 < x < len(strtab) and strtab[x] for x in stn.tolist())
    return CallTargets(site[order], si[order], st.names_of, named)


def _mcount_sites(secs: list[Section], address_of, data) -> frozenset[int]:
    """A vmlinux's ftrace call sites: the u64 array between __start_mcount_loc and __stop_mcount_loc."""
    start, stop = address_of("__start_mcount_loc"), address_of("__stop_mcount_loc")
    if start is None or stop is None or stop <= start:
        return frozenset()
    kern = Kernel("", "", "vmlinux", "kernel", None, None, secs, [], data)
    blob = kern.read(start, stop - start)
    return frozenset(_column(blob[: len(blob) - len(blob) % 8], "Q", 0, 1))


def _load_external(path: Path, e: _Elf, secs: list[Section], symbols: SymbolSource) -> Kernel:
    """A stripped vmlinux: text symbols from an outside source, sized up to the next symbol."""
    if e.type == "ET_REL":
        raise ElfFormatError(f"{path}: module without a symbol table (.symtab)")
    ext = symbols(secs, e.data) if callable(symbols) else symbols
    if ext is None:
        raise ElfFormatError(
            f"{path}: stripped image (no .symtab) and no symbols found in it; "
            "give --system-map FILE (System.map of this build) or --kallsyms FILE (/proc/kallsyms of it)"
        )
    names: dict[str, int] = {}
    if not all(map(str.isprintable, ext.names)):  # as _names_at: no name may break a report's lines
        ext = ExternalSymbols(ext.source, ext.addrs, ext.types, list(map(one_line, ext.names)))
    for name, addr in zip(ext.names, ext.addrs, strict=True):
        names.setdefault(name, addr)
    execs = sorted((s.addr, s.addr + s.size, s.name) for s in secs if s.executable and not s.nobits and s.size)
    starts = [x[0] for x in execs]
    rows = set()
    for addr, kind, name in zip(ext.addrs, ext.types, ext.names, strict=True):
        if kind not in TEXT_TYPES or not name or name.startswith(_LOCAL):
            continue
        i = bisect.bisect_right(starts, addr) - 1
        if i >= 0 and addr < execs[i][1]:  # inside an executable section, not at its end marker
            if i > 0 and execs[i - 1][1] == addr and _END_MARKER.match(name):
                continue  # the previous section's end marker (_einittext where .altinstr_aux begins)
            rows.add((addr, name, kind, i))
    ordered = sorted(rows)
    t_addr = [r[0] for r in ordered]
    t_size = []
    for p, (addr, _name, _kind, i) in enumerate(ordered):
        q = bisect.bisect_right(t_addr, addr, p)
        end = execs[i][1]
        t_size.append(max((min(t_addr[q], end) if q < len(t_addr) else end) - addr, 1))
    columns = SymbolColumns(
        t_addr,
        [r[1] for r in ordered],
        t_size,
        # kallsyms and System.map do not tell functions from labels: linker-script markers are labels
        ["NOTYPE" if _MARKER.match(r[1]) else "FUNC" for r in ordered],
        [_EXT_BIND[r[2]] for r in ordered],
        [execs[r[3]][2] for r in ordered],
        [False] * len(ordered),
    )
    return Kernel(
        path=str(path),
        display=path.name,
        kind="vmlinux",
        module="kernel",
        release=_release_from_banner(secs, names.get("linux_banner"), e.data),
        build_id=_build_id(e),
        sections=secs,
        symbols=None,
        columns=columns,
        data=e.data,
        mcount_sites=_mcount_sites(secs, names.get, e.data),
        call_targets={},
        names=names,
        symbol_source=ext.source,
    )


def _release_from_banner(secs: list[Section], addr: int | None, data) -> str | None:
    """The release from linux_banner ('Linux version 6.1.0-56-amd64 (...)') at addr."""
    if addr is None:
        return None
    kern = Kernel("", "", "vmlinux", "kernel", None, None, secs, [], data)
    text = kern.read(addr, 256)
    prefix = b"Linux version "
    if not text.startswith(prefix):
        return None
    return text[len(prefix) :].split(b" ", 1)[0].decode("ascii", "replace") or None
