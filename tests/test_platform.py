"""test_platform.py: --platform picks the boot-time forms that can be live (audit/sites/platform.py)."""

from __future__ import annotations

import pytest

from fbt_audit.decode.insn import decode
from fbt_audit.model.abi import Handling
from fbt_audit.model.core import Variant
from fbt_audit.pipeline.api import audit, load_table
from fbt_audit.sites.platform import ALWAYS, XENPV, feature_on, live_forms

A = 0xFFFFFFFF81000000
CALL_PV = decode(bytes.fromhex("ff15aabbccdd"), A)  # call *pv_ops+N(%rip): the on-disk paravirt site
CALL_DIRECT = decode(bytes.fromhex("e811223344") + b"\x90", A)  # what apply_paravirt leaves
CLI = decode(b"\xfa", A)


def labels(vs):
    return [v.label for v in vs]


def test_feature_conditions():
    assert feature_on(XENPV, False, "native") is False and feature_on(XENPV, False, "xen-pv") is True
    assert feature_on(XENPV, True, "native") is True and feature_on(XENPV, True, "xen-pv") is False
    assert feature_on(ALWAYS, False, "up") is True
    assert feature_on(7 * 32 + 11, False, "native") is None  # any CPU feature: both forms possible


def test_paravirt_site_disk_form_dead_on_every_named_platform():
    vs = (Variant("disk", CALL_PV), Variant("paravirt(call)", CALL_DIRECT))
    assert live_forms(vs, "all") == vs
    for p in ("native", "xen-pv", "up"):
        assert labels(live_forms(vs, p)) == ["paravirt(call)"]


def test_pvop_alt_not_xenpv():
    """PVOP_ALT_*(..., "cli", ALT_NOT(X86_FEATURE_XENPV)): native runs the replacement, Xen PV the direct call."""
    vs = (Variant("disk", CALL_PV), Variant("paravirt(call)", CALL_DIRECT), Variant("alt(!8*32+16)", CLI))
    assert labels(live_forms(vs, "native")) == ["alt(!8*32+16)"]
    assert labels(live_forms(vs, "xen-pv")) == ["paravirt(call)"]


def test_xen_only_form_refused_under_xen_pv_only():
    """A form only Xen PV leaves (an X86_FEATURE_XENPV alternative) that kprobes refuses (call *mem): judged on
    xen-pv and all, dead on native."""
    vs = (Variant("disk", CLI), Variant("alt(8*32+16)", CALL_PV))
    kp = load_table("kprobes-6.1")
    assert [kp.handling(v.insn)[1] for v in live_forms(vs, "native")] == [Handling.EMULATE]
    assert [kp.handling(v.insn)[1] for v in live_forms(vs, "xen-pv")] == [Handling.REFUSE]
    assert len(live_forms(vs, "all")) == 2


@pytest.mark.kernel
@pytest.mark.parametrize("kind", ["dbg-6.1", "image-6.12"])
def test_all_never_safer_than_any_platform(kind, vmlinux61, image612):
    from conftest import locked

    if kind == "dbg-6.1":
        image, table = vmlinux61, "kprobes-6.1"
    else:
        rel = locked("image-6.12")["release"]
        image, table = image612 / "boot" / f"vmlinuz-{rel}", "kprobes-6.12"
    every = {p: audit(image, table, platform=p) for p in ("all", "native", "xen-pv", "up")}
    base = {(j.pp.addr, j.pp.name): j.verdict for j in every["all"].judgements}
    for p in ("native", "xen-pv", "up"):
        worse = [(k, v.verdict) for j in every[p].judgements if (v := j) and base[(k := (j.pp.addr, j.pp.name))]
                 < v.verdict]
        assert worse == [], p


