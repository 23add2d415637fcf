"""rela.py: the one reader and applier of x86-64 RELA relocations in a relocatable ELF (a .ko, a .o)."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from functools import cache

# By struct, as the section headers are (elf.py): pyelftools' relocation handling copies and re-parses
# whole sections, and the loader, the table reader and the DWARF reader need only these five types.
R_X86_64_64, R_X86_64_PC32, R_X86_64_PLT32, R_X86_64_32, R_X86_64_32S = 1, 2, 4, 10, 11
RELA = struct.Struct("<QQq")  # Elf64_Rela: r_offset, r_info (symbol << 32 | type), r_addend
SYM = struct.Struct("<IBBHQQ")  # Elf64_Sym: the loader, the DWARF reader and the relocations read it
SHN_UNDEF, SHN_LORESERVE, SHN_ABS = 0, 0xFF00, 0xFFF1
_MASK64 = (1 << 64) - 1
_MASKS = {4: (1 << 32) - 1, 8: _MASK64}
SMALL = 48  # relocations from which applied() goes over arrays
_FEW = 32  # distinct symbols from which _few_symbols computes every symbol's S over arrays (_values), not one by one


def entries(blob) -> Iterator[tuple[int, int, int, int]]:
    """(r_offset, symbol index, type, r_addend) of each whole Elf64_Rela in a SHT_RELA section's bytes."""
    blob = blob[: len(blob) - len(blob) % RELA.size]
    return ((off, info >> 32, info & 0xFFFFFFFF, addend) for off, info, addend in RELA.iter_unpack(blob))


