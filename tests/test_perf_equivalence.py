"""test_perf_equivalence.py: the fast paths (decode cache, judgement memo, lazy names) agree with the plain ones."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import replace

import pytest
from elftools.elf.elffile import ELFFile

from fbt_audit.decode import insn as decode
from fbt_audit.input import elf
from fbt_audit.judge import registry
from fbt_audit.judge.judge import Judge, _shape
from fbt_audit.judge.rule import Rule
from fbt_audit.model.core import IC, Finding, Level, Variant
from fbt_audit.model.facts import EXTABLE, MID_INSTRUCTION, NON_ENTRY, WINDOW_TARGET
from fbt_audit.model.kernel import Kernel
from fbt_audit.patchpoints.entry import entry_patchpoints
from fbt_audit.pipeline import api
from fbt_audit.table import emulation as tables

from .conftest import SAMPLE

FIELDS = ("addr", "raw", "mnemonic", "operands", "prefixes", "rex", "opcode", "modrm_off", "classes", "target")


@contextmanager
def no_shape_cache():
    """decode() exactly as without the cache: nothing is looked up and nothing is remembered."""
    saved = decode._SHAPES, decode._LENGTHS, decode._MAX_SHAPES
    decode._SHAPES, decode._LENGTHS, decode._MAX_SHAPES = {}, [[] for _ in range(256)], 0
    try:
        yield
    finally:
        decode._SHAPES, decode._LENGTHS, decode._MAX_SHAPES = saved


def fields(insn) -> tuple:
    return tuple(getattr(insn, f) for f in FIELDS)


def plain(code: bytes, addr: int) -> tuple:
    with no_shape_cache():
        return fields(decode.decode(code, addr))


# Encodings whose decoding the cache must not change: relative branches of every width, prefixes
# and REX, RIP-relative and immediate operands, 0f 38/0f 3a and VEX maps, NOP and ENDBR forms,
# lone prefixes, opcodes invalid in 64-bit mode, and branches cut off by the end of the bytes.
CODES = [
    "55", "4157", "4889e5", "488b0510203000", "48c7c001000000", "e9fbffffff", "ebfe", "7405", "0f8400000000",
    "e30a", "e2fe", "e800000000", "66e800000000", "f2e900000000", "3e7405", "f30f1efa", "660f1f00",
    "0f1f440000", "660f1f440000", "90", "6690", "f390", "f3c3", "c3", "c20800", "9c", "9d", "fa", "fb", "cf",
    "48cf", "f3a4", "f348ab", "0f01f8", "0f0b", "cc", "cd80", "8ed0", "ff15f0ffffff", "ffe0", "41ffd3",
    "c4e27d18050000000000", "c5f877", "660f3a0fc108", "660f3800c1", "0f0f0000", "f0480fb10a", "2e0f1f840000000000",
    "06", "1f", "d6", "f0", "f3", "66", "0f", "e9ff", "74", "0fff", "62f17c48100500000000",
]  # fmt: skip


@pytest.mark.parametrize("hexcode", CODES)
def test_cached_decoding_matches_plain(hexcode):
    code = bytes.fromhex(hexcode)
    decode.decode(code + b"\x90" * 8, 0xFFFFFFFF81000000)  # fills the cache (or does not)
    for tail in (b"", b"\xcc" * 12, bytes(range(12))):
        for addr in (0x1000, 0xFFFFFFFF81234567, 0xFFFFFFFFFFFFFFF0):
            got = decode.decode(code + tail, addr)
            assert fields(got) == plain(code + tail, addr), (hexcode, tail.hex(), hex(addr))


def test_relative_branch_shapes_rebuild_the_target():
    decode.decode(bytes.fromhex("e9" + "10000000"), 0x1000)
    again = decode.decode(bytes.fromhex("e9" + "f0ffffff"), 0x2000)
    assert again.target == 0x2000 + 5 - 0x10 and again.operands == hex(again.target)
    assert fields(again) == plain(bytes.fromhex("e9f0ffffff"), 0x2000)


class CountingJudge(Judge):
    """A Judge that counts the patchpoints it judges itself, i.e. those its memo did not answer."""

    judged = 0
    insn_judged = 0

    def _judge(self, pp, part=None, looked=None):
        self.judged += 1  # the whole, or the site rules' half: once per patchpoint the memo did not answer
        self.insn_judged += part is None  # the instruction rules too: once per instruction key
        return super()._judge(pp, part, looked)


def by_shape(j: Judge) -> Judge:
    """j memoising by exact instruction shape only (as with a rule that does not declare Rule.insn_reads)."""
    j._fields = None
    return j


def judgements(pps, table, memo: bool):
    j = by_shape(CountingJudge(table, registry.select()))
    if not memo:
        j._verdicts = None
    return [(x.pp.name, x.pp.addr, x.handling, x.findings) for x in map(j, pps)], j.judged


def fixture_patchpoints(built, table) -> list:
    """Every rule fixture's patchpoints, annotated (facts, boot-time variants) as the audit annotates them."""
    objs = sorted((built / "rules").glob("FBT*/*.o"))
    assert len(objs) == 2 * len(registry.REGISTRY)
    return [j.pp for obj in objs for j in api.audit(obj, table).judgements]


