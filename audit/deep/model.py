"""model.py: what --deep adds to a finding: the paths of the pushed flags word, step by step, and how sure each is."""

from __future__ import annotations

from dataclasses import dataclass, field

PROVEN, REFUTED, UNKNOWN = "proven", "refuted", "unknown"
FLAG_RULES = ("FBT101", "FBT102", "FBT103")  # the findings whose evidence is a flags path


@dataclass(frozen=True, slots=True)
class Step:
    """One instruction on a path: its address, its text (e.g. `popfq`) and what happens to the word there."""

    addr: int
    text: str
    note: str
    source: tuple[str, int] | None = None  # (file, line) from DWARF, when the image has it


@dataclass(slots=True)
class FlagsPath:
    """One path from the patchpoint to where the pushed flags word is consumed (or lost).

    `consumer` names the consuming instruction (`popfq`, `iretq`, `pop %rax`) or how the path ends
    (`copy`, `returns`, `leaves`, `lost`); `state` is proven, refuted or unknown, `why` says by what or why not."""

    steps: tuple[Step, ...]
    consumer: str
    trace: tuple[int, ...]  # every instruction address from the patchpoint to the end, in order
    state: str = UNKNOWN
    why: str = ""
    caveats: tuple[str, ...] = ()  # what the walk assumed, e.g. a call that receives a pointer into the frame

    @property
    def end(self) -> Step:
        return self.steps[-1]


@dataclass(slots=True)
class FlagsEvidence:
    """The --deep evidence of one patchpoint: its flags paths and a line on how they were obtained."""

    function: str
    patchpoint: int
    variant: str  # the form analysed: 'disk' or a boot-time variant such as 'alt(!8*32+16)'
    method: str  # 'stack walk' or 'stack walk + value tracking (angr X)'
    paths: list[FlagsPath] = field(default_factory=list)
    note: str = ""  # why there are no paths, or what limited them

    def summary(self) -> str:
        """One line: `3 paths: 3 proven` or the note."""
        if not self.paths:
            return self.note or "no flags paths"
        counts: dict[str, int] = {}
        for p in self.paths:
            counts[p.state] = counts.get(p.state, 0) + 1
        parts = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        n = len(self.paths)
        return f"{n} flags path{'s' if n != 1 else ''} ({self.method}): {parts}"


@dataclass(frozen=True)
class DeepOptions:
    """--deep (only: empty) or --deep-only FUNC... (only those functions); values: use angr when installed."""

    only: tuple[str, ...] = ()
    values: bool = True
