"""fbt112_exception_table_site.py: FBT112, an instruction with an __ex_table fixup is stepped away from its IP."""

from fbt_audit.judge.rule import Rule, Site
from fbt_audit.model.facts import EXTABLE


class ExceptionTableSite(Rule):
    """An instruction that may fault on purpose is stepped or emulated where its fixup cannot find it.

    What it finds:
    A patchpoint whose instruction has an `__ex_table` entry (uaccess, `rdmsr_safe`, `wrmsr_safe`,
    FPU restores, `load_unaligned_zeropad`), when the table steps or emulates it and its header
    does not fix faults up at the original IP (`fault_fixup`).

    Why it is unsafe:
    `fixup_exception` looks the faulting IP up in `__ex_table`. A copy in a step buffer faults at
    the buffer's address, which has no entry, so an expected fault (a bad user pointer, an absent
    MSR) becomes an oops. kprobes handles this in `kprobe_fault_handler`, which resets the IP to
    the probed address before the fixup runs, and `can_boost` refuses to boost such instructions.

    Example:
    Under `legacy-2011` (no fault fixup), a `rdmsr` listed in `__ex_table`:

        f_rdmsr_safe:
            0f 32                   rdmsr           # FBT112

    FBT112_fail.ko: f_rdmsr_safe+0x0 (.text+0x0): FBT112 rdmsr in __ex_table stepped without fault fixup [error]

    Fix:
    Set `fault_fixup` in the table header and, on a fault during a step, put the original IP back
    in `pt_regs` before returning to the fault handler, as `kprobe_fault_handler` does; or refuse
    these sites.

    References:
    - torvalds/linux `arch/x86/mm/extable.c` `fixup_exception`; `arch/x86/include/asm/extable.h`
    - torvalds/linux `arch/x86/kernel/kprobes/core.c` `kprobe_fault_handler`, `can_boost`
    """

    id = "FBT112"
    facts_read = (EXTABLE,)  # the facts check() reads (judge/judge.py memoises by them)
    insn_reads = ("classes",)  # the Insn fields check() reads besides the text it prints
    name = "exception-table-site"
    summary = "an instruction with an __ex_table fixup is stepped without a fault fixup at the original ip"
    tags = ("extable", "site")
    facts_only = True

    def check(self, site: Site) -> str | None:
        if EXTABLE in site.pp.facts and site.placed and not site.table.fault_fixup:
            how = "stepped" if site.stepped else "emulated"
            return f"{site.insn.text} in __ex_table {how} without fault fixup"
        return None
