"""common.py: what every report shares: the format names, the order of images, judgements, findings and verdicts."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING

from fbt_audit.model.core import Verdict

if TYPE_CHECKING:
    from fbt_audit.judge.result import AuditResult
    from fbt_audit.judge.rule import Rule

FORMATS = ("text", "json", "sarif", "list", "denylist", "github", "html")

# Worst first: the order every summary prints verdict counts in.
VERDICT_ORDER = (Verdict.UNSAFE, Verdict.DENY, Verdict.REFUSED, Verdict.SAFE)


def verdict_counts(results: Iterable[AuditResult]) -> dict[Verdict, int]:
    out = dict.fromkeys(VERDICT_ORDER, 0)
    for r in results:  # a plain loop: Counter.update per result was a tenth of a tree's report
        for v, n in r.verdict_counts().items():
            if v in out:
                out[v] += n
    return out


def rule_counts(results: Iterable[AuditResult]) -> Counter[str]:
    """Findings per rule id."""
    out: Counter[str] = Counter()
    for r in results:
        out.update(r.finding_rules())
    return out


def rules_by_id(results: Iterable[AuditResult]) -> dict[str, Rule]:
    """Every rule that ran in any of the results, by id, in id order (the first instance wins)."""
    out: dict[str, Rule] = {}
    for r in results:
        for rule in r.rules:
            out.setdefault(rule.id, rule)
    return dict(sorted(out.items()))


def table_names(results: Iterable[AuditResult]) -> list[str]:
    """The names of tables(results), without their digests: the same tables told apart by their bytes (the text
    report's summary line; hashing them would import hashlib for that alone)."""
    out: dict[tuple[str, bytes], None] = {}
    for r in results:
        out.setdefault((r.table.name, r.table.raw), None)
    return [name for name, _raw in out]


def tables(results: Iterable[AuditResult]) -> list[tuple[str, str]]:
    """The distinct (name, sha256) of the tables used, in first-seen order."""
    out: dict[tuple[str, str], None] = {}
    for r in results:
        out.setdefault((r.table.name, r.table.sha256), None)
    return list(out)
