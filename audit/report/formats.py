"""formats.py: one dispatcher from a format name to its renderer (the CLI and the tests call only this)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fbt_audit.report.common import FORMATS

if TYPE_CHECKING:
    from fbt_audit.judge.result import AuditResult


def render(fmt: str, results: list[AuditResult], **options: Any) -> str:
    """Render results in one of FORMATS. Options: statistics (text), all_patchpoints (json),
    max_results, gate and paths (sarif), counts (list, html), gate and paths (github)."""
    if fmt == "text":
        from fbt_audit.report.text import render_text

        return render_text(results, bool(options.get("statistics", False)))
    if fmt == "json":
        from fbt_audit.report.jsonout import render_json

        return render_json(results, all_patchpoints=bool(options.get("all_patchpoints", False)))
    if fmt == "sarif":
        from fbt_audit.report.sarif import MAX_RESULTS, render_sarif

        return render_sarif(
            results,
            max_results=options.get("max_results", MAX_RESULTS),
            gate=options.get("gate"),
            paths=options.get("paths"),
        )
    if fmt == "list":
        from fbt_audit.report.listing import render_list

        return render_list(results, counts=options.get("counts"))
    if fmt == "denylist":
        from fbt_audit.report.denylist import render_denylist

        return render_denylist(results)
    if fmt == "github":
        from fbt_audit.report.github import render_github

        return render_github(results, gate=options.get("gate"), paths=options.get("paths"))
    if fmt == "html":
        from fbt_audit.report.html import render_html

        return render_html(results, options.get("counts"))
    raise ValueError(f"unknown report format {fmt!r}; formats are {', '.join(FORMATS)}")
