"""fbt114_table_refusal.py: FBT114, the emulation table explicitly refuses the instruction."""

from fbt_audit.judge.rule import Rule, Site
from fbt_audit.model.abi import Handling
from fbt_audit.model.core import Level


class TableRefusal(Rule):
    """The emulation table refuses the instruction, so the module places no probe here.

    What it finds:
    An instruction whose matching table entry has handling refuse, or that matches no entry
    under a table whose default handling is refuse. The message names the entry's mnemonic.

    Why it is unsafe:
    It is not: this is a note, and the patchpoint's verdict is refused. The table's author
    decided the handler cannot take this instruction (kprobes' -EOPNOTSUPP cases, dtrace4linux's
    refusals of `e8`, IRET, hlt and RIP-relative operands), so the function has no entry probe.
    Listing each refusal keeps the gaps in coverage visible and explained.

    Example:
    Under `legacy-2011`, which refuses hlt ("if we single step a HLT, well, the kernel doesnt
    really like it"):

        f_hlt:
            f4                      hlt             # FBT114
            c3                      retq

    FBT114_fail.ko: f_hlt+0x0 (.text+0x0): FBT114 hlt refused by table entry 'hlt' [note]

    Fix:
    Nothing is wrong. To get the probe, teach the handler the instruction (emulate it, or step
    it with the fixups it needs) and change the entry's handling; or probe a later instruction.

    References:
    - torvalds/linux `arch/x86/kernel/kprobes/core.c` `prepare_emulation` (-EOPNOTSUPP)
    - dtrace4linux/linux `driver/prov_common.c` `dtrace_parse_function`, `driver/fbt_linux.c`
      `fbt_prov_entry`
    """

    id = "FBT114"
    facts_read = ()  # the facts check() reads (judge/judge.py memoises by them)
    insn_reads = ("classes",)  # the Insn fields check() reads besides the text it prints
    name = "table-refusal"
    level = Level.NOTE
    summary = "the emulation table refuses the instruction"
    tags = ("table",)

    def check(self, site: Site) -> str | None:
        if site.handling != Handling.REFUSE:
            return None
        if site.entry is None:
            return f"{site.insn.text} refused by table default"
        return f"{site.insn.text} refused by table entry '{site.entry.mnemonic}'"
