"""run.py: one verify boot end to end: choose and arm probes, boot, read hits and status, classify the log."""

from __future__ import annotations

import dataclasses
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from fbt_audit.verify import initramfs, logclass, qemu
from fbt_audit.verify.deps import InputError, render_list

if TYPE_CHECKING:
    from fbt_audit.judge.result import AuditResult
    from fbt_audit.model.core import Judgement

PUSHF = 0x9C


@dataclass
class Probe:
    """A selected patchpoint and what the module did with it."""

    name: str  # module:function:entry
    function: str
    patchpoint: int
    symoff: int
    verdict: str  # under --table
    opcode: str
    armed: bool = False
    hits: int = 0
    handling: str = "-"  # what the module does: emulate, step, ftrace
    entry: str = "-"  # the table entry that matched
    active_fixups: int = 0
    refused: str = ""  # why the module refused it

    def as_dict(self) -> dict:
        return {"name": self.name, "patchpoint": f"0x{self.patchpoint:x}", "verdict": self.verdict,
                "opcode": self.opcode, "armed": self.armed, "hits": self.hits, "handling": self.handling,
                "entry": self.entry, "active_fixups": self.active_fixups, "refused": self.refused or None}


@dataclass
class BootResult:
    number: int
    armed_request: int  # probes written to the control file
    seconds: float
    serial: Path
    marks: dict[str, float]
    timed_out: bool
    status: dict[str, str]
    probes: list[Probe]
    events: list[logclass.Event] = field(default_factory=list)
    collected: bool = True  # the guest saved its hits (False: it died first; hits are unknown, not 0)

    @property
    def armed(self) -> list[Probe]:
        return [p for p in self.probes if p.armed]

    @property
    def complaint(self) -> bool:
        return bool(self.events)

    def as_dict(self) -> dict:
        return {"boot": self.number, "requested": self.armed_request, "armed": len(self.armed),
                "probes_hit": sum(1 for p in self.probes if p.hits), "hits": sum(p.hits for p in self.probes),
                "seconds": round(self.seconds, 1), "guest_marks": self.marks, "timed_out": self.timed_out,
                "hits_collected": self.collected,
                "serial_log": str(self.serial), "events": [e.as_dict() for e in self.events]}


def probe_of(j: Judgement) -> Probe:
    pp = j.pp
    raw = pp.insn.raw
    return Probe(pp.probe_name, pp.name, pp.addr, pp.symoff, j.verdict.label, f"{raw[0]:02x}" if raw else "-")


def select(result: AuditResult, *, only: list[str] | None, sample: int | None, seed: int,
           hunt: bool = False, safe_under: AuditResult | None = None) -> tuple[list[Judgement], bool]:
    """The judgements to arm, in address order, and whether arming is forced. Default: what the audit calls
    safe. --only: the named functions, whatever their verdict (forced). --hunt: what `safe_under` (the
    reference audit) calls safe plus every PUSHF entry (forced: the table under test may disagree)."""
    js = [j for j in result.judgements if j.pp.kind != "return"]
    forced = False
    if only:
        want = set(only)
        chosen = [j for j in js if j.pp.name in want]
        missing = want - {j.pp.name for j in chosen}
        if missing:
            raise InputError(f"verify --only: no patchpoint for {', '.join(sorted(missing))}")
        forced = True
    elif hunt:
        ref_safe = {j.pp.addr for j in (safe_under or result).judgements if j.verdict.label == "safe"}
        chosen = [j for j in js if j.pp.addr in ref_safe or (j.pp.insn.raw[:1] == bytes([PUSHF]))]
        forced = True
    else:
        chosen = [j for j in js if j.verdict.label == "safe"]
    if sample is not None and sample < len(chosen):
        chosen = random.Random(seed).sample(chosen, sample)
    return sorted(chosen, key=lambda j: (j.pp.addr, j.pp.name)), forced


def arm_text(result: AuditResult, chosen: list[Judgement], forced: bool) -> str:
    """What the guest writes to /sys/kernel/debug/fbt/control: `force` if forced, then the probe-safety list
    (fbt-audit --format list) of the chosen patchpoints."""
    sub = dataclasses.replace(result, judgements=chosen)
    return ("force\n" if forced else "") + render_list([sub])


