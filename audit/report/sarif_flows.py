"""sarif_flows.py: --deep's flags paths in SARIF: codeFlows (one threadFlow per path), related locations, addresses."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from fbt_audit.deep.model import FLAG_RULES, FlagsEvidence, FlagsPath
from fbt_audit.gate.identity import pseudo_path
from fbt_audit.input.dwarf import relative_source

if TYPE_CHECKING:
    from fbt_audit.gate.identity import Item
    from fbt_audit.input.dwarf import PathMap


def evidence_of(item: Item) -> FlagsEvidence | None:
    """The --deep evidence behind a FBT101-103 result, if --deep ran on its patchpoint."""
    if item.rule_id not in FLAG_RULES:
        return None
    pp = item.j.pp
    return item.result.evidence.get((pp.addr, pp.site))


class Addresses:
    """run.addresses: image -> section -> function, so that each step's relativeAddress has a parentIndex
    (SARIF 3.32.6: relativeAddress SHALL be absent without one). Offsets, never kernel virtual addresses
    (Microsoft's SDK types addresses as int); the virtual address is in each step's properties."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.index: dict[tuple, int] = {}

    def _add(self, key: tuple, row: dict[str, Any]) -> int:
        if key not in self.index:
            self.index[key] = len(self.rows)
            self.rows.append(row)
        return self.index[key]

    def function(self, item: Item) -> int:
        pp, r = item.j.pp, item.result
        image = self._add(("image", r.kernel.display), {"name": r.kernel.display, "kind": "module"})
        sec_start = pp.addr - pp.sec_off
        row = {"name": pp.section, "kind": "section", "parentIndex": image, "relativeAddress": 0}
        section = self._add((r.kernel.display, pp.section), row)
        return self._add(
            (r.kernel.display, pp.section, pp.name, pp.sym_addr),
            {"name": pp.name, "fullyQualifiedName": f"{pp.module}:{pp.name}", "kind": "function",
             "parentIndex": section, "relativeAddress": pp.sym_addr - sec_start},
        )  # fmt: skip


def source_uri(item: Item, source, paths: PathMap | None) -> tuple[str, int]:
    """(uri, line) of a DWARF (file, line) in the repository's terms, else the image's pseudo-path at line 1: the
    one rule for a result's location and for each codeFlow step."""
    if source:
        rel = paths.relative(source[0]) if paths else relative_source(source[0])
        if rel:
            return rel, max(1, int(source[1]))
    return pseudo_path(item.result), 1


def _physical(item: Item, step, paths: PathMap | None, addresses: Addresses) -> dict[str, Any]:
    pp = item.j.pp
    uri, line = source_uri(item, step.source, paths)
    off = step.addr - pp.sym_addr
    return {
        "artifactLocation": {"uri": quote(uri, safe="/-._~+@")},
        "region": {"startLine": line},
        "address": {"relativeAddress": off, "parentIndex": addresses.function(item), "kind": "instruction",
                    "fullyQualifiedName": f"{pp.name}+0x{off:x}"},
    }  # fmt: skip


def _thread_flow(item: Item, path: FlagsPath, paths: PathMap | None, addresses: Addresses) -> dict[str, Any]:
    locations = []
    for n, step in enumerate(path.steps):
        loc = {"physicalLocation": _physical(item, step, paths, addresses),
               "message": {"text": f"{step.text}: {step.note}"},
               "properties": {"address": f"0x{step.addr:x}"}}  # fmt: skip
        locations.append({"location": loc, "executionOrder": n,
                          "importance": "essential" if n in (0, len(path.steps) - 1) else "important"})  # fmt: skip
    return {
        "message": {"text": f"{path.consumer}: {path.state}: {path.why}"},
        "locations": locations,
        "properties": {"proof": path.state, "consumer": path.consumer, "why": path.why},
    }


def add_flows(out: dict[str, Any], item: Item, paths: PathMap | None, addresses: Addresses) -> None:
    """Add the evidence of item's patchpoint to its SARIF result: codeFlows, related locations at each
    path's end, and the proof states as the `deep` property."""
    ev = evidence_of(item)
    if ev is None:
        return
    counts = {s: sum(1 for p in ev.paths if p.state == s) for s in ("proven", "refuted", "unknown")}
    out["properties"]["deep"] = {"method": ev.method, "variant": ev.variant, "paths": len(ev.paths), **counts,
                                 "summary": ev.summary(), **({"note": ev.note} if ev.note else {})}  # fmt: skip
    if not ev.paths:
        return
    out["codeFlows"] = [{
        "message": {"text": ev.summary()},
        "threadFlows": [_thread_flow(item, p, paths, addresses) for p in ev.paths],
    }]  # fmt: skip
    related = out.setdefault("relatedLocations", [])
    seen: set[int] = set()
    for p in ev.paths:
        end = p.end
        if end.addr in seen:
            continue
        seen.add(end.addr)
        related.append({"id": len(related), "physicalLocation": _physical(item, end, paths, addresses),
                        "message": {"text": f"{p.consumer} at {item.j.pp.name}+0x{end.addr - item.j.pp.sym_addr:x}: "
                                            f"{end.note}"}})  # fmt: skip
