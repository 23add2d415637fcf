"""test_vmlinux_sites.py: the kernel tables and site rules (FBT2xx) on real bookworm 6.1 and 6.12 kernels and kvm.ko."""

from __future__ import annotations

import re
import struct
import subprocess
from bisect import bisect_right

import pytest
from elftools.elf.elffile import ELFFile

from fbt_audit.pipeline import api
from fbt_audit.sites.tables import read_tables

pytestmark = pytest.mark.kernel

RELA = struct.Struct("<QQq")


@pytest.fixture(scope="module")
def r61(k61):
    return api.audit(k61)


@pytest.fixture(scope="module")
def r612(k612):
    return api.audit(k612)


def verdict(result, name: str) -> tuple[str, str, str]:
    """(verdict, rules, variants other than disk) of the first patchpoint called name."""
    j = next(j for j in result.judgements if j.pp.name == name)
    live = ",".join(v.label for v in j.pp.variants[1:]) or "-"
    return j.verdict.label, ",".join(j.rule_ids) or "-", live


# --- exact verdicts by name ---------------------------------------------------------------------------------------

NAMED_61 = {
    # NOKPROBE_SYMBOL(do_int3) in arch/x86/kernel/traps.c, and on the int3 path itself
    "do_int3": ("unsafe", "FBT204,FBT207", "ftrace-nop"),
    "do_int3_user": None,  # inlined into exc_int3 in this build: no symbol
    "exc_int3": ("unsafe", "FBT204,FBT207", "-"),  # noinstr (DEFINE_IDTENTRY_RAW) and the int3 root
    "native_save_fl": ("deny", "FBT204", "-"),  # noinstr; pushf emulated from the saved flags
    "io_check_error.cold": ("deny", "FBT204,FBT206", "-"),  # .cold of a NOKPROBE function
    # an entry inside an .altinstructions site: `call *pv_ops.irq.save_fl` / pushf; pop %rax
    "xen_halt": ("safe", "-", "alt(!8*32+16),paravirt(call)"),
    "__SCT__tp_func_sys_enter": ("deny", "FBT201", "-"),  # static-call trampoline
    "sched_clock_tick": ("deny", "FBT201", "-"),  # a jump label (static_branch) at entry
    "start_kernel": ("deny", "FBT205", "ftrace-nop"),  # __init
    "name_to_dev_t.cold": ("refused", "FBT206", "-"),  # a .cold fragment
    "ftrace_call": ("refused", "FBT206", "-"),  # a label inside ftrace_caller
    # `jmp __x86_return_thunk` at entry (a .return_sites return): ret; int3 after boot, emulated
    "amd_brs_reset": ("safe", "-", "return-thunk(ret)"),
    "vfs_read": ("safe", "-", "ftrace-nop"),
}
NAMED_612 = {
    "exc_int3": ("unsafe", "FBT204,FBT207", "-"),
    "native_save_fl": ("deny", "FBT204", "-"),
    # the example: an entry (after endbr64) in an .altinstructions site, every variant safe
    "ibt_restore": ("safe", "-", "alt(3*32+21),alt(18*32+20)"),
    "__SCT__tp_func_sys_enter": ("deny", "FBT201", "-"),
    "sched_clock_tick": ("deny", "FBT201", "-"),
    "start_kernel": ("deny", "FBT205", "ftrace-nop"),
    "__pfx_vfs_read": ("refused", "FBT206", "-"),  # CALL_PADDING
    "__pfx_set_reset_devices": ("deny", "FBT205,FBT206", "-"),  # padding of an __init function
    "amd_brs_reset": ("safe", "-", "return-thunk(ret)"),
    "vfs_read": ("safe", "-", "ftrace-nop"),
}


def test_61_named_verdicts(r61):
    for name, want in NAMED_61.items():
        if want is None:
            assert all(j.pp.name != name for j in r61.judgements), name
            continue
        assert verdict(r61, name) == want, name


