"""result.py: what one audited image yields: the kernel, the table, one judgement per patchpoint, tool errors."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from itertools import islice
from operator import lt
from typing import Any

from fbt_audit.judge.rule import Rule
from fbt_audit.model.core import Judgement, Level, Verdict
from fbt_audit.model.kernel import Kernel
from fbt_audit.table.emulation import EmulationTable


@dataclass
class AuditResult:
    kernel: Kernel
    table: EmulationTable
    # sorted by (patchpoint addr, site); one per patchpoint. None with `rows`: built from them when first read
    judgements: list[Judgement] | None
    rules: list[Rule]  # the rules that ran (instances), ordered by id
    errors: list[str] = field(default_factory=list)  # tool notifications (one line each)
    # (symbol name, address) -> its compilation unit's STT_FILE name, recorded by the pipeline for the names
    # that need telling apart before the image is let go (pipeline.batch.detach); None: ask the image.
    units: dict[tuple[str, int], str] | None = None
    platform: str = "all"  # the boot-time forms judged (--platform, audit/sites/platform.py): all = every one
    # (patchpoint address, site) -> what --deep found there (deep.model.FlagsEvidence); typed loosely: deep is later
    evidence: dict[tuple[int, str], Any] = field(default_factory=dict)
    # The entry rows' judgements (judge.rows.JudgedRows) when `judgements` is built lazily: a text report
    # reads only the judgements with findings and the counts, and never builds the others.
    rows: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.judgements is None and self.rows is not None:
            del self.judgements  # so that __getattr__ builds them on the first read

    def __getattr__(self, name: str):
        rows = self.__dict__.get("rows")
        if name != "judgements" or rows is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        self.judgements = rows.judgements()
        return self.judgements

    def __getstate__(self) -> dict:
        if self.rows is not None and self.rows.detached:  # columns: cheaper to send than the objects
            return dict(self.__dict__)
        self.judgements  # noqa: B018 - built before pickling: the rows hold the image
        return {**self.__dict__, "rows": None}

    def name_addrs(self) -> set[tuple[str, int]]:
        """(symbol name, address) of every patchpoint, without building the judgements."""
        if "judgements" not in self.__dict__:
            return self.rows.name_addrs()
        return {(j.pp.name, j.pp.sym_addr) for j in self.judgements}

    def count(self) -> int:
        """How many patchpoints (judgements) the result holds, without building them."""
        return self.rows.n if "judgements" not in self.__dict__ else len(self.judgements)

    def with_findings(self) -> list[Judgement]:
        """The judgements with findings, in the reports' order (in_order)."""
        if "judgements" not in self.__dict__:
            return self.rows.reported()
        return [j for j in in_order(self) if j.findings]

    def finding_rules(self) -> Counter[str]:
        """Findings per rule id (from the rows' summary when a worker rendered them: report.text.TextDigest)."""
        rows = self.__dict__.get("rows")
        if "judgements" not in self.__dict__ and hasattr(rows, "finding_rules"):
            return rows.finding_rules()
        return Counter(f.rule_id for j in self.with_findings() for f in j.findings)

    def worst_finding(self) -> Level | None:
        """The most severe level among the findings, None without any."""
        rows = self.__dict__.get("rows")
        if "judgements" not in self.__dict__ and hasattr(rows, "worst"):
            return rows.worst
        return max((f.level for j in self.with_findings() for f in j.findings), default=None)

    def verdict_counts(self) -> dict[Verdict, int]:
        """How many patchpoints take each verdict."""
        if "judgements" not in self.__dict__:
            return self.rows.verdicts()
        out = dict.fromkeys(Verdict, 0)
        for j in self.judgements:
            out[j.verdict] += 1
        return out

    def unit_files(self, names: set[str]) -> dict[tuple[str, int], str]:
        """The STT_FILE name of each symbol called one of `names`: as recorded, or from the image itself."""
        if self.units is not None:
            return {k: v for k, v in self.units.items() if k[0] in names}
        from fbt_audit.input.dwarf import symbol_files

        return symbol_files(self.kernel, names)


def in_order(result: AuditResult) -> list[Judgement]:
    """The result's judgements by (address, site, name): as they are when the addresses already strictly
    increase (as the api leaves them: a check in C instead of a sort with a Python key over 50,000), else sorted."""
    js = result.judgements
    addrs = [j.pp.addr for j in js]
    if all(map(lt, addrs, islice(addrs, 1, None))):
        return js
    return sorted(js, key=lambda j: (j.pp.addr, j.pp.site, j.pp.name))