@pytest.mark.parametrize("name", ["reference", "legacy-2011"])
def test_judgement_memo_matches_plain_judging(name, fixtures_built):
    """The memo answers a patchpoint whose variants and facts it has judged before; patchpoints with the same
    instruction and other facts (push %rbp in a deny region, an init section, on the handler path) are judged anew."""
    table = tables.load(name)
    pps = entry_patchpoints(elf.load(SAMPLE), table) + fixture_patchpoints(fixtures_built, table)
    keys = {(tuple(map(_shape, pp.variants)), pp.facts) for pp in pps}  # what the memo may answer from
    shapes = {shape for shape, _ in keys}
    assert len(shapes) < len(keys), "no instruction shape repeats with other facts"
    (memo, judged), (plain, plain_judged) = judgements(pps, table, True), judgements(pps, table, False)
    assert memo == plain
    assert (judged, plain_judged) == (len(keys), len(pps))  # each key judged once; the memo answered the rest
    assert len(keys) < len(pps)


def test_instruction_half_memoised_by_the_facts_it_reads(fixtures_built):
    """The instruction rules' findings are judged once per (variants, facts those rules read): a .cold part's
    fact names its function, so every .cold part is its own memo key, but not its own instruction judgement."""
    table = tables.load("reference")
    pps = entry_patchpoints(elf.load(SAMPLE), table) + fixture_patchpoints(fixtures_built, table)
    j = CountingJudge(table, registry.select())
    by_shape(j)
    prefixes = j._insn_facts
    assert prefixes == (EXTABLE, MID_INSTRUCTION, WINDOW_TARGET)
    got = [(x.pp.name, x.pp.addr, x.handling, x.findings) for x in map(j, pps)]
    plain = by_shape(CountingJudge(table, registry.select()))
    plain._insn_facts = None  # the whole judged at once, as before the split
    assert got == [(x.pp.name, x.pp.addr, x.handling, x.findings) for x in map(plain, pps)]
    keys = {(tuple(map(_shape, pp.variants)), pp.facts) for pp in pps}
    insn_keys = {(shape, frozenset(f for f in facts if f.startswith(prefixes))) for shape, facts in keys}
    assert (j.judged, j.insn_judged) == (len(keys), len(insn_keys))
    assert len(insn_keys) < len(keys)


def test_fact_values_left_out_of_the_memo_key():
    """Patchpoints that differ only in the function their .cold part or label belongs to are judged once (FBT206
    prints that name, no rule tests it: Rule.fact_params), each message naming its own function, as plain judging."""
    table = tables.load("reference")
    base = entry_patchpoints(elf.load(SAMPLE), table)[0]
    names = ["alpha", "beta", "gamma", "alpha"]
    pps = [replace(base, name=f"{n}.cold", facts=base.facts | {NON_ENTRY + "cold:" + n}) for n in names]
    pps += [replace(base, name="inner", facts=base.facts | {NON_ENTRY + "label:" + n}) for n in names[:2]]
    plain = CountingJudge(table, registry.select())
    plain._verdicts = None
    want = [x.findings for x in map(plain, pps)]
    for j in (CountingJudge(table, registry.select()), by_shape(CountingJudge(table, registry.select()))):
        assert j._params == (NON_ENTRY + "cold:", NON_ENTRY + "label:")
        got = [x.findings for x in map(j, pps)]
        assert got == want
        assert [f.message for fs in got for f in fs if f.rule_id == "FBT206"] == [
            *(f"not a function entry: a .cold fragment of {n}" for n in names),
            "not a function entry: a label inside alpha", "not a function entry: a label inside beta",
        ]
        assert j.judged == 2  # one per kind of fact, not one per function


