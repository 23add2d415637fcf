"""fbt207_handler_recursion.py: FBT207, the function is on the trap-handling path: a probe re-enters the handler."""

from fbt_audit.judge.rule import Rule, Site
from fbt_audit.model.facts import HANDLER_PATH


class HandlerRecursion(Rule):
    """The function is on the int3/#DB/NMI/die-notifier path, so probing it re-enters the handler.

    What it finds:
    A function listed in `audit/data/handler-path.txt`: the roots `exc_int3`, `exc_debug`,
    `exc_nmi` and `notify_die`, the int3 consumers that run before an FBT handler
    (`poke_int3_handler`, `kprobe_int3_handler`), and their direct callees. Its suffixed
    clones (`.isra.N`, `.constprop.N`, `.part.N`) count as the function. With `--deep`, a
    vmlinux's set comes from its own direct-call graph instead (`audit/sites/callgraph.py`: the
    roots, the die notifiers it registers, paravirt calls and `kmod/fbt.ko`'s handler callees,
    cut at fatal paths and where the trap context ends), and the list is the cross-check.

    Why it is unsafe:
    The probe's own int3 runs this code before the tracer's handler gets control; an int3 in it
    traps again inside the trap handler, which recurses until the stack overflows or the
    nesting check of the handler (if any) drops the probe while the first one's state is
    half-saved. kprobes protects most of these with NOKPROBE_SYMBOL or noinstr (FBT204); an FBT
    module gets no such protection from the kernel.

    Example:
    Any table, a function on the list:

        notify_die:
            55                      push %rbp       # FBT207

    FBT207_fail.ko: notify_die+0x0 (.text+0x0): FBT207 on the trap-handling path: root: die chain, int3/#DB/NMI [error]

    Fix:
    Never probe these; the provider should load the list (or the denylist) and skip them.

    References:
    - torvalds/linux `arch/x86/kernel/traps.c` `exc_int3`, `do_int3`; `kernel/notifier.c` `notify_die`
    - torvalds/linux `arch/x86/kernel/alternative.c` `poke_int3_handler`
    """

    id = "FBT207"
    facts_read = (HANDLER_PATH,)  # the facts check() reads (judge/judge.py memoises by them)
    insn_reads = ("classes",)  # the Insn fields check() reads besides the text it prints
    name = "handler-recursion"
    summary = "the function runs on the trap-handling path, so a probe re-enters the handler"
    tags = ("site", "recursion")
    facts_only = True

    def check(self, site: Site) -> str | None:
        for f in sorted(site.pp.facts):
            if f.startswith(HANDLER_PATH):
                name, _, reason = f[len(HANDLER_PATH) :].partition("=")
                return f"on the trap-handling path: {reason or name}"
        return None
