"""api.py: the library entry points the CLI and the tests call: load, enumerate, judge one image."""

from __future__ import annotations

from itertools import islice
from operator import lt
from pathlib import Path
from typing import TYPE_CHECKING

from fbt_audit.input.loader import SymbolOptions, load_input
from fbt_audit.judge.result import AuditResult
from fbt_audit.model.kernel import Kernel
from fbt_audit.sites.platform import apply_platform
from fbt_audit.table import emulation as tables
from fbt_audit.table.emulation import EmulationTable

if TYPE_CHECKING:
    from fbt_audit.deep.model import DeepOptions


def load_table(spec: str | EmulationTable | None) -> EmulationTable:
    return spec if isinstance(spec, EmulationTable) else tables.load(spec)


def load_kernel(path: str | Path, symbols: SymbolOptions | None = None) -> Kernel:
    return load_input(path, symbols)


def audit(
    path: str | Path | Kernel,
    table: str | EmulationTable | None = None,
    *,
    select: list[str] | None = None,
    ignore: list[str] | None = None,
    returns: bool = False,
    symbols: SymbolOptions | None = None,
    platform: str = "all",
    deep: DeepOptions | bool | None = None,
) -> AuditResult:
    """Audit every entry patchpoint of one image (vmlinux or module) against one emulation table;
    with `returns`, also every return patchpoint (ret, ret imm16, jmp __x86_return_thunk), found by
    a linear decode of all text (audit/patchpoints/returns.py: it doubles a vmlinux audit, so it is opt-in).
    `platform` keeps only the boot-time forms that platform can leave live (audit/sites/platform.py).
    With `deep` (DeepOptions, or True for the defaults): the whole-image branch sweep adds FBT115's and the
    call graph FBT207's facts (sites/deepfacts.py), and the flags paths of the FBT101-103 findings (audit/deep/)."""
    from fbt_audit.judge.judge import judge_for
    from fbt_audit.judge.registry import select as select_rules
    from fbt_audit.judge.rows import MergedRows, judge_return_rows, judge_rows  # numpy: not at the CLI's start
    from fbt_audit.patchpoints.entry import entry_rows, gc_paused
    from fbt_audit.sites.annotate import add_site_facts

    if deep is True:
        from fbt_audit.deep.model import DeepOptions  # here: only --deep pays for deep's modules

        deep = DeepOptions()
    deep = deep or None
    with gc_paused():  # the collector would rescan the audit's acyclic objects: half of the run time
        kernel = path if isinstance(path, Kernel) else load_kernel(path, symbols)
        tab = load_table(table)
        rules = select_rules(select, ignore)
        rows = entry_rows(kernel, tab)
        rets, pps = None, []
        if returns:
            from fbt_audit.patchpoints.returns import return_rows

            rets = return_rows(kernel)
        every = platform != "all" or deep is not None  # forms dropped or deep facts: every row a Patchpoint
        if every:
            rows.build_all()
            if rets is not None:
                rets, pps = None, rets.patchpoints()
        tables_read = add_site_facts(kernel, pps, rows, rets)  # site facts and boot-time variants from the tables
        if every:
            built = [*map(rows.objs.__getitem__, range(rows.n)), *pps]
            apply_platform(built, platform)  # --platform: only the forms that platform can leave live
            if deep is not None:
                from fbt_audit.sites.deepfacts import add_deep_facts

                add_deep_facts(kernel, built, tab)
        judge = judge_for(tab, rules)
        judged = judge_rows(judge, rows)  # the entries first, then the returns: the order the judge memoises in
        # a table no known layout fits is said, never guessed: its sites are left out
        errors = [f"{kernel.display}: kernel table not read: {p}" for p in tables_read.problems]
        addrs = rows.addr
        if rets is not None:  # the returns' judgements as columns too, merged in address order when read
            judged = MergedRows(judged, judge_return_rows(judge, rets))
        if rets is not None or (not pps and bool((addrs[1:] > addrs[:-1]).all())):  # strictly increasing: in order
            result = AuditResult(kernel=kernel, table=tab, judgements=None, rules=rules, errors=errors, rows=judged,
                                 platform=platform)
        else:
            judgements = judged.judgements() + list(map(judge, pps))
            addrs = [j.pp.addr for j in judgements]
            if not all(map(lt, addrs, islice(addrs, 1, None))):
                judgements.sort(key=lambda j: (j.pp.addr, j.pp.site, j.pp.name))
            result = AuditResult(kernel=kernel, table=tab, judgements=judgements, rules=rules, errors=errors,
                                 platform=platform)
        if deep is not None:  # --deep: flags paths of the flagged patchpoints (audit/deep/)
            from fbt_audit.deep.run import analyse

            analyse(result, deep)
        return result
