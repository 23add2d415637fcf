"""test_sarif_kernel.py: SARIF of the real bookworm 6.1 -dbg vmlinux: schema, GitHub's upload rules, DWARF source
paths, the result cap, and the gate round trip with its own SARIF as the baseline."""

from __future__ import annotations

import json

import pytest
from helpers_sarif import github_violations, validator

from fbt_audit.cli.main import run
from fbt_audit.report.sarif import MAX_RESULTS

pytestmark = pytest.mark.kernel

# The top-level directories of a kernel tree a DWARF path may start with.
TREE = ("arch/", "block/", "crypto/", "drivers/", "fs/", "include/", "init/", "io_uring/", "ipc/", "kernel/",
        "lib/", "mm/", "net/", "security/", "sound/", "virt/", "certs/", "usr/", "tools/", "samples/",
        "rust/")  # fmt: skip


@pytest.fixture(scope="module")
def legacy_sarif(vmlinux61, tmp_path_factory):
    out = tmp_path_factory.mktemp("sarif") / "legacy.sarif"
    assert run([str(vmlinux61), "--table", "legacy-2011", "--format", "sarif", "-o", str(out)]) == 1
    return out


@pytest.fixture(scope="module")
def legacy_doc(legacy_sarif):
    return json.loads(legacy_sarif.read_text())


def test_schema_and_github_rules(legacy_doc):
    validator().validate(legacy_doc)
    assert github_violations(legacy_doc) == []
    (run_,) = legacy_doc["runs"]
    assert run_["automationDetails"]["id"] == "fbt-audit/amd64/vmlinux/"
    props = run_["properties"]
    assert props["releases"][0].startswith("6.1.0-") and props["releases"][0].endswith("-amd64")
    assert len(props["buildIds"][0]) == 40
    # By default errors and warnings only (--show warning): under GitHub's cap, nothing omitted. legacy-2011
    # refuses every `call __fentry__` (e8): those 40,000 notes are counted, not carried.
    assert {r["level"] for r in run_["results"]} == {"error", "warning"}
    assert len(run_["results"]) == props["resultsTotal"] < MAX_RESULTS and "resultsOmitted" not in props
    assert props["resultsNotShown"] > 40000
    assert "invocations" in run_ and "toolExecutionNotifications" not in run_["invocations"][0]


def test_cap_keeps_the_most_severe(vmlinux61, legacy_doc, tmp_path):
    out = tmp_path / "notes.sarif"
    assert run([str(vmlinux61), "--table", "legacy-2011", "--format", "sarif", "--show", "note", "-o", str(out)]) == 1
    (run_,) = json.loads(out.read_text())["runs"]
    props = run_["properties"]
    assert len(run_["results"]) == MAX_RESULTS < props["resultsTotal"]
    assert props["resultsOmitted"] == props["resultsTotal"] - MAX_RESULTS and "omittedResults" not in props
    # the most severe are kept: every error and warning of the default SARIF stays, notes fill up to the cap
    kept = [r["level"] for r in run_["results"]]
    default = [r["level"] for r in legacy_doc["runs"][0]["results"]]
    assert (kept.count("error"), kept.count("warning")) == (default.count("error"), default.count("warning"))
    assert kept.count("note") == MAX_RESULTS - len(default) > 0
    notes = run_["invocations"][0]["toolExecutionNotifications"]
    assert [n["message"]["text"] for n in notes] == [
        f"{props['resultsOmitted']} of {props['resultsTotal']} results omitted: GitHub accepts at most 25000 per run; "
        "the most severe are kept"
    ]


def by_probe(doc, rule):
    return {r["properties"]["probe"]: r for r in doc["runs"][0]["results"] if r["ruleId"] == rule}


def test_locations_are_kernel_source_paths(legacy_doc):
    fbt102 = by_probe(legacy_doc, "FBT102")
    # __sev_get_ghcb, rcu_preempt_deferred_qs.part.0 and xen_halt start with pushf only after boot: an
    # alternative replaces their `call *pv_ops.irq.save_fl` (the variant is judged, test_vmlinux_judgement.py)
    assert sorted(fbt102) == ["kernel:__sev_get_ghcb:entry", "kernel:ftrace_regs_caller:entry",
                              "kernel:native_save_fl:entry", "kernel:rcu_preempt_deferred_qs.part.0:entry",
                              "kernel:this_cpu_cmpxchg16b_emu:entry", "kernel:verify_cpu:entry",
                              "kernel:xen_halt:entry"]  # fmt: skip
    loc = fbt102["kernel:native_save_fl:entry"]["locations"][0]["physicalLocation"]
    assert loc["artifactLocation"]["uri"] == "arch/x86/kernel/irqflags.S"
    assert loc["region"]["startLine"] > 1
    assert fbt102["kernel:verify_cpu:entry"]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == (
        "arch/x86/kernel/verify_cpu.S"
    )
    assert fbt102["kernel:this_cpu_cmpxchg16b_emu:entry"]["locations"][0]["physicalLocation"]["artifactLocation"][
        "uri"] == "arch/x86/lib/cmpxchg16b_emu.S"  # fmt: skip
    swapgs = by_probe(legacy_doc, "FBT107")["kernel:entry_SYSCALL_64:entry"]
    assert swapgs["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "arch/x86/entry/entry_64.S"
    uris = [r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] for r in legacy_doc["runs"][0]["results"]]
    pseudo = [r["locations"][0]["logicalLocations"][0]["name"] for r, u in zip(legacy_doc["runs"][0]["results"], uris,
              strict=True) if u == "kernel/vmlinux"]  # fmt: skip
    # Only code that no unit's line table covers falls back: static-call trampolines and other asm()
    # emitted from C, data in entry text (x86_verw_sel); section markers are no patchpoints. A .cold fragment
    # takes its parent function's line.
    assert sorted(n for n in pseudo if not n.startswith("__SCT__")) == [
        "_paravirt_nop", "arch_rethook_trampoline", "int3_magic", "paravirt_ret0",
        "srso_alias_untrain_ret", "x86_verw_sel"]  # fmt: skip
    assert not [n for n in pseudo if n.endswith(".cold")]
    assert all(u.startswith(TREE) and u.endswith((".c", ".S", ".h")) for u in uris if u != "kernel/vmlinux")
    assert "/build/" not in json.dumps(legacy_doc)


def test_own_sarif_as_baseline(vmlinux61, legacy_sarif, tmp_path, capsys):
    for fail_on in ("warning", "error"):  # what the baseline carries (--show warning, the default) is gated
        out = tmp_path / "again.sarif"
        code = run([str(vmlinux61), "--table", "legacy-2011", "--format", "sarif", "--baseline", str(legacy_sarif),
                    "--fail-on", fail_on, "-o", str(out)])  # fmt: skip
        err = capsys.readouterr().err
        assert code == 0, err
        doc = json.loads(out.read_text())
        total = doc["runs"][0]["properties"]["resultsTotal"]
        assert {r["baselineState"] for r in doc["runs"][0]["results"]} == {"unchanged"}
        assert doc["runs"][0]["properties"]["baseline"] == {"new": 0, "unchanged": total, "updated": 0, "absent": 0}
        assert err == f"fbt-audit: baseline: 0 new, {total} unchanged, 0 updated, 0 absent\n"
