"""result.py: what one audited image yields: the kernel, the table, one judgement per patchpoint, tool errors."""

from __future__ import annotations

from dataclasses import dataclass, field

from .kernel import Kernel
from .model import Judgement
from .rule import Rule
from .table import EmulationTable


@dataclass
class AuditResult:
    kernel: Kernel
    table: EmulationTable
    judgements: list[Judgement]  # sorted by (patchpoint addr, site); one per patchpoint
    rules: list[Rule]  # the rules that ran (instances), ordered by id
    errors: list[str] = field(default_factory=list)  # tool notifications (one line each)
