"""symbols.py: symbols from outside the ELF (System.map, /proc/kallsyms, embedded kallsyms) in one shape."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path

from fbt_audit.model.errors import InputError
from fbt_audit.model.kernel import Section

TEXT_TYPES = frozenset("TtWw")  # nm letters of code symbols; kallsyms and System.map use the same

# A 6.12 System.map is 5 MB and /proc/kallsyms with 200 modules loaded about 15 MB; anything far past
# that is not a symbol file, and reading it whole would cost memory for nothing.
MAX_BYTES = 64 << 20
MAX_LINE = 1024  # KSYM_NAME_LEN is 512 (6.1+), a module name 56: a longer line is not a symbol line
STUB_MAX = 512  # Debian's /boot/System.map is an 83-byte stub that points at the -dbg package
STUB_TEXT = b"The real System.map is in"

# `%016lx %c %s` (scripts/mksysmap over nm -n), and `%px %c %s\t[%s]` (kernel/kallsyms.c s_show).
_KALLSYMS_LINE = re.compile(rb"([0-9a-fA-F]{16}) ([!-~]) ([^\s\[][^\s]*)(?:[ \t]+\[([^\s\]]+)\])?[ \t\r]*")
_MASK = (1 << 64) - 1
_HIGH = 1 << 63  # the kernel half: KASLR moves these; per-CPU offsets and absolute values stay put


@dataclass(frozen=True)
class ExternalSymbols:
    """Symbols a stripped image is audited with: parallel lists (address, nm type letter, name) at
    link-time addresses (any KASLR offset already taken off), in the source's order.

    Text symbols are those with a letter in TEXT_TYPES inside an executable section; every symbol
    (data too: __start_mcount_loc, linux_banner ...) names an address for the kernel-table readers.
    Without sizes, a function runs to the next text symbol or its section's end."""

    source: str  # what the report says the symbols came from, e.g. "System.map-6.1.0-56-amd64"
    addrs: list[int]
    types: list[str]
    names: list[str]

    def __post_init__(self) -> None:
        if not (len(self.addrs) == len(self.types) == len(self.names)):
            raise ValueError("ExternalSymbols: columns of different lengths")


def _shown(path: Path) -> str:
    """How a symbol file is named in reports: its file name (deterministic wherever the file lies),
    except the live /proc files, whose name alone says nothing."""
    s = str(path)
    return s if s.startswith("/proc/") else path.name


def _excerpt(line: bytes) -> str:
    """A garbage line, quoted safely in a one-line error."""
    return repr(line[:60])[1:] + ("..." if len(line) > 60 else "")  # b'..' without the b: escapes shown


def _read(path: Path, what: str) -> bytes:
    """The whole file, refused past MAX_BYTES (read by size, so /proc files of st_size 0 work too)."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, not {what}") from None
    except OSError as e:
        raise InputError(f"{path}: {e.strerror or e}") from None
    if len(data) > MAX_BYTES:
        raise InputError(f"{path}: larger than {MAX_BYTES >> 20} MB: not {what}")
    if not data.strip():
        raise InputError(f"{path}: empty file, not {what}")
    nul = data.find(b"\0")
    if nul >= 0:
        lineno = data.count(b"\n", 0, nul) + 1
        raise InputError(f"{path}:{lineno}: binary data (a NUL byte), not {what}")
    return data


def _lines(path: Path, data: bytes, pattern: re.Pattern, what: str, expected: str):
    """(line number, match) for every non-blank line; the first line that is not `pattern` is an error."""
    for lineno, line in enumerate(io.BytesIO(data), 1):
        if len(line) > MAX_LINE:
            raise InputError(f"{path}:{lineno}: line longer than {MAX_LINE} bytes: not {what}")
        line = line.rstrip(b"\n")
        if not line.strip():
            continue
        m = pattern.fullmatch(line)
        if m is None:
            raise InputError(f"{path}:{lineno}: not {what} line ({expected} expected): {_excerpt(line)}")
        yield lineno, m


def _text_start(sections: list[Section]) -> int | None:
    """The image's link-time _text: on x86-64 the start of its .text section."""
    for s in sections:
        if s.name == ".text" and s.executable:
            return s.addr
    return None


