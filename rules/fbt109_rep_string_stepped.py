"""fbt109_rep_string_stepped.py: FBT109, a REP string instruction runs one iteration under a TF step."""

from fbt_audit.judge.rule import Rule, Site
from fbt_audit.model.abi import Fixup, StepMechanism
from fbt_audit.model.core import IC


class RepStringStepped(Rule):
    """A REP string instruction is TF-stepped without REP continuation: one iteration only.

    What it finds:
    A string instruction with a REP/REPE/REPNE prefix (`f3 a4` rep movsb, `f3 48 ab` rep
    stosq, ...) that the table steps with the TF mechanism, without the REP_CONT fixup.
    Stepping out of line with a trailing int3 does not fire: the copy runs to completion
    before it reaches the int3.

    Why it is unsafe:
    With TF set, the CPU raises #DB after every iteration of a REP string instruction, with
    RIP still on the instruction and RCX decremented by one. A handler that treats the first
    #DB as the end of the step moves RIP past it, so the copy or fill does one element instead
    of RCX. dtrace4linux has continuation branches for `f2`/`f3`, but `cpu_skip_prefix`
    strips those prefixes first, so they are unreachable.

    Example:
    Under `legacy-2011` (TF step, REP continuation unreachable):

        f_rep:
            f3 aa                   rep stosb %al, (%rdi)   # FBT109
            c3                      retq

    FBT109_fail.ko: f_rep+0x0 (.text+0x0): FBT109 rep stosb %al, (%rdi) tf-stepped for one iteration [error]

    Fix:
    Step out of line with a trailing int3 (kprobes' `prepare_singlestep`), or add REP_CONT so
    that the handler re-steps while RCX is not zero and RIP has not advanced.

    References:
    - dtrace4linux/linux `driver/cpu_x86.c` `cpu_adjust` (`case 0xf2/0xf3`), `cpu_skip_prefix`
    - torvalds/linux `arch/x86/kernel/kprobes/core.c` `prepare_singlestep`
    - Intel SDM vol. 3B, 18.3.1.4 "Single-Step Exception Condition" (REP string instructions)
    """

    id = "FBT109"
    facts_read = ()  # the facts check() reads (judge/judge.py memoises by them)
    insn_reads = ("classes",)  # the Insn fields check() reads besides the text it prints
    name = "rep-string-stepped"
    summary = "a rep string instruction is tf-stepped without rep continuation"
    tags = ("step",)

    def check(self, site: Site) -> str | None:
        if (
            site.insn.classes & IC.REP_STRING
            and site.stepped
            and site.table.step_mechanism == StepMechanism.TF
            and not site.fixups & Fixup.REP_CONT
        ):
            return f"{site.insn.text} tf-stepped for one iteration"
        return None
