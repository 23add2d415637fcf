"""test_vmlinuz.py: bookworm's stripped vmlinuz audited alone (embedded kallsyms) against its -dbg vmlinux."""

from __future__ import annotations

import struct
import time
from pathlib import Path

import pytest
from conftest import locked

from fbt_audit.cli.main import run
from fbt_audit.input import bzimage
from fbt_audit.input import kallsyms as kallsyms_blob
from fbt_audit.input.symbols import TEXT_TYPES
from fbt_audit.pipeline import api

pytestmark = pytest.mark.kernel

# Disagreements between the vmlinuz (kallsyms) and -dbg (.symtab) audits of 6.1.0-56-amd64, each explained:
# - FBT206 "label inside a sized symbol" needs st_size, which kallsyms does not have: an assembly label
#   inside a SYM_CODE/SYM_FUNC body (entry_SYSENTER_compat_after_hwframe, ftrace_regs_call ...) looks like
#   a function of its own. The vmlinuz audit has exactly the -dbg rules minus FBT206 there.
FBT206_ONLY_IN_DBG = 74  # on the locked build
# - common_interrupt_return (local, sized 398 in .symtab) and swapgs_restore_regs_and_return_to_usermode
#   (global) share an address; without sizes the global one is the primary name. Same patchpoint, same rules.
ALIAS_SWAP = ("swapgs_restore_regs_and_return_to_usermode", "common_interrupt_return")
# - kallsyms lists the linker symbol _einittext as 'T' at the end of .init.text, which is also the first
#   byte of .altinstr_aux; the .symtab loader drops it as its own section's end marker. One extra patchpoint.
ONLY_IN_KALLSYMS = {"_einittext"}


def _vmlinuz(image: Path) -> Path:
    found = sorted((image / "boot").glob("vmlinuz-*"))
    assert found, f"no vmlinuz in {image}/boot"
    return found[0]


@pytest.fixture(scope="module")
def vmlinuz61(image61) -> Path:
    return _vmlinuz(image61)


@pytest.fixture(scope="module")
def payload61(vmlinuz61):
    t = time.perf_counter()
    payload = bzimage.extract(vmlinuz61.read_bytes(), vmlinuz61.name)
    return payload, time.perf_counter() - t


@pytest.fixture(scope="module")
def z61(vmlinuz61):
    return api.load_kernel(vmlinuz61)


def _recovered_text(kernel, ext) -> set[tuple[str, int]]:
    """(name, address) of every recovered nm T/t/W/w symbol inside an executable section."""
    out = set()
    for addr, kind, name in zip(ext.addrs, ext.types, ext.names, strict=True):
        sec = kernel.section_at(addr)
        if kind in TEXT_TYPES and sec is not None and sec.executable:
            out.add((name, addr))
    return out


def test_vmlinuz_payload_is_a_stripped_elf(vmlinuz61, payload61):
    payload, seconds = payload61
    data = vmlinuz61.read_bytes()
    init_size = struct.unpack_from("<I", data, 0x260)[0]
    assert bzimage.compression(data[(data[0x1F1] + 1) * 512 + struct.unpack_from("<I", data, 0x248)[0] :]) == "xz"
    assert payload[:4] == b"\x7fELF" and len(payload) <= init_size
    assert b".symtab\0" not in payload[-4096:]  # objcopy -S: no symbol table name in .shstrtab
    assert seconds < 10, seconds  # ~0.6 s here


def test_symbols_match_the_dbg_symtab(z61, k61, payload61):
    """At least 99.9% of the (name, address) pairs agree, both ways; pinned symbols agree exactly."""
    ext = kallsyms_blob.recover(z61.sections, payload61[0], "vmlinuz")
    assert ext is not None and ext.source == "embedded kallsyms"
    got = _recovered_text(z61, ext)
    cols = k61.symbol_columns()
    want = set(zip(cols.name, cols.addr, strict=True))
    same = got & want
    assert len(same) / len(want) >= 0.999, (len(same), len(want), sorted(want - got)[:20])
    assert len(same) / len(got) >= 0.999, (len(same), len(got), sorted(got - want)[:20])
    assert {n for n, _ in got - want} <= ONLY_IN_KALLSYMS
    for name in ("native_load_gs_index", "start_kernel", "__fentry__", "native_save_fl", "_stext"):
        assert z61.names[name] == k61.names[name], name
    assert z61.names["_text"] == 0xFFFFFFFF81000000
    assert z61.release == k61.release


