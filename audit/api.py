"""api.py: the library entry points the CLI and the tests call: load, enumerate, judge one image."""

from __future__ import annotations

from itertools import islice
from operator import lt
from pathlib import Path

from . import elf
from . import table as tables
from .enumerate import entry_patchpoints, gc_paused
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
    from .judge import Judge
    from .registry import select as select_rules

    with gc_paused():  # the collector would rescan the audit's acyclic objects: half of the run time
        kernel = path if isinstance(path, Kernel) else load_kernel(path)
        tab = load_table(table)
        rules = select_rules(select, ignore)
        pps = entry_patchpoints(kernel, tab)
        judgements = list(map(Judge(tab, rules), pps))
        addrs = [j.pp.addr for j in judgements]
        if not all(map(lt, addrs, islice(addrs, 1, None))):  # strictly increasing: already in order
            judgements.sort(key=lambda j: (j.pp.addr, j.pp.site, j.pp.name))
        return AuditResult(kernel=kernel, table=tab, judgements=judgements, rules=rules)
