"""strtab.py: what elf.py and bigsymtab.py share of a symbol table: names decoded from the string table, st_info
lookups, the (addr, name) order of aliases."""

from __future__ import annotations

from itertools import compress, islice, repeat
from operator import eq

from fbt_audit.model.errors import one_line

SHF_EXECINSTR = 0x4
SHN_LORESERVE = 0xFF00
STT_NOTYPE, STT_FUNC = 0, 2
BINDS = {0: "LOCAL", 1: "GLOBAL", 2: "WEAK"}
TEXT_TYPE = bytes(b & 0xF in (STT_NOTYPE, STT_FUNC) for b in range(256))  # by st_info
KIND = tuple("FUNC" if b & 0xF == STT_FUNC else "NOTYPE" for b in range(256))
BIND = tuple(BINDS.get(b >> 4, "OTHER") for b in range(256))

PRINTABLE = bytes(range(0x20, 0x7F)) + b"\0"  # what a string table of kernel names holds


def names_at(blob: bytes, offsets) -> list[str]:
    """The NUL-terminated names at string-table offsets ('' for offset 0 and past the end), UTF-8
    with bad bytes replaced, and control characters escaped (errors.one_line): a hostile name must
    not add lines to a list or denylist a module later reads."""
    names = decode_names(blob, offsets)
    # one_line leaves a printable name as it is: the names asked are checked, not the whole table (a module's
    # audit asks a few dozen of thousands)
    return names if all(map(str.isprintable, names)) else list(map(one_line, names))


_LAST: list = [None, None]  # the last table _text saw, and its text (a module's is asked ~3 times)


def _text(blob: bytes) -> str | None:
    """blob's text (ASCII, from a NUL at offset 0) with a NUL appended, or None: decoded once per table."""
    if _LAST[0] is blob:
        return _LAST[1]
    st = blob.decode("ascii") + "\0" if blob.isascii() and blob[:1] == b"\0" else None
    _LAST[:] = [blob, st]
    return st


def decode_names(blob: bytes, offsets) -> list[str]:
    """names_at without the escaping."""
    st = _text(blob)
    if st is not None and (not offsets or max(offsets) < len(blob)):
        # Kernel names are ASCII, so str offsets are byte offsets: one index() and one slice per
        # name, run by map() in C; a Python loop over 130,000 names cost 100 ms.
        return list(map(st.__getitem__, map(slice, offsets, map(st.index, repeat("\0"), offsets))))
    out = []
    for off in offsets:
        end = blob.find(b"\0", off) if off else off
        out.append(blob[off : end if end >= 0 else len(blob)].decode("utf-8", "replace"))
    return out


def sort_aliases(keep: list[int], t_addr: list[int], c_name: list[str]) -> None:
    """Sort each run of equal addresses (aliases) in `keep` by name: after the stable sort by address
    alone, that orders the text symbols by (addr, name)."""
    dup = list(compress(range(len(t_addr) - 1), map(eq, t_addr, islice(t_addr, 1, None))))
    for first, last in alias_runs(dup):
        keep[first : last + 1] = sorted(keep[first : last + 1], key=c_name.__getitem__)


def alias_runs(dup: list[int]):
    """(first, last) position of each run of equal addresses, from `dup`: the positions whose address equals the
    next one's, ascending."""
    j = 0
    while j < len(dup):
        k = j
        while k + 1 < len(dup) and dup[k + 1] == dup[k] + 1:
            k += 1
        yield dup[j], dup[k] + 1
        j = k + 1
