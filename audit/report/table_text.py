"""table_text.py: a readable, column-aligned listing of an emulation table (`fbt-audit table`)."""

from __future__ import annotations

from fbt_audit.model import abi
from fbt_audit.model.abi import EmuFlags, Fixup, Handling, StepIF, StepMechanism
from fbt_audit.table.emulation import EmulationTable

_MECHANISM = {
    StepMechanism.TF: "tf (single-step trap after one instruction)",
    StepMechanism.INT3: "int3 (out of line, then a trailing int3)",
}
_STEP_IF = {
    StepIF.MASKED: "masked (IF cleared while the copy runs)",
    StepIF.PRESERVED: "preserved (IF as the interrupted context had it)",
}
_EMU_FLAGS = {
    EmuFlags.SAVED: "saved (the interrupted context's pt_regs->flags)",
    EmuFlags.LIVE: "live (the handler's own flags)",
}
_DEFAULT = {
    Handling.NONE: "none (refuse what is not listed)",
}

COLUMNS = ("#", "match", "mnemonic", "handling", "fixups")


def fixup_names(f: Fixup) -> str:
    """Fixup bits as lowercase names in bit order, comma-separated, or '-' for none."""
    names = [m.name.lower() for m in Fixup if m.value & f]
    return ",".join(names) if names else "-"


def _header(t: EmulationTable) -> list[tuple[str, str]]:
    h = dict(zip((n for n, _ in abi.HEADER_FIELDS), abi.HEADER_STRUCT.unpack_from(t.raw, 0), strict=True))
    window = [("patch window", f"{t.patch_len} bytes (FBT115 under --deep: no branch may land inside)")]
    return [
        ("table", t.name),
        ("source", t.source),
        ("sha256", t.sha256),
        (
            "abi",
            f"version {h['abi_version']}, header {h['header_size']} bytes, "
            f"{h['count']} entries of {h['entry_size']} bytes",
        ),
        ("default handling", _DEFAULT.get(t.default_handling, t.default_handling.name.lower())),
        ("step mechanism", _MECHANISM[t.step_mechanism]),
        ("IF policy", _STEP_IF[t.step_if]),
        ("emulation flags", _EMU_FLAGS[t.emu_flags]),
        ("fault fixup", "yes (faults in a step are fixed up at the original IP)" if t.fault_fixup else "no"),
        ("step fixups", fixup_names(t.step_fixups)),
        *(window if t.patch_len > 1 else ()),
    ]


def format_table(t: EmulationTable) -> str:
    """The table's header settings, then one aligned row per entry in match order."""
    head = _header(t)
    kw = max(len(k) for k, _ in head)
    lines = [f"{k + ':':<{kw + 1}} {v}" for k, v in head]
    lines.append("")
    rows = [COLUMNS] + [
        (str(e.index), e.describe_match(), e.mnemonic, e.handling.name.lower(), fixup_names(e.fixups))
        for e in t.entries
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    for r in rows:
        cells = [r[0].rjust(widths[0])] + [c.ljust(w) for c, w in zip(r[1:], widths[1:], strict=True)]
        lines.append("  ".join(cells).rstrip())
    if not t.entries:
        lines.append("(no entries)")
    return "\n".join(lines) + "\n"
