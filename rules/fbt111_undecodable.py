"""fbt111_undecodable.py: FBT111, the bytes at the patchpoint are not an instruction the handler can take."""

from fbt_audit.judge.rule import Rule, Site
from fbt_audit.model.core import IC
from fbt_audit.model.facts import MID_INSTRUCTION


class Undecodable(Rule):
    """The bytes do not decode, are invalid in 64-bit mode, or the patchpoint is not on an instruction.

    What it finds:
    A patchpoint whose bytes do not decode as an x86-64 instruction: opcodes invalid in 64-bit
    mode (`06`, `07`, `0e`, `16`, `17`, `1e`, `1f`, `27`, `2f`, `37`, `3f`, `60`, `61`, `82`,
    `9a`, `ce`, `d4`, `d5`, `d6`, `ea`), truncated bytes at the end of a section, or data in a
    text section. Also a patchpoint that is not on an instruction boundary of the code around
    it: a symbol that starts inside an earlier function's last instruction (6.1's
    `__x86_return_thunk` is the `c3` at +1 of `retbleed_untrain_ret`'s `test $0xcc,%bl`).
    An invalid instruction gets no other FBT1xx finding: nothing is looked up in the table.

    Why it is unsafe:
    The handler cannot know the displaced instruction's length, so it resumes at the wrong IP,
    or it steps a copy that raises #UD in the handler. A linear sweep that has lost the
    instruction boundary plants the int3 in the middle of another instruction (dtrace4linux
    Changes #604: a breakpoint mid-`call` after a BUG_ON `ud2` in `flush_old_exec`), and that
    int3 changes the instruction's bytes for every path that runs it, without trapping.

    Example:
    Any table:

        f_bad:
            .byte 0x06              (bad)           # FBT111
            c3                      retq

    FBT111_fail.ko: f_bad+0x0 (.text+0x0): FBT111 undecodable bytes 06 [error]

    A symbol inside another function's instruction (`f6 c3 cc`, with `f_thunk` at +1):

    FBT111_fail.ko: f_thunk+0x0 (.text+0x3): FBT111 patchpoint inside an instruction of f_untrain [error]

    Fix:
    Never probe there: the tracer must refuse bytes it cannot decode, as dtrace4linux does when
    `dtrace_instr_size_modrm` fails and kprobes' `can_probe` does when the address is not on a
    boundary found by decoding from the symbol start.

    References:
    - torvalds/linux `arch/x86/kernel/kprobes/core.c` `can_probe`
    - dtrace4linux/linux `driver/prov_common.c` `dtrace_parse_function`; Changes #604
    - Intel SDM vol. 2, appendix A.2.5 (opcodes invalid in 64-bit mode, "i64")
    """

    id = "FBT111"
    facts_read = (MID_INSTRUCTION,)  # the facts check() reads (judge/judge.py memoises by them)
    # The Insn fields check() reads besides the text it prints; also the bytes of an undecodable one, whose
    # judgement the judge never shares (Judge.alike).
    insn_reads = ("classes",)
    name = "undecodable"
    summary = "the patchpoint is not on a valid 64-bit instruction"
    tags = ("decode",)

    def check(self, site: Site) -> str | None:
        insn = site.insn
        if insn.classes & IC.INVALID:
            if not insn.raw:
                return "no instruction bytes at the patchpoint"
            return f"undecodable bytes {insn.raw[:8].hex(' ')}"
        for fact in sorted(site.pp.facts):  # enumeration's mark for a symbol inside an earlier instruction
            if fact.startswith(MID_INSTRUCTION):
                return f"patchpoint inside an instruction of {fact[len(MID_INSTRUCTION) :]}"
        return None
