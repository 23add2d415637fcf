"""report.py: the verify report as text or JSON: kernel, table, boots, probes, events, culprits, handlings exercised."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

from fbt_audit.verify.run import BootResult, Probe

SCHEMA_VERSION = 1
# FBT_FX_* of kmod/fbt_table.h, in bit order.
FIXUPS = ("pushed-flags", "live-if", "rip-disp", "branch-target", "return-addr", "rep-cont", "transfer-ip")
@dataclass
class Report:
    kernel: str
    table: str
    accel: str
    cpu: str
    smp: int
    boots: list[BootResult] = field(default_factory=list)
    probes: list[Probe] = field(default_factory=list)  # of the first boot: the selection as asked
    hunt: object | None = None  # hunt.Hunt
    table_entries: list[tuple[str, str]] = field(default_factory=list)  # (mnemonic, handling) of the table

    @property
    def complaint(self) -> bool:
        return any(b.complaint for b in self.boots[:1]) if self.hunt is None else bool(self.boots[0].complaint)

    def exercised(self) -> dict:
        """Which handlings, table entries and fixups ran in the kernel (probes with hits), over every boot."""
        by_handling: Counter[str] = Counter()
        by_entry: Counter[str] = Counter()
        by_fixup: Counter[str] = Counter()
        armed_entry: Counter[str] = Counter()
        for b in self.boots:
            for p in b.probes:
                if not p.armed:
                    continue
                armed_entry[p.entry] += 1
                by_handling[p.handling] += p.hits
                by_entry[p.entry] += p.hits
                for bit, name in enumerate(FIXUPS):
                    if p.active_fixups >> bit & 1:
                        by_fixup[name] += p.hits
        entries = {}
        for mnem, handling in self.table_entries:
            entries[mnem] = {"handling": handling, "armed": armed_entry.get(mnem, 0), "hits": by_entry.get(mnem, 0)}
        if "-" in armed_entry:
            entries["(default)"] = {"handling": "default", "armed": armed_entry["-"], "hits": by_entry.get("-", 0)}
        return {"handlings": dict(sorted(by_handling.items())), "fixups": {f: by_fixup.get(f, 0) for f in FIXUPS},
                "entries": entries}

    def events(self) -> list[dict]:
        out = []
        for b in self.boots:
            for e in b.events:
                d = e.as_dict()
                d["boot"] = b.number
                out.append(d)
        return out

    def as_dict(self) -> dict:
        d = {
            "schema_version": SCHEMA_VERSION, "kernel": self.kernel, "table": self.table, "accel": self.accel,
            "cpu": self.cpu, "smp": self.smp, "complaint": self.complaint,
            "boots": [b.as_dict() for b in self.boots],
            "summary": {"selected": len(self.probes), "armed": sum(p.armed for p in self.probes),
                        "probes_hit": sum(1 for p in self.probes if p.hits),
                        "hits": sum(p.hits for p in self.probes),
                        "refused": dict(sorted(Counter(p.refused for p in self.probes if not p.armed).items()))},
            "probes": [p.as_dict() for p in self.probes],
            "events": self.events(),
            "exercised": self.exercised(),
            "culprits": None,
        }
        if self.hunt is not None:
            h = self.hunt
            d["culprits"] = [j.pp.probe_name for j in h.culprits]
            d["hunt"] = {"found": h.found, "steps": h.steps, "history": h.history,
                         "family": h.family_label, "family_probes": [j.pp.probe_name for j in h.family]}
        return d


def render_json(r: Report) -> str:
    return json.dumps(r.as_dict(), indent=1, sort_keys=False) + "\n"


def render_text(r: Report) -> str:
    d = r.as_dict()
    s = d["summary"]
    lines = [f"verify {r.kernel} table {r.table} (qemu {r.accel}, -cpu {r.cpu}, -smp {r.smp})"]
    for b in d["boots"]:
        hits = f"{b['probes_hit']} hit, {b['hits']} hits" if b["hits_collected"] else "hits not collected"
        lines.append(f"boot {b['boot']}: {b['armed']} of {b['requested']} probes armed, {hits}, {b['seconds']} s, "
                     f"{len(b['events'])} complaint(s); serial log {b['serial_log']}")
    lines.append(f"probes: {s['selected']} selected, {s['armed']} armed, {s['probes_hit']} hit, {s['hits']} hits")
    for why, n in s["refused"].items():
        lines.append(f"  refused {why}: {n}")
    hit = sorted((p for p in r.probes if p.hits), key=lambda p: (-p.hits, p.name))[:10]
    for p in hit:
        lines.append(f"  {p.name} {p.handling} {p.entry}: {p.hits} hits")
    for e in d["events"]:
        lines.append(f"boot {e['boot']}: {e['kind']}: {e['title']}")
        if e["check"]:
            lines.append(f"  check: {e['check']}")
        if e["probes"]:
            lines.append(f"  implicated: {', '.join(e['probes'])}")
    ex = d["exercised"]
    lines.append("exercised: " + ", ".join(f"{k} {v}" for k, v in ex["handlings"].items()))
    lines.append("fixups: " + ", ".join(f"{k} {v}" for k, v in ex["fixups"].items()))
    if d["culprits"] is not None:
        h = d["hunt"]
        for line in h["history"]:
            lines.append(f"hunt: {line}")
        lines.append(f"culprits: {', '.join(d['culprits']) or 'none'}")
    lines.append("complaint" if d["complaint"] else "no complaint")
    return "\n".join(lines) + "\n"
