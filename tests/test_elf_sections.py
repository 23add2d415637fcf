"""test_elf_sections.py: the loader's fast builders give what the slow ones did (new_section, section_headers)."""

from __future__ import annotations

import dataclasses
import shutil
import struct
import subprocess

import pytest

from fbt_audit.input import elf
from fbt_audit.model.errors import ElfFormatError
from fbt_audit.model.kernel import Section, new_section


def test_section_builder_is_the_dataclass():
    args = (".text", 0x1000, 0x40, 0x200, 6, True, False)
    fast, slow = new_section(*args), Section(*args)
    assert fast == slow and hash(fast) == hash(slow) and repr(fast) == repr(slow)
    assert [f.name for f in dataclasses.fields(Section)] == list(Section.__slots__)  # what new_section sets, in order
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.addr = 0


def _elf(sections: list[tuple[str, int, int, int]], size: int) -> bytes:
    """An ELF64 header, then the section headers (name, type, offset, size) and .shstrtab, padded to `size` bytes."""
    names = b"\0" + b"".join(n.encode() + b"\0" for n, *_ in sections) + b".shstrtab\0"
    shoff = 64
    rows, at = [bytes(64)], 1
    for name, typ, off, sz in sections:
        rows.append(elf.SHDR64.pack(at, typ, 0, 0, off, sz, 0, 0, 1, 0))
        at += len(name) + 1
    str_off = shoff + 64 * (len(sections) + 2)
    rows.append(elf.SHDR64.pack(at, 3, 0, 0, str_off, len(names), 0, 0, 1, 0))
    head = bytearray(64)
    head[:6] = b"\x7fELF\x02\x01"
    struct.pack_into("<HH", head, 16, 1, 62)
    struct.pack_into("<Q", head, 0x28, shoff)
    struct.pack_into("<HHH", head, 0x3A, 64, len(sections) + 2, len(sections) + 1)
    blob = bytes(head) + b"".join(rows) + names
    return blob + bytes(max(0, size - len(blob)))


def test_section_headers_names_and_bounds():
    data = _elf([(".text", 1, 0x100, 0x20), (".bss", 8, 0x300, 1 << 20)], 0x200)  # .bss: no bytes in the file
    secs = elf.section_headers("x.ko", data, len(data))
    assert [(s.name, s.sh_type, s.sh_offset, s.sh_size) for s in secs] == [
        ("", "SHT_NULL", 0, 0), (".text", "SHT_PROGBITS", 0x100, 0x20), (".bss", "SHT_NOBITS", 0x300, 1 << 20),
        (".shstrtab", "SHT_STRTAB", 64 * 5, 22)]  # fmt: skip
    bad = _elf([(".text", 1, 0x100, 0x20), (".data", 1, 0x1F0, 0x20)], 0x200)
    with pytest.raises(ElfFormatError, match="section .data extends past the end of the file"):
        elf.section_headers("x.ko", bad, len(bad))


_TEXT_SYMBOLS = """
	.text
	.globl f
	.type f, @function
f:	ret
	.size f, 1
.Lhidden:
	nop
"$x":
	nop
g:	nop
	.type h, @function
h:	nop
	.size h, 0
	.globl end_text
end_text:
	.section .init.text,"ax",@progbits
	.type i, @function
i:	ret
	.size i, 1
past = . + 8
	.section .data,"aw",@progbits
d:	.quad f
"""


@pytest.mark.skipif(shutil.which("as") is None, reason="needs GNU as")
def test_module_text_symbols_within_their_section_named_not_local(tmp_path):
    """A module's text symbols (elf._text_columns): FUNC/NOTYPE in an executable section and within it (not `end_text`
    at its end, nor `past` beyond it), not an assembler local (.Lhidden kept by as -L, the mapping symbol $x) nor
    data (d); an unsized one runs to the next symbol (g, h)."""
    src = tmp_path / "m.s"
    src.write_text(_TEXT_SYMBOLS)
    obj = tmp_path / "m.o"
    subprocess.run(["as", "-L", "-o", str(obj), str(src)], check=True)
    c = elf.load(obj).columns
    assert list(zip(c.addr, c.name, c.size, c.kind, c.bind, c.section, c.sized, strict=True)) == [
        (0x1000, "f", 1, "FUNC", "GLOBAL", ".text", True),
        (0x1003, "g", 1, "NOTYPE", "LOCAL", ".text", False),
        (0x1004, "h", 1, "FUNC", "LOCAL", ".text", False),
        (0x100E, "i", 1, "FUNC", "LOCAL", ".init.text", True),
    ]
