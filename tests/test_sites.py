"""test_sites.py: kernel-table layouts chosen from evidence; a table no layout fits is reported, never guessed."""

from __future__ import annotations

import subprocess

from fbt_audit.judge.result import AuditResult
from fbt_audit.pipeline import api
from fbt_audit.sites.layouts import choose_alt_layout
from fbt_audit.sites.tables import read_tables

from .conftest import ROOT

SRC = """
	.text
	.globl	f
	.type	f, @function
f:
	.byte	0x0f, 0x1f, 0x00
	ret
	.size	f, .-f
	.pushsection .altinstructions, "a"
	.long	f - ., .Lr - .
	{cpuid}
	.byte	3, 3
	{extra}
	.popsection
	.pushsection .altinstr_replacement, "ax"
.Lr:
	lfence
	.popsection
"""


def build(tmp_path, extra: str = "", cpuid: str = ".word 3*32+18"):
    src = tmp_path / "alt.S"
    src.write_text(SRC.format(extra=extra, cpuid=cpuid))
    obj = tmp_path / "alt.o"
    subprocess.run(["gcc", "-c", "-o", str(obj), str(src)], check=True)
    return obj


def test_alt_layout_from_evidence(tmp_path):
    k = api.load_kernel(build(tmp_path))
    t = read_tables(k)
    assert t.layouts["altinstructions"] == "alt_instr/12" and not t.problems  # the only size that divides
    (alt,) = t.alts
    assert (alt.feature, alt.negated, alt.instrlen, alt.repllen) == (3 * 32 + 18, False, 3, 3)


def test_alt_layout_that_fits_nothing_is_an_error(tmp_path):
    r = api.audit(build(tmp_path, ".byte 0, 0, 0"))  # 15 bytes: no struct alt_instr size divides it
    assert r.errors and "kernel table not read: .altinstructions" in r.errors[0]
    assert not read_tables(r.kernel).alts


def test_version_decides_between_fitting_layouts():
    # 84 bytes divide by 12 and by 14: the release picks, when every entry points into text
    blob = b"\x01" * 84  # every field 0x01..: lengths 1, offsets pointing "into text" below
    everywhere = lambda a: True  # noqa: E731
    assert choose_alt_layout(blob, 0, (6, 1), everywhere)[0].name == "alt_instr/12"
    assert choose_alt_layout(blob, 0, (6, 12), everywhere)[0].name == "alt_instr/14"
    lay, why = choose_alt_layout(blob, 0, None, everywhere)
    assert lay is None
    assert why == "size 84 fits several struct alt_instr layouts (14, 12, 13 bytes) and the version is unknown"


def test_alt_layout_14_reads_ft_flags(tmp_path):
    """The 6.3+ struct alt_instr: a u32 ft_flags (feature in the low 16 bits, ALT_FLAG_NOT at bit 16)."""
    t = read_tables(api.load_kernel(build(tmp_path, cpuid=".long (1 << 16) | (3*32+18)")))
    assert t.layouts["altinstructions"] == "alt_instr/14" and not t.problems  # 14 bytes: only /14 divides
    (alt,) = t.alts
    assert (alt.feature, alt.negated, alt.instrlen, alt.repllen) == (3 * 32 + 18, True, 3, 3)


RET_SRC = """
	.text
	.globl	f_two_returns
	.type	f_two_returns, @function
f_two_returns:
	testl	%edi, %edi
	je	1f
	.byte	0xc2, 0x08, 0x00		# ret $8
1:	jmp	__x86_return_thunk
.Lthunk_jmp = . - 5
	.size	f_two_returns, .-f_two_returns

	.globl	f_tail
	.type	f_tail, @function
f_tail:
	pushq	%rbp
	popq	%rbp
	jmp	f_two_returns			# a tail call: not a return
	.size	f_tail, .-f_tail

	.globl	f_nokprobe
	.type	f_nokprobe, @function
f_nokprobe:
	pushfq
	popq	%rax
	ret
	.size	f_nokprobe, .-f_nokprobe

	.pushsection .return_sites, "a"
	.long	.Lthunk_jmp - .
	.popsection
	.pushsection _kprobe_blacklist, "aw"
	.quad	f_nokprobe
	.popsection
"""


def test_return_patchpoints(tmp_path):
    src = tmp_path / "ret.S"
    src.write_text(RET_SRC)
    obj = tmp_path / "ret.o"
    subprocess.run(["gcc", "-c", "-o", str(obj), str(src)], check=True)
    r = api.audit(obj, "legacy-2011", returns=True)
    got = [
        (j.pp.probe_name, j.pp.symoff, j.pp.insn.text, [v.label for v in j.pp.variants], j.rule_ids)
        for j in r.judgements
        if j.pp.site == "return"
    ]
    assert got == [
        ("ret:f_two_returns:return", 4, "retq $8", ["disk"], []),
        ("ret:f_two_returns:return", 7, "jmp __x86_return_thunk", ["disk", "return-thunk(ret)"], []),
        ("ret:f_nokprobe:return", 2, "retq", ["disk"], ["FBT204"]),  # site rules apply to returns
    ]
    st = r.kernel.return_stats
    assert (st.returns, st.thunk_jumps, st.tail_calls, st.return_sites_missed) == (2, 1, 1, [])
    # entry-only by default
    assert {j.pp.site for j in api.audit(obj).judgements} == {"entry"}


def one_by_one_returns(path, table: str) -> None:
    """api.audit's --returns judgements (return rows as columns, merged with the entries) equal the return
    patchpoints built, annotated and judged one by one, merged with the entries by a sort."""
    from fbt_audit.judge.judge import judge_for
    from fbt_audit.judge.registry import select
    from fbt_audit.patchpoints.entry import entry_rows
    from fbt_audit.patchpoints.returns import return_rows
    from fbt_audit.sites.annotate import add_site_facts

    got = api.audit(path, table, returns=True)
    k = api.load_kernel(path)
    rets = return_rows(k)
    pps = [rets.built(i) for i in range(rets.n)]
    add_site_facts(k, pps, entry_rows(k, api.load_table(table)))  # the entries' names count (blacklist suffixes)
    judge = judge_for(api.load_table(table), select(None, None))
    entries = api.audit(path, table).judgements
    want = sorted(entries + list(map(judge, pps)), key=lambda j: (j.pp.addr, j.pp.site, j.pp.name))
    assert got.count() == len(want)
    assert got.with_findings() == [j for j in want if j.findings]
    assert got.verdict_counts() == AuditResult(k, None, want, []).verdict_counts()
    assert got.judgements == want


def test_return_rows_as_built_one_by_one_sample():
    for table in ("reference", "legacy-2011", "kprobes-6.1"):
        one_by_one_returns(ROOT / "fixtures" / "sample" / "vmlinux-sample", table)


def test_merged_rows_entry_before_return_at_one_address(tmp_path):
    """An entry and a return at one address: the entry first, as the sort by (address, site, name) puts them."""
    src = tmp_path / "tie.S"
    src.write_text(".text\n.globl f_ret\n.type f_ret,@function\nf_ret:\n\tret\n.size f_ret, 1\n"
                   ".globl g\n.type g,@function\ng:\n\tnop\n\tret\n.size g, 2\n")
    obj = tmp_path / "tie.o"
    subprocess.run(["gcc", "-c", "-o", str(obj), str(src)], check=True)
    r = api.audit(obj, "legacy-2011", returns=True)
    assert [(j.pp.name, j.pp.site, j.pp.symoff) for j in r.judgements] == [
        ("f_ret", "entry", 0), ("f_ret", "return", 0), ("g", "entry", 0), ("g", "return", 1),
    ]
