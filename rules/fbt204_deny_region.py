"""fbt204_deny_region.py: FBT204, the patchpoint is in text the kernel forbids probing (kprobes' blacklist)."""

from fbt_audit.judge.rule import Rule, Site
from fbt_audit.model.core import Level
from fbt_audit.model.facts import BUG_SITE, DENY

WHY = {
    "blacklist": "NOKPROBE_SYMBOL (_kprobe_blacklist)",
    "blacklist-suffix": "a suffixed copy of a NOKPROBE_SYMBOL function (within_kprobe_blacklist)",
    "noinstr": "noinstr text",
    "entry": "entry text",
    "kprobes": "__kprobes text",
    "cpuidle": "cpuidle text",
    BUG_SITE: "a __bug_table site (find_bug)",
}


class DenyRegion(Rule):
    """noinstr, entry, kprobes or cpuidle text, or a NOKPROBE function.

    What it finds:
    A patchpoint in the ranges `populate_kprobe_blacklist` builds: the full extent of every
    symbol listed in `_kprobe_blacklist` (`NOKPROBE_SYMBOL`, `_ASM_NOKPROBE`), and
    `__kprobes_text_*`, `__noinstr_text_*` and (x86) `__entry_text_*`; for a module its
    `_kprobe_blacklist`, `.kprobes.text` and `.noinstr.text`. Two documented additions:
    `.cpuidle.text` (inside the noinstr range from 6.2; separate, and not blacklisted by
    kprobes, in 6.1, but `noinstr` in spirit: it runs with RCU not watching), and a suffixed
    symbol (`foo.cold`, `foo.isra.0`) of a listed `foo`, which `within_kprobe_blacklist` also refuses.
    Under a `kprobes-*` table `.cpuidle.text` alone is not reported: 6.1's kprobes accepts it (the
    register_kprobe() oracle, docs/verify.md), and from 6.2 on it lies inside `__noinstr_text_*`; and a
    `__bug_table` site (a `BUG()`/`WARN()` `ud2`) is, as `check_kprobe_address_safe` refuses it (`find_bug`).

    Why it is unsafe:
    This code runs where a trap is fatal or unrecoverable: before the entry code switched
    stacks or GS, with RCU not watching, or inside the kprobes and int3 machinery itself.

    Example:
    Any table, a function listed in `_kprobe_blacklist`:

        f_nokprobe:
            55                      push %rbp       # FBT204

    FBT204_fail.ko: f_nokprobe+0x0 (.text+0x0): FBT204 deny region: NOKPROBE_SYMBOL (_kprobe_blacklist) [warning]

    Fix:
    Skip it: `/sys/kernel/debug/kprobes/blacklist` lists the same ranges on a running kernel.

    References:
    - torvalds/linux `kernel/kprobes.c` `populate_kprobe_blacklist`, `within_kprobe_blacklist`,
      `add_module_kprobe_blacklist`; `arch/x86/kernel/kprobes/core.c` `arch_populate_kprobe_blacklist`
    - torvalds/linux `include/asm-generic/kprobes.h` `__NOKPROBE_SYMBOL`;
      `include/linux/compiler_types.h` `noinstr`
    """

    id = "FBT204"
    facts_read = (DENY, BUG_SITE)  # the facts check() reads (judge/judge.py memoises by them)
    insn_reads = ("classes",)  # the Insn fields check() reads besides the text it prints
    name = "deny-region"
    level = Level.WARNING
    summary = "the patchpoint is in a region the kernel forbids probing"
    tags = ("site", "blacklist")
    facts_only = True

    def check(self, site: Site) -> str | None:
        kinds = [f[len(DENY) :] for f in sorted(site.pp.facts) if f.startswith(DENY)]
        if site.kprobes_model:
            kinds = [k for k in kinds if k != "cpuidle"]  # 6.1 kprobes accepts it; 6.12's noinstr range holds it
            if BUG_SITE in site.pp.facts:
                kinds.append(BUG_SITE)  # check_kprobe_address_safe refuses a BUG()/WARN() ud2 by its address
        why = [WHY[k] for k in kinds]
        return "deny region: " + ", ".join(why) if why else None
