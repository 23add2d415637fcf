"""fbt102_pushed_flags_leak.py: FBT102, PUSHF stores the handler's flags, not the interrupted context's."""

from fbt_audit.judge.rule import Rule, Site
from fbt_audit.model.abi import EmuFlags, Fixup
from fbt_audit.model.core import IC


class PushedFlagsLeak(Rule):
    """PUSHF is stepped without the pushed-flags repair, or emulated from the handler's live flags.

    What it finds:
    PUSHF/PUSHFQ (`9c`), when the table steps it without the PUSHED_FLAGS fixup, or emulates it
    from the handler's live flags (`emu_flags` = live) instead of the saved `pt_regs->flags`.
    This is the bug behind the seed's one-in-a-million hang.

    Why it is unsafe:
    The stepped copy pushes the flags it runs with: IF cleared and, under a TF step, TF set.
    The function later restores that word with POPF (`native_save_fl`/`native_restore_fl`,
    `local_irq_save`/`local_irq_restore`, the 3.0-era `native_load_gs_index`), so interrupts
    stay disabled on a CPU that had them enabled, or a stray TF=1 raises #DB with no handler
    expecting it. Emulating PUSHF from the handler's own flags pushes the same wrong word.
    With `--deep`, the finding shows where the pushed word goes: every path from the
    patchpoint to its consumer (POPF, IRET, `pop reg`, through copies to other slots), each
    proven, refuted or unknown (with why) by value tracking when the `[deep]` extra (angr) is
    installed; SARIF carries them as codeFlows.

    Example:
    Under `legacy-2011` (TF step, IF masked, PUSHF stepped without repair), on the locked 6.1
    vmlinux (tests/kernels.lock `dbg-6.1`):

        native_save_fl:
            9c                      pushfq          # FBT102
            58                      popq %rax
            e9 39 bd 3b 00          jmp __x86_return_thunk

    vmlinux-6.1.0-56-amd64: native_save_fl+0x0 (.text+0xa45ff0): FBT102 pushfq stepped without flags repair [error]

    The same function in the rule's fixture:

    FBT102_fail.ko: f_pushf+0x0 (.text+0x0): FBT102 pushfq stepped without flags repair [error]

    Fix:
    Give PUSHF an entry that either emulates it on the saved flags (kprobes:
    `int3_emulate_push(regs, regs->flags)`), or steps it with PUSHED_FLAGS so that the pushed
    word is rewritten from the saved flags, as 4.x kprobes' `resume_execution` did
    (`*tos &= ~(TF|IF); *tos |= kcb->kprobe_old_flags`) and dtrace4linux after aa60b7f does
    (`*fl = tp->ct_eflags`).

    References:
    - dtrace4linux/linux commit aa60b7f (2011-11-22), Changes #586 "When handling PUSHF
      instruction, dont leave interrupts disabled"; `driver/cpu_x86.c` `cpu_adjust`
    - torvalds/linux `arch/x86/kernel/kprobes/core.c` `prepare_emulation`, `kprobe_emulate_ifmodifiers`
    - torvalds/linux 4.x `arch/x86/kernel/kprobes/core.c` `resume_execution`
    """

    id = "FBT102"
    facts_read = ()  # the facts check() reads (judge/judge.py memoises by them)
    insn_reads = ("classes",)  # the Insn fields check() reads besides the text it prints
    name = "pushed-flags-leak"
    summary = "pushf stores the handler's flags instead of the interrupted context's"
    tags = ("flags", "interrupts", "step")

    def check(self, site: Site) -> str | None:
        insn = site.insn
        if not insn.classes & IC.PUSHES_FLAGS:
            return None
        if site.stepped and not site.fixups & Fixup.PUSHED_FLAGS:
            return f"{insn.text} stepped without flags repair"
        if site.emulated and site.table.emu_flags == EmuFlags.LIVE:
            return f"{insn.text} emulated from the handler's live flags"
        return None
