"""fbt206_not_a_function_entry.py: FBT206, the symbol is padding, a .cold fragment or a label inside a function."""

from fbt_audit.judge.rule import Rule, Site
from fbt_audit.model.core import Level
from fbt_audit.model.facts import NON_ENTRY


class NotAFunctionEntry(Rule):
    """`__pfx_`/`__cfi_` padding, a `.cold` fragment, or a label inside another function.

    What it finds:
    Text symbols a kallsyms walker sees that no caller enters: `__pfx_<fn>` (CALL_PADDING's 16
    NOP bytes before a function) and `__cfi_<fn>` (the kCFI/FineIBT preamble); `<fn>.cold`
    (and `.cold.N`) fragments GCC splits off for unlikely paths, entered by a jump from the
    middle of `<fn>`; and labels inside another symbol's extent (`SYM_INNER_LABEL` in entry
    assembly, such as `entry_SYSCALL_64_after_hwframe`). `.part.N`, `.isra.N` and
    `.constprop.N` clones are real functions with real callers and are not reported.
    A note: the list, json and `--show all` SARIF carry each one; the text report sums them up per image.

    Why it is unsafe:
    A probe there does not trace a function call: padding never runs (or runs as a call thunk),
    a `.cold` fragment runs mid-function with its caller's frame and no entry arguments, and an
    inner label is reached by fall-through as well as by jumps. kprobes refuses the CFI/prefix
    symbols (`is_cfi_preamble_symbol`).

    Example:
    Any table, CALL_PADDING's 16 NOPs before a function:

        __pfx_f_padded:
            90                      nop             # FBT206

    The text report folds these notes into one line per image (json, sarif and the list carry each
    one: here `__pfx_f_padded`, `f_padded.cold` and the inner label `f_inner`):

    FBT206_fail.ko: FBT206 3 notes not listed (.text 3); --statistics counts them

    Fix:
    Leave these out of the provider's probe list (dtrace4linux skips names with a `.`; a
    provider can skip `__pfx_`/`__cfi_` and names ending in `.cold`).

    References:
    - torvalds/linux `kernel/kprobes.c` `is_cfi_preamble_symbol`; `tools/objtool/check.c`
      `add_prefix_symbols`
    - torvalds/linux `include/linux/linkage.h` `SYM_INNER_LABEL`
    """

    id = "FBT206"
    facts_read = (NON_ENTRY,)  # the facts check() reads (judge/judge.py memoises by them)
    insn_reads = ("classes",)  # the Insn fields check() reads besides the text it prints
    # The text after these prefixes (the function a .cold part or a label belongs to) is only printed: the judge
    # memoises this rule's finding with it left out and puts it back in the message (Judge._params).
    fact_params = (NON_ENTRY + "cold:", NON_ENTRY + "label:")
    name = "not-a-function-entry"
    level = Level.NOTE
    summary = "the symbol is padding, a .cold fragment or a label inside another function"
    tags = ("site", "symbols")
    facts_only = True

    def check(self, site: Site) -> str | None:
        for f in sorted(site.pp.facts):
            if not f.startswith(NON_ENTRY):
                continue
            what = f[len(NON_ENTRY) :]
            if what == "pfx":
                return "not a function entry: __pfx_ padding"
            if what == "cfi":
                return "not a function entry: __cfi_ preamble"
            if what.startswith("cold:"):
                return f"not a function entry: a .cold fragment of {what[5:]}"
            if what.startswith("label:"):
                return f"not a function entry: a label inside {what[6:]}"
        return None
