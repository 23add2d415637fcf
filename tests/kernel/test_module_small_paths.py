"""test_module_small_paths.py: a module's small-input paths give what the array paths give (locked 6.1 tree)."""

from __future__ import annotations

import struct

import pytest

from fbt_audit.input import elf, rela
from fbt_audit.input.calltargets import CallTargets
from fbt_audit.pipeline import api
from fbt_audit.pipeline.batch import module_files
from fbt_audit.sites import tables

pytestmark = pytest.mark.kernel

STEP = 7  # every 7th module of the 6.1 tree (575 of 4,023: small ones and kvm-sized ones alike)


@pytest.fixture(scope="module")
def modules61(image61):
    (tree,) = sorted(image61.glob("lib/modules/*"))
    return module_files(tree)[0][::STEP]


def _rows(result) -> list[tuple]:
    """Every judgement of a module: symbol, address, section offset, instruction, facts, and each finding exactly."""
    return [(j.pp.name, j.pp.addr, j.pp.section, j.pp.sec_off, j.pp.insn.raw, j.pp.insn.mnemonic, j.pp.insn.operands,
             j.pp.insn.target_name, tuple(sorted(j.pp.facts)), j.verdict.label,
             tuple((f.rule_id, f.level, f.variant, f.message) for f in j.findings))
            for j in result.judgements]  # fmt: skip


def _forced_arrays(monkeypatch) -> None:
    """Every module through the array paths: grouping by bytes, relocations and tables over numpy."""
    from fbt_audit.patchpoints import entry

    monkeypatch.setattr(entry, "GROUP_FROM", 0)
    monkeypatch.setattr(entry, "SMALL_ROWS", 0)
    monkeypatch.setattr(entry, "SMALL_SYMBOLS", 0)
    monkeypatch.setattr(rela, "SMALL", 0)
    monkeypatch.setattr(tables, "SMALL_TABLE", 0)


def test_small_paths_judge_as_the_array_paths(modules61, monkeypatch):
    """_decode_exact's per-row path under GROUP_FROM rows, applied() one relocation at a time and tables read by
    struct: the same rows, instructions, facts and findings (rule, level, variant, message) at the same symbols
    and addresses as the array paths, module by module. Both kinds of module are among those compared."""
    from fbt_audit.patchpoints.entry import GROUP_FROM, entry_rows

    table = api.load_table("reference")
    sizes = [entry_rows(api.load_kernel(p), table).n for p in modules61]
    assert min(sizes) < GROUP_FROM <= max(sizes) and sum(n < GROUP_FROM for n in sizes) > 100
    small = {p: _rows(api.audit(p, table)) for p in modules61}
    _forced_arrays(monkeypatch)
    for p in modules61:
        assert _rows(api.audit(p, table)) == small[p], p.name
    assert sum(len(r) for r in small.values()) > 10_000
    assert sum(f[0] == "FBT204" for r in small.values() for row in r for f in row[-1]) > 0


def _call_targets_one_by_one(path) -> dict[int, str]:
    """What elf.load built before CallTargets: one dict entry per PC32/PLT32 relocation in a loaded text section naming
    a non-section symbol with a name, in file order (a later one wins its site)."""
    data = path.read_bytes()
    hdrs = elf.section_headers(path, data, len(data))
    bases, _secs = elf._section_bases(path, hdrs, True)
    r = rela.Relocations(data, hdrs, bases)
    symtab = next(h for h in hdrs if h.sh_type == "SHT_SYMTAB")
    strtab = data[hdrs[symtab.sh_link].sh_offset : hdrs[symtab.sh_link].sh_offset + hdrs[symtab.sh_link].sh_size]
    out = {}
    for i in r.patching:
        if i in bases and hdrs[i].sh_flags & 4 and hdrs[i].name != "__mcount_loc":
            for off, si, t, _a in r.of(i):
                if si >= r.nsyms or t not in (rela.R_X86_64_PC32, rela.R_X86_64_PLT32):
                    continue
                st_name, info = struct.unpack_from("<IB", r.symtab, si * rela.SYM.size)
                name = strtab[st_name : strtab.index(b"\0", st_name)].decode() if st_name else ""
                if info & 0xF != 3 and name:
                    out[bases[i] + off] = name
    return out


def test_call_targets_are_the_dict_of_every_call_relocation(modules61):
    """CallTargets (sorted columns, names read when asked) answers as the dict of every call relocation built one by
    one: the same sites, the same names, looked up one at a time and all at once (names_at)."""
    import numpy as np

    sites = 0
    for p in modules61:
        want = _call_targets_one_by_one(p)
        got = api.load_kernel(p).call_targets
        assert isinstance(got, CallTargets)
        assert dict(got.items()) == want and bool(got) == bool(want), p.name
        probe = sorted(want)[:50] + [a + 1 for a in sorted(want)[:50]]
        assert [got.get(a) for a in probe] == [want.get(a) for a in probe]
        assert got.names_at(np.array(probe, dtype=np.uint64)) == [want.get(a) for a in probe]
        sites += len(want)
    assert sites > 50_000


def test_small_relocation_path_writes_the_same_bytes(modules61, monkeypatch):
    """applied() one relocation at a time (under rela.SMALL relocations) and over arrays: the same bytes, for every
    relocated section a module loads."""
    checked = 0
    for p in modules61[::3]:
        data = p.read_bytes()
        hdrs = elf.section_headers(p, data, len(data))
        bases, _secs = elf._section_bases(p, hdrs, True)
        r = rela.Relocations(data, hdrs, bases)
        for t in r.patching:
            h = hdrs[t]
            if t not in bases or h.sh_type == "SHT_NOBITS":
                continue
            contents = data[h.sh_offset : h.sh_offset + h.sh_size]
            monkeypatch.setattr(rela, "SMALL", 0)
            arrays = r.applied(t, contents, bases[t])
            monkeypatch.setattr(rela, "SMALL", 1 << 40)
            assert r._applied_small(t, contents, bases[t]) == arrays == r.applied(t, contents, bases[t]), (p, h.name)
            checked += 1
    assert checked > 1000


