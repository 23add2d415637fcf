"""bisect.py: bisection sets for an on-machine hunt: split the probes by opcode family, rule or module, halve."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from fbt_audit.judge.order import findings, ordered
from fbt_audit.model.core import Verdict
from fbt_audit.model.errors import InputError, UsageError

if TYPE_CHECKING:
    from fbt_audit.judge.result import AuditResult
    from fbt_audit.model.core import Judgement

# Each split key refines into the next once one group is left: the seed's 0xFn..0x0n family, then the
# exact first byte, then single patchpoints.
LEVELS = {
    "nibble": ("nibble", "byte", "probe"),
    "byte": ("byte", "probe"),
    "rule": ("rule", "probe"),
    "module": ("module", "probe"),
}
POPULATIONS = ("probed", "suspect", "all")
VERDICTS = ("crashed", "clean")
STATE_VERSION = 1


def _first(j: Judgement) -> int:
    raw = j.pp.insn.raw
    return raw[0] if raw else -1


def key_of(level: str, j: Judgement) -> tuple[object, str]:
    """(sort key, label) of a patchpoint's group at one level. Nibbles run from 0xFn down, as in the seed."""
    b = _first(j)
    if level == "nibble":
        return (-(b >> 4) if b >= 0 else 1, f"0x{b >> 4:x}n" if b >= 0 else "none")
    if level == "byte":
        return (b, f"0x{b:02x}" if b >= 0 else "none")
    if level == "rule":
        fs = findings(j)
        rid = fs[0].rule_id if fs else "none"
        return ((rid == "none", rid), rid)
    if level == "module":
        return (j.pp.module, j.pp.module)
    pp = j.pp
    return ((pp.module, pp.addr, pp.site), f"{pp.module}:{pp.name}+0x{pp.symoff:x}")


@dataclass
class Group:
    label: str
    members: list[tuple[int, Judgement]]  # (image index, judgement)


def groups(level: str, members: list[tuple[int, Judgement]]) -> list[Group]:
    by: dict[object, Group] = {}
    for m in members:
        k, label = key_of(level, m[1])
        g = by.get(k)
        if g is None:
            g = by[k] = Group(label, [])
        g.members.append(m)
    return [by[k] for k in sorted(by, key=lambda k: (str(type(k)), k))]


def halves(cands: list[Group]) -> tuple[list[Group], list[Group]]:
    h = (len(cands) + 1) // 2
    return cands[:h], cands[h:]


@dataclass
class Step:
    """Where a bisection stands after some verdicts: the level, the suspect groups and the next split."""

    number: int  # the step the next verdict answers (1-based)
    level: str
    suspects: list[Group]
    enable: list[Group]  # the half to run with (everything else disabled)
    rest: list[Group]
    history: list[str] = field(default_factory=list)  # one line per decision taken so far
    found: bool = False

    def predicted(self) -> int:
        """Steps the binary search needs at most for the current level's suspects."""
        return math.ceil(math.log2(len(self.suspects))) if len(self.suspects) > 1 else 0


def population(results: list[AuditResult], which: str) -> list[tuple[int, Judgement]]:
    """probed: what a tracer enables (all but refused); suspect: not safe; all: every patchpoint."""
    out = []
    for i, r in enumerate(results):
        for j in r.judgements:
            v = j.verdict
            if (
                which == "all"
                or (which == "probed" and v is not Verdict.REFUSED)
                or (which == "suspect" and v is not Verdict.SAFE)
            ):
                out.append((i, j))
    return out


def walk(results: list[AuditResult], by: str, verdicts: list[str], which: str = "probed") -> Step:
    """Replay verdicts (each answers 'did the run with the enable half crash?') from the start."""
    if by not in LEVELS:
        raise UsageError(f"bisect --by {by}: one of {', '.join(LEVELS)}")
    levels = LEVELS[by]
    members = population(results, which)
    if not members:
        raise UsageError("bisect: no patchpoints to split")
    li = 0
    cands = groups(levels[li], members)
    history: list[str] = []

    def settle() -> None:
        nonlocal li, cands
        while len(cands) == 1 and li + 1 < len(levels):
            g = cands[0]
            history.append(f"{levels[li]} {g.label}: {len(g.members)} patchpoints")
            li += 1
            cands = groups(levels[li], g.members)

    settle()
    for n, v in enumerate(verdicts, 1):
        if v not in VERDICTS:
            raise UsageError(f"bisect: verdict {v!r}: one of crashed, clean")
        if len(cands) == 1:
            raise UsageError(f"bisect: verdict {n} given after the search ended")
        a, b = halves(cands)
        cands = a if v == "crashed" else b
        history.append(f"step {n}: {_span(a)} {v} -> suspects {_span(cands)}")
        settle()
    a, b = halves(cands)
    return Step(len(verdicts) + 1, levels[li], cands, a, b, history, found=len(cands) == 1)


def _span(gs: list[Group]) -> str:
    if len(gs) <= 3:
        return ",".join(g.label for g in gs)
    return f"{gs[0].label}..{gs[-1].label} ({len(gs)} groups)"


def lists(results: list[AuditResult], step: Step, which: str) -> tuple[str, str]:
    """The enable and disable lists (denylist format) for a step: enable = the first half of the suspects,
    disable = every other patchpoint of the population."""
    from fbt_audit.report.denylist import entries, header_lines

    res = ordered(results)
    on = {id(j) for g in step.enable for _, j in g.members}
    pop = {id(j) for _, j in population(results, which)}
    out = []
    for want in (True, False):
        lines = header_lines(res)
        lines.append(f"# bisect step {step.number} level {step.level}: {'enable' if want else 'disable'}")
        for r in res:
            lines.extend(entries(r, keep=lambda j, w=want: id(j) in pop and (id(j) in on) == w))
        out.append("\n".join(lines) + "\n")
    return out[0], out[1]


def describe(step: Step) -> list[str]:
    lines = list(step.history)
    n = sum(len(g.members) for g in step.suspects)
    if step.found:
        g = step.suspects[0]
        lines.append(f"found: {step.level} {g.label}: {len(g.members)} patchpoint{'s' if len(g.members) != 1 else ''}")
        return lines
    ne = sum(len(g.members) for g in step.enable)
    lines.append(
        f"step {step.number}: suspects {_span(step.suspects)} at level {step.level}, {n} patchpoints, "
        f"at most {step.predicted()} more step{'s' if step.predicted() != 1 else ''} at this level"
    )
    lines.append(
        f"enable {_span(step.enable)} ({ne} patchpoint{'s' if ne != 1 else ''}), disable the rest; "
        "then give --verdict crashed|clean"
    )
    return lines


def suspects(step: Step) -> list[Judgement]:
    return [j for g in step.suspects for _, j in g.members]


# State: the options and the verdicts so far; each call replays them, so the file is all the bookkeeping.
def read_state(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except OSError as e:
        raise InputError(f"{path}: cannot read bisect state: {e.strerror or e}") from None
    except ValueError:
        raise InputError(f"{path}: not a bisect state file (bad JSON)") from None
    if not isinstance(data, dict) or data.get("version") != STATE_VERSION or not isinstance(data.get("verdicts"), list):
        raise InputError(f"{path}: not a bisect state file of version {STATE_VERSION}")
    return data


def write_state(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
