"""sarif.py: SARIF 2.1.0 for GitHub code scanning: one run per (image kind, flavour), stable fingerprints."""

from __future__ import annotations

import json
from functools import cache
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from fbt_audit import __version__
from fbt_audit.gate.identity import PATCHPOINT_KEY, Item, items, pseudo_path, run_id, runs_of, shown
from fbt_audit.model.core import Level
from fbt_audit.report.common import tables
from fbt_audit.report.sarif_flows import Addresses, add_flows, source_uri

if TYPE_CHECKING:
    from fbt_audit.gate.baseline import Gate
    from fbt_audit.input.dwarf import PathMap
    from fbt_audit.judge.result import AuditResult
    from fbt_audit.judge.rule import Rule

SCHEMA_URI = "https://json.schemastore.org/sarif-2.1.0.json"
TOOL_NAME = "fbt-audit"
INFORMATION_URI = "https://github.com/fbt-audit/fbt-audit"  # the project's home, as pyproject.toml [project.urls]
MAX_RESULTS = 25_000  # GitHub rejects more per run, and keeps the 5,000 most severe
MAX_DESCRIPTION = 1024  # GitHub's limit on shortDescription/fullDescription text
DEFAULT_PRECISION = "very-high"  # the rules judge decoded bytes against the table: no heuristics

@cache
def _uri(path: str) -> str:
    return quote(path, safe="/-._~+@")


def _level(level: Level) -> str:
    return level.sarif


# --- rules ------------------------------------------------------------------------------------


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_DESCRIPTION else text[: MAX_DESCRIPTION - 3] + "..."


def rule_descriptor(rule: Rule) -> dict[str, Any]:
    sections = rule.doc_sections()
    summary = rule.summary or rule.name or rule.id
    what = sections.get("What it finds") or summary
    help_text = "\n\n".join(f"{title}:\n{body}" for title, body in sections.items()) or summary
    help_md = "\n\n".join(f"## {title}\n\n{body}" for title, body in sections.items()) or summary
    tags = list(dict.fromkeys(rule.tags))
    return {
        "id": rule.id,
        "name": rule.name or rule.id,
        "shortDescription": {"text": _clip(summary)},
        "fullDescription": {"text": _clip(what)},
        "help": {"text": help_text, "markdown": help_md},
        "defaultConfiguration": {"level": _level(rule.level)},
        "properties": {
            "tags": tags,
            "precision": getattr(rule, "precision", DEFAULT_PRECISION),
            "problem.severity": {"error": "error", "warning": "warning"}.get(rule.level.sarif, "recommendation"),
        },
    }


def _unknown_rule(rule_id: str, level: Level) -> dict[str, Any]:
    """A descriptor for a finding whose rule is not in AuditResult.rules, so that ruleIndex stays valid."""
    return {
        "id": rule_id,
        "name": rule_id,
        "shortDescription": {"text": rule_id},
        "fullDescription": {"text": rule_id},
        "help": {"text": rule_id, "markdown": rule_id},
        "defaultConfiguration": {"level": _level(level)},
        "properties": {"tags": [], "precision": DEFAULT_PRECISION},
    }


# --- results ----------------------------------------------------------------------------------


def _location(item: Item, paths: PathMap | None) -> dict[str, Any]:
    pp = item.j.pp
    uri, line = source_uri(item, pp.source, paths)
    return {
        "physicalLocation": {"artifactLocation": {"uri": _uri(uri)}, "region": {"startLine": line}},
        "logicalLocations": [{"name": pp.name, "fullyQualifiedName": pp.probe_name, "kind": "function"}],
    }


def _related(item: Item) -> list[dict[str, Any]]:
    """One related location: the address, the instruction bytes and the patch window in one message (GH1007),
    anchored at the image's pseudo-path: code scanning shows it as text, the binary has no source lines.
    One, not three: 25,000 results of three each made SARIF files of 40 MB."""
    pp, insn = item.j.pp, item.j.pp.insn
    window = max(1, insn.length)
    text = (
        f"patchpoint {pp.probe_name} at 0x{pp.addr:x} ({pp.section}+0x{pp.sec_off:x}), {pp.name}+0x{pp.symoff:x}: "
        f"{insn.raw.hex() or '-'} {insn.text}; the int3 displaces {window} byte{'s' if window != 1 else ''}"
    )
    base = {"artifactLocation": {"uri": _uri(pseudo_path(item.result))}, "region": {"startLine": 1}}
    return [{"id": 0, "physicalLocation": base, "message": {"text": text}}]


