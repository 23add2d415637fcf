"""rule.py: what a rule is and what it sees: one patchpoint variant, the matched table entry, the table."""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass

from fbt_audit.model.abi import Fixup, Handling
from fbt_audit.model.core import Insn, Level, Patchpoint
from fbt_audit.table.emulation import EmulationTable, Entry

SECTIONS = ("What it finds", "Why it is unsafe", "Example", "Fix", "References")


@dataclass(frozen=True, slots=True)
class Site:
    """The facts a rule judges: one variant of one patchpoint, and how the table would handle it."""

    pp: Patchpoint
    variant: str
    insn: Insn
    entry: Entry | None  # None: no entry matched
    table: EmulationTable
    handling: Handling  # the entry's, or the table's default when nothing matched
    fixups: Fixup  # the entry's fixups, plus the table's step fixups when stepped

    @property
    def stepped(self) -> bool:
        return self.handling == Handling.STEP

    @property
    def emulated(self) -> bool:
        return self.handling == Handling.EMULATE

    @property
    def kprobes_model(self) -> bool:
        """The table models Linux kprobes (kprobes-6.1, kprobes-6.12, kprobes): site rules then refuse what
        kprobes refuses and no more (docs/verify.md, the register_kprobe() oracle)."""
        return self.table.name.startswith("kprobes")

    @property
    def placed(self) -> bool:
        """The module plants an int3 here and runs its handler on the displaced instruction."""
        return self.handling in (Handling.STEP, Handling.EMULATE)


class Rule:
    """Base of every rule. Subclasses set id, name, level, summary and implement check().

    check() returns None when the rule does not fire, or the finding's message text.
    The docstring of each subclass holds the sections in SECTIONS; help text and SARIF
    rule metadata are generated from it.
    """

    id: str = ""
    name: str = ""
    level: Level = Level.ERROR
    summary: str = ""  # one line, lowercase phrase
    tags: tuple[str, ...] = ()
    # The fact prefixes check() reads of Patchpoint.facts (None: any). The judge memoises the instruction
    # rules' findings by the variants and these facts only, so a fact naming its symbol (a .cold part's) does
    # not make each such patchpoint judged from scratch.
    facts_read: tuple[str, ...] | None = None
    # Fact prefixes (among facts_read) whose remainder check() only prints in its message, never tests: the judge may
    # judge once for every value and put each patchpoint's own value in the message (Judge._params).
    fact_params: tuple[str, ...] = ()
    # The Insn fields check() reads (None: any), besides `text`, which it only prints. When every rule declares them,
    # the judge shares one judgement among instructions alike in these fields and in their table entry, each message
    # given its own instruction's text (Judge.alike): a vmlinux's .cold parts start with thousands of distinct
    # moves that every rule judges alike. The judge hands check() an instruction with these fields alone.
    insn_reads: tuple[str, ...] | None = None

    def check(self, site: Site) -> str | None:  # pragma: no cover - interface
        raise NotImplementedError

    @classmethod
    def doc(cls) -> str:
        return inspect.cleandoc(cls.__doc__ or "")

    @classmethod
    def doc_sections(cls) -> dict[str, str]:
        """The docstring split into its named sections ('What it finds:' ... 'References:')."""
        text = cls.doc()
        pattern = re.compile(r"^(" + "|".join(map(re.escape, SECTIONS)) + r"):[ \t]*$", re.M)
        out: dict[str, str] = {}
        marks = list(pattern.finditer(text))
        for i, m in enumerate(marks):
            end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
            out[m.group(1)] = text[m.end() : end].strip("\n")
        return out
