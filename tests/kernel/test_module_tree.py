"""test_module_tree.py: bookworm's module trees (6.1 .ko, 6.12 .ko.xz) audit without a load error, whatever -j."""

from __future__ import annotations

import gc
import hashlib

import pytest

from fbt_audit.input.dwarf import PathMap
from fbt_audit.pipeline import api
from fbt_audit.pipeline.batch import module_files, run_batch
from fbt_audit.report.formats import render
from fbt_audit.report.jsonout import render_json
from fbt_audit.report.listing import render_list
from fbt_audit.report.text import render_text

pytestmark = pytest.mark.kernel

# What the reference table finds in the KVM modules besides FBT201 (jump labels, static calls) and
# FBT206 (non-entries): (function, section+offset, rule, verdict), from the audit of each release.
KVM_61 = {
    "kvm": {
        ("__handle_changed_spte.cold", ".text.unlikely+0x619", "FBT114", "refused"),
        ("kvm_arch_has_assigned_device", ".noinstr.text+0x0", "FBT204", "deny"),
        ("kvm_spurious_fault", ".noinstr.text+0x10", "FBT204", "deny"),
        ("init_module", ".init.text+0x0", "FBT205", "deny"),
        ("kvm_init_xstate_sizes", ".init.text+0x3a", "FBT205", "deny"),
        ("kvm_mmu_x86_module_init", ".init.text+0xbc", "FBT205", "deny"),
        ("kvm_mmu_spte_module_init", ".init.text+0xfc", "FBT205", "deny"),
    },
}
KVM_61_NOINSTR = {
    "kvm_amd": ["svm_vcpu_enter_exit", "__svm_vcpu_run", "__svm_sev_es_vcpu_run"],
    "kvm_intel": ["vmx_l1d_flush", "vmx_vcpu_enter_exit", "vmx_update_host_rsp", "vmx_spec_ctrl_restore_host",
                  "__vmx_vcpu_run", "vmx_vmexit"],
}  # fmt: skip
# 6.12 builds with CONFIG_CALL_PADDING: each function has a __pfx_ padding symbol, and the patchpoint
# moves past the ENDBR (+0x4).
KVM_612 = {
    ("__pfx_kvm_arch_has_assigned_device", ".noinstr.text+0x0", "FBT204", "deny"),
    ("kvm_arch_has_assigned_device", ".noinstr.text+0x14", "FBT204", "deny"),
    ("__pfx_kvm_spurious_fault", ".noinstr.text+0x30", "FBT204", "deny"),
    ("kvm_spurious_fault", ".noinstr.text+0x44", "FBT204", "deny"),
    ("__pfx_init_module", ".init.text+0x0", "FBT205", "deny"),
    ("init_module", ".init.text+0x14", "FBT205", "deny"),
    ("__pfx_kvm_init_xstate_sizes", ".init.text+0x70", "FBT205", "deny"),
    ("kvm_init_xstate_sizes", ".init.text+0x84", "FBT205", "deny"),
    ("__pfx_kvm_mmu_x86_module_init", ".init.text+0x110", "FBT205", "deny"),
    ("kvm_mmu_x86_module_init", ".init.text+0x124", "FBT205", "deny"),
    ("__pfx_kvm_mmu_spte_module_init", ".init.text+0x180", "FBT205", "deny"),
    ("kvm_mmu_spte_module_init", ".init.text+0x194", "FBT205", "deny"),
}


def tree_of(image):
    (tree,) = sorted(image.glob("lib/modules/*"))
    return tree


def findings(result, skip=("FBT201", "FBT206")):
    return {
        (j.pp.name, f"{j.pp.section}+0x{j.pp.sec_off:x}", f.rule_id, j.verdict.label)
        for j in result.judgements
        for f in j.findings
        if f.rule_id not in skip
    }


def digests(results) -> dict[str, str]:
    """sha256 of every format the CLI renders from these results (sarif with its DWARF lookups)."""
    out = {
        "text": render_text(results, True),
        "json": render_json(results),
        "list": render_list(results),
        "denylist": render("denylist", results),
        "sarif": render("sarif", results, paths=PathMap.parse((), None)),
    }
    return {k: hashlib.sha256(v.encode()).hexdigest() for k, v in out.items()}


@pytest.fixture(scope="module")
def tree61(image61):
    return tree_of(image61)


@pytest.fixture(scope="module")
def audit61(tree61):
    results, failures = run_batch([tree61], api.load_table("reference"), jobs=2, sources=True)
    return results, failures


def test_61_tree_has_no_load_error(audit61, tree61):
    results, failures = audit61
    assert failures == []
    assert len(results) == len(module_files(tree61)[0]) == 4023
    assert not [e for r in results for e in r.errors]
    assert {r.kernel.kind for r in results} == {"module"}
    assert all(r.kernel.release == results[0].kernel.release for r in results)


def test_61_known_findings(audit61):
    by_module = {r.kernel.module: r for r in audit61[0]}
    kvm = by_module["kvm"]
    assert findings(kvm) == KVM_61["kvm"]
    assert sum(f.rule_id == "FBT201" for j in kvm.judgements for f in j.findings) == 238
    for module, names in KVM_61_NOINSTR.items():
        got = sorted(n for n, _, rule, _ in findings(by_module[module]) if rule == "FBT204")
        assert got == sorted(names), module


def test_61_jobs_give_the_same_bytes(audit61, tree61):
    """-j 1 (in this process) and -j 2 (workers, pickled results) render byte-identically in every format.
    The whole tree: ~25 s more for the -j 1 run and ~25 s per rendering of the five formats here."""
    want = digests(audit61[0])
    gc.collect()
    results, failures = run_batch([tree61], api.load_table("reference"), jobs=1, sources=True)
    assert not failures
    assert digests(results) == want


def test_612_xz_tree_has_no_load_error(image612):
    tree = tree_of(image612)
    files = module_files(tree)[0]
    assert len(files) == 4230 and all(p.name.endswith(".ko.xz") for p in files)
    results, failures = run_batch([tree], api.load_table("reference"), jobs=2)
    assert failures == []
    assert len(results) == len(files)
    assert not [e for r in results for e in r.errors]
    assert {r.kernel.release for r in results} == {tree.name}
    kvm = next(r for r in results if r.kernel.module == "kvm")
    assert findings(kvm) == KVM_612
    assert sum(f.rule_id == "FBT201" for j in kvm.judgements for f in j.findings) == 243


def test_scan_finds_what_os_walk_finds(image61):
    """batch._scan (os.scandir, one stat a module, real paths from the directories') lists the modules, sizes and
    real paths of the locked 6.1 tree exactly as os.walk, os.path.isfile, os.stat and os.path.realpath do."""
    import os

    from fbt_audit.pipeline.batch import _scan

    (tree,) = sorted(image61.glob("lib/modules/*"))
    want = []
    for top, dirs, files in os.walk(tree, followlinks=False):
        dirs.sort()
        want += [os.path.join(top, f) for f in files if f.endswith((".ko", ".ko.xz", ".ko.zst", ".ko.gz"))
                 and os.path.isfile(os.path.join(top, f))]  # fmt: skip
    found, problems = _scan(tree)
    assert not problems and len(found) > 4000
    assert [p for p, _r, _s in found] == sorted(want)
    assert [s for _p, _r, s in found] == [os.stat(p).st_size for p in sorted(want)]
    assert all(r is None or r == os.path.realpath(p) for p, r, _s in found)
    assert sum(r is not None for _p, r, _s in found) > 4000