def alike_key(table, pp) -> tuple:
    """What Judge.alike keys a patchpoint by, found here without the judge: per variant its label, IC classes and
    the table's (entry, handling, fixups); the facts with a .cold part's or label's function left out."""
    per = tuple((v.label, v.insn.classes, *table.handling(v.insn)) for v in pp.variants)
    params = (NON_ENTRY + "cold:", NON_ENTRY + "label:")
    return per, frozenset(next((p for p in params if f.startswith(p)), f) for f in pp.facts)


@pytest.mark.parametrize("name", ["reference", "legacy-2011"])
def test_alike_instructions_share_one_judgement(name, fixtures_built):
    """Patchpoints whose instructions differ only in what no rule reads (operands, registers, displacements: the
    moves that start .cold parts) are judged once per alike key, each message with its own instruction's text,
    as plain judging gives them."""
    table = tables.load(name)
    pps = entry_patchpoints(elf.load(SAMPLE), table) + fixture_patchpoints(fixtures_built, table)
    for code in ("488b0510203000", "488b0d20203000"):  # movq rip-relative into %rax, into %rcx
        insn = decode.decode(bytes.fromhex(code), pps[0].addr)
        pps.append(replace(pps[0], insn=insn, variants=(Variant("disk", insn),)))
    j = CountingJudge(table, registry.select())
    assert j._fields == ("classes",)
    got = [(x.pp.name, x.pp.addr, x.handling, x.findings) for x in map(j, pps)]
    plain = CountingJudge(table, registry.select())
    plain._verdicts = None
    assert got == [(x.pp.name, x.pp.addr, x.handling, x.findings) for x in map(plain, pps)]
    valid = [pp for pp in pps if not any(v.insn.classes & IC.INVALID for v in pp.variants)]
    invalid = {(tuple(map(_shape, pp.variants)), pp.facts) for pp in pps if pp not in valid}
    assert invalid, "no undecodable patchpoint: the shape path is not exercised"
    alike = {alike_key(table, pp) for pp in valid}
    assert j.judged == len(alike) + len(invalid)
    shapes = {(tuple(map(_shape, pp.variants)), pp.facts) for pp in valid}
    assert len(alike) < len(shapes)
    texts: dict[tuple, set[str]] = {}
    for pp in valid:
        texts.setdefault(alike_key(table, pp), set()).add(pp.insn.text)
    assert any(len(t) > 1 for t in texts.values()), "no judgement shared by two instructions"
    if name == "legacy-2011":  # the two moves share one judgement, each message with its own instruction
        assert [x[3] for x in got[-2:]] == [
            [Finding("FBT114", Level.NOTE, "movq 0x302010(%rip), %rax refused by table entry 'riprel'")],
            [Finding("FBT114", Level.NOTE, "movq 0x302020(%rip), %rcx refused by table entry 'riprel'")],
        ]
        assert alike_key(table, pps[-1]) == alike_key(table, pps[-2])


def test_a_rule_reading_an_undeclared_insn_field_fails_loudly():
    """check() sees only the Insn fields the rules declare (Rule.insn_reads): a rule that reads another one fails,
    instead of sharing a judgement among instructions it tells apart."""

    class ReadsRaw(Rule):
        id, insn_reads, facts_read, facts_only = "FBT208", ("classes",), (), True

        def check(self, site):
            return site.insn.raw.hex()

    table = tables.load("reference")
    pp = entry_patchpoints(elf.load(SAMPLE), table)[0]
    with pytest.raises(AttributeError, match="raw"):
        Judge(table, [*registry.select(), ReadsRaw()])(pp)
    ReadsRaw.insn_reads = None  # undeclared: no sharing, judged on the real instruction
    j = Judge(table, [*registry.select(), ReadsRaw()])
    assert j._fields is None and j(pp).findings[-1].message == pp.insn.raw.hex()