def test_612_named_verdicts(r612):
    for name, want in NAMED_612.items():
        assert verdict(r612, name) == want, name
    # the 6.12 cloud build splits off no .cold fragments (checked with nm: no symbol contains ".cold")
    assert not any(".cold" in j.pp.name for j in r612.judgements)


def test_pfx_and_non_entries_are_notes_counted_once(r612):
    pfx = [j for j in r612.judgements if j.pp.name.startswith("__pfx_")]
    assert len(pfx) == 49066
    assert all([f.rule_id for f in j.findings if f.rule_id == "FBT206"] == ["FBT206"] for j in pfx)
    assert {f.level.name for j in pfx for f in j.findings if f.rule_id == "FBT206"} == {"NOTE"}


def test_alternatives_at_entry_are_judged_not_denied(r61, r612):
    """kprobes accepts entries on alternatives (boot-time rewrites): FBT201 never fires for them alone."""
    for r, n in ((r61, 161), (r612, 149)):
        alt = [j for j in r.judgements if "alternative" in j.pp.facts]
        assert len(alt) == n
        assert not any(
            "FBT201" in j.rule_ids for j in alt if not j.pp.facts & {"jump-label", "static-call", "smp-lock"}
        )
        assert all(any(v.label.startswith("alt(") for v in j.pp.variants) for j in alt if j.pp.addr == j.pp.sym_addr)


def test_static_call_trampolines(r61, r612):
    for r, n in ((r61, 686), (r612, 3855)):
        sct = [j for j in r.judgements if j.pp.name.startswith("__SCT__")]
        assert len(sct) == n
        assert all("FBT201" in j.rule_ids for j in sct)


# --- every table parsed, counts checked independently -------------------------------------------------------------


def _rela(path, secname: str) -> list[tuple[int, int]]:
    """(r_offset, type) of every relocation in .rela<secname>, read with pyelftools' headers and struct."""
    with open(path, "rb") as f:
        elf = ELFFile(f)
        s = elf.get_section_by_name(".rela" + secname)
        data = s.data()
    return [(off, info & 0xFFFFFFFF) for off, info, _a in RELA.iter_unpack(data)]


def _symbols(path) -> dict[str, int]:
    out = {}
    for line in subprocess.run(["nm", str(path)], capture_output=True, text=True, check=True).stdout.splitlines():
        f = line.split()
        if len(f) == 3:
            out.setdefault(f[2], int(f[0], 16))
    return out


def test_61_table_counts_match_rela_sections(vmlinux61, k61):
    """Debian's -dbg vmlinux keeps .rela.* sections: one relocation per self-relative field, so the
    number of relocations at the first field of each entry is the entry count, from the linker."""
    t = read_tables(k61)
    syms = _symbols(vmlinux61)
    with open(vmlinux61, "rb") as f:
        elf = ELFFile(f)
        sec = {s.name: (s["sh_addr"], s["sh_size"], s["sh_offset"]) for s in elf.iter_sections()}

    def count(secname, start, stop, stride, nonzero=False):
        # in a linked image (ld --emit-relocs) r_offset is the field's address
        lo, hi = syms[start], syms[stop]
        offs = [o for o, _t in _rela(vmlinux61, secname) if lo <= o < hi and (o - lo) % stride == 0]
        if nonzero:  # ld resolves a field against discarded code to 0: the kernel skips those too
            with open(vmlinux61, "rb") as f:
                f.seek(sec[secname][2] + lo - sec[secname][0])
                blob = f.read(hi - lo)
            offs = [o for o in offs if blob[o - lo : o - lo + 4] != b"\0\0\0\0"]
        return len(offs)

    assert t.counts["jump_table"] == count(".rodata", "__start___jump_table", "__stop___jump_table", 16) == 6299
    assert t.counts["static_call_sites"] == count(".rodata", "__start_static_call_sites", "__stop_static_call_sites", 8)
    assert t.counts["kprobe_blacklist"] == count(
        ".init.data", "__start_kprobe_blacklist", "__stop_kprobe_blacklist", 8
    ) == 178  # fmt: skip
    # scripts/sorttable sorts __ex_table after the link; the relocations ld kept then carry r_offset 0,
    # so count them: two per entry (insn and fixup are relative; data is an immediate).
    assert t.counts["ex_table"] == len(_rela(vmlinux61, "__ex_table")) // 2 == 600
    assert t.counts["bug_table"] == count("__bug_table", "__start___bug_table", "__stop___bug_table", 12) == 7743
    assert t.counts["altinstructions"] == count(
        ".altinstructions", "__alt_instructions", "__alt_instructions_end", 12
    ) == 4667  # fmt: skip
    assert t.counts["parainstructions"] == count(
        ".parainstructions", "__parainstructions", "__parainstructions_end", 16
    ) == 3848  # fmt: skip
    for key, secname, start, stop in [
        ("smp_locks", ".smp_locks", "__smp_locks", "__smp_locks_end"),
        ("retpoline_sites", ".retpoline_sites", "__retpoline_sites", "__retpoline_sites_end"),
        ("return_sites", ".return_sites", "__return_sites", "__return_sites_end"),
    ]:
        assert t.counts[key] == count(secname, start, stop, 4, nonzero=True), key
    assert t.layouts["altinstructions"] == "alt_instr/12" and not t.problems