def test_entry_verdicts_agree_with_dbg(z61, k61):
    """Per (function, address), the rule ids of the vmlinuz audit equal the -dbg audit's, except the
    disagreements pinned above."""
    rz, rd = api.audit(z61), api.audit(k61)

    def rules(r):
        return {(j.pp.name, j.pp.addr): j.rule_ids for j in r.judgements if j.pp.site == "entry"}

    zr, dr = rules(rz), rules(rd)
    only_z, only_d = zr.keys() - dr.keys(), dr.keys() - zr.keys()
    alias, dbg_name = ALIAS_SWAP
    assert {n for n, _ in only_z} <= ONLY_IN_KALLSYMS | {alias}, only_z
    assert {n for n, _ in only_d} <= {dbg_name}, only_d
    za = sorted(k for k in only_z if k[0] == alias)
    db = sorted(k for k in only_d if k[0] == dbg_name)
    assert [k[1] for k in za] == [k[1] for k in db]  # the same patchpoint under the other name
    assert [zr[k] for k in za] == [dr[k] for k in db]  # with the same rules
    diff = {k: (zr[k], dr[k]) for k in zr.keys() & dr.keys() if zr[k] != dr[k]}
    for k, (z, d) in diff.items():
        assert "FBT206" in d and z == sorted(set(d) - {"FBT206"}), (k, z, d)
    assert len(diff) == FBT206_ONLY_IN_DBG
    assert len(diff) <= 0.005 * len(dr)
    assert len(zr.keys() & dr.keys()) >= 0.999 * len(dr)


def test_cli_audits_vmlinuz_alone(vmlinuz61, capsys):
    code = run([str(vmlinuz61)])
    cap = capsys.readouterr()
    assert code == 1, cap.err  # findings (unsafe entries under the reference table), not a tool error
    assert cap.err == f"fbt-audit: {vmlinuz61.name}: symbols from embedded kallsyms\n"
    assert cap.out.splitlines()[-1] == ("audited 49569 patchpoints in 1 image (table reference): 35 unsafe, 3666 deny, "
                                        "2856 refused, 43012 safe; 6625 findings")  # fmt: skip


@pytest.fixture(scope="module")
def vmlinuz612(image612) -> Path:
    return _vmlinuz(image612)


def test_612_kallsyms_plausible(vmlinuz612, k612):
    """6.12 (the 6.4+ table order): the -dbg cached is another flavour (cloud-amd64), so only plausibility:
    _text, start_kernel in .init.text, the count and the names close to cloud's, and nearly every
    __mcount_loc site (call __fentry__, after ENDBR) at a recovered symbol's address or 4 bytes past it."""
    z = api.load_kernel(vmlinuz612)
    assert z.symbol_source == "embedded kallsyms"
    assert z.release == locked("image-6.12")["release"]
    assert z.names["_text"] == 0xFFFFFFFF81000000
    assert z.section_at(z.names["start_kernel"]).name == ".init.text"
    cols = z.symbol_columns()
    cloud = set(k612.symbol_columns().name)
    # the locked builds: 107,340 names recovered, 97,067 of cloud's 101,330 among them (96%)
    assert (len(cols.name), len(cloud), len(cloud & set(cols.name))) == (107340, 101330, 97067)
    starts = set(cols.addr)
    sites = z.mcount_sites
    # every __mcount_loc site but one is at a recovered symbol or 4 bytes past it (after ENDBR)
    assert (len(sites), sum(1 for a in sites if a in starts or a - 4 in starts)) == (45262, 45261)
