"""sarif.py: SARIF 2.1.0 for GitHub code scanning: one run per (image kind, flavour), stable fingerprints."""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from .. import __version__
from ..model import Level
from . import findings, judgements, ordered, tables

if TYPE_CHECKING:
    from ..model import Finding, Judgement
    from ..result import AuditResult
    from ..rule import Rule

SCHEMA_URI = "https://json.schemastore.org/sarif-2.1.0.json"
TOOL_NAME = "fbt-audit"
# GitHub reads the driver's informationUri only for display; the project has no published home yet.
MAX_RESULTS = 25_000  # GitHub rejects more per run, and keeps the 5,000 most severe
FINGERPRINT_KEY = "fbtProbe/v1"  # versioned name of our own fingerprint (SARIF 3.27.17)
MAX_DESCRIPTION = 1024  # GitHub's limit on shortDescription/fullDescription text
DEFAULT_PRECISION = "very-high"  # the rules judge decoded bytes against the table: no heuristics

# GCC/clang clone and outlining suffixes. .isra/.constprop/.part clones are callable copies of the
# same source function; .cold is the outlined unlikely part of it (not an entry, FBT206), so it
# keeps a marker: foo.isra.0.cold.12 -> foo.cold, foo.constprop.0 -> foo.
_CLONE = re.compile(r"\.(?:isra|constprop|part|llvm|lto_priv)\.\d+")
_COLD = re.compile(r"\.cold(?:\.\d+)?")

# Top-level directories of a kernel tree: where an absolute DWARF path is cut to be repo-relative.
_TREE_DIRS = (
    "arch", "block", "certs", "crypto", "drivers", "fs", "include", "init", "io_uring", "ipc", "kernel",
    "lib", "mm", "net", "rust", "samples", "security", "sound", "tools", "usr", "virt",
)  # fmt: skip


def normalise_function(name: str) -> str:
    """The source function a symbol stands for: clone suffixes stripped, `.cold` kept as a marker."""
    cold = bool(_COLD.search(name))
    base = _COLD.sub("", _CLONE.sub("", name))
    return base + ".cold" if cold else base


def relative_source(path: str) -> str | None:
    """A repo-relative form of a DWARF file name, or None when it cannot be made relative."""
    p = path.replace("\\", "/")
    while p.startswith("./"):
        p = p[2:]
    if not p.startswith("/"):
        return p or None
    parts = [s for s in p.split("/") if s]
    for i, part in enumerate(parts[:-1]):
        if part in _TREE_DIRS:
            return "/".join(parts[i:])
    return None


def pseudo_path(result: AuditResult) -> str:
    k = result.kernel
    return "kernel/vmlinux" if k.kind == "vmlinux" else f"modules/{k.module}.ko"


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


def _fingerprint_key(rule_id: str, j: Judgement) -> str:
    pp = j.pp
    src = relative_source(pp.source[0]) if pp.source else None
    return "|".join((FINGERPRINT_KEY, rule_id, pp.module, normalise_function(pp.name), pp.site, src or ""))


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _location(result: AuditResult, j: Judgement) -> dict[str, Any]:
    pp = j.pp
    uri, line = pseudo_path(result), 1
    if pp.source:
        rel = relative_source(pp.source[0])
        if rel:
            uri, line = rel, max(1, int(pp.source[1]))
    return {
        "physicalLocation": {"artifactLocation": {"uri": _uri(uri)}, "region": {"startLine": line}},
        "logicalLocations": [{"name": pp.name, "fullyQualifiedName": pp.probe_name, "kind": "function"}],
    }


