"""fbt113_control_transfer_unfixed.py: FBT113, ret or an indirect call/jump is stepped without IP fixups."""

from fbt_audit.judge.rule import Rule, Site
from fbt_audit.model.abi import Fixup
from fbt_audit.model.core import IC


class ControlTransferUnfixed(Rule):
    """`ret`, or a call/jmp through a register or memory, is stepped without the IP fixups it needs.

    What it finds:
    A stepped `ret`/`ret imm16` (`c3`, `c2`) or indirect jump (`ff /4`) without TRANSFER_IP,
    or a stepped indirect call (`ff /2`) without both RETURN_ADDR and TRANSFER_IP.

    Why it is unsafe:
    After a step the handler normally sets RIP to the original IP plus the instruction's
    length. For a transfer that is wrong: the IP the instruction chose must be kept
    (TRANSFER_IP), or a `ret` returns into the function it just left. An indirect call also
    pushes the step buffer's address as its return address, so the callee returns into the
    buffer unless RETURN_ADDR rewrites it to the original IP plus the length.

    Example:
    Under `reference`'s header without its entries (fixture table `reference entries=none`: an
    int3 step of everything, with only LIVE_IF and RIP_DISP after it):

        f_ret:
            c3                      retq            # FBT113

    FBT113_fail.ko: f_ret+0x0 (.text+0x0): FBT113 retq stepped without transfer-ip fixup [error]

    Fix:
    Emulate them (kprobes' `kprobe_emulate_ret`, `kprobe_emulate_call_indirect`,
    `kprobe_emulate_jmp_indirect`; memory forms are refused), or step them with TRANSFER_IP,
    plus RETURN_ADDR for calls, as dtrace4linux's `cpu_adjust` does (`c2 c3 ca cb`, `ff /4`:
    RIP kept; `ff /2`: return address rewritten).

    References:
    - torvalds/linux `arch/x86/kernel/kprobes/core.c` `prepare_emulation`
    - torvalds/linux 4.x `arch/x86/kernel/kprobes/core.c` `resume_execution` (`e8`/`ff /2` return
      address fixed)
    - dtrace4linux/linux `driver/cpu_x86.c` `cpu_adjust`
    """

    id = "FBT113"
    facts_read = ()  # the facts check() reads (judge/judge.py memoises by them)
    insn_reads = ("classes",)  # the Insn fields check() reads besides the text it prints
    name = "control-transfer-unfixed"
    summary = "ret or an indirect call or jump is stepped without the ip fixups it needs"
    tags = ("control-transfer", "step")

    def check(self, site: Site) -> str | None:
        if not site.stepped:
            return None
        insn, fixups = site.insn, site.fixups
        if insn.classes & IC.INDIRECT_CALL:
            missing = []
            if not fixups & Fixup.RETURN_ADDR:
                missing.append("return-addr")
            if not fixups & Fixup.TRANSFER_IP:
                missing.append("transfer-ip")
            if missing:
                plural = "s" if len(missing) > 1 else ""
                return f"{insn.text} stepped without {' and '.join(missing)} fixup{plural}"
            return None
        if insn.classes & (IC.RETURN | IC.INDIRECT_JUMP) and not fixups & Fixup.TRANSFER_IP:
            return f"{insn.text} stepped without transfer-ip fixup"
        return None