def _result(item: Item, rule_index: int, paths: PathMap | None, addresses: Addresses | None = None) -> dict[str, Any]:
    """One SARIF result for one (patchpoint, rule): the worst finding speaks, every variant is listed."""
    r, j, group = item.result, item.j, item.findings
    pp, insn = j.pp, j.pp.insn
    worst = group[0]
    variants = list(dict.fromkeys(f.variant for f in group))
    out: dict[str, Any] = {
        "ruleId": worst.rule_id,
        "ruleIndex": rule_index,
        "level": _level(item.level),
        "kind": "fail",
        "message": {"text": item.message},
        "locations": [_location(item, paths)],
        "relatedLocations": _related(item),
        "partialFingerprints": {
            "primaryLocationLineHash": item.fingerprint,
            PATCHPOINT_KEY: item.probe_key,
        },
        "properties": {
            "image": r.kernel.display,
            "probe": pp.probe_name,
            "address": f"0x{pp.addr:x}",
            "symoff": f"+0x{pp.symoff:x}",
            "section": f"{pp.section}+0x{pp.sec_off:x}",
            "bytes": insn.raw.hex(),
            "mnemonic": insn.text,
            "symbolKind": pp.kind,
            "verdict": j.verdict.label,
            "variant": worst.variant,
            "variants": variants,
        },
    }
    platform = getattr(r, "platform", "all")
    if platform != "all":  # --platform: the boot-time forms this verdict assumes (absent: all of them)
        out["properties"]["platform"] = platform
    if item.state is not None:
        out["baselineState"] = item.state
    if addresses is not None and item.result.evidence:  # --deep: the flags paths (report/sarif_flows.py)
        add_flows(out, item, paths, addresses)
    if len(group) > 1:
        out["properties"]["messages"] = [f.message for f in group]
    return out


def _run(
    group: list[AuditResult], kind: str, flavour: str, max_results: int, gate: Gate | None, paths: PathMap | None,
    show: str,
) -> dict[str, Any]:  # fmt: skip
    keyed = items(group)
    rid = run_id(kind, flavour)
    stats: dict[str, Any] = {}
    notes: list[str] = []
    shown_items = [it for it in keyed if shown(it, show)]  # before the gate: a baseline carries what was shown
    hidden = len(keyed) - len(shown_items)
    keyed = shown_items
    if gate is not None:
        keyed, stats, notes = gate.apply(rid, keyed)
    descriptors = _descriptors(group, keyed)
    index = {rule_id: i for i, rule_id in enumerate(descriptors)}
    total = len(keyed)
    keyed, dropped = _capped(keyed, max_results)
    omitted = len(dropped)
    if omitted:
        notes = [*notes, f"{omitted} of {total} results omitted: GitHub accepts at most {max_results} per run; "
                          "the most severe are kept"]  # fmt: skip
    errors = [e for r in group for e in r.errors]
    notifications = [{"level": "error", "message": {"text": e}} for e in errors]
    notifications += [{"level": "warning", "message": {"text": n}} for n in notes]
    invocation: dict[str, Any] = {"executionSuccessful": not errors}
    if notifications:
        invocation["toolExecutionNotifications"] = notifications
    properties: dict[str, Any] = {
        "kind": kind,
        "flavour": flavour,
        "releases": sorted({r.kernel.release for r in group if r.kernel.release}),
        "buildIds": sorted({r.kernel.build_id for r in group if r.kernel.build_id}),
        "images": len(group),
        "tables": [{"name": n, "sha256": h} for n, h in tables(group)],
        "resultsTotal": total,
    }
    platforms = sorted({getattr(r, "platform", "all") for r in group} - {"all"})
    if platforms:  # --platform: which boot-time forms the verdicts assume (absent: every form, worst wins)
        properties["platform"] = platforms[0] if len(platforms) == 1 else platforms
    if hidden:
        properties["resultsNotShown"] = hidden  # below --show, or on __pfx_/__cfi_ padding (--show all)
    if omitted:
        properties["resultsOmitted"] = omitted
    properties.update(stats)
    addresses = Addresses()
    out = {
        "tool": {"driver": {"name": TOOL_NAME, "version": __version__, "informationUri": INFORMATION_URI,
                            "rules": list(descriptors.values())}},  # fmt: skip
        "automationDetails": {"id": rid},
        "invocations": [invocation],
        "columnKind": "utf16CodeUnits",
        "results": [_result(it, index[it.rule_id], paths, addresses) for it in keyed],
        "properties": properties,
    }
    if addresses.rows:
        out["addresses"] = addresses.rows
    return out


