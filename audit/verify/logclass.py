"""logclass.py: classify a kernel log (the serial console) into complaints and attribute them to armed probes."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# One console line: an optional printk timestamp, then the message.
_STAMP = re.compile(r"^\s*(?:<\d+>)?\[\s*\d+\.\d+\]\s?")

# (kind, pattern) in order; the first pattern that matches a line starts an event of that kind.
# Patterns follow the kernel's own strings: lib/bug.c and kernel/panic.c ("WARNING: CPU: %d PID: %d at"),
# arch/x86/mm/fault.c ("BUG: unable to handle page fault"), arch/x86/kernel/dumpstack.c ("Oops:"),
# kernel/watchdog.c ("BUG: soft lockup", "Watchdog detected hard LOCKUP"), kernel/rcu/tree_stall.h
# ("rcu: INFO: rcu_sched detected stalls"), kernel/sched/core.c (__might_resched: "BUG: sleeping function
# called from invalid context", "BUG: scheduling while atomic"), kernel/locking/lockdep.c and
# kernel/locking/irqflag-debug.c ("raw_local_irq_restore() called with IRQs enabled").
PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("panic", re.compile(r"^Kernel panic - not syncing")),
    ("irq-state", re.compile(r"raw_local_irq_restore\(\) called with IRQs enabled")),
    ("irq-state", re.compile(r"^BUG: sleeping function called from invalid context")),
    ("lockdep", re.compile(r"^(WARNING: (possible|inconsistent|suspicious|bad unlock)|"
                           r"BUG: (MAX_LOCKDEP|looking up invalid subclass)|"
                           r"INFO: (possible|trying to register non-static key))")),
    ("soft-lockup", re.compile(r"BUG: soft lockup")),
    ("hard-lockup", re.compile(r"Watchdog detected hard LOCKUP|NMI watchdog: .*hard LOCKUP")),
    ("rcu-stall", re.compile(r"rcu: INFO: \S+ detected (expedited )?stalls")),
    ("hung-task", re.compile(r"^INFO: task .* blocked for more than \d+ seconds")),
    ("oops", re.compile(r"^(Oops:|BUG: unable to handle|BUG: kernel NULL pointer|general protection fault|"
                        r"kernel BUG at|invalid opcode:|int3: 0000|double fault:|stack segment:)")),
    ("bug", re.compile(r"^BUG: ")),
    ("warning", re.compile(r"^WARNING: CPU: \d+ PID: \d+ at ")),
)

# Kernel checks a report's RIP may sit in: the kind of complaint each is, and what it asserts (Linux 6.1).
CHECKS: dict[str, tuple[str, str]] = {
    "cpa_flush": ("irq-state", "BUG_ON(irqs_disabled() && !early_boot_irqs_disabled): interrupts left disabled"),
    "exc_debug": ("warning", "WARN_ON_ONCE(dr6 & DR_STEP) in exc_debug_kernel: a single-step trap nobody owns "
                             "(TF leaked into the kernel's flags)"),
    "__might_resched": ("irq-state", "might_sleep() with interrupts or preemption disabled"),
}
# A line that continues the report a "kernel BUG at" line started, rather than starting another.
_CONT = re.compile(r"^(invalid opcode:|Oops:)")
_RIP = re.compile(r"^RIP: \d+:([A-Za-z_.$][\w.$]*)\+0x")

# Lines that end an event's block (the report's last line is kept with it).
_END = re.compile(r"^---\[ end (trace|Kernel panic)")
# A symbol in a trace line or RIP: name+0xoff/0xsize, possibly ' [module]'.
_SYM = re.compile(r"(?:RIP: \d+:|\s|^|\? )([A-Za-z_.$][\w.$]*)\+0x[0-9a-f]+/0x[0-9a-f]+")
_MAX_LINES = 80


@dataclass
class Event:
    kind: str
    line: int  # 1-based line of the serial log where it starts
    lines: list[str] = field(default_factory=list)
    functions: list[str] = field(default_factory=list)  # functions named in the report (RIP, call trace)
    probes: list[str] = field(default_factory=list)  # armed probes whose function the report names
    check: str | None = None  # the kernel check its RIP sits in (CHECKS)

    def title(self) -> str:
        return self.lines[0] if self.lines else self.kind

    def as_dict(self) -> dict:
        return {"kind": self.kind, "line": self.line, "title": self.title(), "check": self.check,
                "lines": self.lines, "functions": self.functions, "probes": self.probes}


def strip(line: str) -> str:
    return _STAMP.sub("", line.rstrip("\r\n"))


def kind_of(message: str) -> str | None:
    """The kind of complaint a console message (timestamp removed) starts, or None."""
    for kind, pat in PATTERNS:
        if pat.search(message):
            return kind
    return None


def classify(text: str) -> list[Event]:
    """Every complaint in a kernel log, in order, each with the lines of its report (up to its end marker,
    the next complaint, or 80 lines)."""
    events: list[Event] = []
    cur: Event | None = None
    for n, raw in enumerate(text.splitlines(), 1):
        msg = strip(raw)
        kind = kind_of(msg)
        if kind is not None and cur is not None and len(cur.lines) == 1 and _CONT.match(msg):
            kind = None  # "kernel BUG at ...!" then "invalid opcode: 0000 [#1]": one report
        if kind is not None:
            cur = Event(kind, n, [msg])
            events.append(cur)
            continue
        if cur is None:
            continue
        if len(cur.lines) < _MAX_LINES and msg.strip():
            cur.lines.append(msg)
        if _END.match(msg) or len(cur.lines) >= _MAX_LINES:
            cur = None
    for e in events:
        seen: dict[str, None] = {}
        for line in e.lines:
            for m in _SYM.finditer(line):
                seen.setdefault(m.group(1), None)
        e.functions = list(seen)
        rip = next((m.group(1) for m in map(_RIP.match, e.lines) if m), None)
        if rip in CHECKS:
            e.kind, e.check = CHECKS[rip]
    return events


SMALL_SET = 50


def attribute(events: list[Event], armed: dict[str, list[str]]) -> None:
    """Name the armed probes each event implicates: those whose function appears in its report, else, when
    none does and the armed set is small (at most 50 probes), the whole armed set. `armed` maps a function
    name to its armed probe names."""
    everyone = sorted({p for names in armed.values() for p in names})
    for e in events:
        e.probes = sorted({p for f in e.functions for p in armed.get(f, ())})
        if not e.probes and len(everyone) <= SMALL_SET:
            e.probes = everyone
