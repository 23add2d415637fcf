"""test_logclass.py: exact classification of exact kernel log lines, including the seed's (legacy-2011 under QEMU)."""

from __future__ import annotations

from pathlib import Path

from fbt_audit.verify import logclass

DATA = Path(__file__).parent / "data"


def test_seed_log_is_a_stray_step_then_irqs_left_off():
    # Captured from `fbt-audit verify 6.1.0-56-amd64 --table legacy-2011 --only this_cpu_cmpxchg16b_emu
    # --cpu qemu64,-cx16`: the serial log from the /init marker on.
    events = logclass.classify((DATA / "seed-legacy-2011.log").read_text())
    assert [(e.kind, e.line, e.title()) for e in events] == [
        ("warning", 8, "WARNING: CPU: 0 PID: 1 at arch/x86/kernel/traps.c:1089 exc_debug+0x101/0x1a0"),
        ("irq-state", 71, "kernel BUG at arch/x86/mm/pat/set_memory.c:368!"),
    ]
    warn, bug = events
    assert warn.check.startswith("WARN_ON_ONCE(dr6 & DR_STEP)")
    assert "RIP: 0010:this_cpu_cmpxchg16b_emu+0x1b/0x30" in warn.lines
    assert warn.functions[:3] == ["exc_debug", "asm_exc_debug", "this_cpu_cmpxchg16b_emu"]
    assert bug.check.startswith("BUG_ON(irqs_disabled()")
    assert bug.lines[1] == "invalid opcode: 0000 [#1] PREEMPT SMP NOPTI"
    assert "RSP: 0018:ffffc9000059b8a8 EFLAGS: 00000046" in bug.lines  # IF (0x200) clear
    assert bug.functions[:3] == ["cpa_flush", "change_page_attr_set_clr", "set_memory_ro"]


def test_attribution_names_the_probe_or_the_small_armed_set():
    events = logclass.classify((DATA / "seed-legacy-2011.log").read_text())
    logclass.attribute(events, {"this_cpu_cmpxchg16b_emu": ["kernel:this_cpu_cmpxchg16b_emu:entry"]})
    assert [e.probes for e in events] == [["kernel:this_cpu_cmpxchg16b_emu:entry"]] * 2
    big = {f"f{i}": [f"kernel:f{i}:entry"] for i in range(logclass.SMALL_SET + 1)}
    logclass.attribute(events, big)
    assert [e.probes for e in events] == [[], []]


LINES = {
    "[   12.345678] BUG: soft lockup - CPU#0 stuck for 22s! [sh:95]": "soft-lockup",
    "[    1.0] watchdog: BUG: soft lockup - CPU#1 stuck for 23s! [init:1]": "soft-lockup",
    "[    9.1] Watchdog detected hard LOCKUP on cpu 1": "hard-lockup",
    "[    5.0] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:": "rcu-stall",
    "[    3.3] BUG: sleeping function called from invalid context at mm/slab.h:742": "irq-state",
    "[    3.3] raw_local_irq_restore() called with IRQs enabled": "irq-state",
    "[    2.0] WARNING: possible circular locking dependency detected": "lockdep",
    "[    2.0] WARNING: inconsistent lock state": "lockdep",
    "[    2.0] BUG: unable to handle page fault for address: ffffffffc0000000": "oops",
    "[    2.0] general protection fault, probably for non-canonical address 0xdead: 0000 [#1] SMP": "oops",
    "[    2.0] int3: 0000 [#1] PREEMPT SMP NOPTI": "oops",
    "[    2.0] BUG: scheduling while atomic: sh/90/0x00000002": "bug",
    "[    2.0] WARNING: CPU: 1 PID: 7 at kernel/smp.c:912 smp_call_function_many_cond+0x1/0x2": "warning",
    "[    2.0] Kernel panic - not syncing: Fatal exception": "panic",
    "[  240.1] INFO: task sh:90 blocked for more than 120 seconds.": "hung-task",
}


def test_each_kind_from_its_kernel_string():
    for line, kind in LINES.items():
        events = logclass.classify(line + "\n")
        assert [e.kind for e in events] == [kind], line


NOT_COMPLAINTS = (
    "[    4.229605] fbt: loading out-of-tree module taints kernel.",
    "[    4.230965] fbt: module verification failed: signature and/or required key missing - tainting kernel",
    "[    0.0] Spectre V2 : WARNING: Unprivileged eBPF is enabled with eIBRS on, data leaks possible via BHB",
    "FBT-VERIFY: armed t=3.68",
)


def test_ordinary_lines_are_not_complaints():
    assert logclass.classify("\n".join(NOT_COMPLAINTS)) == []
