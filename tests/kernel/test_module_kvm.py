"""test_module_kvm.py: a real Debian module (kvm.ko, ET_REL) audits correctly, relocated ftrace calls included."""

from __future__ import annotations

import re
import subprocess

import pytest

from fbt_audit.pipeline import api

from .objdump import module_instructions_at

pytestmark = pytest.mark.kernel


@pytest.fixture(scope="module")
def kvm(image61):
    found = sorted(image61.glob("lib/modules/*/kernel/arch/x86/kvm/kvm.ko"))
    assert found, "kvm.ko missing from the image package"
    return found[0]


def readelf_module_entries(path) -> set[tuple[str, int]]:
    """Independent count: (section, offset) of FUNC/NOTYPE symbols in executable sections, per readelf."""
    secs = {}
    for line in subprocess.run(
        ["readelf", "-SW", str(path)], capture_output=True, text=True, check=True
    ).stdout.splitlines():
        m = re.match(r"\s*\[\s*(\d+)\]\s+(\S+)\s+\S+\s+[0-9a-f]+\s+[0-9a-f]+\s+([0-9a-f]+)\s+\S+\s+(\S*X\S*)\s", line)
        if m:
            secs[m.group(1)] = (m.group(2), int(m.group(3), 16))
    out = set()
    for line in subprocess.run(
        ["readelf", "-sW", str(path)], capture_output=True, text=True, check=True
    ).stdout.splitlines():
        f = line.split()
        if len(f) < 8 or f[3] not in ("FUNC", "NOTYPE") or f[6] not in secs or f[7].startswith((".L", "$")):
            continue
        name, size = secs[f[6]]
        if int(f[1], 16) < size:
            out.add((name, int(f[1], 16)))
    return out


def test_kvm_module(kvm):
    r = api.audit(kvm)
    k = r.kernel
    assert k.kind == "module" and k.module == "kvm" and k.display == "kvm.ko"
    assert re.fullmatch(r"6\.1\.0-\d+-amd64", k.release)
    pps = [j.pp for j in r.judgements]
    assert {(p.section, p.sym_addr - (p.addr - p.sec_off)) for p in pps} == readelf_module_entries(kvm)
    by_name = {p.name: p for p in pps}
    # kvm_vcpu_ioctl starts with call __fentry__, whose rel32 is a relocation (the bytes are e8 00 00 00 00).
    p = by_name["kvm_vcpu_ioctl"]
    assert p.insn.raw == bytes.fromhex("e800000000")
    assert p.insn.target_name == "__fentry__" and "ftrace-site" in p.facts
    assert p.probe_name == "kvm:kvm_vcpu_ioctl:entry"
    j = next(j for j in r.judgements if j.pp is p)
    assert j.handling == "ftrace" and j.verdict.label == "safe"
    # Every call __fentry__ at an entry is a __mcount_loc site, and vice versa for entries.
    fentry = {p.addr for p in pps if p.insn.target_name == "__fentry__"}
    assert fentry and fentry <= k.mcount_sites
    # The only instruction finding under the reference table: a ud2 (BUG) that starts a .cold
    # fragment, which FBT206 also notes as no entry.
    found = {(j.pp.name, tuple(j.rule_ids), j.verdict.label) for j in r.judgements if any(
        f.rule_id.startswith("FBT1") for f in j.findings)}
    assert found == {("__handle_changed_spte.cold", ("FBT114", "FBT206"), "refused")}
    # Decoded bytes agree with objdump at every patchpoint.
    oracle = module_instructions_at(kvm, {(p.section, p.sec_off) for p in pps})
    bad = [p.name for p in pps if oracle.get((p.section, p.sec_off), (None,))[0] != p.insn.raw]
    assert not bad, bad[:10]