def _fentry_calls(kernel, fentry: int) -> set[int]:
    """Every `e8 rel32` in executable sections whose target is __fentry__, by a byte scan (no decoder)."""
    out = set()
    for s in kernel.sections:
        if not s.executable or s.nobits:
            continue
        blob = bytes(kernel.data[s.offset : s.offset + s.size])
        i = blob.find(b"\xe8")
        while 0 <= i <= len(blob) - 5:
            if s.addr + i + 5 + int.from_bytes(blob[i + 1 : i + 5], "little", signed=True) == fentry:
                out.add(s.addr + i)
            i = blob.find(b"\xe8", i + 1)
    return out


def test_61_mcount_loc_equals_fentry_calls(vmlinux61, k61):
    t = read_tables(k61)
    calls = _fentry_calls(k61, _symbols(vmlinux61)["__fentry__"])
    assert set(t.mcount) == calls and len(calls) == 40521


@pytest.mark.parametrize("which", ["61", "612"])
def test_jump_table_sites_hold_nops_or_jumps(which, k61, k612):
    k = k61 if which == "61" else k612
    t = read_tables(k)
    shapes = {bytes.fromhex("0f1f440000"), bytes.fromhex("6690")}
    ok = 0
    for a in t.jump:
        b = k.read(a, 5)
        if b in shapes or b[:2] == b"\x66\x90" or b[:1] in (b"\xe9", b"\xeb"):
            ok += 1
    assert ok == len(t.jump) == {"61": 6299, "612": 8977}[which]


def test_612_tables(k612):
    t = read_tables(k612)
    assert t.layouts["altinstructions"] == "alt_instr/14" and not t.problems
    assert "parainstructions" not in t.counts  # removed in 6.8
    assert {key: t.counts[key] for key in ("call_sites", "ibt_endbr_seal", "runtime_const", "kprobe_blacklist")} == {
        "call_sites": 229791, "ibt_endbr_seal": 12212, "runtime_const": 128, "kprobe_blacklist": 221}  # fmt: skip
    # every sealed ENDBR is an endbr64 on disk
    assert all(k612.read(a, 4) == bytes.fromhex("f30f1efa") for a in t.s32["ibt_endbr_seal"])


# --- FBT204 = the kprobes blacklist, recomputed ---------------------------------------------------------------------


