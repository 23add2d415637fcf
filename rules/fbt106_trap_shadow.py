"""fbt106_trap_shadow.py: FBT106, MOV to %ss is stepped or emulated, and its shadow swallows the trap."""

from fbt_audit.judge.rule import Rule, Site
from fbt_audit.model.core import IC


class TrapShadow(Rule):
    """MOV SS (`8e /2`) is stepped or emulated; the interrupt shadow masks the step's trap.

    What it finds:
    A move to the stack segment register (`8e` with ModRM reg = 2), when the table steps or
    emulates it. POP SS (`17`) and POP DS (`1f`) are invalid in 64-bit mode and fall under
    FBT111.

    Why it is unsafe:
    After a MOV SS the CPU holds off interrupts, NMIs and debug traps until the next
    instruction has run. A TF step of it therefore does not stop after the MOV SS but after
    the following instruction, which then runs from the step buffer (whatever bytes follow the
    copy) with no fixup; a trailing-int3 step has its int3 land in the shadow. kprobes refuses
    it for this reason (`insn_masking_exception`).

    Example:
    Under `legacy-2011`, which steps what it does not list:

        f_mov_ss:
            8e d0                   movl %eax, %ss  # FBT106
            c3                      retq

    FBT106_fail.ko: f_mov_ss+0x0 (.text+0x0): FBT106 movl %eax, %ss stepped in its own trap shadow [error]

    Fix:
    Refuse `8e /2` (an entry with `modrm_mask=0x38, modrm_value=0x10` and handling refuse).

    References:
    - torvalds/linux `arch/x86/kernel/kprobes/core.c` `__copy_instruction`;
      `arch/x86/include/asm/insn.h` `insn_masking_exception`
    - Intel SDM vol. 2B, MOV: "Loading the SS register with a MOV instruction suppresses or
      inhibits some debug exceptions and inhibits interrupts on the following instruction boundary"
    """

    id = "FBT106"
    facts_read = ()  # the facts check() reads (judge/judge.py memoises by them)
    insn_reads = ("classes",)  # the Insn fields check() reads besides the text it prints
    name = "trap-shadow"
    summary = "mov to %ss is stepped or emulated and its shadow masks the trap"
    tags = ("trap",)

    def check(self, site: Site) -> str | None:
        if site.insn.classes & IC.TRAP_SHADOW and site.placed:
            return f"{site.insn.text} {'stepped' if site.stepped else 'emulated'} in its own trap shadow"
        return None
