"""test_verdict_fixes.py: the verdicts fbt-audit verify proved wrong on 6.1 by execution stay fixed (FBT207)."""

from __future__ import annotations

import pytest

from fbt_audit.verify.deps import audit

pytestmark = pytest.mark.kernel

# Die notifiers run by notify_die on every int3 (an int3 on trace_die_handler stopped the kernel while
# arming every safe patchpoint), and the ftrace trampoline templates create_trampoline copies (an int3 on
# ftrace_regs_caller was copied into a new trampoline: "int3: 0000 [#1]" at its first byte).
FIXED = {
    "trace_die_handler": "4883fe01",
    "hw_breakpoint_exceptions_notify": "e87b930300",
    "arch_uprobe_exception_notify": "e86b6cffff",
    "ftrace_caller": "4881eca8000000",
    "ftrace_regs_caller": "9c",
}


def test_verify_findings_are_handler_recursion(vmlinux61):
    r = audit(vmlinux61, "reference")
    got = {j.pp.name: (j.verdict.label, "FBT207" in j.rule_ids, j.pp.insn.raw.hex())
           for j in r.judgements if j.pp.name in FIXED}
    assert got == {name: ("unsafe", True, raw) for name, raw in FIXED.items()}
