"""fbt104_pc_relative_unfixed.py: FBT104, an IP-relative instruction is stepped out of line unfixed."""

from fbt_audit.judge.rule import Rule, Site
from fbt_audit.model.abi import Fixup
from fbt_audit.model.core import IC


class PcRelativeUnfixed(Rule):
    """A RIP-relative operand, or a relative jmp/jcc/call/loop, is stepped out of line unfixed.

    What it finds:
    A stepped instruction with a RIP-relative ModRM operand (`modrm & 0xc7 == 0x05`) and no
    RIP_DISP fixup, a relative branch or call (`e8`, `e9`, `eb`, `70-7f`, `0f 80-8f`,
    `e0-e3`) without BRANCH_TARGET, or a relative call without RETURN_ADDR.

    Why it is unsafe:
    Every step runs a copy of the instruction in a buffer, a TF step as much as a trailing-int3
    one. Its displacement is relative to the copy's address, so a RIP-relative load reads, and
    a store writes, some unrelated kernel memory; a branch goes to a wild address; a call
    pushes a return address inside the buffer, so the callee returns into the step slot.

    Example:
    Under `legacy-2011`, whose `cpu_adjust` recomputes `70-7f`, `eb`, `e9` and `e0-e3` targets
    but has no case for the two-byte jcc rel32 (`0f 80-8f`):

        f_je32:
            0f 84 00 00 00 00       je f_je32+0x6   # FBT104
            c3                      retq

    FBT104_fail.ko: f_je32+0x0 (.text+0x0): FBT104 je 0x1006 stepped without branch-target fixup [error]

    Fix:
    Rebase the displacement for the copy (RIP_DISP; kprobes' `__copy_instruction` rewrites
    disp32 and fails if it overflows), recompute branch targets from the original IP
    (BRANCH_TARGET) and rewrite pushed return addresses (RETURN_ADDR), or emulate the branch
    (kprobes' `kprobe_emulate_call`/`_jmp`/`_jcc`/`_loop`), or refuse it.

    References:
    - torvalds/linux `arch/x86/kernel/kprobes/core.c` `__copy_instruction`, `prepare_emulation`;
      `arch/x86/lib/insn.c` `insn_rip_relative`
    - dtrace4linux/linux `driver/cpu_x86.c` `cpu_adjust` (branch targets, return addresses);
      `driver/fbt_linux.c` `fbt_prov_entry` (refuses RIP-relative ModRM);
      `driver/prov_common.c` `dtrace_parse_function` (refuses `e8`)
    """

    id = "FBT104"
    facts_read = ()  # the facts check() reads (judge/judge.py memoises by them)
    insn_reads = ("classes",)  # the Insn fields check() reads besides the text it prints
    name = "pc-relative-unfixed"
    summary = "an ip-relative operand, branch or call is stepped out of line without a fixup"
    tags = ("pc-relative", "step")

    def check(self, site: Site) -> str | None:
        if not site.stepped:
            return None
        insn, fixups = site.insn, site.fixups
        missing = []
        if insn.classes & IC.RIP_RELATIVE and not fixups & Fixup.RIP_DISP:
            missing.append("rip-disp")
        if insn.classes & (IC.REL_BRANCH | IC.REL_CALL) and not fixups & Fixup.BRANCH_TARGET:
            missing.append("branch-target")
        if insn.classes & IC.REL_CALL and not fixups & Fixup.RETURN_ADDR:
            missing.append("return-addr")
        if not missing:
            return None
        plural = "s" if len(missing) > 1 else ""
        return f"{insn.text} stepped without {' and '.join(missing)} fixup{plural}"
