"""hunt.py: the seed's hunt automated: bisect the armed set by opcode nibble, byte, then halves, one boot per step."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fbt_audit.verify.deps import bisect

if TYPE_CHECKING:
    from fbt_audit.judge.result import AuditResult
    from fbt_audit.model.core import Judgement
    from fbt_audit.verify.run import BootResult


@dataclass
class Hunt:
    steps: list[dict] = field(default_factory=list)  # one per bisection boot: enable set, verdict
    history: list[str] = field(default_factory=list)  # bisect.describe() at the end
    culprits: list[Judgement] = field(default_factory=list)
    family: list[Judgement] = field(default_factory=list)  # the opcode byte group the search narrowed to
    family_label: str = ""
    found: bool = False


def hunt(result: AuditResult, population: list[Judgement], boot: Callable[[list[Judgement]], BootResult],
         max_boots: int = 40) -> Hunt:
    """Bisect `population` (the probes the first boot armed, which complained) with fbt-audit bisect's sets:
    each step boots with the enable half armed; a complaint answers 'crashed'."""
    sub = dataclasses.replace(result, judgements=sorted(population, key=lambda j: (j.pp.addr, j.pp.name)))
    verdicts: list[str] = []
    h = Hunt()
    while True:
        step = bisect.walk([sub], "nibble", verdicts, "all")
        if step.level == "probe" and not h.family:
            h.family = [j for g in step.suspects for _, j in g.members]
            h.family_label = next((line.split(":")[0].split(" ", 1)[1] for line in reversed(step.history)
                                   if line.startswith("byte ")), "")
        if step.found or len(verdicts) >= max_boots:
            break
        enable = [j for g in step.enable for _, j in g.members]
        b = boot(enable)
        v = "crashed" if b.complaint else "clean"
        verdicts.append(v)
        h.steps.append({"boot": b.number, "level": step.level, "enable": [g.label for g in step.enable],
                        "armed": len(enable), "verdict": v, "events": [e.title() for e in b.events]})
    h.history = bisect.describe(step)
    h.found = step.found
    h.culprits = bisect.suspects(step)
    if not h.family:
        h.family = list(h.culprits)
    return h
