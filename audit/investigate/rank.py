"""rank.py: rarity ranking: patchpoints that are not safe, hit at least once rarest first, then never hit."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from fbt_audit.judge.order import ordered
from fbt_audit.model.core import Verdict
from fbt_audit.report.listing import in_order

if TYPE_CHECKING:
    from fbt_audit.judge.result import AuditResult
    from fbt_audit.model.core import Judgement

HEADER = "# rank\thits\tverdict\trules\tprobe\twhere\tbytes\tinstruction"


def ranked(
    results: list[AuditResult], counts: Mapping[str, int] | None, at_least: Verdict = Verdict.REFUSED
) -> list[tuple[AuditResult, Judgement, int]]:
    """(result, judgement, hits) for every patchpoint whose verdict is at least `at_least` (default: not
    safe), in rarity order: hits >= 1 ascending, then the never-hit ones (0 or absent); ties by worst
    verdict, then image and address."""
    counts = counts or {}
    rows = []
    for order, r in enumerate(ordered(results)):
        for j in in_order(r):
            if j.verdict < at_least:
                continue
            n = counts.get(j.pp.probe_name, 0)
            rows.append((n == 0, n, -j.verdict, order, j.pp.addr, r, j))
    rows.sort(key=lambda t: t[:5])
    return [(t[5], t[6], t[1]) for t in rows]


def render_rank(
    results: list[AuditResult],
    counts: Mapping[str, int] | None,
    limit: int | None = None,
    at_least: Verdict = Verdict.REFUSED,
) -> str:
    """One tab-separated row per candidate: rank, hits (`-` never hit), verdict, rules, probe, where, bytes,
    instruction; then one summary line."""
    rows = ranked(results, counts, at_least)
    lines = [HEADER]
    shown = rows if limit is None else rows[:limit]
    for i, (_r, j, n) in enumerate(shown, 1):
        pp = j.pp
        lines.append(
            f"{i}\t{n or '-'}\t{j.verdict.label}\t{','.join(j.rule_ids) or '-'}\t{pp.probe_name}\t"
            f"{pp.name}+0x{pp.symoff:x}\t{pp.insn.raw.hex() or '-'}\t{pp.insn.text}"
        )
    hit = sum(1 for _, _, n in rows if n)
    more = f" ({len(rows) - len(shown)} more not shown)" if len(shown) < len(rows) else ""
    what = "not safe" if at_least is Verdict.REFUSED else f"{at_least.label} or worse"
    lines.append(f"# {len(rows)} patchpoints {what}: {hit} hit, {len(rows) - hit} never hit{more}")
    return "\n".join(lines) + "\n"
