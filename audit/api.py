"""api.py: the library entry points the CLI and the tests call: load, enumerate, judge one image."""

from __future__ import annotations

from pathlib import Path

from . import elf
from . import table as tables
from .enumerate import entry_patchpoints
from .kernel import Kernel
from .result import AuditResult
from .table import EmulationTable


def load_table(spec: str | EmulationTable | None) -> EmulationTable:
    return spec if isinstance(spec, EmulationTable) else tables.load(spec)


def load_kernel(path: str | Path) -> Kernel:
    return elf.load(path)


def audit(
    path: str | Path | Kernel,
    table: str | EmulationTable | None = None,
    *,
    select: list[str] | None = None,
    ignore: list[str] | None = None,
) -> AuditResult:
    """Audit every entry patchpoint of one image (vmlinux or module) against one emulation table."""
    from .judge import judge
    from .registry import select as select_rules

    kernel = path if isinstance(path, Kernel) else load_kernel(path)
    tab = load_table(table)
    rules = select_rules(select, ignore)
    pps = entry_patchpoints(kernel, tab)
    judgements = [judge(pp, tab, rules) for pp in pps]
    judgements.sort(key=lambda j: (j.pp.addr, j.pp.site, j.pp.name))
    return AuditResult(kernel=kernel, table=tab, judgements=judgements, rules=rules)