# Markers the linker script (INIT_TEXT_SECTION) puts at the edges of .init.text in every build: the symbols
# of another build, or a dump moved by a wrong offset, put them elsewhere than the image's section.
_EDGES = (("_sinittext", ".init.text", False), ("_einittext", ".init.text", True))


def _check_fits(path: Path, ext: ExternalSymbols, sections: list[Section], hint: str) -> ExternalSymbols:
    """Refuse symbols of another image: the .init.text edge markers must sit at the image's .init.text
    edges, and at least one text symbol must fall inside an executable section."""
    by_name = {s.name: s for s in sections if s.executable}
    at = dict.fromkeys(m for m, _, _ in _EDGES)
    for name, addr in zip(ext.names, ext.addrs, strict=True):
        if name in at and at[name] is None:
            at[name] = addr
    for marker, sec, end in _EDGES:
        s = by_name.get(sec)
        if s is None or at[marker] is None:
            continue
        want = s.addr + s.size if end else s.addr
        if at[marker] != want:
            raise InputError(
                f"{path}: {marker} is at {at[marker]:#x} but the image's {sec} {'ends' if end else 'starts'} at "
                f"{want:#x}: {hint}"
            )
    spans = [(s.addr, s.addr + s.size) for s in sections if s.executable and not s.nobits and s.size]
    text = [a for a, t in zip(ext.addrs, ext.types, strict=True) if t in TEXT_TYPES]
    if not text:
        raise InputError(f"{path}: no text symbols (types {''.join(sorted(TEXT_TYPES))})")
    if spans and not any(lo <= a < hi for a in text for lo, hi in spans):
        raise InputError(f"{path}: none of its {len(text)} text symbols lies in the image's text: {hint}")
    return ext


def _stub(path: Path, data: bytes) -> None:
    """Debian's /boot/System.map-<release>: one line saying where the real map is."""
    if len(data) <= STUB_MAX and STUB_TEXT in data:
        m = re.fullmatch(r"System\.map-(\S+)", path.name)
        where = (f"/usr/lib/debug/boot/{path.name} in the linux-image-{m.group(1)}-dbg package" if m
                 else "in the linux-image-<release>-dbg package")  # fmt: skip
        raise InputError(f"{path}: Debian's stub System.map (no symbols; the real one is {where})")


def read_system_map(path: str | Path, sections: list[Section]) -> ExternalSymbols:
    """A System.map (`ADDRESS TYPE NAME` lines, 16 hex digits) at link-time addresses.

    Refused with a one-line InputError: Debian's stub, garbage, binary or oversized files, a map whose
    addresses are all zero, and a map of another build (_text, _sinittext or _einittext elsewhere than
    the image says; a KASLR-shifted /proc/kallsyms dump goes to --kallsyms)."""
    path = Path(path)
    what = "a System.map"
    data = _read(path, what)
    _stub(path, data)
    addrs: list[int] = []
    types: list[str] = []
    names: list[str] = []
    for lineno, m in _lines(path, data, _KALLSYMS_LINE, what, "ADDRESS TYPE NAME"):
        if m.group(4) is not None:
            raise InputError(f"{path}:{lineno}: a module symbol ([{m.group(4).decode('ascii', 'replace')}]): "
                             "this is a /proc/kallsyms dump; give it with --kallsyms")  # fmt: skip
        addrs.append(int(m.group(1), 16))
        types.append(m.group(2).decode("ascii"))
        names.append(m.group(3).decode("utf-8", "replace"))
    if not any(addrs):
        raise InputError(f"{path}: every address is 0 (a /proc/kallsyms read without CAP_SYSLOG?)")
    link = _text_start(sections)
    text = _first(names, addrs, ("_text", "_stext"))
    if link is not None and text is not None and text[1] != link:
        raise InputError(
            f"{path}: {text[0]} is at {text[1]:#x} but the image's .text starts at {link:#x}: not this image's "
            "System.map (a KASLR-shifted /proc/kallsyms dump goes to --kallsyms)"
        )
    ext = ExternalSymbols(_shown(path), addrs, types, names)
    return _check_fits(path, ext, sections, "not this image's System.map (another build?)")