_ARMED = re.compile(r"fbt: armed (\d+) probes: .*; refused (\d+)")
_HIT = re.compile(r"^([0-9a-f]+)\t(\w+)\t([^\t]*)\t0x([0-9a-f]+)\t(\d+)\t")


def read_hits(text: str) -> dict[int, tuple[str, str, int, int]]:
    """/sys/kernel/debug/fbt/hits: address -> (handling, entry, active fixups, hits)."""
    out = {}
    for line in text.splitlines():
        m = _HIT.match(line)
        if m:
            out[int(m.group(1), 16)] = (m.group(2), m.group(3).strip() or "-", int(m.group(4), 16), int(m.group(5)))
    return out


def read_status(text: str) -> tuple[dict[str, str], dict[int, str]]:
    """/sys/kernel/debug/fbt/status: settings and counts, and address -> why it was refused."""
    kv: dict[str, str] = {}
    refused: dict[int, str] = {}
    for line in text.splitlines():
        f = line.split("\t")
        if f[0] == "refused_at" and len(f) >= 3:
            refused[int(f[1], 16)] = f[2]
        elif f[0] == "refused" and len(f) >= 3:
            kv[f"refused.{f[1]}"] = f[2]
        elif len(f) >= 2:
            kv[f[0]] = f[1]
    return kv, refused


@dataclass
class Setup:
    """What every boot of one verify shares."""

    target: object  # target.Target
    fbt_ko: Path
    workdir: Path
    cpu: str
    smp: int
    timeout: float
    workload: str | None
    rounds: int
    boots: int = 0
    fbt_args: str = ""  # insmod parameters, e.g. trace_arm=1


def run_boot(setup: Setup, result: AuditResult, chosen: list[Judgement], forced: bool,
             arm: str | None = None) -> BootResult:
    """Boot once with `chosen` armed (the control file gets `arm` instead of their list when given)."""
    setup.boots += 1
    n = setup.boots
    bdir = setup.workdir / f"boot{n}"
    bdir.mkdir(parents=True, exist_ok=True)
    text = arm if arm is not None else arm_text(result, chosen, forced)
    initrd = initramfs.build(bdir / "initrd.gz", fbt_ko=setup.fbt_ko, arm_text=text,
                             modules_dir=setup.target.modules, workload=setup.workload, rounds=setup.rounds,
                             fbt_args=setup.fbt_args)
    b = qemu.boot(setup.target.vmlinuz, initrd, bdir, cpu=setup.cpu, smp=setup.smp, timeout=setup.timeout)
    initrd.unlink(missing_ok=True)
    if "loaded" not in b.marks:
        why = "fbt.ko did not load" if "insmod-failed" in b.marks else "the boot never reached the shell"
        if b.timed_out:
            why += f" within {setup.timeout:.0f} s"
        raise InputError(f"verify boot {n}: {why} (serial log {b.serial})")
    hits = read_hits(b.files.get("hits", ""))
    status, refused = read_status(b.files.get("status", ""))
    # A boot that died before saving its hits: the module's own line says whether it armed everything.
    m = _ARMED.search(b.log)
    all_armed = not b.files and m is not None and m.group(2) == "0" and int(m.group(1)) == len(chosen)
    probes = []
    for j in chosen:
        p = probe_of(j)
        h = hits.get(p.patchpoint)
        if h:
            p.armed = True
            p.handling, p.entry, p.active_fixups, p.hits = h
        elif all_armed:
            p.armed = True
            p.handling = j.handling
        else:
            p.refused = refused.get(p.patchpoint, "unknown" if b.files else "no result")
        probes.append(p)
    events = logclass.classify(b.log)
    if "done" not in b.marks and not any(e.kind in ("panic", "oops") for e in events):
        last = max(b.marks, key=b.marks.get) if b.marks else "none"
        events.append(logclass.Event("hang", 0, [f"no result within {setup.timeout:.0f} s (last guest mark: {last})"]))
    by_fn: dict[str, list[str]] = {}
    for p in probes:
        if p.armed or not b.files:
            by_fn.setdefault(p.function, []).append(p.name)
    logclass.attribute(events, by_fn)
    return BootResult(n, len(chosen), b.seconds, b.serial, b.marks, b.timed_out, status, probes, events,
                      collected="hits" in b.files)