def recomputed_blacklist(path) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """populate_kprobe_blacklist, from nm and the raw bytes of _kprobe_blacklist: each listed symbol's
    kallsyms extent (to the next text symbol's address), and the kprobes, noinstr and entry ranges."""
    syms = _symbols(path)
    with open(path, "rb") as f:
        elf = ELFFile(f)
        init = elf.get_section_by_name(".init.data")
        lo = syms["__start_kprobe_blacklist"] - init["sh_addr"]
        hi = syms["__stop_kprobe_blacklist"] - init["sh_addr"]
        raw = init.data()[lo:hi]
    listed = [a for (a,) in struct.iter_unpack("<Q", raw)]
    text = sorted(
        {
            int(f[0], 16)
            for line in subprocess.run(
                ["nm", str(path)], capture_output=True, text=True, check=True
            ).stdout.splitlines()
            if len(f := line.split()) == 3 and f[1] in "tTwW" and not f[2].startswith((".L", "$"))
        }
    )
    extents = [(a, text[bisect_right(text, a)]) for a in listed]
    ranges = [(syms[f"__{n}_text_start"], syms[f"__{n}_text_end"]) for n in ("kprobes", "noinstr", "entry")]
    return extents, ranges


def test_61_fbt204_is_the_kprobes_blacklist(vmlinux61, r61):
    extents, ranges = recomputed_blacklist(vmlinux61)
    spans = extents + ranges
    want = {j.pp.addr for j in r61.judgements if any(lo <= j.pp.addr < hi for lo, hi in spans)}
    denied = {j.pp.addr: j for j in r61.judgements if "FBT204" in j.rule_ids}
    # The documented additions: .cpuidle.text (separate from noinstr in 6.1) and suffixed copies.
    extra = {
        a
        for a, j in denied.items()
        if not {"deny:blacklist", "deny:noinstr", "deny:entry", "deny:kprobes"} & j.pp.facts
    }
    assert all(j.pp.facts & {"deny:cpuidle", "deny:blacklist-suffix"} for a, j in denied.items() if a in extra)
    assert set(denied) - extra == want
    # 374: the linker marker __entry_text_start, which the entry range starts at, is no patchpoint
    assert len(want) == 374 and len(extra) == 35  # extra: 19 in .cpuidle.text, 16 suffixed (foo.cold, foo.part.0)
    names = {denied[a].pp.name for a in want}
    assert {"do_int3", "exc_int3", "native_save_fl", "entry_SYSCALL_64", "exc_nmi", "poke_int3_handler"} <= names
    extra_names = {denied[a].pp.name for a in extra}
    assert {"default_idle", "intel_idle", "io_check_error.cold", "nmi_handle.part.0"} <= extra_names


# --- kvm.ko: tables with relocations applied --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kvm(image61):
    return sorted(image61.glob("lib/modules/*/kernel/arch/x86/kvm/kvm.ko"))[0]


def readelf_rela_targets(path, secname: str, stride: int) -> set[tuple[str, int]]:
    """(section, offset) each entry's first field points at, from readelf -r (symbol + addend)."""
    out = subprocess.run(["readelf", "-rW", str(path)], capture_output=True, text=True, check=True).stdout
    block = out.split(f"Relocation section '.rela{secname}'", 1)[1].split("Relocation section", 1)[0]
    got = set()
    for line in block.splitlines():
        m = re.match(r"\s*([0-9a-f]+)\s+[0-9a-f]+\s+(R_X86_64_\w+)\s+[0-9a-f]+\s+(\S+)\s*([+-])\s*([0-9a-f]+)", line)
        if m and int(m.group(1), 16) % stride == 0:
            add = int(m.group(5), 16) * (1 if m.group(4) == "+" else -1)
            if m.group(2) == "R_X86_64_PC32":
                add += 0  # S + A - P with the field at P: the site is S + A
            got.add((m.group(3), add))
    return got