def test_judgement_memo_is_off_with_site_rules():
    class SiteRule(Rule):
        id = "FBT201"

        def check(self, site):
            return site.pp.name

    assert Judge(tables.load("reference"), [*registry.select(), SiteRule()])._verdicts is None


def names_the_plain_way(path) -> dict[str, int]:
    """Kernel.names as the loader defined it before it was lazy: every defined symbol's name, the first wins."""
    with open(path, "rb") as f:
        e = ELFFile(f)
        nsec = e.num_sections()
        out: dict[str, int] = {}
        for sym in e.get_section_by_name(".symtab").iter_symbols():
            shndx = sym["st_shndx"]
            if isinstance(shndx, int) and 0 < shndx < nsec and sym.name:
                out.setdefault(sym.name, sym["st_value"])
        return out


def test_lazy_names_and_symbols_match_eager_ones():
    k = elf.load(SAMPLE)
    assert "names" not in vars(k) and "symbols" not in vars(k)  # nothing on the audit's path built them
    assert k.names == names_the_plain_way(SAMPLE)
    cols = k.symbol_columns()
    assert [(s.addr, s.name, s.size, s.kind, s.bind, s.section, s.sized) for s in k.symbols] == list(
        zip(cols.addr, cols.name, cols.size, cols.kind, cols.bind, cols.section, cols.sized, strict=True)
    )
    assert k.symbols == sorted(k.symbols, key=lambda s: (s.addr, s.name))


def test_name_at_prefers_a_name_without_underscore_among_text_symbols():
    k = elf.load(SAMPLE)
    cols = k.symbol_columns()
    for addr in set(cols.addr):
        here = [n for a, n in zip(cols.addr, cols.name, strict=True) if a == addr]
        assert k.name_at(addr) == min(here, key=lambda n: (n.startswith("_"), n))
    assert k.name_at(1) is None


def test_hand_built_kernel_still_has_eager_fields():
    k = Kernel("p", "p", "vmlinux", "kernel", None, None, sections=[], symbols=[], data=b"", names={"x": 1})
    assert k.symbols == [] and k.names == {"x": 1} and k.name_at(1) is None


@pytest.mark.kernel
@pytest.mark.parametrize("image", ["vmlinux61", "vmlinux612"])
def test_real_kernel_fast_paths_match_plain_ones(image, request):
    """Every instruction enumeration decoded (entry and moved) equals capstone's answer without the cache,
    and the memoised judgements equal plain ones under every named table."""
    kernel = elf.load(request.getfixturevalue(image))
    table = api.load_table("reference")
    pps = entry_patchpoints(kernel, table)
    bad = []
    for pp in pps:
        for insn in (*pp.moved, pp.insn):
            if fields(insn) != plain(kernel.read(insn.addr, 15), insn.addr):
                bad.append(f"{pp.name}@{insn.addr:x}")
    assert not bad, bad[:10]
    for name in tables.NAMED:
        t = tables.load(name)
        pps = entry_patchpoints(kernel, t)
        assert judgements(pps, t, True)[0] == judgements(pps, t, False)[0], name


@pytest.mark.parametrize("release", ["6.1", "6.12"])
def test_site_facts_kept_in_columns_match_built_rows(release, image61, image612):
    """Rows that a kernel table or their name only gives facts stay columns (EntryRows.site_facts) and are judged
    once per shape and facts: every patchpoint and judgement equals the one of the rows built and annotated as
    objects one by one (EntryRows.build_all), on a sample of real modules (6.12: nearly every row has a fact)."""
    from fbt_audit.judge.judge import Judge
    from fbt_audit.judge.rows import judge_rows
    from fbt_audit.patchpoints.entry import entry_rows
    from fbt_audit.pipeline.batch import module_files
    from fbt_audit.sites.annotate import add_site_facts

    image = image61 if release == "6.1" else image612
    mods = module_files(next((image / "lib" / "modules").iterdir()) / "kernel" / "drivers" / "net" / "ethernet")[0]
    table = tables.load(None)
    rules = registry.select(None, None)
    kept = shared = 0
    for path in mods[::8]:
        k = api.load_kernel(path)
        rows = entry_rows(k, table)
        add_site_facts(k, [], rows)
        kept += len(rows.site_facts)
        judged = judge_rows(Judge(table, rules), rows)
        shared += len(judged.shared)  # rows judged from their columns (Judge.alike), never built for it
        fast = judged.judgements()
        k2 = api.load_kernel(path)
        every = entry_rows(k2, table)
        every.build_all()
        add_site_facts(k2, [], every)
        judge = Judge(table, rules)
        plain = [judge(every.patchpoint(i)) for i in range(every.n)]
        assert fast == plain, path
    assert kept > 0 and shared > 0


