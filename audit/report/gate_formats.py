"""gate_formats.py: the reports that need source lines or the gate (sarif, github, denylist), as the CLI asks."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fbt_audit.gate.baseline import Gate
    from fbt_audit.judge.result import AuditResult


def render_gated(
    fmt: str,
    results: list[AuditResult],
    gate: Gate | None = None,
    source_root: str | None = None,
    path_prefix_map: tuple[str, ...] | list[str] = (),
    statistics: bool = False,
) -> str:
    """sarif and github look up DWARF source lines for the patchpoints with findings first."""
    from fbt_audit.input.dwarf import PathMap, annotate

    if fmt == "denylist":
        from fbt_audit.report.denylist import render_denylist

        return render_denylist(results)
    paths = PathMap.parse(path_prefix_map or (), source_root)
    annotate(results)
    active = gate if gate is not None and gate.active else None
    if fmt == "github":
        from fbt_audit.report.github import render_github

        return render_github(results, gate=active, paths=paths)
    from fbt_audit.report.sarif import render_sarif

    return render_sarif(results, gate=active, paths=paths)
