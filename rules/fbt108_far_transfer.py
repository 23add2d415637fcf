"""fbt108_far_transfer.py: FBT108, a far call, jump or return is stepped or emulated."""

from fbt_audit.judge.rule import Rule, Site
from fbt_audit.model.core import IC


class FarTransfer(Rule):
    """A far transfer (`ff /3`, `ff /5`, `ca`, `cb`, IRET) is stepped or emulated.

    What it finds:
    Memory-form far call and jump (`ff /3`, `ff /5`), far return (`ca`, `cb`) and IRET
    (`cf`, `48 cf`), when the table steps or emulates them. `9a` and `ea` are invalid in
    64-bit mode and fall under FBT111.

    Why it is unsafe:
    A far transfer loads CS (and for IRET SS, RSP and the flags) from memory. The handler
    cannot recompute a far target from the original IP, and its step fixups assume a near
    transfer: the pushed return frame holds the buffer's address and a selector, and emulating
    `lret` as a near `ret` leaves the selector on the stack. IRET additionally rewrites IF and
    TF, which FBT101 reports.

    Example:
    Under `legacy-2011`, which steps what it does not list:

        f_lret:
            cb                      lretl           # FBT108
            c3                      retq

    FBT108_fail.ko: f_lret+0x0 (.text+0x0): FBT108 far transfer lretl stepped [error]

    Fix:
    Refuse them (kprobes returns -EOPNOTSUPP for `9a`, `ea`, `cf`, `ff /3` and `ff /5`;
    dtrace4linux refuses IRET).

    References:
    - torvalds/linux `arch/x86/kernel/kprobes/core.c` `prepare_emulation`
    - dtrace4linux/linux `driver/prov_common.c` `dtrace_parse_function` (refuses `cf`, `48 cf`)
    """

    id = "FBT108"
    facts_read = ()  # the facts check() reads (judge/judge.py memoises by them)
    insn_reads = ("classes",)  # the Insn fields check() reads besides the text it prints
    name = "far-transfer"
    summary = "a far call, jump or return is stepped or emulated"
    tags = ("control-transfer",)

    def check(self, site: Site) -> str | None:
        if site.insn.classes & IC.FAR_TRANSFER and site.placed:
            return f"far transfer {site.insn.text} {'stepped' if site.stepped else 'emulated'}"
        return None
