"""result.py: what one audited image yields: the kernel, the table, one judgement per patchpoint, tool errors."""

from __future__ import annotations

from dataclasses import dataclass, field

from fbt_audit.judge.rule import Rule
from fbt_audit.model.core import Judgement
from fbt_audit.model.kernel import Kernel
from fbt_audit.table.emulation import EmulationTable


@dataclass
class AuditResult:
    kernel: Kernel
    table: EmulationTable
    judgements: list[Judgement]  # sorted by (patchpoint addr, site); one per patchpoint
    rules: list[Rule]  # the rules that ran (instances), ordered by id
    errors: list[str] = field(default_factory=list)  # tool notifications (one line each)
