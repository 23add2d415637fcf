"""fbt103_live_if_not_restored.py: FBT103, a masked-IF step leaves interrupts disabled afterwards."""

from fbt_audit.judge.rule import Rule, Site
from fbt_audit.model.abi import Fixup, StepIF


class LiveIfNotRestored(Rule):
    """Under a masked-IF step, the interrupted context's IF is not restored after the step.

    What it finds:
    Any instruction the table steps while its header masks IF during a step (`step_if` =
    masked), when neither the entry nor the header's step fixups include LIVE_IF.
    With `--deep`, a stepped PUSHF's finding also shows the paths of the pushed flags word to
    its consumers, as for FBT102.

    Why it is unsafe:
    The step runs with IF cleared in the flags the copy resumes with. Unless the handler puts
    the interrupted context's IF back before returning, the function continues with interrupts
    off: timers and IPIs stall on that CPU until some later POPF or STI happens to turn them
    back on. dtrace4linux after its PUSHF fix (aa60b7f) still has this hole: the `9c` case of
    `cpu_adjust` repairs the pushed copy and returns before the IF-restore path, so IF stays 0
    in the live `r_rfl`.

    Example:
    Under `reference` with LIVE_IF dropped from its step fixups (fixture table
    `reference step_fixups=rip_disp`: an int3 step with IF masked, and only RIP_DISP after it):

        f_push:
            55                      pushq %rbp      # FBT103
            48 89 e5                movq %rsp, %rbp

    FBT103_fail.ko: f_push+0x0 (.text+0x0): FBT103 pushq %rbp stepped with if masked and not restored [error]

    dtrace4linux after aa60b7f is the same for PUSHF alone: an entry that steps `9c` with
    PUSHED_FLAGS and `FBT_M_OWN_FIXUPS` under a TF, masked-IF header.

    Fix:
    Add LIVE_IF to the header's `step_fixups` (and to every entry with `FBT_M_OWN_FIXUPS` that
    steps), so that the handler ORs the saved IF back into `regs->flags` after the step, as
    kprobes' `resume_singlestep` does; or step with `step_if` = preserved.

    References:
    - dtrace4linux/linux `driver/cpu_x86.c` `cpu_adjust` (default case restores IF from
      `ct_eflags`; the PUSHF case returns first), commit aa60b7f
    - torvalds/linux `arch/x86/kernel/kprobes/core.c` `setup_singlestep`, `resume_singlestep`
    """

    id = "FBT103"
    facts_read = ()  # the facts check() reads (judge/judge.py memoises by them)
    insn_reads = ("classes",)  # the Insn fields check() reads besides the text it prints
    name = "live-if-not-restored"
    summary = "a masked-if step does not restore the interrupted context's if"
    tags = ("interrupts", "step")

    def check(self, site: Site) -> str | None:
        if site.stepped and site.table.step_if == StepIF.MASKED and not site.fixups & Fixup.LIVE_IF:
            return f"{site.insn.text} stepped with if masked and not restored"
        return None
