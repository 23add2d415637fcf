"""jsonout.py: the json report, schema `fbt-audit/1`, described by audit/report/schema/fbt-audit-report.schema.json."""

from __future__ import annotations

import json
from importlib import resources
from typing import TYPE_CHECKING, Any

from fbt_audit import __version__
from fbt_audit.judge.order import findings, judgements, ordered
from fbt_audit.report.common import rule_counts, rules_by_id, verdict_counts

if TYPE_CHECKING:
    from fbt_audit.judge.result import AuditResult
    from fbt_audit.model.core import Judgement

SCHEMA = "fbt-audit/1"
SCHEMA_FILE = "fbt-audit-report.schema.json"


def schema() -> dict[str, Any]:
    """The JSON Schema the report validates against (shipped as package data)."""
    return json.loads(resources.files("fbt_audit.report").joinpath("schema", SCHEMA_FILE).read_text())


def _summary(results: list[AuditResult]) -> dict[str, Any]:
    return {
        "patchpoints": sum(len(r.judgements) for r in results),
        "findings": sum(len(j.findings) for r in results for j in r.judgements),
        "verdicts": {v.label: n for v, n in verdict_counts(results).items()},
        "rules": dict(sorted(rule_counts(results).items())),
    }


def _patchpoint(j: Judgement, ev=None) -> dict[str, Any]:
    pp, insn = j.pp, j.pp.insn
    out = {
        "name": pp.name,
        "aliases": list(pp.aliases),
        "module": pp.module,
        "site": pp.site,
        "kind": pp.kind,
        "probe": pp.probe_name,
        "address": f"0x{pp.addr:x}",
        "symoff": pp.symoff,
        "section": pp.section,
        "sec_off": pp.sec_off,
        "bytes": insn.raw.hex(),
        "length": insn.length,
        "modrm_off": insn.modrm_off,
        "mnemonic": insn.text,
        "handling": j.handling,
        "verdict": j.verdict.label,
        "rules": j.rule_ids,
        "findings": [
            {"rule": f.rule_id, "level": f.level.sarif, "message": f.message, "variant": f.variant} for f in findings(j)
        ],
        "live": [{"label": v.label, "bytes": v.insn.raw.hex(), "mnemonic": v.insn.text} for v in pp.variants[1:]],
        "moved": [{"bytes": m.raw.hex(), "mnemonic": m.text} for m in pp.moved],
        "facts": sorted(pp.facts),
        "source": {"file": pp.source[0], "line": pp.source[1]} if pp.source else None,
    }
    if ev is not None:  # --deep (audit/deep/): the flags paths, briefly; SARIF has them step by step
        out["deep"] = {"summary": ev.summary(), "paths": [
            {"consumer": p.consumer, "at": f"0x{p.end.addr:x}", "steps": len(p.steps), "state": p.state, "why": p.why}
            for p in ev.paths]}  # fmt: skip
    return out


def _image(r: AuditResult, all_patchpoints: bool) -> dict[str, Any]:
    k = r.kernel
    return {
        "image": k.display,
        "kind": k.kind,
        "module": k.module,
        "release": k.release,
        "build_id": k.build_id,
        "flavour": k.flavour,
        "table": {"name": r.table.name, "sha256": r.table.sha256},
        "summary": _summary([r]),
        "errors": list(r.errors),
        "patchpoints": [_patchpoint(j, r.evidence.get((j.pp.addr, j.pp.site)) if r.evidence else None)
                        for j in judgements(r) if all_patchpoints or j.findings],  # fmt: skip
    }


def report(results: list[AuditResult], all_patchpoints: bool = False) -> dict[str, Any]:
    """The report as a dict (what render_json serialises)."""
    results = ordered(results)
    return {
        "schema": SCHEMA,
        "tool": {"name": "fbt-audit", "version": __version__},
        "all_patchpoints": all_patchpoints,
        "summary": {"images": len(results), **_summary(results)},
        "rules": [
            {"id": rule.id, "name": rule.name, "level": rule.level.sarif, "summary": rule.summary}
            for rule in rules_by_id(results).values()
        ],
        "images": [_image(r, all_patchpoints) for r in results],
    }


def render_json(results: list[AuditResult], all_patchpoints: bool = False) -> str:
    """The json report: per image its identity, table, summary and the patchpoints that have
    findings (every patchpoint with `all_patchpoints`). Deterministic; ends with a newline."""
    return json.dumps(report(results, all_patchpoints), indent=2) + "\n"