def _result(
    result: AuditResult, j: Judgement, group: list[Finding], rule_index: int, ordinal: int, key: str
) -> dict[str, Any]:
    """One SARIF result for one (patchpoint, rule): the worst finding speaks, every variant is listed."""
    pp, insn = j.pp, j.pp.insn
    worst = group[0]
    variants = list(dict.fromkeys(f.variant for f in group))
    message = worst.message or worst.rule_id
    if worst.variant != "disk":
        message += f" (variant {worst.variant})"
    text = f"{pp.name}+0x{pp.symoff:x}: {message} [{j.verdict.label}]"
    out: dict[str, Any] = {
        "ruleId": worst.rule_id,
        "ruleIndex": rule_index,
        "level": _level(max(f.level for f in group)),
        "kind": "fail",
        "message": {"text": text},
        "locations": [_location(result, j)],
        "partialFingerprints": {
            "primaryLocationLineHash": f"{_hash(key)}:{ordinal}",
            FINGERPRINT_KEY: _hash(f"{key}|{ordinal}"),
        },
        "properties": {
            "image": result.kernel.display,
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
    if len(group) > 1:
        out["properties"]["messages"] = [f.message for f in group]
    return out


def _run(group: list[AuditResult], kind: str, flavour: str, max_results: int) -> dict[str, Any]:
    descriptors: dict[str, dict[str, Any]] = {}
    for r in group:
        for rule in r.rules:
            if rule.id not in descriptors:
                descriptors[rule.id] = rule_descriptor(rule)

    # (result, judgement, findings of one rule), in report order; the worst finding first.
    items: list[tuple[AuditResult, Judgement, list[Finding]]] = []
    for r in group:
        for j in judgements(r):
            by_rule: dict[str, list[Finding]] = defaultdict(list)
            for f in findings(j):
                by_rule[f.rule_id].append(f)
            for rid in sorted(by_rule):
                fs = by_rule[rid]
                items.append((r, j, fs))
                if rid not in descriptors:
                    descriptors[rid] = _unknown_rule(rid, max(f.level for f in fs))
    descriptors = dict(sorted(descriptors.items()))
    index = {rid: i for i, rid in enumerate(descriptors)}

    # Ordinals tell apart results whose fingerprint key is the same (static functions sharing a
    # name, several clones of one function); they follow address order, never the address itself.
    seen: dict[str, int] = defaultdict(int)
    keyed = []
    for r, j, fs in items:
        key = _fingerprint_key(fs[0].rule_id, j)
        seen[key] += 1
        keyed.append((r, j, fs, key, seen[key]))

    total = len(keyed)
    omitted = 0
    if total > max_results:
        # Keep the most severe; among equals, the earlier in report order. Then restore report order.
        ranked = sorted(range(total), key=lambda i: (-max(f.level for f in keyed[i][2]), i))
        keep = sorted(ranked[:max_results])
        omitted = total - len(keep)
        keyed = [keyed[i] for i in keep]

    results = [_result(r, j, fs, index[fs[0].rule_id], n, key) for r, j, fs, key, n in keyed]

    notifications = []
    errors = [e for r in group for e in r.errors]
    for e in errors:
        notifications.append({"level": "error", "message": {"text": e}})
    if omitted:
        notifications.append(
            {
                "level": "warning",
                "message": {
                    "text": f"{omitted} of {total} results omitted: GitHub accepts at most {max_results} "
                    "per run; the most severe are kept"
                },
            }
        )
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
    if omitted:
        properties["resultsOmitted"] = omitted

    return {
        "tool": {
            "driver": {
                "name": TOOL_NAME,
                "version": __version__,
                "rules": list(descriptors.values()),
            }
        },
        "automationDetails": {"id": f"fbt-audit/{flavour}/{kind}/"},
        "invocations": [invocation],
        "columnKind": "utf16CodeUnits",
        "results": results,
        "properties": properties,
    }


def sarif_log(results: list[AuditResult], max_results: int = MAX_RESULTS) -> dict[str, Any]:
    """The SARIF log as a dict: one run per (image kind, flavour), vmlinux runs first."""
    groups: dict[tuple[str, str], list[AuditResult]] = {}
    for r in ordered(results):
        kind = "vmlinux" if r.kernel.kind == "vmlinux" else "modules"
        groups.setdefault((kind, r.kernel.flavour), []).append(r)
    runs = [
        _run(group, kind, flavour, max_results)
        for (kind, flavour), group in sorted(groups.items(), key=lambda kv: (kv[0][0] != "vmlinux", kv[0]))
    ]
    return {"$schema": SCHEMA_URI, "version": "2.1.0", "runs": runs}


def render_sarif(results: list[AuditResult], max_results: int = MAX_RESULTS) -> str:
    """SARIF 2.1.0 text: deterministic (no timestamps, no absolute paths), ends with a newline."""
    return json.dumps(sarif_log(results, max_results), indent=2) + "\n"
