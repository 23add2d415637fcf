"""opmap.py: the opcode map: the first byte at every patchpoint in a 16x16 grid, with counts, hits, worst verdict."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from fbt_audit import __version__
from fbt_audit.judge.order import ordered
from fbt_audit.model.core import Verdict
from fbt_audit.report.common import VERDICT_ORDER, tables
from fbt_audit.report.listing import in_order

if TYPE_CHECKING:
    from fbt_audit.judge.result import AuditResult

SCHEMA = "fbt-audit-opmap/1"
# One patchpoint in a cell's list: probe, symbol+offset, verdict, rules, hits (null: not merged), bytes, insn.
PATCHPOINT_FIELDS = ("probe", "where", "verdict", "rules", "hits", "bytes", "instruction")


def cells(results: list[AuditResult], counts: Mapping[str, int] | None = None) -> list[dict[str, Any]]:
    """256 cells, byte 0x00..0xff. A patchpoint without bytes (outside any section) is left out."""
    out: list[dict[str, Any]] = [
        {"byte": f"{b:02x}", "count": 0, "hits": 0 if counts is not None else None, "worst": None,
         "verdicts": {v.label: 0 for v in VERDICT_ORDER}, "patchpoints": []}
        for b in range(256)
    ]  # fmt: skip
    worst: list[Verdict | None] = [None] * 256
    for r in ordered(results):
        for j in in_order(r):
            pp = j.pp
            raw = pp.insn.raw
            if not raw:
                continue
            c = out[raw[0]]
            v = j.verdict
            c["count"] += 1
            c["verdicts"][v.label] += 1
            n = None
            if counts is not None:
                n = counts.get(pp.probe_name, 0)
                c["hits"] += n
            if worst[raw[0]] is None or v > worst[raw[0]]:
                worst[raw[0]] = v
            c["patchpoints"].append(
                [pp.probe_name, f"{pp.name}+0x{pp.symoff:x}", v.label, ",".join(j.rule_ids), n, raw.hex(),
                 pp.insn.text]
            )  # fmt: skip
    for b, w in enumerate(worst):
        out[b]["worst"] = w.label if w is not None else None
    return out


def data(results: list[AuditResult], counts: Mapping[str, int] | None = None) -> dict[str, Any]:
    """The map as JSON-ready data: images, tables, whether hits were merged, and the 256 cells."""
    rs = ordered(results)
    return {
        "schema": SCHEMA,
        "tool": {"name": "fbt-audit", "version": __version__},
        "images": [
            {"display": r.kernel.display, "release": r.kernel.release, "buildId": r.kernel.build_id} for r in rs
        ],
        "tables": [{"name": n, "sha256": h} for n, h in tables(rs)],
        "hitsMerged": counts is not None,
        "patchpointFields": list(PATCHPOINT_FIELDS),
        "cells": cells(rs, counts),
    }


def render_json(results: list[AuditResult], counts: Mapping[str, int] | None = None) -> str:
    return json.dumps(data(results, counts), indent=1, sort_keys=False) + "\n"
