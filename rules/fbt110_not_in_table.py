"""fbt110_not_in_table.py: FBT110, no table entry matches and the table has no default handling."""

from fbt_audit.judge.rule import Rule, Site
from fbt_audit.model.abi import Handling
from fbt_audit.model.core import IC, Level


class NotInTable(Rule):
    """No entry matches the instruction and the table has no default handling, so no probe is placed.

    What it finds:
    An instruction that no entry of the emulation table matches, under a table whose header
    default is none ("refuse what is not listed"). The module places no probe there.

    Why it is unsafe:
    It is not: this is a note, and the patchpoint's verdict is refused. It records a probe the
    user will not get, so that a table author can see which entry instructions the table does
    not yet cover, and so that the safety list explains the gap.

    Example:
    Under `reference` without its default handling (fixture table `reference default=none`),
    which has no entry for `0f a2`:

        f_cpuid:
            0f a2                   cpuid           # FBT110
            c3                      retq

    FBT110_fail.ko: f_cpuid+0x0 (.text+0x0): FBT110 no table entry for cpuid, no default handling [note]

    Fix:
    Add an entry for the instruction with the handling it needs, or give the table a default
    handling (step, with the step fixups the mechanism requires).

    References:
    - kmod/fbt_table.h `FBT_H_NONE` ("header default only: no default, refuse what is not listed")
    - torvalds/linux `arch/x86/kernel/kprobes/core.c` `prepare_emulation` (kprobes steps by
      default), `can_probe`
    """

    id = "FBT110"
    facts_read = ()  # the facts check() reads (judge/judge.py memoises by them)
    insn_reads = ("classes",)  # the Insn fields check() reads besides the text it prints
    name = "not-in-table"
    level = Level.NOTE
    summary = "no table entry matches and the table has no default handling"
    tags = ("table",)

    def check(self, site: Site) -> str | None:
        if (
            site.entry is None
            and site.table.default_handling == Handling.NONE
            and not site.insn.classes & IC.INVALID
        ):
            return f"no table entry for {site.insn.text}, no default handling"
        return None
