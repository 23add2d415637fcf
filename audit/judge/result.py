"""result.py: what one audited image yields: the kernel, the table, one judgement per patchpoint, tool errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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
    # (symbol name, address) -> its compilation unit's STT_FILE name, recorded by the pipeline for the names
    # that need telling apart before the image is let go (pipeline.batch.detach); None: ask the image.
    units: dict[tuple[str, int], str] | None = None
    platform: str = "all"  # the boot-time forms judged (--platform, audit/sites/platform.py): all = every one
    # (patchpoint address, site) -> what --deep found there (deep.model.FlagsEvidence); typed loosely: deep is later
    evidence: dict[tuple[int, str], Any] = field(default_factory=dict)

    def unit_files(self, names: set[str]) -> dict[tuple[str, int], str]:
        """The STT_FILE name of each symbol called one of `names`: as recorded, or from the image itself."""
        if self.units is not None:
            return {k: v for k, v in self.units.items() if k[0] in names}
        from fbt_audit.input.dwarf import symbol_files

        return symbol_files(self.kernel, names)
