"""fbt205_init_text.py: FBT205, the patchpoint is in text freed after boot or after module load."""

from fbt_audit.judge.rule import Rule, Site
from fbt_audit.model.core import Level
from fbt_audit.model.facts import INIT

WHY = {
    "init": ".init.text, freed after boot",
    "exit": ".exit.text, discarded from a built-in kernel",
    "module-init": "module .init.text, freed after init",
}


class InitText(Rule):
    """The patchpoint is in `.init.text`/`.exit.text` of a vmlinux, or a module's `.init.text`.

    What it finds:
    vmlinux `.init.text` (`__init` functions, freed by `free_initmem`) and `.exit.text` (never
    run in a built-in kernel), and a module's `.init.text` (freed when its init function
    returns). A module's `.exit.text` stays until rmmod and does not fire.

    Why it is unsafe:
    A probe on freed text writes int3 into memory the page allocator has handed to someone
    else, and its saved bytes describe code that no longer exists. kprobes refuses freed
    module init (`within_module_init` once `MODULE_STATE_LIVE`) and `__init` text after boot
    (`init_kprobes` removes such probes, `kprobe_free_init_mem`).

    Example:
    Any table, an `__init` function:

        f_init:
            55                      push %rbp       # FBT205

    FBT205_fail.ko: f_init+0x0 (.init.text+0x0): FBT205 init text: module .init.text, freed after init [warning]

    Fix:
    Skip these patchpoints, or probe them only while the code is alive (before `free_initmem`).

    References:
    - torvalds/linux `kernel/kprobes.c` `check_kprobe_address_safe`, `kprobe_free_init_mem`
    - torvalds/linux `include/linux/init.h` `__init`, `__exit`
    """

    id = "FBT205"
    facts_read = (INIT,)  # the facts check() reads (judge/judge.py memoises by them)
    insn_reads = ("classes",)  # the Insn fields check() reads besides the text it prints
    name = "init-text"
    level = Level.WARNING
    summary = "the patchpoint is in init text that is freed"
    tags = ("site", "lifetime")
    facts_only = True

    def check(self, site: Site) -> str | None:
        why = [WHY[f[len(INIT) :]] for f in sorted(site.pp.facts) if f.startswith(INIT)]
        return "init text: " + ", ".join(why) if why else None
