"""fbt203_ibt_landing_pad.py: FBT203, the int3 replaces an ENDBR64 (or its seal poison) instead of moving past it."""

from fbt_audit.judge.rule import Rule, Site
from fbt_audit.model.core import IC
from fbt_audit.model.facts import IBT_KERNEL


class IbtLandingPad(Rule):
    """A probe on ENDBR64 or its poison: the table must move the patchpoint past it.

    What it finds:
    A patchpoint still on `endbr64` (`f3 0f 1e fa`) or the IBT seal's poison (`66 0f 1f 00`)
    after the table's `move` entries ran, which the table steps or emulates: the table has no
    `move` entry for it. Only in an image built for IBT (objtool's `.ibt_endbr_seal` is present);
    without `X86_KERNEL_IBT` (bookworm's 6.1) ENDBR is a NOP that nothing checks.

    Why it is unsafe:
    With IBT enforced, every indirect call or jump must land on an ENDBR. An int3 in its place
    makes each indirect call of the function raise #CP (a control-protection fault, an oops);
    the displaced ENDBR replayed elsewhere proves nothing. kprobes moves offsets 0 and 4 of a
    function that starts with ENDBR to +4 (`arch_adjust_kprobe_addr`).

    Example:
    Under `reference entries=none` (no `move` entries, everything stepped):

        f_ibt:
            f3 0f 1e fa             endbr64         # FBT203

    FBT203_fail.ko: f_ibt+0x0 (.text+0x0): FBT203 probe on the ibt landing pad endbr64 [error]

    Fix:
    A `move` entry for ENDBR64/32 and for the poison `66 0f 1f 00` (FBT_M_EXACT_PREFIX), as the
    `reference` table has.

    References:
    - torvalds/linux `arch/x86/kernel/kprobes/core.c` `arch_adjust_kprobe_addr`;
      `arch/x86/include/asm/ibt.h` `is_endbr`
    - torvalds/linux `arch/x86/kernel/alternative.c` `apply_seal_endbr`
    """

    id = "FBT203"
    facts_read = (IBT_KERNEL,)  # the facts check() reads (judge/judge.py memoises by them)
    insn_reads = ("classes",)  # the Insn fields check() reads besides the text it prints
    name = "ibt-landing-pad"
    summary = "a probe on an endbr64 landing pad instead of past it"
    tags = ("site", "ibt")
    facts_only = True

    def check(self, site: Site) -> str | None:
        if site.insn.classes & IC.ENDBR and site.placed and IBT_KERNEL in site.pp.facts:
            return f"probe on the ibt landing pad {site.insn.text}"
        return None
