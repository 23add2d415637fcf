"""report: the output formats (text, json, sarif, list, denylist, github, html) over AuditResults, and their order."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..model import Finding, Judgement, Verdict

if TYPE_CHECKING:
    from ..result import AuditResult
    from ..rule import Rule

FORMATS = ("text", "json", "sarif", "list", "denylist", "github", "html")

# Worst first: the order every summary prints verdict counts in.
VERDICT_ORDER = (Verdict.UNSAFE, Verdict.DENY, Verdict.REFUSED, Verdict.SAFE)


def ordered(results: Iterable[AuditResult]) -> list[AuditResult]:
    """Images in report order: vmlinux before modules, then by flavour, module and display name.
    The sort is stable, so images that tie keep the order the caller gave."""
    return sorted(
        results,
        key=lambda r: (
            r.kernel.kind != "vmlinux",
            r.kernel.flavour,
            r.kernel.module,
            r.kernel.display,
            r.kernel.release or "",
        ),
    )


def judgements(result: AuditResult) -> list[Judgement]:
    """The result's judgements by (address, site, name): the api already sorts them; this makes sure."""
    return sorted(result.judgements, key=lambda j: (j.pp.addr, j.pp.site, j.pp.name))


def findings(j: Judgement) -> list[Finding]:
    """A judgement's findings worst first, then by rule, variant and message, so output is stable."""
    return sorted(j.findings, key=lambda f: (-f.level, f.rule_id, f.variant, f.message))


def verdict_counts(results: Iterable[AuditResult]) -> dict[Verdict, int]:
    c = Counter(j.verdict for r in results for j in r.judgements)
    return {v: c.get(v, 0) for v in VERDICT_ORDER}


def rule_counts(results: Iterable[AuditResult]) -> Counter[str]:
    """Findings per rule id."""
    return Counter(f.rule_id for r in results for j in r.judgements for f in j.findings)


def rules_by_id(results: Iterable[AuditResult]) -> dict[str, Rule]:
    """Every rule that ran in any of the results, by id, in id order (the first instance wins)."""
    out: dict[str, Rule] = {}
    for r in results:
        for rule in r.rules:
            out.setdefault(rule.id, rule)
    return dict(sorted(out.items()))


def tables(results: Iterable[AuditResult]) -> list[tuple[str, str]]:
    """The distinct (name, sha256) of the tables used, in first-seen order."""
    out: dict[tuple[str, str], None] = {}
    for r in results:
        out.setdefault((r.table.name, r.table.sha256), None)
    return list(out)


def render(fmt: str, results: list[AuditResult], **options: Any) -> str:
    """Render results in one of FORMATS. Options: statistics (text), all_patchpoints (json),
    max_results, gate and paths (sarif), counts (list, html), gate and paths (github)."""
    if fmt == "text":
        from .text import render_text

        return render_text(results, bool(options.get("statistics", False)))
    if fmt == "json":
        from .jsonout import render_json

        return render_json(results, all_patchpoints=bool(options.get("all_patchpoints", False)))
    if fmt == "sarif":
        from .sarif import MAX_RESULTS, render_sarif

        return render_sarif(
            results,
            max_results=options.get("max_results", MAX_RESULTS),
            gate=options.get("gate"),
            paths=options.get("paths"),
        )
    if fmt == "list":
        from .listing import render_list

        return render_list(results, counts=options.get("counts"))
    if fmt == "denylist":
        from .denylist import render_denylist

        return render_denylist(results)
    if fmt == "github":
        from .github import render_github

        return render_github(results, gate=options.get("gate"), paths=options.get("paths"))
    if fmt == "html":
        from .html import render_html

        return render_html(results, options.get("counts"))
    raise ValueError(f"unknown report format {fmt!r}; formats are {', '.join(FORMATS)}")
