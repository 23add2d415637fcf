"""test_rela.py: the one relocation applier (input/rela.py): types, symbol values, what it skips; the loader agrees."""

from __future__ import annotations

import struct
from types import SimpleNamespace

import pytest

from fbt_audit.input import elf, rela
from fbt_audit.input.rela import RELA, SYM, Relocations, entries

SHN_ABS, SHN_UNDEF = 0xFFF1, 0
TEXT_BASE = 0x1000


def _object(relocs: list[tuple[int, int, int, int]]):
    """(data, headers) of a minimal object: section 1 is 32 bytes of 0x11 at TEXT_BASE, its symbols are
    null, .text (section symbol, value 0), `abs` (SHN_ABS, 0x5000), `ext` (undefined), `f` (.text+0x10)."""
    syms = [(0, 0, 0, 0, 0, 0), (0, 3, 0, 1, 0, 0), (1, 0x10, 0, SHN_ABS, 0x5000, 0), (2, 0x10, 0, SHN_UNDEF, 0, 0),
            (3, 0x12, 0, 1, 0x10, 4)]  # fmt: skip
    symtab = b"".join(SYM.pack(*s) for s in syms)
    rela = b"".join(RELA.pack(off, si << 32 | t, a) for off, si, t, a in relocs)
    text = b"\x11" * 32
    data = text + symtab + rela
    hdrs = [
        SimpleNamespace(sh_type="SHT_NULL", sh_info=0, sh_offset=0, sh_size=0),
        SimpleNamespace(sh_type="SHT_PROGBITS", sh_info=0, sh_offset=0, sh_size=32),
        SimpleNamespace(sh_type="SHT_SYMTAB", sh_info=0, sh_offset=32, sh_size=len(symtab)),
        SimpleNamespace(sh_type="SHT_RELA", sh_info=1, sh_offset=32 + len(symtab), sh_size=len(rela)),
    ]
    return data, hdrs


def test_entries_split_r_info_and_drop_a_partial_entry():
    blob = RELA.pack(8, 5 << 32 | 2, -4) + b"\xff" * 10
    assert list(entries(blob)) == [(8, 5, 2, -4)]


@pytest.mark.parametrize(
    "reloc, at, want",
    [
        ((0, 4, 1, 8), 0, struct.pack("<Q", TEXT_BASE + 0x18)),  # R_X86_64_64: S + A
        ((0, 1, 2, -4), 0, struct.pack("<i", TEXT_BASE - 4 - TEXT_BASE)),  # PC32: S + A - P
        ((4, 4, 4, -4), 4, struct.pack("<I", 0x10 - 4 - 4)),  # PLT32 to f, at .text+4
        ((0, 2, 10, 1), 0, struct.pack("<I", 0x5001)),  # R_X86_64_32 to an absolute symbol: its value
        ((0, 3, 11, 7), 0, struct.pack("<I", 7)),  # 32S to an undefined symbol: 0 + A
        ((0, 9, 1, 7), 0, b"\x11" * 8),  # a symbol past the table: not applied
        ((30, 1, 1, 7), 30, b"\x11" * 2),  # a field past the section: not applied
        ((0, 1, 24, 7), 0, b"\x11" * 8),  # a type it does not know: not applied
    ],
)
def test_applied(reloc, at, want):
    data, hdrs = _object([reloc])
    r = Relocations(data, hdrs, {1: TEXT_BASE})
    out = r.applied(1, data[:32], TEXT_BASE)
    assert out[at : at + len(want)] == want
    assert len(out) == 32 and out[:at] == b"\x11" * at


@pytest.mark.parametrize("small", [rela.SMALL, 0])  # fewer relocations than SMALL: one by one; 0: the numpy pass
def test_applied_many_is_applied_of_each(monkeypatch, small):
    """Relocations.applied_many: each section's bytes as applied() gives them alone and as they are applied one after
    another, whatever the relocations: in and out of order, overlapping (the later one wins), unaligned, past the
    section, of each type; sections of odd sizes. Both of its paths: by numpy, and one by one (few relocations)."""
    monkeypatch.setattr(rela, "SMALL", small)
    sets = [
        [(0, 4, 1, 8), (8, 1, 2, -4), (16, 4, 4, -4), (24, 2, 10, 1)],  # aligned, apart: written as words
        [(1, 4, 1, 8), (10, 1, 2, -4)],  # unaligned
        [(0, 4, 1, 8), (4, 1, 2, -4), (2, 2, 10, 1)],  # overlapping, out of order: the later one wins each byte
        [(30, 1, 1, 7), (0, 9, 1, 7), (4, 1, 24, 7), (28, 3, 11, 7)],  # past the section, the table; unknown type
        [],
    ]
    for relocs in sets:
        data, hdrs = _object(relocs)
        r = Relocations(data, hdrs, {1: TEXT_BASE})
        for size in (32, 29):
            part = (1, data[:size], TEXT_BASE)
            assert r.applied_many([part]) == [r.applied(*part)] == [r._applied_small(*part)], relocs
    data, hdrs = _object(sets[2])  # two sections patched by one RELA section's copies: each relocated alone
    hdrs = [*hdrs, SimpleNamespace(sh_type="SHT_RELA", sh_info=5, sh_offset=hdrs[3].sh_offset, sh_size=hdrs[3].sh_size)]
    r = Relocations(data, hdrs, {1: TEXT_BASE, 5: TEXT_BASE + 0x100})
    parts = [(1, data[:13], TEXT_BASE), (5, data[:32], TEXT_BASE + 0x100)]
    assert r.applied_many(parts) == [r.applied(i, c, b) for i, c, b in parts] == [r._applied_small(*p) for p in parts]


