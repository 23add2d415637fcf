"""test_bigsymtab.py: input/bigsymtab.py's name look-up (address_of) against a plain scan of the same symbols."""

from __future__ import annotations

import random
import struct
from types import SimpleNamespace

import pytest

from fbt_audit.input.bigsymtab import BigSymtab


def _symtab(names: list[bytes], shndx: list[int], tail: bytes) -> tuple[bytes, bytes, list[int]]:
    """Elf64_Sym records named `names` (each NUL-terminated in the string table, the table ending with `tail`
    without a NUL), and their st_name offsets."""
    strtab, offs = bytearray(b"\0"), []
    for nm in names:
        offs.append(len(strtab))
        strtab += nm + b"\0"
    offs.append(len(strtab))
    strtab += tail
    raw = b"".join(struct.pack("<IBBHQQ", o, 0x12, 0, s, 0x1000 + 16 * k, 0)
                   for k, (o, s) in enumerate(zip(offs, [*shndx, 1], strict=True)))  # fmt: skip
    return raw, bytes(strtab), offs


def _scan(strtab: bytes, offs: list[int], shndx: list[int], name: bytes) -> int | None:
    """The first defined symbol named `name`, one by one (the string table's end ends a name too)."""
    for k, o in enumerate(offs):
        end = strtab.find(b"\0", o)
        got = strtab[o : end if end >= 0 else len(strtab)]
        if got == name and 1 <= shndx[k] < 3:
            return 0x1000 + 16 * k
    return None


@pytest.mark.parametrize("seed", range(3))
def test_address_of_is_a_scan(seed):
    """Names of 1-20 bytes sharing prefixes and first 8 bytes, repeated (the first defined one wins), some in
    undefined sections, one at the string table's end without its NUL: address_of answers as a scan does."""
    rng = random.Random(seed)
    stems = [b"__start_", b"__stop__", b"a", b"ab", b"abcdefg", b"abcdefgh", b"x"]
    names = [rng.choice(stems) + bytes(rng.choice(b"_xyz") for _ in range(rng.randrange(0, 12))) for _ in range(400)]
    shndx = [rng.choice([0, 1, 1, 2, 0xFFF1]) for _ in names]
    raw, strtab, offs = _symtab(names, shndx, b"tail_at_end")
    secs = [SimpleNamespace()] * 3
    st = BigSymtab(raw, strtab, secs, {}, False)
    full_shndx = [*shndx, 1]
    for name in {*names, b"tail_at_end", b"tail", b"__start", b"abcdefgh_", b"zz"}:
        assert st.address_of(name.decode()) == _scan(strtab, offs, full_shndx, name), name
    assert st.address_of("") is None and st.address_of("a\0b") is None


def test_text_columns_as_the_module_path(monkeypatch):
    """The sample vmlinux's text symbols through BigSymtab (forced) equal elf._Symtab's: order (aliases by name),
    sizes (an unsized one runs to the next address), kinds, binds, sections."""
    from fbt_audit.input import elf

    from .conftest import SAMPLE

    plain = elf.load(SAMPLE).symbol_columns()
    monkeypatch.setattr(elf, "_INDEX_FROM", 0)
    big = elf.load(SAMPLE)
    assert type(big.finder.__self__) is BigSymtab
    cols = big.symbol_columns()
    assert cols == plain
    assert len(set(cols.addr)) < len(cols.addr) and not all(cols.sized)  # aliases, unsized ones
