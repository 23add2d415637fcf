"""layouts.py: struct layouts of the kernel tables per version, and choosing one from the binary's evidence."""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Layout:
    name: str
    struct: struct.Struct
    fields: tuple[str, ...]
    since: tuple[int, int]  # first kernel version with this layout
    until: tuple[int, int] | None  # first version without it

    @property
    def size(self) -> int:
        return self.struct.size


# struct alt_instr (arch/x86/include/asm/alternative.h). `cpuid` holds, for the 14-byte form,
# ft_flags (cpuid:16, flags:16; bit 16 = ALT_FLAG_NOT, bit 17 = ALT_FLAG_DIRECT_CALL); for the
# older forms the u16 cpuid whose bit 15 means NOT (6.1: ALT_NOT(f) = f | 0x8000).
ALT_LAYOUTS = (
    Layout("alt_instr/14", struct.Struct("<iiIBB"), ("instr", "repl", "cpuid", "instrlen", "repllen"), (6, 3), None),
    Layout("alt_instr/12", struct.Struct("<iiHBB"), ("instr", "repl", "cpuid", "instrlen", "repllen"), (5, 13), (6, 3)),
    Layout(
        "alt_instr/13",
        struct.Struct("<iiHBBB"),
        ("instr", "repl", "cpuid", "instrlen", "repllen", "padlen"),
        (4, 0),
        (5, 13),
    ),
)
# struct bug_entry with GENERIC_BUG_RELATIVE_POINTERS and DEBUG_BUGVERBOSE: s32 bug_addr_disp,
# s32 file_disp, u16 line, u16 flags (include/asm-generic/bug.h), the same in 6.1 and 6.12.
BUG_ENTRY = struct.Struct("<iiHH")


def _fits(layout: Layout, blob: bytes, base: int, in_text: Callable[[int], bool]) -> bool:
    """Every entry's instruction and replacement lie in executable text and lengths are sane."""
    if len(blob) % layout.size:
        return False
    for i, rec in enumerate(layout.struct.iter_unpack(blob)):
        at = base + i * layout.size
        instr, repl, instrlen, repllen = at + rec[0], at + 4 + rec[1], rec[3], rec[4]
        if not in_text(instr) or instrlen == 0 or repllen > 255 or (repllen and not in_text(repl)):
            return False
    return True


def choose_alt_layout(
    blob: bytes, base: int, version: tuple[int, int] | None, in_text: Callable[[int], bool]
) -> tuple[Layout | None, str]:
    """The alt_instr layout the evidence supports: the one the version names, if the size divides
    and every entry points into text; else the only other one that does. None, with the reason,
    when no layout (or more than one, without a version) fits: never a silent guess."""
    by_version = [
        lay
        for lay in ALT_LAYOUTS
        if version is not None and lay.since <= version and (lay.until is None or version < lay.until)
    ]
    for lay in by_version:
        if _fits(lay, blob, base, in_text):
            return lay, f"{lay.name} (version {version[0]}.{version[1]})"
    fitting = [lay for lay in ALT_LAYOUTS if _fits(lay, blob, base, in_text)]
    if len(fitting) == 1:
        return fitting[0], f"{fitting[0].name} (the only layout whose entries all point into text)"
    sizes = ", ".join(str(lay.size) for lay in ALT_LAYOUTS)
    if not fitting:
        return None, f"size {len(blob)} fits no known struct alt_instr layout ({sizes} bytes) with entries in text"
    return None, f"size {len(blob)} fits several struct alt_instr layouts ({sizes} bytes) and the version is unknown"