def test_tables_relocated_together_equal_each_alone(modules61):
    """Relocations.applied_many (a module's table sections in one numpy pass, or one by one when they have few
    relocations) gives each section the bytes applied() gives it alone, on every table section of the modules compared
    (both paths of each: few and many relocations)."""
    seen = 0
    for p in modules61:
        k = api.load_kernel(p)
        rd = tables._Reader(k)
        parts = [(i, rd._contents(i), rd.base[i]) for i in map(rd.index.get, tables._TABLE_SECTIONS)
                 if i is not None and i in rd.relocs.patching and rd.hdrs[i].sh_size and i in rd.base]  # fmt: skip
        if parts:
            alone = [rd.relocs.applied(i, c, b) for i, c, b in parts]
            assert rd.relocs.applied_many(parts) == alone, p.name
            assert [rd.pre[i] for i, _c, _b in parts] == alone, p.name
            seen += len(parts)
    assert seen > 1000


def test_group_memo_across_modules_judges_as_a_fresh_judge(modules61):
    """Judge.groups (alike()'s answers by shape, target name, ftrace site and facts, kept from module to module of a
    tree): every judgement of every module compared equals what a judge with empty memos gives it, and the memo was
    used (later modules find most of their groups in it)."""
    from fbt_audit.judge.judge import judge_for
    from fbt_audit.judge.registry import select

    table = api.load_table("reference")
    judge = judge_for(table, select(None, None))
    judge.groups.clear()
    shared = {p: _rows(api.audit(p, table)) for p in modules61[:150]}
    kept = len(judge.groups)
    assert kept > 50
    hits = 0
    for p in modules61[:150]:
        judge.groups.clear()
        judge._alike.clear()
        fresh = _rows(api.audit(p, table))
        assert fresh == shared[p], p.name
        hits += len(judge.groups)
    assert hits > kept * 3 // 2  # each module alone fills the memo anew: the shared run met many groups again


def test_group_memo_keys_leave_fact_values_out(modules61):
    """Judge.groups keys a row's facts as alike() does, without the values after the judge's fact prefixes (the
    function a `.cold` part belongs to): such groups of different modules share one entry, and every fact with a
    prefix in a key holds the placeholder instead of its value."""
    from fbt_audit.judge.judge import judge_for
    from fbt_audit.judge.registry import select

    table = api.load_table("reference")
    judge = judge_for(table, select(None, None))
    judge.groups.clear()
    for p in modules61[:150]:
        api.audit(p, table)
    params = judge.params
    valued = [k for k in judge.groups if k is not None and any(f.startswith(params) for f in k[3])]
    assert any("non-entry:cold:" in f for k in valued for f in k[3])
    assert all("\0" in f for k in valued for f in k[3] if f.startswith(params))


def _entry_state(rows) -> tuple:
    """What entry_rows leaves in an EntryRows: the columns, shapes and target names in their order, moves, aliases."""
    cols = tuple(getattr(rows, c).tolist() for c in ("sym_addr", "addr", "sec", "avail", "shape", "length", "target",
                                                     "tname", "ftrace"))  # fmt: skip
    return (cols, rows.offset, rows.shapes, rows.tnames, rows.moved, rows.aliases, rows.first, rows.kind, rows.end,
            sorted(rows.objs), rows.patchpoints())  # fmt: skip


def _moving_table(table):
    """table with `move` entries before its own for push, nopl, mov and call rel32: rows move on past endbr64, twice
    and more, and stop at their symbol's end."""
    import dataclasses

    from fbt_audit.model.abi import Handling, Target

    def move(opcode: str, mask: int = 0xFF):
        return dataclasses.replace(table.entries[0], opcode=bytes.fromhex(opcode), opcode_mask=mask, prefix=b"",
                                   rex_mask=0, rex_value=0, modrm_mask=0, modrm_value=0, target=Target.ANY,
                                   handling=Handling.MOVE, match_flags=0)  # fmt: skip

    return dataclasses.replace(table, entries=(move("50", 0xF8), move("0f1f"), move("89"), move("e8"), *table.entries))


def test_small_entry_pass_equals_the_array_pass(image612, monkeypatch):
    """entry_rows row by row in Python lists (_Small, under SMALL_ROWS rows; _group_symbols under SMALL_SYMBOLS) and
    over arrays: the same columns, shapes and target names numbered alike, moves and Patchpoints, on 6.12 modules
    (endbr64 moves nearly every function's row) under the reference table and one that moves further."""
    from fbt_audit.patchpoints import entry

    (tree,) = sorted(image612.glob("lib/modules/*"))
    kernels = [api.load_kernel(p) for p in module_files(tree)[0][::29]]
    reference = api.load_table("reference")
    small = moved = 0
    for table in (reference, _moving_table(reference)):
        lists = [_entry_state(entry.entry_rows(k, table)) for k in kernels]
        with monkeypatch.context() as m:
            m.setattr(entry, "SMALL_ROWS", 0)
            m.setattr(entry, "SMALL_SYMBOLS", 0)
            for k, want in zip(kernels, lists, strict=True):
                assert _entry_state(entry.entry_rows(k, table)) == want, k.module
        small += sum(len(s[0][0]) < entry.SMALL_ROWS for s in lists)
        moved += sum(len(s[4]) for s in lists if len(s[0][0]) < entry.SMALL_ROWS)
    assert small > 100 and moved > 1000
