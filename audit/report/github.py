"""github.py: `--format github`: GitHub Actions workflow annotations (::error file=...,line=...::), one per result."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fbt_audit.report.common import rules_by_id

if TYPE_CHECKING:
    from fbt_audit.gate.baseline import Gate
    from fbt_audit.input.dwarf import PathMap
    from fbt_audit.judge.result import AuditResult

# Actions shows at most 10 annotations of each level per step (50 per job): SARIF upload stays the
# primary channel; this is for workflows that cannot upload.
COMMAND = {"error": "error", "warning": "warning", "note": "notice"}


def _data(text: str) -> str:
    """Escape a command's message (actions/toolkit `escapeData`)."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _prop(text: str) -> str:
    """Escape a command property (actions/toolkit `escapeProperty`)."""
    return _data(text).replace(":", "%3A").replace(",", "%2C")


def render_github(
    results: list[AuditResult], gate: Gate | None = None, paths: PathMap | None = None, show: str = "warning"
) -> str:
    """One `::error|warning|notice` command per (patchpoint, rule) carried at `show` (as SARIF), the text
    report's line as its message. With a gate: allowlisted results are left out, and with a baseline only
    new and updated ones are annotated. The location is the DWARF source line when known, else none."""
    from fbt_audit.gate.identity import items, run_id, runs_of, shown
    from fbt_audit.input.dwarf import relative_source

    names = rules_by_id(results)
    lines = []
    for kind, flavour, group in runs_of(results):
        its = [it for it in items(group) if shown(it, show)]
        if gate is not None:
            its, _, _ = gate.apply(run_id(kind, flavour), its)
            if gate.baseline is not None:
                its = [it for it in its if it.state in ("new", "updated")]
        for it in its:
            pp = it.j.pp
            props = []
            if pp.source:
                rel = paths.relative(pp.source[0]) if paths else relative_source(pp.source[0])
                if rel:
                    props += [f"file={_prop(rel)}", f"line={max(1, int(pp.source[1]))}"]
            rule = names.get(it.rule_id)
            title = f"fbt-audit {it.rule_id}" + (f" {rule.name}" if rule is not None and rule.name else "")
            props.append(f"title={_prop(title)}")
            worst = it.findings[0]
            variant = f" (variant {worst.variant})" if worst.variant != "disk" else ""
            where = f"{pp.name}+0x{pp.symoff:x} ({pp.section}+0x{pp.sec_off:x})"
            msg = f"{it.result.kernel.display}: {where}: {it.rule_id} {worst.message}{variant} [{it.j.verdict.label}]"
            lines.append(f"::{COMMAND[it.level.sarif]} {','.join(props)}::{_data(msg)}")
    return "".join(line + "\n" for line in lines)
