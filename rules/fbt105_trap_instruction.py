"""fbt105_trap_instruction.py: FBT105, a trapping instruction is stepped or emulated away from its IP."""

from fbt_audit.judge.rule import Rule, Site
from fbt_audit.model.core import IC


class TrapInstruction(Rule):
    """An instruction that raises an exception on purpose is stepped or emulated.

    What it finds:
    int3 (`cc`), `int n` (`cd`), int1 (`f1`), into (`ce`, invalid in 64-bit mode), ud0/ud1/ud2
    (`0f ff`, `0f b9`, `0f 0b`) and so every `__bug_table` site (BUG/WARN), when the table
    steps or emulates it.

    Why it is unsafe:
    The kernel's handlers for these exceptions key on the faulting IP: `handle_bug` looks the
    IP up in `__bug_table` (`find_bug`), kCFI and the Xen/KVM emulate prefix decode the bytes
    at the IP, and an int3 is checked against the kprobe and text_poke tables. A copy in a
    step buffer raises the exception at the buffer's address, which none of them knows, so a
    WARN becomes an oops, or the probe's own trap handler sees its own int3 and recurses.

    Example:
    Under `legacy-2011`, which steps what it does not list:

        f_ud2:
            0f 0b                   ud2             # FBT105
            c3                      retq

    FBT105_fail.ko: f_ud2+0x0 (.text+0x0): FBT105 trap instruction ud2 stepped [error]

    Fix:
    Refuse them, as kprobes does: `__copy_instruction` refuses a residual `cc` and the
    emulate prefix, 6.12's `can_probe` refuses `is_exception_insn`, and
    `check_kprobe_address_safe` refuses `find_bug` sites.

    References:
    - torvalds/linux v6.12 `arch/x86/kernel/kprobes/core.c` `is_exception_insn`, `can_probe`,
      `__copy_instruction`
    - torvalds/linux `kernel/kprobes.c` `check_kprobe_address_safe` (`find_bug`)
    - dtrace4linux/linux `driver/fbt_linux.c` `fbt_prov_entry` (refuses bytes already `cc`)
    """

    id = "FBT105"
    facts_read = ()  # the facts check() reads (judge/judge.py memoises by them)
    insn_reads = ("classes",)  # the Insn fields check() reads besides the text it prints
    name = "trap-instruction"
    summary = "a trapping instruction is stepped or emulated away from its original ip"
    tags = ("trap", "bug-table")

    def check(self, site: Site) -> str | None:
        if site.insn.classes & IC.TRAP and site.placed:
            return f"trap instruction {site.insn.text} {'stepped' if site.stepped else 'emulated'}"
        return None