def test_kvm_jump_table_and_mcount(kvm):
    r = api.audit(kvm)
    k = r.kernel
    t = read_tables(k)
    assert t.counts["jump_table"] == 278 and t.counts["mcount_loc"] == 1327 and not t.problems

    def where(a):
        s = k.section_at(a)
        return s.name, a - s.addr

    assert {where(a) for a in t.jump} == readelf_rela_targets(kvm, "__jump_table", 16)
    assert {where(a) for a in t.mcount} == readelf_rela_targets(kvm, "__mcount_loc", 8)
    # every ftrace site is the `call __fentry__` at a function's entry, matched to that function
    entries = {j.pp.addr: j.pp for j in r.judgements}
    for a in t.mcount:
        if a in entries:
            pp = entries[a]
            assert pp.insn.target_name == "__fentry__" and "ftrace-site" in pp.facts
    # 16 ftrace sites start static functions that kvm.ko carries no symbol for (objdump shows them as
    # kvm_vcpu_compat_ioctl+0x125 and the like): no patchpoint, as a kallsyms walker sees none either.
    unnamed = [a for a in t.mcount if a not in entries]
    assert len(unnamed) == 16
    assert all(k.call_targets.get(a + 1) == "__fentry__" for a in unnamed)
    by_name = {j.pp.name: j for j in r.judgements}
    assert "FBT201" not in by_name["kvm_vcpu_ioctl"].rule_ids
    # the jump labels land inside functions' bodies, each NOP or jmp
    assert all(k.read(a, 2) in (b"\x0f\x1f", b"\x66\x90") or k.read(a, 1) in (b"\xe9", b"\xeb") for a in t.jump)


# --- return patchpoints ---------------------------------------------------------------------------------------------


def test_61_returns(k61):
    r = api.audit(k61, returns=True)
    st = k61.return_stats
    # every .return_sites entry is found by the linear decode, at an instruction boundary
    assert st.return_sites == 50858 and st.return_sites_missed == []
    assert (st.returns, st.thunk_jumps, st.tail_calls) == (13, 50863, 18989)
    rets = [j for j in r.judgements if j.pp.site == "return"]
    assert len(rets) == st.returns + st.thunk_jumps
    vfs = [j for j in rets if j.pp.name == "vfs_read"]
    assert vfs and all(
        j.pp.probe_name == "kernel:vfs_read:return"
        and j.pp.insn.target_name == "__x86_return_thunk"
        and [v.label for v in j.pp.variants] == ["disk", "return-thunk(ret)"]
        and j.verdict.label == "safe"
        for j in vfs
    )
    # site rules apply to returns: do_int3's return is as denied as its entry
    assert {j.verdict.label for j in rets if j.pp.name == "do_int3"} == {"unsafe"}
    # the entries' judgements are the entry-only audit's
    entry_only = {j.pp.addr: (j.verdict, j.rule_ids) for j in api.audit(k61).judgements}
    assert {j.pp.addr: (j.verdict, j.rule_ids) for j in r.judgements if j.pp.site == "entry"} == entry_only


def test_612_returns_cross_check(k612):
    from fbt_audit.patchpoints.returns import return_patchpoints

    _pps, st = return_patchpoints(k612)
    # the two misses are thunk jumps inside .altinstr_replacement (use_tpause_delay's replacement
    # bodies), code that is no symbol's: the sweep decodes symbols' text only
    assert st.return_sites == 58151 and len(st.return_sites_missed) == 2
    assert {k612.section_at(a).name for a in st.return_sites_missed} == {".altinstr_replacement"}


def test_612_fbt204_is_the_kprobes_blacklist(vmlinux612, r612):
    """6.12 as 6.1; .cpuidle.text lies inside the noinstr range there, so only suffixed copies are extra."""
    extents, ranges = recomputed_blacklist(vmlinux612)
    spans = extents + ranges
    want = {j.pp.addr for j in r612.judgements if any(lo <= j.pp.addr < hi for lo, hi in spans)}
    denied = {j.pp.addr: j for j in r612.judgements if "FBT204" in j.rule_ids}
    core = {"deny:blacklist", "deny:noinstr", "deny:entry", "deny:kprobes"}
    extra = {a for a, j in denied.items() if not core & j.pp.facts}
    assert set(denied) - extra == want and len(want) == 668  # __entry_text_start, a linker marker, is none
    assert sorted(denied[a].pp.name for a in extra) == [
        "ct_user_enter.part.0", "ct_user_exit.part.0", "do_kern_addr_fault.part.0", "nmi_handle.part.0",
    ]  # fmt: skip
