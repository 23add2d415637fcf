"""fbt115_branch_into_window.py: FBT115, a branch lands strictly inside a multi-byte patch window (--deep)."""

from fbt_audit.judge.rule import Rule, Site
from fbt_audit.model.facts import WINDOW_TARGET


class BranchIntoWindow(Rule):
    """A branch lands inside the bytes a multi-byte patch overwrites, so it executes half a jmp.

    What it finds:
    With `--deep`, under a table whose header has a patch window longer than the int3
    (`patch_len`, 5 in `kprobes-6.1-optprobe`: the `jmp rel32` of an optimized probe), a
    patchpoint where something can land strictly inside `(patchpoint, patchpoint + patch_len)`:
    any direct `jmp`, `jcc`, `call`, `loop` or `jrcxz` of the image (from the same function, its
    `.cold` part, another function, `.altinstr_aux` or an alternative replacement), a static
    branch's jump-label target (`__jump_table`, a NOP on disk until the key is enabled), or an
    exception fixup (`__ex_table`). One sweep of the whole image; the site must be placed
    (stepped or emulated), not refused or left to ftrace.

    Why it is unsafe:
    The patch replaces the first instructions with one `jmp` to a detour. A branch to an
    instruction boundary inside the window now lands in the middle of that `jmp`'s rel32 and
    runs its displacement bytes as instructions: an invalid opcode at best, silent corruption at
    worst, only on the path that takes the branch. Linux's `can_optimize` decodes the probed
    function and keeps the int3 when one of its own jumps lands there; it never sees a branch
    from another function, a `.cold` part, a jump label still NOPed out, or a fixup.

    Example:
    Under `kprobes-6.1-optprobe`, a loop back to the second instruction:

        f_loop:
            31 c0                   xorl %eax, %eax  # FBT115
            ff c0                   incl %eax        # a loop branches back here, at +2
            39 f8                   cmpl %edi, %eax
            75 fa                   jne  f_loop+2

    FBT115_fail.ko: f_loop+0x0 (.text+0x0): FBT115 jcc from f_loop+0x6 lands at +2, inside the 5-byte window [error]

    Fix:
    Patch only where nothing branches into the window: check every direct branch of the image
    and the jump-label and exception tables, not only the probed function (as `--deep` does), or
    fall back to the one-byte int3 at such sites.

    References:
    - torvalds/linux `arch/x86/kernel/kprobes/opt.c` `can_optimize`, `insn_jump_into_range`
    - torvalds/linux `include/linux/jump_label.h` `struct jump_entry`; `arch/x86/mm/extable.c`
    """

    id = "FBT115"
    facts_read = (WINDOW_TARGET,)  # the facts check() reads (judge/judge.py memoises by them)
    insn_reads = ("classes",)  # the Insn fields check() reads besides the text it prints
    name = "branch-into-window"
    summary = "a branch, jump-label target or fixup lands strictly inside the multi-byte patch window"
    tags = ("deep", "window")
    facts_only = True

    def check(self, site: Site) -> str | None:
        n = site.table.patch_len
        if n <= 1 or not site.placed:
            return None
        for f in sorted(site.pp.facts):
            if f.startswith(WINDOW_TARGET):
                off, _, what = f[len(WINDOW_TARGET) :].partition(":")
                if 0 < int(off) < n:
                    return f"{what} lands at +{off}, inside the {n}-byte window"
        return None
