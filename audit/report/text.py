"""text.py: the default report: one objtool-style line per finding, optional per-rule counts, a summary."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from fbt_audit.judge.order import findings, ordered
from fbt_audit.report.common import rule_counts, rules_by_id, tables, verdict_counts
from fbt_audit.report.listing import in_order

if TYPE_CHECKING:
    from fbt_audit.judge.result import AuditResult
    from fbt_audit.model.core import Finding, Judgement


def finding_line(display: str, j: Judgement, f: Finding) -> str:
    """`vmlinux: native_save_fl+0x0 (.text+0x1e2c70): FBT102 pushf stepped without flags repair [unsafe]`.
    A finding on a run-time variant (not the disk bytes) names it: `... (variant ftrace-nop) [deny]`."""
    pp = j.pp
    where = f"{pp.name}+0x{pp.symoff:x} ({pp.section}+0x{pp.sec_off:x})"
    variant = f" (variant {f.variant})" if f.variant != "disk" else ""
    return f"{display}: {where}: {f.rule_id} {f.message}{variant} [{j.verdict.label}]"


def statistics_lines(results: list[AuditResult]) -> list[str]:
    """Per-rule finding counts, most frequent first (as `ruff --statistics`): count, id, name."""
    counts = rule_counts(results)
    if not counts:
        return []
    rules = rules_by_id(results)
    rows = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    wc = max(len(str(n)) for _, n in rows)
    wi = max(len(rid) for rid, _ in rows)
    out = []
    for rid, n in rows:
        rule = rules.get(rid)
        name = rule.name if rule is not None else ""
        out.append(f"{n:>{wc}}  {rid:<{wi}}  {name}".rstrip())
    return out


def summary_line(results: list[AuditResult]) -> str:
    """`audited 5 patchpoints in 1 image (table legacy-2011): 1 unsafe, 1 deny, 1 refused, 2 safe; 3 findings`."""
    n_pp = sum(len(r.judgements) for r in results)
    n_img = len(results)
    n_find = sum(len(j.findings) for r in results for j in r.judgements)
    names = ", ".join(name for name, _ in tables(results)) or "-"
    counts = ", ".join(f"{n} {v.label}" for v, n in verdict_counts(results).items())
    line = (
        f"audited {n_pp} patchpoint{'s' if n_pp != 1 else ''} in {n_img} image{'s' if n_img != 1 else ''}"
        f" (table {names}): {counts}; {n_find} finding{'s' if n_find != 1 else ''}"
    )
    n_err = sum(len(r.errors) for r in results)
    if n_err:
        line += f"; {n_err} tool error{'s' if n_err != 1 else ''}"
    return line


# Non-entries (__pfx_ padding, .cold fragments, inner labels: 50,000 on a 6.12 vmlinux) are one summary
# line per image in text, not a line each; json, sarif and the list still carry every one.
QUIET_RULES = ("FBT206",)


def quiet_line(display: str, n: int) -> str:
    return f"{display}: FBT206 {n} patchpoint{'s' if n != 1 else ''} not a function entry (--statistics counts them)"


def render_text(
    results: list[AuditResult],
    statistics: bool = False,
    *,
    counts: Mapping[str, int] | None = None,
    order: list[tuple[AuditResult, Judgement]] | None = None,
    last: str | None = None,
) -> str:
    """One line per finding (images in report order, patchpoints by address, or in `order`; findings worst
    first; FBT206 summarised per image), then with `statistics` the per-rule and kernel-table counts, then
    one summary line. With hit `counts`, each finding line ends ` hits N`; `last` is one more closing line
    (the hits summary). Ends with a newline."""
    from fbt_audit.report.sitestats import table_lines

    results = ordered(results)
    lines: list[str] = []
    quiet: dict[int, int] = {}  # id(result) -> FBT206 findings not listed

    def add(r: AuditResult, j: Judgement) -> None:
        for f in findings(j):
            if f.rule_id in QUIET_RULES:
                quiet[id(r)] = quiet.get(id(r), 0) + 1
            elif counts is None:
                lines.append(finding_line(r.kernel.display, j, f))
            else:
                lines.append(f"{finding_line(r.kernel.display, j, f)} hits {counts.get(j.pp.probe_name, 0)}")

    if order is None:  # image by image, each followed by its FBT206 summary
        for r in results:
            for j in in_order(r):
                if j.findings:
                    add(r, j)
            if quiet.get(id(r)):
                lines.append(quiet_line(r.kernel.display, quiet[id(r)]))
    else:  # one order across images (rarity); the summaries after it
        for r, j in order:
            add(r, j)
        lines.extend(quiet_line(r.kernel.display, quiet[id(r)]) for r in results if quiet.get(id(r)))
    if statistics:
        stats = statistics_lines(results) + table_lines(results)
        if stats:
            lines.extend(([""] if lines else []) + stats)
    if lines:
        lines.append("")
    lines.append(summary_line(results))
    if last:
        lines.append(last)
    return "\n".join(lines) + "\n"
