"""rela.py: the one reader and applier of x86-64 RELA relocations in a relocatable ELF (a .ko, a .o)."""

from __future__ import annotations

import struct
from collections.abc import Iterator

# By struct, as the section headers are (elf.py): pyelftools' relocation handling copies and re-parses
# whole sections, and the loader, the table reader and the DWARF reader need only these five types.
R_X86_64_64, R_X86_64_PC32, R_X86_64_PLT32, R_X86_64_32, R_X86_64_32S = 1, 2, 4, 10, 11
RELA = struct.Struct("<QQq")  # Elf64_Rela: r_offset, r_info (symbol << 32 | type), r_addend
SYM = struct.Struct("<IBBHQQ")  # Elf64_Sym: the loader, the DWARF reader and the relocations read it
SHN_UNDEF, SHN_LORESERVE, SHN_ABS = 0, 0xFF00, 0xFFF1
_MASK64 = (1 << 64) - 1


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
        for h in shdrs:
            if h.sh_type == "SHT_RELA":
                self.patching.setdefault(h.sh_info, []).append(h)

    def of(self, target: int) -> Iterator[tuple[int, int, int, int]]:
        """entries() of every RELA section that patches section `target`."""
        for h in self.patching.get(target, ()):
            yield from entries(memoryview(self.data)[h.sh_offset : h.sh_offset + h.sh_size])

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
        S + A (R_X86_64_64, _32, _32S) or S + A - P (PC32, PLT32); a field past the section is skipped."""
        buf = bytearray(contents)
        size = len(buf)
        for off, si, rtype, addend in self.of(target):
            s = self.symbol(si)
            if s is None:
                continue
            if rtype == R_X86_64_64 and off + 8 <= size:
                struct.pack_into("<Q", buf, off, (s + addend) & _MASK64)
            elif rtype in (R_X86_64_PC32, R_X86_64_PLT32) and off + 4 <= size:
                struct.pack_into("<I", buf, off, (s + addend - (base + off)) & 0xFFFFFFFF)
            elif rtype in (R_X86_64_32, R_X86_64_32S) and off + 4 <= size:
                struct.pack_into("<I", buf, off, (s + addend) & 0xFFFFFFFF)
        return bytes(buf)
