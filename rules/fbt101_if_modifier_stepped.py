"""fbt101_if_modifier_stepped.py: FBT101, an instruction that writes IF or TF runs on the handler's flags."""

from fbt_audit.judge.rule import Rule, Site
from fbt_audit.model.abi import EmuFlags
from fbt_audit.model.core import IC


class IfModifierStepped(Rule):
    """An instruction that writes IF or TF is stepped, or emulated on the handler's live flags.

    What it finds:
    CLI, STI, POPF, IRET/IRETQ and any other instruction that writes the interrupt flag (IF)
    or the trap flag (TF), when the table steps it, or emulates it on the trap handler's own
    flags instead of the interrupted context's saved `pt_regs->flags`.
    With `--deep`, the finding says whether a flags word is followed: a PUSHF variant's paths
    to its consumers, as for FBT102; CLI, STI, POPF and IRET push none (a one-line note).

    Why it is unsafe:
    A step runs the copy with flags the handler chose: IF masked, and under a TF step TF set.
    POPF and IRET load both flags from the stack, so a popped TF=0 ends the single-step early
    and the handler never regains control (or a popped TF=1 traps in the wrong place), while
    CLI/STI change an IF that the handler then overwrites when it restores the saved flags, so
    interrupts end up on when the code disabled them, or off for good. Emulating on the live
    flags has the same effect: the edit lands on the handler's flags, not on the context's.
    As the kprobes source puts it, "IF modifiers must be emulated since it will enable
    interrupt while int3 single stepping".

    Example:
    Under `legacy-2011`, which steps POPF with TF set and IF masked:

        f_popf:
            9d                      popfq           # FBT101
            c3                      retq

    FBT101_fail.ko: f_popf+0x0 (.text+0x0): FBT101 popfq stepped while it writes if and tf [error]

    Fix:
    Emulate the instruction on the saved flags: CLI/STI clear or set IF in `regs->flags`,
    POPF pops into `regs->flags`, as kprobes' `kprobe_emulate_ifmodifiers` does; set the
    table's `emu_flags` to saved. Refuse IRET.

    References:
    - torvalds/linux `arch/x86/kernel/kprobes/core.c` `prepare_emulation`, `kprobe_emulate_ifmodifiers`
    - torvalds/linux 4.x `arch/x86/kernel/kprobes/core.c` `is_IF_modifier` (`fa fb cf 9d`)
    - dtrace4linux/linux `driver/cpu_x86.c` `cpu_copy_instr` (CLI/STI emulated: "we panic if we
      single step"), `cpu_adjust` (POPF: flags left as POPF set them)
    """

    id = "FBT101"
    facts_read = ()  # the facts check() reads (judge/judge.py memoises by them)
    insn_reads = ("classes",)  # the Insn fields check() reads besides the text it prints
    name = "if-modifier-stepped"
    summary = "an instruction that writes if or tf is stepped or emulated on live flags"
    tags = ("flags", "interrupts", "step")

    def check(self, site: Site) -> str | None:
        insn = site.insn
        if not insn.classes & (IC.WRITES_IF | IC.WRITES_TF):
            return None
        if insn.classes & IC.WRITES_IF and insn.classes & IC.WRITES_TF:
            what = "if and tf"
        elif insn.classes & IC.WRITES_IF:
            what = "if"
        else:
            what = "tf"
        if site.stepped:
            return f"{insn.text} stepped while it writes {what}"
        if site.emulated and site.table.emu_flags == EmuFlags.LIVE:
            return f"{insn.text} emulated on the handler's live flags"
        return None