class Relocations:
    """A relocatable object's RELA sections, by the section each patches, and the symbols they name.

    `shdrs` are elf.section_headers' headers and `bases` the address given to each section the object
    loads (section index -> base); a symbol in any other section is at its offset there (base 0), as a
    DWARF section's reference into .debug_str is. The symbol table is the object's .symtab (an ET_REL
    has one); `symtab` passes its bytes when the caller has them already."""

    def __init__(self, data, shdrs: list, bases: dict[int, int], symtab: bytes | None = None) -> None:
        self.data, self.bases = data, bases
        if symtab is None:
            sym = next((h for h in shdrs if h.sh_type == "SHT_SYMTAB"), None)
            symtab = bytes(data[sym.sh_offset : sym.sh_offset + sym.sh_size]) if sym is not None else b""
        self.symtab = symtab
        self.nsyms = len(symtab) // SYM.size
        self.patching: dict[int, list] = {}  # section index -> the SHT_RELA headers that patch it, in file order
        self._known: dict[int, int | None] = {}  # symbol() by index, as _applied_small has asked it
        for h in shdrs:
            if h.sh_type == "SHT_RELA":
                self.patching.setdefault(h.sh_info, []).append(h)

    def columns(self, target: int) -> list[tuple]:
        """entries() of each RELA section that patches section `target`, as arrays (r_offset, symbol index,
        type, r_addend), in file order."""
        return [_columns(self.data, h) for h in self.patching.get(target, ())]

    def of(self, target: int) -> Iterator[tuple[int, int, int, int]]:
        """entries() of every RELA section that patches section `target`."""
        return ((off, info >> 32, info & 0xFFFFFFFF, addend) for off, info, addend in self._rela(target))

    def _rela(self, target: int):
        """(r_offset, r_info, r_addend) of each whole Elf64_Rela of every RELA section that patches `target`."""
        data = memoryview(self.data)
        for h in self.patching.get(target, ()):
            blob = data[h.sh_offset : h.sh_offset + h.sh_size]
            yield from RELA.iter_unpack(blob[: len(blob) - len(blob) % RELA.size])

    def symbol(self, si: int) -> int | None:
        """S, the address of symbol si: its section's base plus st_value; st_value when absolute; 0 when
        undefined or in another reserved section (resolved only when the kernel loads the module); None
        when si is past the table (the relocation names nothing and is not applied)."""
        if si >= self.nsyms:
            return None
        _name, _info, _other, shndx, value, _size = SYM.unpack_from(self.symtab, si * SYM.size)
        if SHN_UNDEF < shndx < SHN_LORESERVE:
            return self.bases.get(shndx, 0) + value
        return value if shndx == SHN_ABS else 0

    def applied(self, target: int, contents, base: int) -> bytes:
        """A copy of section `target`'s `contents`, loaded at `base`, with its relocations applied:
        S + A (R_X86_64_64, _32, _32S) or S + A - P (PC32, PLT32); a field past the section is skipped.
        Over arrays (a module's tables carry thousands): each field's bytes computed at once, and where
        fields overlap the later relocation's bytes win, as when they are applied one after another."""
        if sum(h.sh_size for h in self.patching.get(target, ())) < SMALL * RELA.size:
            return self._applied_small(target, contents, base)
        import numpy as np  # here, not at the top: the command line reaches this module before it parses options

        buf = np.frombuffer(bytes(contents), dtype=np.uint8).copy()
        size = len(buf)
        cols = self.columns(target)
        if not cols or not size:
            return bytes(buf)
        off, si, rtype, addend = (np.concatenate(c) for c in zip(*cols, strict=True))
        s, named = self._symbols(si)
        at, value, width = _fields(off, rtype, s + addend.view(np.uint64), np.uint64(base), np.uint64(size), named,
                                   np.uint64(0))  # fmt: skip
        _write(buf, at, value, width)
        return buf.tobytes()

    def applied_many(self, parts: list[tuple[int, object, int]]) -> list[bytes]:
        """applied() of each (target, contents, base) of parts, in one numpy pass over all their relocations (a
        module's kernel tables are a handful of sections with a few dozen relocations each: numpy's cost is per
        call, and a relocation one by one costs ~1 us). The same bytes as applied() of each: the sections lie
        apart in one buffer, and where fields of a section overlap the later relocation's bytes win."""
        hdrs = [self.patching.get(t, ()) for t, _c, _b in parts]
        if sum(h.sh_size for hs in hdrs for h in hs) < SMALL * RELA.size:  # most modules: a few dozen, one by one
            return [self._applied_small(t, c, b) for t, c, b in parts]
        import numpy as np

        bufs = [bytes(c) for _t, c, _b in parts]
        sizes = [len(b) for b in bufs]
        starts, pieces, at = [], [], 0
        for b in bufs:  # each section at an 8-aligned offset, so that aligned fields are written as words (_write)
            pad = -at % 8
            pieces += [bytes(pad), b]
            starts.append(at + pad)
            at += pad + len(b)
        pieces.append(bytes(-at % 8))
        off, si, rtype, addend, counts = joined(self.data, [h for hs in hdrs for h in hs])
        buf = np.frombuffer(b"".join(pieces), dtype=np.uint8).copy()
        if len(off):
            per_part, k = [], 0
            for hs in hdrs:  # each part's relocations: its RELA sections' counts
                per_part.append(sum(counts[k : k + len(hs)]))
                k += len(hs)
            # each relocation's part's base, size and start in buf: one array of the three, repeated
            pbase, psize, pstart = np.repeat(np.array([[b for _t, _c, b in parts], sizes, starts], dtype=np.uint64).T,
                                             per_part, axis=0).T  # fmt: skip
            s, named = self._few_symbols(si)
            _write(buf, *_fields(off, rtype, s + addend.view(np.uint64), pbase, psize, named, pstart))
        out = buf.tobytes()
        return [out[a : a + n] for a, n in zip(starts, sizes, strict=True)]

    def _applied_small(self, target: int, contents, base: int) -> bytes:
        """applied() one relocation after another, for a section with few (a numpy pass costs ~70 us whatever
        its size: most of a small module's tables hold a few dozen entries). The same bytes."""
        buf = bytearray(contents)
        size = len(buf)
        known = self._known  # S by symbol index: a table's relocations name a few symbols (its section's) many times
        for off, info, addend in self._rela(target):  # entries() without its generator: a module's tables have hundreds
            si, rtype = info >> 32, info & 0xFFFFFFFF
            if rtype == R_X86_64_64:
                width = 8
            elif rtype in (R_X86_64_PC32, R_X86_64_PLT32, R_X86_64_32, R_X86_64_32S):
                width = 4
            else:
                continue
            if off + width > size:
                continue
            s = known.get(si, known)
            if s is known:
                s = known[si] = self.symbol(si)
            if s is None:
                continue
            value = s + addend - (base + off if rtype in (R_X86_64_PC32, R_X86_64_PLT32) else 0)
            buf[off : off + width] = (value & _MASKS[width]).to_bytes(width, "little")
        return bytes(buf)

    def _symbols(self, si):
        """symbol() of each index in si, as uint64, and whether it names a symbol (si within the table)."""
        import numpy as np

        named = si < self.nsyms
        return self._values()[np.where(named, si, self.nsyms)], named

    def _few_symbols(self, si):
        """_symbols(si), each distinct index through symbol() (tables name a few symbols, their sections', many
        times: cheaper than _values() of every symbol, unless _values() is made already)."""
        import numpy as np

        if "_all" in self.__dict__:
            return self._symbols(si)
        n = self.nsyms
        # by a table of every symbol's S, 0 where not asked and past the table (not named): a set, not np.unique's sort
        few = [x for x in set(si.tolist()) if x < n]
        if len(few) > _FEW:  # many (a large module's __jump_table, __bug_table ...): every symbol's S over arrays
            return self._symbols(si)
        named = si < n
        s = np.zeros(n + 1, dtype=np.uint64)
        s[few] = [self.symbol(x) for x in few]
        return s[np.minimum(si, n)], named

    def _values(self):
        """symbol() of every symbol, as uint64, and a 0 past the last (for indices past the table): once per
        object, as the loader and each kernel table of a module relocate against the same symbols."""
        got = self.__dict__.get("_all")
        if got is not None:
            return got
        import numpy as np

        _RELA, _SYM = dtypes()
        syms = np.frombuffer(self.symtab, dtype=_SYM, count=self.nsyms) if self.nsyms else np.zeros(0, dtype=_SYM)
        shndx, value = syms["shndx"], syms["value"]
        loaded = {x: b for x, b in self.bases.items() if SHN_UNDEF < x < SHN_LORESERVE}
        base = np.zeros(max(loaded, default=0) + 2, dtype=np.uint64)  # the last slot: every other section (0)
        base[list(loaded)] = list(loaded.values())
        defined = (shndx > SHN_UNDEF) & (shndx < SHN_LORESERVE)
        s = np.where(defined, base[np.minimum(shndx, len(base) - 1)] + value,
                     np.where(shndx == SHN_ABS, value, np.uint64(0)))  # fmt: skip
        got = self._all = np.append(s.astype(np.uint64), np.uint64(0))
        return got


