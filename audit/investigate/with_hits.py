"""hitsout.py: merged hit counts added to the text, json and sarif reports (`--hits`), and the unmatched-row notice."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from fbt_audit.judge.order import findings, ordered
from fbt_audit.report.listing import in_order
from fbt_audit.report.text import finding_line, statistics_lines, summary_line

if TYPE_CHECKING:
    from fbt_audit.investigate.hits import Merged
    from fbt_audit.judge.result import AuditResult


def render_text(results: list[AuditResult], merged: Merged | None, statistics: bool = False, sort: str = "") -> str:
    """The text report with ` hits N` after each finding's verdict, and a hits summary line at the end.
    sort="rarity": patchpoints in `fbt-audit rank` order (hit at least once, fewest first; then never hit)."""
    results = ordered(results)
    counts = merged.counts if merged is not None else {}
    if sort == "rarity":
        from fbt_audit.investigate.rank import ranked

        pairs = [(r, j) for r, j, _ in ranked(results, counts)]
    else:
        pairs = [(r, j) for r in results for j in in_order(r) if j.findings]
    lines = []
    for r, j in pairs:
        n = counts.get(j.pp.probe_name, 0)
        lines.extend(f"{finding_line(r.kernel.display, j, f)} hits {n}" for f in findings(j))
    if statistics:
        stats = statistics_lines(results)
        if stats:
            lines.extend(([""] if lines else []) + stats)
    if lines:
        lines.append("")
    lines.append(summary_line(results))
    if merged is not None:
        lines.append(merged.summary())
    return "\n".join(lines) + "\n"


def _block(merged: Merged) -> dict[str, Any]:
    return {
        "rows": merged.rows,
        "matched": merged.matched,
        "unmatched": len(merged.unmatched),
        "starred": merged.starred,
        "probes": len(merged.counts),
        "shift": f"0x{merged.shift:x}" if merged.shift is not None else None,
        "unmatched_sample": [r.text for r in merged.unmatched[:5]],
    }


def decorate_json(text: str, merged: Merged) -> str:
    """The json report with `hits` on every patchpoint and a top-level `hits` block."""
    doc = json.loads(text)
    counts = merged.counts
    for img in doc.get("images", []):
        for p in img.get("patchpoints", []):
            p["hits"] = counts.get(p["probe"], 0)
    out = {}
    for k, v in doc.items():
        if k == "all_patchpoints":
            out["hits"] = _block(merged)
        out[k] = v
    return json.dumps(out, indent=2) + "\n"


def decorate_sarif(text: str, merged: Merged) -> str:
    """SARIF with `properties.hits` on every result, the merge figures in each run's properties, and the
    unmatched rows as a tool execution notification (a count and a sample)."""
    doc = json.loads(text)
    counts = merged.counts
    note = merged.notification()
    for run in doc.get("runs", []):
        for res in run.get("results", []):
            props = res.setdefault("properties", {})
            if "probe" in props:
                props["hits"] = counts.get(props["probe"], 0)
        run.setdefault("properties", {})["hits"] = _block(merged)
        if note:
            inv = (run.get("invocations") or [{"executionSuccessful": True}])[0]
            inv.setdefault("toolExecutionNotifications", []).append(
                {"level": "warning", "descriptor": {"id": "hits-unmatched"}, "message": {"text": note}}
            )
            run["invocations"] = [inv, *run.get("invocations", [])[1:]]
    return json.dumps(doc, indent=2) + "\n"


def render_merged(
    fmt: str,
    results: list[AuditResult],
    merged: Merged | None,
    statistics: bool = False,
    gate=None,
    source_root: str | None = None,
    path_prefix_map: tuple[str, ...] = (),
    sort: str = "address",
) -> str:
    """The CLI's report when hits were merged (any format), for `--format html`, or for `--sort rarity`."""
    counts = merged.counts if merged is not None else None
    if fmt == "html":
        from fbt_audit.report.html import render_html

        return render_html(results, counts)
    if fmt == "list":
        from fbt_audit.report.listing import render_list

        return render_list(results, counts=counts)
    if fmt == "json":
        from fbt_audit.report.jsonout import render_json

        return decorate_json(render_json(results), merged)
    from fbt_audit.report.gate_formats import render_gated

    if fmt == "text":
        return render_text(results, merged, statistics, sort)
    out = render_gated(fmt, results, gate, source_root, path_prefix_map, statistics)
    return decorate_sarif(out, merged) if fmt == "sarif" else out