def test_read_many_matches_read():
    """Kernel.read_many (a table's sites read over arrays) gives read()'s bytes at every address: a section's
    first and last byte, one past its end, before every section, and addresses no u64 holds."""
    k = elf.load(SAMPLE)
    addrs = [0, 1, (1 << 64) - 1]
    for s in k._sec_sorted:
        addrs += [s.addr - 1, s.addr, s.addr + 1, s.addr + s.size - 2, s.addr + s.size - 1, s.addr + s.size]
    for n in (1, 2, 5, 16):
        assert k.read_many(addrs, n) == [k.read(a, n) for a in addrs], n
    assert any(k.read_many(addrs, 2)) and k.read_many([-5, 1 << 65], 2) == [b"", b""] and k.read_many([], 2) == []


def test_a_rule_testing_the_insn_text_fails_loudly():
    """check() may print Insn.text but not test it (Rule.insn_reads): in a shared judgement the text is a
    placeholder, and comparing or searching it raises instead of judging every instruction alike."""

    class TestsText(Rule):
        id, insn_reads, facts_read, facts_only = "FBT208", ("classes",), (), True

        def check(self, site):
            return "pushf seen" if "pushf" in site.insn.text else None

    class PrintsText(Rule):
        id, insn_reads, facts_read, facts_only = "FBT209", ("classes",), (), True

        def check(self, site):
            return site.insn.text  # the bare text as the message: given back as a plain str

    table = tables.load("reference")
    pp = entry_patchpoints(elf.load(SAMPLE), table)[0]
    with pytest.raises(TypeError, match="tested Insn.text"):
        Judge(table, [*registry.select(), TestsText()])(pp)
    got = Judge(table, [*registry.select(), PrintsText()])(pp).findings[-1]
    assert got.message == pp.insn.text and type(got.message) is str


@pytest.mark.parametrize("name", ["reference", "legacy-2011"])
def test_variant_classes_judge_as_each_row(name, monkeypatch):
    """judge.rows judges entry rows with their variants read once per variant class (shape, target class, ftrace
    site: judge.rows._variant_classes) as it judges them row by row from variant_inputs: the same shared
    judgements, handling, copies and built rows."""
    from fbt_audit.judge import rows as jrows
    from fbt_audit.judge.judge import judge_for

    got, calls = {}, []
    by_class = jrows._alike_by_class
    monkeypatch.setattr(jrows, "_alike_by_class", lambda *a: calls.append(1) or by_class(*a))
    monkeypatch.setattr(jrows, "CLASSES_FROM", 0)  # the sample has fewer groups than a vmlinux
    for mode in ("classes", "rows"):
        if mode == "rows":
            monkeypatch.setattr(jrows, "_variant_classes", lambda rows: None)
        table = tables.load(name)
        result = api.audit(elf.load(SAMPLE), table)
        j = result.rows.entries if hasattr(result.rows, "entries") else result.rows
        got[mode] = (j.shared, j.handling, j.copies, {i: x.findings for i, x in j.judged.items()}, j.group.tolist())
    assert got["classes"] == got["rows"] and calls == [1]
    assert judge_for(tables.load(name), registry.select()).reads_shape_only


def test_u64_sites_leave_out_what_is_no_address():
    """entry._u64_sites: a table's sites as uint64, those below 0 or past 2**64 (a malformed table's) left out."""
    from fbt_audit.patchpoints.entry import _u64_sites

    assert sorted(_u64_sites(frozenset({5, 1 << 63, 7})).tolist()) == [5, 7, 1 << 63]
    assert sorted(_u64_sites(frozenset({5, -1, 1 << 64, 7})).tolist()) == [5, 7]
    assert _u64_sites(frozenset()).tolist() == []
