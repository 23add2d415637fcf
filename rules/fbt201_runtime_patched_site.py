"""fbt201_runtime_patched_site.py: FBT201, the displaced bytes belong to a run-time writer (jump label, static call)."""

from fbt_audit.judge.rule import Rule, Site
from fbt_audit.model.core import Level
from fbt_audit.model.facts import RUNTIME_WRITERS, STATIC_CALL_TRAMP

# Patchpoint.facts entries (audit/sites/annotate.py) of sites that code rewrites while the kernel runs.
WRITERS = {
    RUNTIME_WRITERS["jump_table"]: "jump label (__jump_table)",
    RUNTIME_WRITERS["static_call_sites"]: "static call site (.static_call_sites)",
    STATIC_CALL_TRAMP: "static-call trampoline (__SCT__*, static_call_update)",
    RUNTIME_WRITERS["smp_locks"]: "lock prefix (.smp_locks, CPU hotplug)",
}


class RuntimePatchedSite(Rule):
    """The patch window overlaps bytes that another writer rewrites while the kernel runs.

    What it finds:
    A patchpoint whose displaced instruction overlaps a `__jump_table` site (2- or 5-byte
    jmp/NOP), a `.static_call_sites` call, a `__SCT__*` static-call trampoline (a `jmp` that
    `static_call_update` retargets), or an `.smp_locks` lock prefix (`f0` <-> `3e`).
    Boot-time rewrites (alternatives, paravirt, return and retpoline thunks, the IBT seal, CFI,
    runtime constants) are final before any probe exists: they do not fire this rule; every
    form they can leave is judged as a variant instead (`live` column, `(variant ...)` in text).
    ftrace sites are FBT202. An `.smp_locks` prefix is rewritten at run time only on a boot that was
    uniprocessor-patched with more CPUs possible (`--platform up`); `--platform native` and `xen-pv`
    judge its lock and DS-prefixed forms as boot-time variants instead, and `all` keeps this finding.
    Under a `kprobes-*` table a `__SCT__*` trampoline is not reported: `static_call_text_reserved`
    covers call sites only, so kprobes accepts it (the register_kprobe() oracle, docs/verify.md),
    although a probe there steps or emulates a `jmp` that `static_call_update` may have retargeted.

    Why it is unsafe:
    The writer does not know about the probe. `text_poke_bp` replaces the site under the int3
    (the probe's int3 is lost, or its saved copy is stale and the handler replays the old jump
    or call), and the trampoline's new target is never seen by a handler that steps a copy.
    kprobes refuses these addresses in `check_kprobe_address_safe` (`jump_label_text_reserved`,
    `static_call_text_reserved`) and `alternatives_text_reserved` (`.smp_locks`).

    Example:
    Any table, a `__jump_table` entry at the function's first instruction:

        f_jump_label:
            0f 1f 44 00 00          nopl 0x0(%rax,%rax,1)   # FBT201

    FBT201_fail.ko: f_jump_label+0x0 (.text+0x0): FBT201 rewritten at run time: jump label (__jump_table) [warning]

    Fix:
    Skip the patchpoint, as kprobes does, or probe the next instruction.

    References:
    - torvalds/linux `kernel/kprobes.c` `check_kprobe_address_safe`; `kernel/jump_label.c`
      `jump_label_text_reserved`; `kernel/static_call_inline.c` `static_call_text_reserved`
    - torvalds/linux `arch/x86/kernel/alternative.c` `alternatives_text_reserved`,
      `alternatives_smp_lock`
    """

    id = "FBT201"
    facts_read = (*WRITERS, STATIC_CALL_TRAMP)  # the facts check() reads (judge/judge.py memoises by them)
    insn_reads = ("classes",)  # the Insn fields check() reads besides the text it prints
    name = "runtime-patched-site"
    level = Level.WARNING
    summary = "the patch window overlaps bytes that a run-time writer rewrites"
    tags = ("site", "runtime-patch")
    facts_only = True

    def check(self, site: Site) -> str | None:
        facts = site.pp.facts
        if site.kprobes_model and STATIC_CALL_TRAMP in facts:
            facts = facts - {STATIC_CALL_TRAMP}  # kprobes accepts it: static_call_text_reserved holds call sites only
        hit = [WRITERS[f] for f in sorted(facts) if f in WRITERS]
        if hit:
            return "rewritten at run time: " + "; ".join(hit)
        return None