def test_symbol_values():
    data, hdrs = _object([])
    r = Relocations(data, hdrs, {1: TEXT_BASE})
    assert [r.symbol(i) for i in range(6)] == [0, TEXT_BASE, 0x5000, 0, TEXT_BASE + 0x10, None]
    assert list(r.patching) == [1] and list(r.of(2)) == []


def test_module_call_targets_and_tables_come_from_it(fixtures_built):
    """elf.load's call targets (PC32/PLT32 naming a symbol) are exactly the applier's relocations of the
    text sections that name a non-section symbol."""
    path = fixtures_built / "rules" / "FBT202" / "fail.o"
    k = elf.load(path)
    data = path.read_bytes()
    hdrs = elf.section_headers(path, data, len(data))
    bases = {i: s.addr for i, s in zip([i for i, h in enumerate(hdrs) if h.sh_flags & 2], k.sections, strict=False)}
    r = Relocations(data, hdrs, bases)
    want = set()
    for i in r.patching:
        if i in bases and hdrs[i].sh_flags & 4:
            for off, si, t, _a in r.of(i):
                info = SYM.unpack_from(r.symtab, si * SYM.size)[1]
                if t in (2, 4) and info & 0xF != 3:
                    want.add(bases[i] + off)
    assert set(k.call_targets) == want and want


def test_call_targets_last_named_relocation_wins():
    """CallTargets as the dict elf.load built one relocation at a time: a later relocation at a site wins, unless its
    symbol has no name (then the earlier one's stands); a site with only unnamed symbols is absent."""
    import numpy as np

    from fbt_audit.input.calltargets import CallTargets

    names = {1: "a", 2: "", 3: "c"}
    ct = CallTargets(np.array([0x10, 0x10, 0x20, 0x30, 0x30], dtype=np.uint64), np.array([1, 3, 2, 3, 2]),
                     lambda idx: [names[i] for i in idx], True)  # fmt: skip
    want = {0x10: "c", 0x30: "c"}
    assert dict(ct.items()) == want and len(ct) == 2 and ct == want and 0x20 not in ct
    assert [ct.get(a) for a in (0x10, 0x20, 0x30, 0x11, np.uint64(0x30))] == ["c", None, "c", None, "c"]
    assert ct.names_at(np.array([0x30, 0x20, 0x10, 0x5], dtype=np.uint64)) == ["c", None, "c", None]
    empty = CallTargets(np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.int64), lambda idx: [], False)
    assert not empty and empty.get(0x10) is None and dict(empty) == {}


@pytest.mark.parametrize("few", [rela._FEW, 0])  # symbols' S one by one (_few_symbols), or all over arrays (_values)
def test_numpy_pass_is_one_by_one_on_random_relocations(monkeypatch, few):
    """The numpy pass (_fields' type tables, _write's word and byte paths) gives the bytes of applying one relocation
    after another, on random sets: every type from 0 to 40 and 2**32 - 1, symbols in and past the table, offsets
    aligned or not, in or past the section (and near 2**64), overlapping or apart, addends of either sign."""
    import random

    monkeypatch.setattr(rela, "SMALL", 0)
    monkeypatch.setattr(rela, "_FEW", few)
    rng = random.Random(16)
    types = [*range(41), 0xFFFFFFFF, 1, 1, 2, 2, 4, 4]
    for _ in range(300):
        n = rng.randrange(1, 12)
        aligned = rng.random() < 0.5
        relocs = []
        for _k in range(n):
            t = rng.choice(types)
            off = rng.randrange(0, 36)
            if aligned:
                off -= off % (8 if t == 1 else 4)
            if rng.random() < 0.03:
                off = (1 << 64) - rng.randrange(1, 9)
            relocs.append((off, rng.choice([0, 1, 2, 3, 4, 5, 9]), t, rng.randrange(-(1 << 40), 1 << 40)))
        if rng.random() < 0.5:
            relocs.sort()
        data, hdrs = _object(relocs)
        r = Relocations(data, hdrs, {1: TEXT_BASE})
        for size in (32, 29, 24):
            part = (1, data[:size], TEXT_BASE)
            assert r.applied_many([part]) == [r.applied(*part)] == [r._applied_small(*part)], relocs