@pytest.mark.kernel
def test_set_pte_paravirt_entry(vmlinux61):
    """set_pte's first instruction is `call *pv_ops.mmu.set_pte(%rip)`: kprobes refuses that form (call *mem,
    FBT114), but apply_paravirt makes it `call native_set_pte` on every boot (on Xen PV, `call xen_set_pte`):
    safe on native, xen-pv and up; refused only under all, which still judges the on-disk form."""
    got = {}
    for p in ("all", "native", "xen-pv", "up"):
        r = audit(vmlinux61, "kprobes-6.1", platform=p)
        j = next(j for j in r.judgements if j.pp.name == "set_pte" and j.pp.insn.raw[:2] == b"\xff\x15")
        got[p] = (j.verdict.label, j.rule_ids, [f"{v.label}={v.insn.text}" for v in j.pp.variants])
    assert got["all"] == ("refused", ["FBT114"], ["disk=callq *0x1a1a8da(%rip)", "paravirt(call)=callq native_set_pte"])
    for p in ("native", "xen-pv", "up"):
        assert got[p] == ("safe", [], ["paravirt(call)=callq native_set_pte"]), p


@pytest.mark.kernel
def test_list_and_sarif_name_the_platform(vmlinux61, tmp_path):
    """The list's live column starts with platform=<name> under a named platform; SARIF carries it as a run and
    result property. Under all (the default) both are as before: no platform named."""
    import json

    from fbt_audit.cli.main import run

    rows = {}
    for p in ("native", "all"):
        out = tmp_path / f"{p}.tsv"
        run([str(vmlinux61), "--table", "kprobes-6.1", "--platform", p, "--format", "list", "-o", str(out)])
        rows[p] = {f[6]: f for f in (line.split("\t") for line in out.read_text().splitlines()[4:])
                   if f[6] in ("kernel:set_pte:entry", "kernel:kvm_get_tsc_khz:entry")}  # fmt: skip
    assert [rows["native"]["kernel:kvm_get_tsc_khz:entry"][i] for i in (7, 8, 12)] == [
        "safe", "-", "platform=native,smp-lock(ds)=3e800d6faabb0180"]
    assert [rows["all"]["kernel:kvm_get_tsc_khz:entry"][i] for i in (7, 8, 12)] == ["deny", "FBT201", "-"]
    assert rows["native"]["kernel:set_pte:entry"][12].startswith("platform=native,paravirt(call)=e8")
    sarif = tmp_path / "native.sarif"
    run([str(vmlinux61), "--table", "kprobes-6.1", "--platform", "up", "--format", "sarif", "-o", str(sarif)])
    log = json.loads(sarif.read_text())
    assert log["runs"][0]["properties"]["platform"] == "up"
    assert {r["properties"]["platform"] for r in log["runs"][0]["results"]} == {"up"}


@pytest.mark.kernel
def test_paravirt_entry_safe_on_native_refused_on_xen_pv(vmlinux61):
    """pte_val's entry is `call *pv_ops.mmu.pte_val(%rip)`, patched at boot by PVOP_ALT_CALLEE1(...,
    "mov %rdi, %rax", ALT_NOT(X86_FEATURE_XENPV)): native runs `mov %rdi,%rax` (legacy-2011 steps it: safe), Xen PV
    keeps the direct call to xen_pte_val that apply_paravirt leaves (legacy-2011 refuses direct calls: FBT114).
    Under all (the default) both live forms are judged and the worst, refused, wins."""
    got = {}
    for p in ("native", "xen-pv", "all"):
        r = audit(vmlinux61, "legacy-2011", platform=p)
        js = [j for j in r.judgements if j.pp.name == "pte_val" and j.pp.insn.raw[:2] == b"\xff\x15"]
        got[p] = sorted({(j.verdict.label, tuple(j.rule_ids), tuple(v.label for v in j.pp.variants)) for j in js})
    assert got["native"] == [("safe", (), ("alt(!8*32+16)",))]
    assert got["xen-pv"] == [("refused", ("FBT114",), ("paravirt(call)",))]
    assert got["all"] == [("refused", ("FBT114",), ("disk", "alt(!8*32+16)", "paravirt(call)"))]
