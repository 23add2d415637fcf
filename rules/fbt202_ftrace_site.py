"""fbt202_ftrace_site.py: FBT202, an int3 is planted on an ftrace call site that ftrace rewrites at run time."""

from fbt_audit.judge.rule import Rule, Site
from fbt_audit.model.abi import Handling
from fbt_audit.model.core import Level
from fbt_audit.model.facts import FTRACE_SITE


class FtraceSite(Rule):
    """The patchpoint is an ftrace call site and the table neither uses ftrace nor moves past it.

    What it finds:
    A `__mcount_loc` site (`call __fentry__` on disk, a 5-byte NOP after boot, a call to an
    ftrace trampoline while tracing) that the table steps or emulates, or does not list at all.
    A table that sends the site through ftrace (`ftrace` handling, as kprobes-on-ftrace does),
    moves past it (`move`) or refuses it places no int3 there, and the rule does not fire.

    Why it is unsafe:
    ftrace owns those five bytes: enabling or disabling any function tracer rewrites them with
    `text_poke_bp`, which puts its own int3 on the first byte and expects to find its own
    bytes when it finishes. A probe's int3 there is overwritten (the probe silently disappears)
    or makes ftrace's `ftrace_verify_code` fail ("ftrace failed to modify") and ftrace shut
    itself down. kprobes never puts an int3 there: `check_ftrace_location` turns the probe into
    an ftrace-based one, or refuses it without `CONFIG_KPROBES_ON_FTRACE`.

    Example:
    Under `reference entries=none default=none`, a table that says nothing about `call __fentry__`
    (FBT110 notes that too):

        f_traced:
            e8 00 00 00 00          callq __fentry__        # FBT202, FBT110

    FBT202_fail.ko: f_traced+0x0 (.text+0x0): FBT202 int3 on ftrace site callq __fentry__ [warning]

    Fix:
    Give the table an `ftrace` entry for `call __fentry__` (target class FENTRY) and register an
    ftrace_ops on the function instead of planting int3, or a `move` entry to probe the next
    instruction.

    References:
    - torvalds/linux `kernel/kprobes.c` `check_ftrace_location`; `arch/x86/kernel/ftrace.c`
      `ftrace_verify_code`, `ftrace_nop_replace`
    - torvalds/linux `tools/objtool/check.c` `create_mcount_loc_sections`
    """

    id = "FBT202"
    facts_read = (FTRACE_SITE,)  # the facts check() reads (judge/judge.py memoises by them)
    insn_reads = ("classes",)  # the Insn fields check() reads besides the text it prints
    name = "ftrace-site"
    level = Level.WARNING
    summary = "an int3 on an ftrace call site that ftrace rewrites at run time"
    tags = ("site", "ftrace")
    facts_only = True

    def check(self, site: Site) -> str | None:
        if site.variant != "disk" or FTRACE_SITE not in site.pp.facts:
            return None
        if site.handling in (Handling.STEP, Handling.EMULATE, Handling.NONE):
            return f"int3 on ftrace site {site.insn.text}"
        return None
