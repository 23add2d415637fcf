"""facts.py: the names of site facts (Patchpoint.facts), defined once for the stages that write them and the rules.

Coarse on purpose: the judge memoises verdicts on (variants, facts). A name ending in ':' is a prefix
followed by a detail (deny:noinstr, non-entry:cold:<function>, handler-path:<name>=<reason>)."""

from __future__ import annotations

FTRACE_SITE = "ftrace-site"  # the patchpoint is a __mcount_loc site (patchpoints/entry.py)
MID_INSTRUCTION = "mid-instruction:"  # mid-instruction:<what> - the patchpoint is inside an instruction
EXTABLE = "extable"  # the instruction's address is in __ex_table
BUG_SITE = "bug-table"  # the instruction is a __bug_table site
STATIC_CALL_TRAMP = "static-call-tramp"  # a __SCT__* trampoline (static_call_update rewrites it)
IBT_KERNEL = "ibt-kernel"  # an ENDBR patchpoint in an image built for IBT (it has .ibt_endbr_seal)
DENY = "deny:"  # deny:blacklist | noinstr | entry | kprobes | cpuidle | blacklist-suffix
NON_ENTRY = "non-entry:"  # non-entry:pfx | cfi | cold:<function> | label:<function>
INIT = "init-text:"  # init-text:init | exit | module-init
HANDLER_PATH = "handler-path:"  # handler-path:<name>=<reason>
WINDOW_TARGET = "window-target:"  # window-target:<offset>:<what lands there> (--deep, FBT115)

# Kernel table -> the fact of a run-time writer: it owns the bytes (FBT201, deny)
RUNTIME_WRITERS = {
    "jump_table": "jump-label",
    "static_call_sites": "static-call",
    "smp_locks": "smp-lock",
}
# Kernel table -> the fact of a boot-time rewrite: final before any probe, judged through variants
BOOT_REWRITES = {
    "altinstructions": "alternative",
    "parainstructions": "paravirt",
    "retpoline_sites": "retpoline",
    "return_sites": "return-thunk",
    "call_sites": "call-thunk",
    "ibt_endbr_seal": "ibt-seal",
    "cfi_sites": "cfi",
    "runtime_const": "runtime-const",
}
