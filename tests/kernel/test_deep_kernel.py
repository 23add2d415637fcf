"""test_deep_kernel.py: --deep on the locked bookworm 6.1 vmlinux: the flags paths of its FBT102 findings under
legacy-2011 (stack walk), and with angr (marker deep) the SARIF the issue asks for, proven where it can be."""

from __future__ import annotations

import json

import pytest
from helpers_sarif import github_violations, validator
from helpers_tools import multitool_problems

from fbt_audit.cli.main import run
from fbt_audit.deep.run import DeepOptions, analyse
from fbt_audit.pipeline.api import audit

pytestmark = pytest.mark.kernel

FLAGGED = ["verify_cpu", "xen_halt", "ftrace_regs_caller", "rcu_preempt_deferred_qs.part.0",
           "this_cpu_cmpxchg16b_emu", "native_save_fl", "__sev_get_ghcb"]  # fmt: skip


@pytest.fixture(scope="module")
def walked(k61):
    r = audit(k61, "legacy-2011")
    analyse(r, DeepOptions(values=False))
    return {ev.function: ev for ev in r.evidence.values()}


def _ends(ev):
    return [(p.end.addr - ev.patchpoint, p.end.text, p.consumer) for p in ev.paths]


def test_every_fbt102_site_is_walked(walked):
    assert sorted(walked) == sorted(FLAGGED)
    assert {n: walked[n].variant for n in FLAGGED if walked[n].variant != "disk"} == {
        "xen_halt": "alt(!8*32+16)", "rcu_preempt_deferred_qs.part.0": "alt(!8*32+16)",
        "__sev_get_ghcb": "alt(!8*32+16)",
    }  # fmt: skip


def test_stack_walk_paths(walked):
    assert _ends(walked["this_cpu_cmpxchg16b_emu"]) == [(0x18, "popfq", "popfq"), (0x20, "popfq", "popfq"),
                                                        (0x20, "popfq", "popfq")]  # fmt: skip
    assert _ends(walked["native_save_fl"]) == [(1, "popq %rax", "pop %rax")]
    for name in ("xen_halt", "rcu_preempt_deferred_qs.part.0", "__sev_get_ghcb"):  # the alternative's pushf; pop
        assert _ends(walked[name]) == [(1, "popq %rax", "pop %rax")], name
    regs = walked["ftrace_regs_caller"]
    assert _ends(regs) == [(0x146, "popfq", "popfq"), (0x193, "popfq", "popfq")]
    notes = [[s.note for s in p.steps] for p in regs.paths]
    assert notes[1] == ["pushes the flags word", "copies the word to %rcx", "copies the word to 0x90(%rsp)",
                        "the frame reaches ftrace_stub in %rcx: it may rewrite the word", "copies the word to %rax",
                        "copies the word to 0xa8(%rsp)", "branch taken", "copies the word to %rdi",
                        "copies the word to 0xa0(%rsp)", "consumes the word"]  # fmt: skip
    assert regs.paths[0].steps[-1].source[0].endswith("arch/x86/kernel/ftrace_64.S")
    assert [s.source[1] for s in walked["this_cpu_cmpxchg16b_emu"].paths[0].steps] == [27, 31, 33, 38]


@pytest.mark.deep
def test_must_show_sarif(vmlinux61, tmp_path):
    """Issue 14, item 1: the 3 threadFlows of this_cpu_cmpxchg16b_emu end at its popfq and are proven; native_save_fl's
    word is taken by pop %rax; ftrace_regs_caller's copy paths are unknown with the reason, never refuted; valid."""
    out = tmp_path / "deep.sarif"
    assert run([str(vmlinux61), "--table", "legacy-2011", "--deep", "--format", "sarif", "-o", str(out)]) == 1
    doc = json.loads(out.read_text())
    validator().validate(doc)
    assert github_violations(doc) == []
    assert multitool_problems(out, tmp_path / "multitool.sarif") == []
    (run_,) = doc["runs"]
    res = {r["properties"]["probe"]: r for r in run_["results"] if r["ruleId"] == "FBT102"}
    flows = res["kernel:this_cpu_cmpxchg16b_emu:entry"]["codeFlows"][0]["threadFlows"]
    assert [f["locations"][-1]["location"]["message"]["text"] for f in flows] == ["popfq: consumes the word"] * 3
    assert [f["locations"][-1]["location"]["physicalLocation"]["address"]["relativeAddress"] for f in flows] == [
        0x18, 0x20, 0x20]  # fmt: skip
    assert [f["properties"]["proof"] for f in flows] == ["proven"] * 3
    assert all(f["properties"]["why"].startswith("value tracking (angr 9.2.") for f in flows)
    (save,) = res["kernel:native_save_fl:entry"]["codeFlows"][0]["threadFlows"]
    assert (save["properties"]["consumer"], save["properties"]["proof"]) == ("pop %rax", "proven")
    assert save["locations"][-1]["location"]["message"]["text"] == "popq %rax: takes the word into %rax"
    regs = res["kernel:ftrace_regs_caller:entry"]["codeFlows"][0]["threadFlows"]
    assert [f["properties"]["proof"] for f in regs] == ["unknown", "unknown"]
    assert all("the frame reaches ftrace_stub in %rcx: it may rewrite the word" in f["properties"]["why"]
               for f in regs)  # fmt: skip
    assert res["kernel:this_cpu_cmpxchg16b_emu:entry"]["properties"]["deep"]["proven"] == 3
    cpu = res["kernel:verify_cpu:entry"]["properties"]["deep"]
    assert (cpu["paths"], cpu["proven"], cpu["note"]) == (16, 16, "walk cut at 16 paths and 106 instructions")
