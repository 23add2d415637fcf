"""fbt107_privileged_instruction.py: FBT107, a halting or mode-switching instruction is stepped."""

from fbt_audit.judge.rule import Rule, Site
from fbt_audit.model.core import IC


class PrivilegedInstruction(Rule):
    """hlt, mwait, swapgs, sysret/sysexit, VM entry or a debug-register write is stepped or emulated.

    What it finds:
    hlt (`f4`), mwait, swapgs (`0f 01 f8`), sysret (`0f 07`), sysexit (`0f 35`), VM entry
    (vmlaunch, vmresume, vmrun, vmcall and the rest of `0f 01` with mod=3 that kprobes
    refuses) and moves to a debug register (`0f 23`), when the table steps or emulates them.
    Ring-0 steps of in/out, rdmsr/wrmsr and CR moves are fine and do not fire.

    Why it is unsafe:
    These instructions leave the context the handler relies on. hlt and mwait sleep inside the
    step with IF masked (a TF step wakes only on an NMI); swapgs swaps %gs under the handler's
    feet, so its per-CPU data is the user's; sysret and sysexit return to user mode from the
    step buffer; a VM entry runs a guest with TF set; a debug-register write can clobber the
    DR7/DR6 state a TF step depends on.

    Example:
    Under `legacy-2011`, which steps what it does not list:

        f_swapgs:
            0f 01 f8                swapgs          # FBT107
            c3                      retq

    FBT107_fail.ko: f_swapgs+0x0 (.text+0x0): FBT107 privileged instruction swapgs stepped [error]

    Fix:
    Refuse them. kprobes refuses `0f 01` VMX forms in `prepare_emulation` and blacklists
    `.entry.text` (where swapgs and sysret live) in `arch_populate_kprobe_blacklist`;
    dtrace4linux refuses hlt in `dtrace_parse_function`.

    References:
    - torvalds/linux `arch/x86/kernel/kprobes/core.c` `prepare_emulation`, `arch_populate_kprobe_blacklist`
    - dtrace4linux/linux `driver/prov_common.c` `dtrace_parse_function` (refuses `f4`)
    """

    id = "FBT107"
    facts_read = ()  # the facts check() reads (judge/judge.py memoises by them)
    insn_reads = ("classes",)  # the Insn fields check() reads besides the text it prints
    name = "privileged-instruction"
    summary = "a halting, mode-switching or debug-register instruction is stepped or emulated"
    tags = ("privileged",)

    def check(self, site: Site) -> str | None:
        if site.insn.classes & IC.PRIVILEGED and site.placed:
            return f"privileged instruction {site.insn.text} {'stepped' if site.stepped else 'emulated'}"
        return None
