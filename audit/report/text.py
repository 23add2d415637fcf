"""text.py: the default report: one objtool-style line per finding, optional per-rule counts, a summary."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING

from fbt_audit.judge.order import finding_order, findings, ordered
from fbt_audit.model.core import Level, Verdict
from fbt_audit.report.common import rule_counts, rules_by_id, table_names, verdict_counts

if TYPE_CHECKING:
    from fbt_audit.judge.result import AuditResult
    from fbt_audit.model.core import Finding, Judgement


def finding_line(display: str, j: Judgement, f: Finding, colour: bool = False) -> str:
    """`vmlinux: native_save_fl+0x0 (.text+0x1e2c70): FBT102 pushf stepped without flags repair [error]`.
    The tag is the finding's own level; where the patchpoint's verdict is worse than that level makes it,
    the tag says so: `FBT204 deny region: entry text [warning; patchpoint unsafe]`. A finding on a run-time
    variant (not the disk bytes) names it: `... (variant ftrace-nop) [warning]`."""
    pp = j.pp
    where = f"{pp.name}+0x{pp.symoff:x} ({pp.section}+0x{pp.sec_off:x})"
    variant = f" (variant {f.variant})" if f.variant != "disk" else ""
    level = f.level.sarif
    if colour:
        level = f"{_COLOURS[f.level]}{level}\033[0m"
    tag = level if Verdict.of_level(f.level) == j.verdict else f"{level}; patchpoint {j.verdict.label}"
    return f"{display}: {where}: {f.rule_id} {f.message}{variant} [{tag}]"


_COLOURS = {Level.ERROR: "\033[1;31m", Level.WARNING: "\033[33m", Level.NOTE: "\033[36m"}
SHOW = ("error", "warning", "note", "all")  # --show: the least severe level listed line by line


def deep_lines(ev, sym_addr: int) -> list[str]:
    """--deep's evidence under a finding: the summary, then each path's end, proof state and why."""
    out = [f"    deep: {ev.summary()}" + (f"; {ev.note}" if ev.note and ev.paths else "")]
    for p in ev.paths:
        end = p.end
        out.append(f"      -> {end.text} at +0x{end.addr - sym_addr:x} ({len(p.steps)} steps): {p.state}: {p.why}")
    return out


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
    n_pp = sum(r.count() for r in results)
    n_img = len(results)
    n_find = sum(map(_n_findings, results))
    names = ", ".join(table_names(results)) or "-"
    counts = ", ".join(f"{n} {v.label}" for v, n in verdict_counts(results).items())
    line = (
        f"audited {n_pp} patchpoint{'s' if n_pp != 1 else ''} in {n_img} image{'s' if n_img != 1 else ''}"
        f" (table {names}): {counts}; {n_find} finding{'s' if n_find != 1 else ''}"
    )
    n_err = sum(len(r.errors) for r in results)
    if n_err:
        line += f"; {n_err} tool error{'s' if n_err != 1 else ''}"
    return line


def _n_findings(r: AuditResult) -> int:
    rows = r.__dict__.get("rows")
    if "judgements" not in r.__dict__ and isinstance(rows, TextDigest):  # a tree's module: its digest's counts
        return sum(rows.rules.values())
    return sum(r.finding_rules().values())


# Non-entries (__pfx_ padding, .cold fragments, inner labels: 50,000 on a 6.12 vmlinux) are never listed line by
# line in text, whatever --show says; json, sarif (--show all) and the list still carry every one.
QUIET_RULES = ("FBT206",)


def render_text(
    results: list[AuditResult],
    statistics: bool = False,
    *,
    show: str = "all",
    counts: Mapping[str, int] | None = None,
    order: list[tuple[AuditResult, Judgement]] | None = None,
    last: str | None = None,
    colour: bool = False,
) -> str:
    """The findings at or above `show` (error, warning, note or all) one line each, worst patchpoint verdict
    first (unsafe, deny, refused), then by image and address, or in `order`; findings worst first. The others
    are summarised per rule in a few lines (with their sections). Then, with `statistics`, the per-rule and
    kernel-table counts, then one summary line. With hit `counts`, each finding line ends ` hits N`; `last`
    is one more closing line (the hits summary). Ends with a newline. Each image's lines are made by
    text_digest (a module tree's worker makes them there); this joins them."""
    from fbt_audit.report.sitestats import table_lines

    results = ordered(results)
    n_modules = sum(r.kernel.kind == "module" for r in results)
    if order is not None:
        index = {id(r): k for k, r in enumerate(results)}
        pieces = [(index[id(r)], r, _piece(r, j, show, counts, colour)) for r, j in order]
    else:
        by_verdict: dict[Verdict, list] = {v: [] for v in _WORST_FIRST}  # a digest's pieces: one or two verdicts
        for k, r in enumerate(results):
            for v, piece in digest_of(r, show, colour, counts).pieces.items():
                by_verdict[v].append((k, r, piece))
        pieces = [p for v in _WORST_FIRST for p in by_verdict[v]]
    lines: list[str] = []
    held: dict[tuple[str, str], _Held] = {}
    for k, r, (got, kept) in pieces:
        lines.extend(got)
        if not kept:
            continue
        where = "modules" if r.kernel.kind == "module" and n_modules > 1 else r.kernel.display
        for rid, (level, n, sections) in kept.items():
            h = held.get((where, rid))
            if h is None:
                h = held[where, rid] = _Held(level)
            h.add(k, n, sections)
    summary = _held_lines(held, results, show)
    if summary:
        lines.extend(([""] if lines else []) + summary)
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


_WORST_FIRST = sorted(Verdict, reverse=True)  # the patchpoints with findings: unsafe, then deny, then refused


class TextDigest:
    """One image's share of the text report, made where the image was audited (a module tree's worker sends
    this instead of its rows): per patchpoint verdict, the finding lines at or above `show` in address order
    and the findings held back per rule (level of the first, count, sections in first-seen order); and the
    counts the summary and --statistics read. Stands in for the result's rows (AuditResult.rows)."""

    detached = True  # nothing here needs the image

    def __init__(self, show: str, colour: bool, n: int, verdicts: dict, rules: Counter, worst) -> None:
        self.show, self.colour, self.n, self.verdict_n, self.rules, self.worst = show, colour, n, verdicts, rules, worst
        self.pieces: dict[Verdict, tuple[list[str], dict[str, list]]] = {}

    def verdicts(self) -> dict[Verdict, int]:
        return dict(self.verdict_n)

    def finding_rules(self) -> Counter:
        return Counter(self.rules)

    def reported(self):
        raise RuntimeError("this result was rendered to text where it was audited: its judgements stayed there")

    judgements = name_addrs = reported


def text_digest(r: AuditResult, show: str = "error", colour: bool = False,
                counts: Mapping[str, int] | None = None) -> TextDigest:  # fmt: skip
    """r's TextDigest at `show` (with hit `counts`, each line ends ` hits N`). Of entry rows judged by group
    (judge.rows.JudgedRows), the rows whose findings are all held back are counted per (group, section), without
    building their Judgements."""
    least = Level.NOTE if show == "all" else Level[show.upper()]
    rows = r.__dict__.get("rows") if "judgements" not in r.__dict__ else None
    if rows is None or not hasattr(rows, "reps"):
        js = r.with_findings()
        return _digest(r, show, colour, counts, least, [(None, j) for j in js], [(j.findings, 1) for j in js])
    reps = [(rows.proto(rep), n) for rep, n in rows.tally().items()]
    return _digest(r, show, colour, counts, least, list(zip(rows.reported_rows, rows.reps, strict=True)), reps, rows)


def _digest(r: AuditResult, show: str, colour: bool, counts, least: Level, items: list, reps: list,
            rows=None) -> TextDigest:  # fmt: skip
    """text_digest's work: `items` (row or None, its judged row or Judgement) in order, `reps` (findings, how
    many rows have them; a judged row's may hold placeholders: JudgedRows.proto). The held findings are counted
    per (findings, section) in first-seen order, then added once per count, so that rule ids and sections keep the
    order a row-by-row pass gives them; only the rows with a listed finding are built."""
    rules: Counter[str] = Counter()
    for fs, n in reps:
        for f in fs:
            rules[f.rule_id] += n
    worst = max((f.level for fs, _n in reps for f in fs), default=None)
    d = TextDigest(show, colour, r.count(), r.verdict_counts(), rules, worst)
    held_only: dict[int, list[Finding] | None] = {}  # by id(findings): sorted, when every one is held back
    verdict: dict[int, Verdict] = {}  # of each all-held findings list, by id
    seen: dict[tuple, int] = {}  # (judged row or id, section) of all-held rows, or (None, k) of a listed one: rows
    by_rep: dict[int, int | None] = {}  # judged row (or a Judgement's id) -> its findings' id if all held, else None
    names = _section_names(rows, items)
    for k, (i, rep) in enumerate(items):
        rk = rep if rows is not None else id(rep)
        key = by_rep.get(rk, -1)
        if key == -1:
            got = rows.proto(rep) if rows is not None else rep.findings
            fs = sorted(got, key=finding_order)
            if all(_held(f, least) for f in fs):
                key = id(got)
                if key not in held_only:
                    held_only[key], verdict[key] = fs, Verdict.of_findings(fs)
            else:
                key = None
            by_rep[rk] = key
        if key is None:
            seen[None, k] = 1
            continue
        own = rows.judged.get(i) if rows is not None else rep  # a row not built: its section from its columns
        hk = (key, own.pp.section if own is not None else names[k] if names is not None else rows.rows.section(i)[0])
        seen[hk] = seen.get(hk, 0) + 1
    for (key, at), n in seen.items():
        if key is None:
            i, rep = items[at]
            j = rows.judgement(i) if rows is not None else rep
            _add(_piece_of(d, j.verdict), r, j, least, counts, colour)
            continue
        fs = held_only[key]
        piece = _piece_of(d, verdict[key])
        for f in fs:
            _hold(piece[1], f, at, n)
    return d


def _section_names(rows, items: list) -> list[str] | None:
    """The section name of each item's row (items[k] = (i, rep): rows.rows.section(i)[0]), the rows' `sec` column
    read once and each section index named once; None where the rows have no such column."""
    sec = getattr(rows.rows, "sec", None) if rows is not None else None
    if sec is None:
        return None
    if len(sec) <= 256:  # a module's rows: the whole column costs less than numpy's fancy index
        col = sec.tolist()
        secs = [col[i] for i, _rep in items]
    else:
        import numpy as np  # loaded already: rows with a sec column are numpy columns

        secs = sec[np.array([i for i, _rep in items], dtype=np.int64)].tolist()
    known: dict[int, str] = {}
    out = []
    for s, (i, _rep) in zip(secs, items, strict=True):
        name = known.get(s)
        if name is None:
            name = rows.rows.section(i)[0]
            if s >= 0:  # outside every section: each row its own symbol's section
                known[s] = name
        out.append(name)
    return out


def _flag_rules() -> tuple[str, ...]:
    from fbt_audit.deep.model import FLAG_RULES  # here: only a --deep result (with evidence) imports deep's model

    return FLAG_RULES


def _piece_of(d: TextDigest, v: Verdict) -> tuple[list[str], dict[str, list]]:
    piece = d.pieces.get(v)
    if piece is None:
        piece = d.pieces[v] = ([], {})
    return piece


def digest_of(r: AuditResult, show: str, colour: bool, counts: Mapping[str, int] | None) -> TextDigest:
    """The digest r's worker made, when it was made for this report; else one made now."""
    d = r.__dict__.get("rows")
    if isinstance(d, TextDigest) and counts is None and (d.show, d.colour) == (show, colour):
        return d
    return text_digest(r, show, colour, counts)


def _piece(r: AuditResult, j: Judgement, show: str, counts, colour: bool) -> tuple[list[str], dict[str, list]]:
    """One patchpoint's lines and held findings (--sort rarity's order)."""
    piece: tuple[list[str], dict[str, list]] = ([], {})
    _add(piece, r, j, Level.NOTE if show == "all" else Level[show.upper()], counts, colour)
    return piece


def _held(f: Finding, least: Level) -> bool:
    """Whether a finding is summarised per rule, not listed: below `least`, or a quiet rule."""
    return f.level < least or f.rule_id in QUIET_RULES


def _hold(held: dict[str, list], f: Finding, section: str, n: int = 1) -> None:
    """n rows' finding f held back (counted per rule and section, not listed)."""
    h = held.get(f.rule_id)
    if h is None:
        h = held[f.rule_id] = [f.level, 0, {}]
    h[1] += n
    h[2][section] = h[2].get(section, 0) + n


def _add(piece: tuple[list[str], dict[str, list]], r: AuditResult, j: Judgement, least: Level, counts,
         colour: bool) -> None:  # fmt: skip
    """j's findings into piece: a line each at or above `least` (and --deep's path lines), the others held."""
    lines, held = piece
    for f in findings(j):
        if _held(f, least):
            _hold(held, f, j.pp.section)
            continue
        line = finding_line(r.kernel.display, j, f, colour)
        lines.append(f"{line} hits {counts.get(j.pp.probe_name, 0)}" if counts is not None else line)
        ev = r.evidence.get((j.pp.addr, j.pp.site)) if r.evidence and f.rule_id in _flag_rules() else None
        if ev is not None:  # --deep: one line per path after the finding (audit/deep/)
            lines.extend(deep_lines(ev, j.pp.sym_addr))


class _Held:
    """The findings of one rule (in one image, or across a tree's modules) that are summarised, not listed."""

    __slots__ = ("level", "n", "images", "sections")

    def __init__(self, level: Level) -> None:
        self.level, self.n, self.images, self.sections = level, 0, set(), Counter()

    def add(self, image: int, n: int, sections: dict[str, int]) -> None:
        self.n += n
        self.images.add(image)
        own = self.sections
        for s, k in sections.items():  # Counter.update's loop, without its call (a tree adds ~6,500 times)
            own[s] = own.get(s, 0) + k


def _held_lines(held: dict[tuple[str, str], _Held], results: list[AuditResult], show: str) -> list[str]:
    """`vmlinux: FBT205 2577 warnings not listed (.init.text 2577); --show warning lists them`, worst first."""
    out = []
    for (where, rid), h in sorted(held.items(), key=lambda kv: (-kv[1].level, kv[0][1], kv[0][0])):
        level = h.level.sarif
        plural = "s" if h.n != 1 else ""
        top = h.sections.most_common()
        secs = ", ".join(f"{s} {n}" for s, n in top[:3]) + (f", {len(top) - 3} more sections" if len(top) > 3 else "")
        mods = f" in {len(h.images)} modules" if where == "modules" else ""
        how = "--statistics counts them" if rid in QUIET_RULES else f"--show {level} lists them"
        out.append(f"{where}: {rid} {h.n} {level}{plural}{mods} not listed ({secs}); {how}")
    return out
