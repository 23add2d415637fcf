"""helpers_sarif.py: SARIF schema validation and GitHub code scanning's upload rules GH1001-GH1007 as assertions."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlparse

import jsonschema

# The OASIS SARIF 2.1.0 schema, as GitHub code scanning validates against it (copied from shared/reference).
SARIF_SCHEMA = Path(__file__).parent / "data" / "sarif-schema-2.1.0.json"

# sarif-sdk docs/ValidationRules.md (GitHub rules) and github/docs sarif-limits.
MAX_RUNS, MAX_RESULTS, MAX_RULES, MAX_LOCATIONS, MAX_TAGS = 20, 25_000, 25_000, 1_000, 20


def validator():
    schema = json.loads(SARIF_SCHEMA.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _uri_ok(uri: str) -> bool:
    """GH1005: relative, or file: (GitHub makes file: URIs relative to the checkout)."""
    parsed = urlparse(uri)
    return bool(uri) and (parsed.scheme in ("", "file")) and not uri.startswith("/")


def _physical(loc: dict, where: str) -> list[str]:
    out = []
    phys = loc.get("physicalLocation")
    if not phys:
        return [f"{where}: GH1001 no physicalLocation"]
    uri = (phys.get("artifactLocation") or {}).get("uri")
    if not uri:
        out.append(f"{where}: GH1001 no artifactLocation.uri")
    elif not _uri_ok(uri):
        out.append(f"{where}: GH1005/GH1006 uri {uri!r} is not relative to the checkout")
    if not isinstance((phys.get("region") or {}).get("startLine"), int) or phys["region"]["startLine"] < 1:
        out.append(f"{where}: GH1003 no region.startLine")
    return out


def _message(msg: dict | None, where: str) -> list[str]:
    if not msg or not isinstance(msg.get("text"), str) or not msg["text"].strip():
        return [f"{where}: GH1007 message not flattened to non-empty text"]
    return []


def github_violations(doc: dict) -> list[str]:
    """Every breach of GH1001-GH1007 (and GitHub's required result fields) in a SARIF log."""
    out = []
    runs = doc.get("runs", [])
    if len(runs) > MAX_RUNS:
        out.append(f"GH1004: {len(runs)} runs")
    for ri, run in enumerate(runs):
        rules = run["tool"]["driver"].get("rules", [])
        if len(rules) > MAX_RULES:
            out.append(f"run {ri}: GH1004 {len(rules)} rules")
        for rule in rules:
            if len(rule.get("properties", {}).get("tags", [])) > MAX_TAGS:
                out.append(f"run {ri}: GH1004 rule {rule['id']} has too many tags")
        results = run.get("results")
        if results is None:
            out.append(f"run {ri}: no results array")
            continue
        if len(results) > MAX_RESULTS:
            out.append(f"run {ri}: GH1004 {len(results)} results")
        for n, res in enumerate(results):
            where = f"run {ri} result {n} ({res.get('ruleId')})"
            for key in ("ruleId", "ruleIndex", "level"):
                if key not in res:
                    out.append(f"{where}: no {key}")
            if "ruleIndex" in res and rules[res["ruleIndex"]]["id"] != res.get("ruleId"):
                out.append(f"{where}: ruleIndex names another rule")
            out += _message(res.get("message"), where)
            locs = res.get("locations") or []
            if not locs:
                out.append(f"{where}: GH1001 no locations")
            if len(locs) > MAX_LOCATIONS or len(res.get("relatedLocations", [])) > MAX_LOCATIONS:
                out.append(f"{where}: GH1004 too many locations")
            for i, loc in enumerate(locs):
                out += _physical(loc, f"{where} location {i}")
            for i, loc in enumerate(res.get("relatedLocations", [])):
                out += _physical(loc, f"{where} related {i}")
                out += _message(loc.get("message"), f"{where} related {i}")
            for flow in res.get("codeFlows", []):
                for tf in flow.get("threadFlows", []):
                    for tfl in tf.get("locations", []):
                        if "location" not in tfl:
                            out.append(f"{where}: GH1002 thread-flow location not inline")
            if not (res.get("partialFingerprints") or {}).get("primaryLocationLineHash"):
                out.append(f"{where}: no primaryLocationLineHash")
        for inv in run.get("invocations", []):
            for i, note in enumerate(inv.get("toolExecutionNotifications", [])):
                out += _message(note.get("message"), f"run {ri} notification {i}")
    return out
