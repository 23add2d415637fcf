"""formats.py: the one dispatcher from a format name and its options to a report (the CLI and tests call only this)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fbt_audit.report.common import FORMATS

if TYPE_CHECKING:
    from fbt_audit.gate.baseline import Gate
    from fbt_audit.input.dwarf import PathMap
    from fbt_audit.judge.result import AuditResult
    from fbt_audit.model.core import Judgement


@dataclass(frozen=True)
class Hits:
    """Runtime hit counts merged into a report (`--hits`), as plain data: counts by probe name, the figures
    of the merge (json and sarif carry them), the unmatched-rows notice and the text report's last line."""

    counts: Mapping[str, int]
    block: dict[str, Any] = field(default_factory=dict)
    note: str | None = None
    summary: str = ""


def render(
    fmt: str,
    results: list[AuditResult],
    *,
    statistics: bool = False,
    gate: Gate | None = None,
    paths: PathMap | None = None,
    hits: Hits | None = None,
    counts: Mapping[str, int] | None = None,
    order: list[tuple[AuditResult, Judgement]] | None = None,
    all_patchpoints: bool = False,
    max_results: int | None = None,
    show: str | None = None,
    colour: bool = False,
) -> str:
    """Render results in one of FORMATS. statistics: text; gate and paths: sarif, github (which look up DWARF
    source lines first, where the image still has them); hits (or bare counts): every format; order: the
    text report's patchpoints in that order (--sort rarity); all_patchpoints: json; max_results: sarif;
    show (error, warning, note, all): the least severe level text lists line by line (default error) and
    sarif carries (default warning; all adds findings on __pfx_/__cfi_ padding); colour: text, on a TTY."""
    counts = hits.counts if hits is not None else counts
    active = gate if gate is not None and gate.active else None
    if fmt == "text":
        from fbt_audit.report.text import render_text

        return render_text(results, statistics, show=show or "error", counts=counts, order=order,
                           last=hits.summary if hits else None, colour=colour)  # fmt: skip
    if fmt == "json":
        from fbt_audit.report.jsonout import render_json

        out = render_json(results, all_patchpoints=all_patchpoints)
        return _json_hits(out, hits) if hits is not None else out
    if fmt in ("sarif", "github"):
        from fbt_audit.input.dwarf import add_source_lines

        add_source_lines(results)  # the patchpoints with findings; a result recorded its lines already keeps them
    if fmt == "sarif":
        from fbt_audit.report.sarif import MAX_RESULTS, render_sarif

        out = render_sarif(results, max_results or MAX_RESULTS, gate=active, paths=paths, show=show or "warning")
        return _sarif_hits(out, hits) if hits is not None else out
    if fmt == "github":
        from fbt_audit.report.github import render_github

        return render_github(results, gate=active, paths=paths, show=show or "warning")
    if fmt == "list":
        from fbt_audit.report.listing import render_list

        return render_list(results, counts=counts)
    if fmt == "denylist":
        from fbt_audit.report.denylist import render_denylist

        return render_denylist(results)
    if fmt == "html":
        from fbt_audit.report.html import render_html

        return render_html(results, counts)
    raise ValueError(f"unknown report format {fmt!r}; formats are {', '.join(FORMATS)}")


def _json_hits(text: str, hits: Hits) -> str:
    """The json report with `hits` on every patchpoint and a top-level `hits` block."""
    import json  # here, as in _sarif_hits: the text report does not import it

    doc = json.loads(text)
    for img in doc.get("images", []):
        for p in img.get("patchpoints", []):
            p["hits"] = hits.counts.get(p["probe"], 0)
    out = {}
    for k, v in doc.items():
        if k == "all_patchpoints":
            out["hits"] = hits.block
        out[k] = v
    return json.dumps(out, indent=2) + "\n"


def _sarif_hits(text: str, hits: Hits) -> str:
    """SARIF with `properties.hits` on every result, the merge figures in each run's properties, and the
    unmatched rows as a tool execution notification (a count and a sample)."""
    import json

    doc = json.loads(text)
    for run in doc.get("runs", []):
        for res in run.get("results", []):
            props = res.setdefault("properties", {})
            if "probe" in props:
                props["hits"] = hits.counts.get(props["probe"], 0)
        run.setdefault("properties", {})["hits"] = hits.block
        if hits.note:
            inv = (run.get("invocations") or [{"executionSuccessful": True}])[0]
            inv.setdefault("toolExecutionNotifications", []).append(
                {"level": "warning", "descriptor": {"id": "hits-unmatched"}, "message": {"text": hits.note}}
            )
            run["invocations"] = [inv, *run.get("invocations", [])[1:]]
    return json.dumps(doc, indent=2) + "\n"