def _first(names: list[str], addrs: list[int], wanted: tuple[str, ...]) -> tuple[str, int] | None:
    """The first of `wanted` that is named, with its first address."""
    at: dict[str, int] = {}
    for name, addr in zip(names, addrs, strict=True):
        if name in wanted:
            at.setdefault(name, addr)
    return next(((w, at[w]) for w in wanted if w in at), None)


def _signed(x: int) -> str:
    return f"-{-x:#x}" if x < 0 else f"{x:#x}"


def read_kallsyms(path: str | Path, sections: list[Section], module: str | None = None) -> ExternalSymbols:
    """A /proc/kallsyms dump (`ADDRESS TYPE NAME[\\t[MODULE]]`): the kernel's own symbols (lines without a
    [MODULE]), or with `module` only that module's.

    The kernel's symbols are moved back to link-time addresses by the KASLR offset: the dump's _text
    (else _stext) minus the image's link-time _text, the start of its .text section. Per-CPU offsets
    and absolute values (addresses below the kernel half) are not moved, as the kernel prints them
    unmoved. Module symbols keep their addresses (modules are placed apart from the kernel). A dump read
    without CAP_SYSLOG (kptr_restrict) has every address 0: refused, saying so. Symbols of another build
    are refused too (see _check_fits)."""
    path = Path(path)
    what = "a /proc/kallsyms dump"
    data = _read(path, what)
    _stub(path, data)
    addrs: list[int] = []
    types: list[str] = []
    names: list[str] = []
    modules: set[str] = set()
    nonzero = False
    want = module.encode() if module is not None else None
    for _lineno, m in _lines(path, data, _KALLSYMS_LINE, what, "ADDRESS TYPE NAME [MODULE]"):
        addr = int(m.group(1), 16)
        nonzero = nonzero or addr != 0
        mod = m.group(4)
        if mod is not None:
            modules.add(mod.decode("utf-8", "replace"))
        if mod != want:
            continue
        addrs.append(addr)
        types.append(m.group(2).decode("ascii"))
        names.append(m.group(3).decode("utf-8", "replace"))
    if not nonzero:
        raise InputError(
            f"{path}: every address is 0: /proc/kallsyms was read without CAP_SYSLOG (kptr_restrict); "
            "dump it as root: sudo cat /proc/kallsyms > FILE"
        )
    shown = _shown(path)
    if module is not None:
        if not addrs:
            known = sorted(modules)
            some = ", ".join(known[:8]) + (f" ... ({len(known)} in all)" if len(known) > 8 else "")
            raise InputError(f"{path}: no symbols of module {module} (modules in the dump: {some or 'none'})")
        ext = ExternalSymbols(f"kallsyms dump {shown} [{module}]", addrs, types, names)
        return _check_fits(path, ext, sections, f"module {module}'s symbols are for the module's own image")
    if not addrs:
        raise InputError(f"{path}: no kernel symbols (every line has a [module])")
    text = _first(names, addrs, ("_text", "_stext"))
    if text is None:
        raise InputError(f"{path}: no _text or _stext symbol: cannot work out the KASLR offset")
    link = _text_start(sections)
    if link is None:
        raise InputError(f"{path}: the image has no .text section to place {text[0]} against")
    offset = (text[1] - link) & _MASK
    if offset >= 1 << 63:
        offset -= 1 << 64
    if offset:
        addrs = [(a - offset) & _MASK if a >= _HIGH else a for a in addrs]
    ext = ExternalSymbols(f"kallsyms dump {shown} (KASLR offset {_signed(offset)})", addrs, types, names)
    return _check_fits(path, ext, sections, "not a dump of this image's build (or a wrong KASLR offset)")