def joined(data, hdrs: list) -> tuple:
    """_columns of several SHT_RELA sections as one set (r_offset, symbol index, type, r_addend), and each one's
    count: their bytes joined and read once (numpy's cost is per call; a module has a few small ones). The symbol
    index and the type are r_info's halves read as uint32 fields (no shift or mask to compute)."""
    import numpy as np

    dt = dtypes()[0]
    counts = [max(0, min(h.sh_size, len(data) - h.sh_offset)) // dt.itemsize for h in hdrs]  # past the file: what is
    raw = b"".join(data[h.sh_offset : h.sh_offset + c * dt.itemsize] for h, c in zip(hdrs, counts, strict=True))
    a = np.frombuffer(raw, dtype=dt)
    return a["off"], a["sym"], a["type"], a["addend"], counts


def _fields(off, rtype, sa, base, size, named, start) -> tuple:
    """The relocations to apply of a numpy pass (applied, applied_many): each one's byte in the buffer (its r_offset
    plus `start`, its section's place there), value and width (int64), those of a known type whose field lies within
    its section (`size`) and whose symbol is in the table (`named`). sa is S + A; the value is S + A, or S + A - P
    for PC32 and PLT32 (P = base + r_offset), modulo 2**64. The type's width and whether it is PC-relative come from
    tables indexed by type (types from 16 up apply as none does): fewer numpy calls than a comparison per type."""
    import numpy as np

    width_of, pc_of = _type_tables()
    r = np.minimum(rtype, 15)
    width = width_of[r]  # 8, 4, or 0: a type not applied
    value = sa - pc_of[r] * (base + off)
    keep = named & (width > 0) & (off <= size) & (off + width <= size)
    return (off + start)[keep].astype(np.int64), value[keep], width[keep].astype(np.int64)


@cache
def _type_tables():
    """_fields' tables by relocation type (0-15, uint64): the field's width (0: not applied) and 1 for PC32/PLT32."""
    import numpy as np

    width, pc = np.zeros(16, dtype=np.uint64), np.zeros(16, dtype=np.uint64)
    width[R_X86_64_64] = 8
    width[[R_X86_64_PC32, R_X86_64_PLT32, R_X86_64_32, R_X86_64_32S]] = 4
    pc[[R_X86_64_PC32, R_X86_64_PLT32]] = 1
    return width, pc


def _write(buf, at, value, width) -> None:
    """Each relocation's value, `width` bytes little-endian, into the uint8 array buf at byte `at`; where fields
    overlap, the later relocation's bytes win, as when they are applied one after another."""
    import numpy as np

    ends = at + width
    apart = len(at) < 2 or bool((at[1:] >= ends[:-1]).all())  # in order, none overlapping: each byte written once
    if apart and not len(buf) % 8 and not (at & (width - 1)).any():  # each field aligned to its width: as words
        w8 = width == 8
        if w8.any():
            buf.view("<u8")[at[w8] >> 3] = value[w8]
            w4 = ~w8
            at, value = at[w4], value[w4]
        buf.view("<u4")[at >> 2] = value.astype(np.uint32)  # (the low 32 bits)
        return
    lanes = np.arange(8)
    at = (at[:, None] + lanes).reshape(-1)
    byte = ((value[:, None] >> (lanes * 8).astype(np.uint64)) & np.uint64(0xFF)).astype(np.uint8).reshape(-1)
    used = (lanes < width[:, None]).reshape(-1)
    if apart:
        buf[at[used]] = byte[used]
        return
    at, byte = at[used][::-1], byte[used][::-1]
    _u, last = np.unique(at, return_index=True)  # the last relocation to write each byte
    buf[at[last]] = byte[last]


@cache
def dtypes():
    """Elf64_Rela (r_info as its two halves: type, then symbol index) and Elf64_Sym as numpy record types."""
    import numpy as np

    return (np.dtype([("off", "<u8"), ("type", "<u4"), ("sym", "<u4"), ("addend", "<i8")]),
            np.dtype([("name", "<u4"), ("info", "u1"), ("other", "u1"), ("shndx", "<u2"), ("value", "<u8"),
                      ("size", "<u8")]))  # fmt: skip


def _columns(data, h) -> tuple:
    """entries() of one SHT_RELA section as arrays: r_offset, symbol index, type, r_addend."""
    return joined(data, [h])[:4]