def _descriptors(group: list[AuditResult], keyed: list[Item]) -> dict[str, dict[str, Any]]:
    """The run's rule descriptors by id, in id order: every rule that ran, and any id a result names."""
    descriptors: dict[str, dict[str, Any]] = {}
    for r in group:
        for rule in r.rules:
            if rule.id not in descriptors:
                descriptors[rule.id] = rule_descriptor(rule)
    for it in keyed:
        if it.rule_id not in descriptors:
            descriptors[it.rule_id] = _unknown_rule(it.rule_id, it.level)
    return dict(sorted(descriptors.items()))


def _capped(keyed: list[Item], max_results: int) -> tuple[list[Item], list[list[str]]]:
    """At most max_results (GitHub keeps 25,000 per run, and shows the 5,000 most severe): the most severe,
    among equals the earlier in report order, kept in report order; and (fingerprint, rule, level) of those
    left out (only counted in the run's properties)."""
    if len(keyed) <= max_results:
        return keyed, []
    ranked = sorted(range(len(keyed)), key=lambda i: (-keyed[i].level, i))
    keep = sorted(ranked[:max_results])
    kept = set(keep)
    dropped = [[it.fingerprint, it.rule_id, it.level.sarif] for i, it in enumerate(keyed) if i not in kept]
    return [keyed[i] for i in keep], dropped


def sarif_log(
    results: list[AuditResult],
    max_results: int = MAX_RESULTS,
    *,
    gate: Gate | None = None,
    paths: PathMap | None = None,
    show: str = "warning",
) -> dict[str, Any]:
    """The SARIF log as a dict: one run per (image kind, flavour), vmlinux runs first. With a gate,
    allowlisted and absent results are left out and counted in the run's properties."""
    runs = [_run(group, kind, flavour, max_results, gate, paths, show) for kind, flavour, group in runs_of(results)]
    failures = getattr(results, "failures", ())  # inputs a batch could not audit (batch.Results): on the first run
    if failures:
        if not runs:
            runs.append(_run([], "modules", "unknown", max_results, gate, paths, show))
        inv = runs[0]["invocations"][0]
        inv["executionSuccessful"] = False
        inv.setdefault("toolExecutionNotifications", []).extend(
            {"level": "error", "message": {"text": f}} for f in failures
        )
    if gate is not None:
        if not gate.finished:
            gate.finish(results)
        if gate.notes and runs:  # stale allowlist entries: once, on the first run
            inv = runs[0]["invocations"][0]
            inv.setdefault("toolExecutionNotifications", []).extend(
                {"level": "warning", "message": {"text": n}} for n in gate.notes
            )
    return {"$schema": SCHEMA_URI, "version": "2.1.0", "runs": runs}


def render_sarif(
    results: list[AuditResult],
    max_results: int = MAX_RESULTS,
    *,
    gate: Gate | None = None,
    paths: PathMap | None = None,
    show: str = "warning",
) -> str:
    """SARIF 2.1.0 text: deterministic (no timestamps, no absolute paths), ends with a newline.
    Indented, except that each result is one compact line: json's C encoder serialises those, while
    indenting 25,000 results in the pure-Python one took longer than the whole audit (and twice the bytes)."""
    log = sarif_log(results, max_results, gate=gate, paths=paths, show=show)
    chunks: list[list[dict[str, Any]]] = []
    for run in log["runs"]:
        chunks.append(run["results"])
        run["results"] = f"\0results{len(chunks) - 1}\0"
    text = json.dumps(log, indent=2)
    compact = json.JSONEncoder(separators=(",", ":")).encode
    for i, res in enumerate(chunks):
        body = "[]" if not res else "[\n" + ",\n".join(map(compact, res)) + "\n      ]"
        text = text.replace(json.dumps(f"\0results{i}\0"), body, 1)
    return text + "\n"
