"""dwarf.py: patchpoint source lines from DWARF .debug_line (only the units needed), STT_FILE names, path maps."""

from __future__ import annotations

import bisect
import posixpath
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from fbt_audit.input.elf import section_headers
from fbt_audit.input.rela import SYM, Relocations
from fbt_audit.model.errors import ElfFormatError

# Why not pyelftools' DWARFInfo here: on the 630 MB Debian -dbg vmlinux, get_dwarf_info() copies
# every debug section into memory (and, with its relocations, processes 270 MB of .rela.debug_info),
# and its per-CU abbreviation tables and construct-based line-program rows cost milliseconds per CU,
# seconds for the thousands of units a legacy-2011 audit touches. This reader follows the DWARF 2-5
# layouts directly over the mmap: .debug_aranges says which unit covers an address, the unit's top DIE
# gives its DW_AT_stmt_list, and only those line programs are run, looking for rows at exactly the
# wanted addresses (the row a compiler or assembler emits at a function's first instruction).

SHF_ALLOC = 0x2
STT_FILE = 4

DW_AT_name, DW_AT_stmt_list, DW_AT_comp_dir = 0x03, 0x10, 0x1B
DW_LNCT_path, DW_LNCT_directory_index = 1, 2


class DwarfError(Exception):
    """Malformed DWARF: the caller falls back to pseudo-paths (never fatal for an audit)."""


# What malformed DWARF or symbols raise, and nothing else (a bug must surface): DwarfError (a read past a
# section, an unknown form), IndexError (a byte read past a buffer, or at an offset too large for an index).
MALFORMED = (DwarfError, IndexError)


@dataclass(frozen=True, slots=True)
class SourceLine:
    file: str  # the path as the build recorded it: comp_dir / include dir / name, joined when relative
    line: int
    unit: str  # the compilation unit's primary source file, as recorded (e.g. arch/x86/kernel/irqflags.S)


class _Reader:
    __slots__ = ("buf", "pos")

    def __init__(self, buf, pos: int = 0):
        self.buf, self.pos = buf, pos

    def u8(self) -> int:
        v = self.buf[self.pos]
        self.pos += 1
        return v

    def u(self, n: int) -> int:
        v = int.from_bytes(self.buf[self.pos : self.pos + n], "little")
        if self.pos + n > len(self.buf):
            raise DwarfError("read past the end of a section")
        self.pos += n
        return v

    # LEB128: bits past the 10th byte (64-bit values) are dropped, never accumulated: a hostile
    # megabyte-long number would otherwise grow one big int per byte, quadratic (a minute per MB).
    def uleb(self) -> int:
        buf, pos, shift, out = self.buf, self.pos, 0, 0
        while True:
            b = buf[pos]
            pos += 1
            if shift < 70:
                out |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                self.pos = pos
                return out

    def sleb(self) -> int:
        buf, pos, shift, out = self.buf, self.pos, 0, 0
        while True:
            b = buf[pos]
            pos += 1
            if shift < 70:
                out |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                self.pos = pos
                return out - (1 << min(shift, 70)) if b & 0x40 else out

    def uleb_at(self, pos: int) -> tuple[int, int]:
        """uleb() at `pos`: (value, the position after it)."""
        self.pos = pos
        return self.uleb(), self.pos

    def sleb_at(self, pos: int) -> tuple[int, int]:
        """sleb() at `pos`: (value, the position after it)."""
        self.pos = pos
        return self.sleb(), self.pos

    def cstr(self) -> str:
        end = self.buf.find(b"\0", self.pos) if isinstance(self.buf, bytes | bytearray) else -1
        if end < 0:
            end = bytes(self.buf[self.pos : self.pos + 4096]).find(b"\0")
            end = self.pos + end if end >= 0 else len(self.buf)
        s = bytes(self.buf[self.pos : end]).decode("utf-8", "replace")
        self.pos = end + 1
        return s


def _cstr_at(buf, off: int) -> str:
    if buf is None or off >= len(buf):
        return ""
    return _Reader(buf, off).cstr()


class _Image:
    """The section headers (elf.section_headers) and the bits of debug data the lookups read, over the kernel's mmap."""

    def __init__(self, data):
        self.data = data
        if len(data) < 64 or bytes(data[:4]) != b"\x7fELF":
            raise DwarfError("not an ELF file")
        self.rel = struct.unpack_from("<H", data, 16)[0] == 1
        try:
            self.shdrs = section_headers("ELF", data, len(data))
        except ElfFormatError as e:
            raise DwarfError(f"bad section headers ({e})") from None
        self.names = [h.name for h in self.shdrs]
        self.index = {n: i for i, n in enumerate(self.names) if n}

    def raw(self, i: int):
        h = self.shdrs[i]
        if h.sh_type == "SHT_NOBITS" or h.sh_offset + h.sh_size > len(self.data):
            return b""
        return memoryview(self.data)[h.sh_offset : h.sh_offset + h.sh_size]

    def section(self, name: str, relocs: Relocations | None = None):
        """A section's contents; with `relocs` (a relocatable object's), a copy with its .rela applied."""
        i = self.index.get(name)
        if i is None:
            return None
        if relocs is None:
            return self.raw(i)
        return relocs.applied(i, self.raw(i), relocs.bases.get(i, 0))


# --- .debug_aranges and the unit's top DIE --------------------------------------------------------


def _aranges(buf) -> tuple[list[int], list[int], list[int]]:
    """(starts, ends, unit offsets) sorted by start."""
    spans = []
    pos, n = 0, len(buf)
    while pos + 4 <= n:
        r = _Reader(buf, pos)
        length, off_size = r.u(4), 4
        if length == 0xFFFFFFFF:
            length, off_size = r.u(8), 8
        end = r.pos + length
        if length == 0 or end > n:
            break
        r.u(2)  # version
        cu = r.u(off_size)
        asize, _seg = r.u8(), r.u8()
        if asize not in (4, 8):
            raise DwarfError(f".debug_aranges address size {asize}")
        r.pos = pos + ((r.pos - pos) + 2 * asize - 1) // (2 * asize) * (2 * asize)
        while r.pos + 2 * asize <= end:
            a, size = r.u(asize), r.u(asize)
            if a == 0 and size == 0:
                break
            if size:
                spans.append((a, a + size, cu))
        pos = end
    spans.sort()
    return [s[0] for s in spans], [s[1] for s in spans], [s[2] for s in spans]


# DW_FORM sizes that do not depend on the unit (implicit_const, 0x21, keeps its value in the abbreviation).
_FIXED = {
    0x05: 2, 0x06: 4, 0x07: 8, 0x0B: 1, 0x0C: 1, 0x11: 1, 0x12: 2, 0x13: 4, 0x14: 8, 0x19: 0, 0x1E: 16,
    0x20: 8, 0x21: 0, 0x25: 1, 0x26: 2, 0x27: 3, 0x28: 4, 0x29: 1, 0x2A: 2, 0x2B: 3, 0x2C: 4, 0x1C: 4,
}  # fmt: skip


def _form_value(r: _Reader, form: int, off_size: int, asize: int, version: int, implicit: int | None):
    """Read one attribute value; strings come back as ('str', offset_or_text, which)."""
    while form == 0x16:  # indirect: the form is in the data (a loop: a hostile chain of them is long)
        form = r.uleb()
    if form in _FIXED:
        size = _FIXED[form]
        return implicit if form == 0x21 else r.u(size)
    if form == 0x01:
        return r.u(asize)
    if form in (0x0E, 0x1F, 0x17, 0x1D):  # strp, line_strp, sec_offset, strp_sup
        return r.u(off_size)
    if form == 0x10:  # ref_addr
        return r.u(off_size if version >= 3 else asize)
    if form == 0x08:
        return r.cstr()
    if form in (0x0F, 0x15, 0x1A, 0x1B, 0x22, 0x23):
        return r.uleb()
    if form == 0x0D:
        return r.sleb()
    if form in (0x09, 0x18):
        n = r.uleb()
        r.pos += n
        return None
    if form == 0x0A:
        r.pos += r.u8()
        return None
    if form == 0x03:
        r.pos += r.u(2)
        return None
    if form == 0x04:
        r.pos += r.u(4)
        return None
    raise DwarfError(f"unknown DW_FORM 0x{form:x}")


_NEVER = 1 << 65  # past every address: no wanted address is ahead


def _count(r: _Reader) -> int:
    """A DWARF 5 directory count: each entry has a DW_LNCT_path, at least one byte, so a count past the
    bytes left is malformed (and would be a list of up to 2^64 entries)."""
    n = r.uleb()
    if n > len(r.buf) - r.pos:
        raise DwarfError(f"{n} entries in the {len(r.buf) - r.pos} bytes left of .debug_line")
    return n


@dataclass(frozen=True, slots=True)
class _LineHeader:
    """A line program's header fields the state machine needs (DWARF 2-5 section 6.2.4)."""

    version: int
    off_size: int
    end: int  # the first byte past the program
    prog: int  # the first opcode
    min_len: int
    line_base: int
    line_range: int
    opcode_base: int
    std_lengths: list[int]

    def advances(self) -> tuple[list[int], list[int], int]:
        """Address and line advance of each special opcode, and DW_LNS_const_add_pc's address advance."""
        adv_addr = [0] * 256
        adv_line = [0] * 256
        for op in range(self.opcode_base, 256):
            adj = op - self.opcode_base
            adv_addr[op] = (adj // self.line_range) * self.min_len
            adv_line[op] = self.line_base + adj % self.line_range
        return adv_addr, adv_line, ((255 - self.opcode_base) // self.line_range) * self.min_len


class _Files:
    """A line program's include directories and file names, and the path of each file index. DWARF 5's
    file table is read only as far as a matched row needs: most of its entries (headers a unit
    includes) never name a patchpoint's line."""

    def __init__(self, dw: _Dwarf, r: _Reader, h: _LineHeader) -> None:
        self.dw, self.off_size = dw, h.off_size
        self.paths: dict[int, str] = {}
        self.files: list[tuple[str, int]] = []
        if h.version >= 5:
            entries = (dw._entry(r, f, h.off_size) for f in dw._entries(r))
            self.dirs = [d.get(DW_LNCT_path, "") for d in entries]
            self.comp_dir = self.dirs[0] if self.dirs else ""
            self.fmt = [(r.uleb(), r.uleb()) for _ in range(r.u8())]
            self.nfiles = r.uleb()  # read lazily, so not bounded like the directories
            self.fpos = r.pos
            self.first = 0  # the unit's primary source file
            return
        self.dirs = [""]
        while d := r.cstr():
            self.dirs.append(d)
        self.files.append(("", 0))
        while name := r.cstr():
            di = r.uleb()
            r.uleb()  # mtime
            r.uleb()  # length
            self.files.append((name, di))
        self.comp_dir, self.first, self.nfiles = "", 1, len(self.files)

    def entry(self, i: int) -> tuple[str, int]:
        """(name, directory index) of file i; ('?', 0) past the table."""
        files = self.files
        while len(files) <= i and len(files) < self.nfiles:
            fr = _Reader(self.dw.line, self.fpos)
            f = self.dw._entry(fr, self.fmt, self.off_size)
            files.append((f.get(DW_LNCT_path, ""), f.get(DW_LNCT_directory_index, 0)))
            if fr.pos == self.fpos:  # an entry of no bytes (a format of none, or strings past the end):
                return files[-1] if i < self.nfiles else ("?", 0)  # every later one is the same
            self.fpos = fr.pos
        return files[i] if 0 <= i < len(files) else ("?", 0)

    def path(self, i: int) -> str:
        """File i's path: the name when absolute, else under its directory (itself under comp_dir when relative)."""
        p = self.paths.get(i)
        if p is None:
            name, di = self.entry(i)
            if not isinstance(name, str) or not isinstance(di, int):  # a DW_LNCT form of another class
                raise DwarfError(f"file {i}: name {name!r}, directory {di!r}")
            if name.startswith("/"):
                p = name
            else:
                d = self.dirs[di] if 0 <= di < len(self.dirs) else ""
                if d and not isinstance(d, str):
                    raise DwarfError(f"directory {di}: {d!r}")
                if d and not d.startswith("/") and self.comp_dir:
                    d = f"{self.comp_dir}/{d}"
                p = f"{d}/{name}" if d else name
            self.paths[i] = p
        return p


class _Hits:
    """The wanted addresses of one line program run, and the rows found for them into `out` (shared by
    the runs of one lookup); `need` counts down to 0 when the run may stop (-1: never)."""

    def __init__(self, wanted: set[int], out: dict[int, SourceLine], need: int, files: _Files) -> None:
        self.targets = sorted(wanted)
        self.out, self.need, self.files = out, need, files
        self.unit = ""

    def first_from(self, address: int) -> int:
        """The least wanted address at or after `address`."""
        i = bisect.bisect_left(self.targets, address)
        return self.targets[i] if i < len(self.targets) else _NEVER

    def _found(self, t: int, file: int, line: int) -> bool:
        self.unit = self.unit or self.files.path(self.files.first)
        self.out[t] = SourceLine(self.files.path(file), line, self.unit)
        self.need -= 1
        return self.need == 0

    def row(self, nxt: int, address: int, file: int, line: int, ra: int | None, rf: int, rl: int) -> int | None:
        """A row at `address` >= `nxt`: the wanted addresses up to it take this row (at exactly it) or
        the sequence's last row before it. The next wanted address, or None when the run is done."""
        targets = self.targets
        i = bisect.bisect_left(targets, nxt)
        while i < len(targets) and targets[i] <= address:
            t = targets[i]
            i += 1
            if t in self.out:
                continue
            if t == address:
                f, ln = file, line
            elif ra is not None and ra <= t:
                f, ln = rf, rl
            else:
                continue
            if self._found(t, f, ln):
                return None
        return targets[i] if i < len(targets) else _NEVER

    def end(self, nxt: int, address: int, ra: int, rf: int, rl: int) -> bool:
        """end_sequence at `address`: the wanted addresses from `nxt` up to it take the sequence's last
        row. True when the run is done."""
        targets = self.targets
        i = bisect.bisect_left(targets, nxt)
        while i < len(targets) and targets[i] < address:
            t = targets[i]
            i += 1
            if t not in self.out and ra <= t and self._found(t, rf, rl):
                return True
        return False


class _Dwarf:
    def __init__(self, img: _Image, bases: dict[int, int] | None):
        self.img = img
        # In a relocatable object (a module, a .o) the debug sections take their .rela first (S + A).
        relocs = Relocations(img.data, img.shdrs, bases or {}) if img.rel else None
        self.info = img.section(".debug_info", relocs)
        self.abbrev = img.section(".debug_abbrev", relocs)
        self.line = img.section(".debug_line", relocs)
        self.str = img.section(".debug_str", relocs)
        self.line_str = img.section(".debug_line_str", relocs)
        ar = img.section(".debug_aranges", relocs)
        self.spans = _aranges(ar) if ar is not None else ([], [], [])

    def stmt_list(self, cu: int) -> int | None:
        """DW_AT_stmt_list of the unit at .debug_info offset cu, from its top DIE."""
        if self.info is None or self.abbrev is None:
            return None
        r = _Reader(self.info, cu)
        length, off_size = r.u(4), 4
        if length == 0xFFFFFFFF:
            length, off_size = r.u(8), 8
        version = r.u(2)
        if version >= 5:
            _unit_type, asize, abbrev_off = r.u8(), r.u8(), r.u(off_size)
        else:
            abbrev_off, asize = r.u(off_size), r.u8()
        code = r.uleb()
        # Find the abbreviation by skipping whole entries byte-wise (a ULEB ends at its first byte
        # below 0x80): a unit's table has hundreds, and its top DIE's is often far down.
        buf = self.abbrev
        a = _Reader(buf, abbrev_off)
        while True:
            c = a.uleb()
            if c == 0:
                return None
            pos = a.pos
            while buf[pos] & 0x80:  # tag
                pos += 1
            pos += 2  # the tag's last byte, then DW_CHILDREN
            if c == code:
                a.pos = pos
                specs = []
                while True:
                    at, form = a.uleb(), a.uleb()
                    if at == 0 and form == 0:
                        break
                    specs.append((at, form, a.sleb() if form == 0x21 else None))
                break
            while True:
                at0 = buf[pos]
                while buf[pos] & 0x80:
                    pos += 1
                form0 = buf[pos + 1]
                pos += 1
                while buf[pos] & 0x80:
                    pos += 1
                pos += 1
                if at0 == 0 and form0 == 0:
                    break
                if form0 == 0x21:
                    while buf[pos] & 0x80:
                        pos += 1
                    pos += 1
            a.pos = pos
        for at, form, implicit in specs:
            v = _form_value(r, form, off_size, asize, version, implicit)
            if at == DW_AT_stmt_list:
                return v
        return None

    def run(self, offset: int, wanted: set[int], out: dict[int, SourceLine], need: int = -1) -> None:
        """Run the line program at .debug_line offset. A wanted address gets the first row at exactly
        that address or, when it has none (a label inside asm() in C, data in text), the last row
        before it in the same sequence, as addr2line does. Stops once `need` addresses are found
        (the wanted addresses its unit covers), if given."""
        h, r = self._header(offset)
        self._rows(h, r, _Hits(wanted, out, need, _Files(self, r, h)))

    def _header(self, offset: int) -> tuple[_LineHeader, _Reader]:
        """The line program header up to its standard opcode lengths, and a reader at its directory table."""
        r = _Reader(self.line, offset)
        length, off_size = r.u(4), 4
        if length == 0xFFFFFFFF:
            length, off_size = r.u(8), 8
        end = r.pos + length
        version = r.u(2)
        if version < 2 or version > 5:
            raise DwarfError(f".debug_line version {version}")
        if version >= 5:
            r.u8()  # address_size
            r.u8()  # segment selector size
        header_length = r.u(off_size)
        prog = r.pos + header_length
        min_len = r.u8()
        if version >= 4:
            r.u8()  # maximum_operations_per_instruction: 1 on x86
        r.u8()  # default_is_stmt: rows are matched by address alone
        line_base = r.u8()
        line_base -= 256 if line_base > 127 else 0
        line_range = r.u8()
        opcode_base = r.u8()
        std_lengths = [r.u8() for _ in range(opcode_base - 1)]
        if line_range == 0:
            raise DwarfError(".debug_line line_range is 0")
        return _LineHeader(version, off_size, end, prog, min_len, line_base, line_range, opcode_base, std_lengths), r

    def _rows(self, h: _LineHeader, r: _Reader, hits: _Hits) -> None:
        """The state machine (DWARF 5 section 6.2.5): address, file and line only. `ra, rf, rl` is the
        last row of the current sequence (ra None before its first); `nxt` the least wanted address
        not yet passed, so that each row costs one comparison until a row reaches a wanted address.
        A one-byte LEB128 operand (nearly all of them) is read inline; a longer one by `r`."""
        adv_addr, adv_line, const_add = h.advances()
        opcode_base, min_len, std_lengths = h.opcode_base, h.min_len, h.std_lengths
        address, file, line = 0, 1, 1
        ra, rf, rl = None, 1, 1
        nxt = hits.first_from(0)
        pos, end, data = h.prog, h.end, self.line
        while pos < end:
            op = data[pos]
            pos += 1
            if op >= opcode_base or op == 1:  # a row: special opcode, or DW_LNS_copy
                address += adv_addr[op]  # 0 for copy
                line += adv_line[op]
                if address >= nxt:
                    nxt = hits.row(nxt, address, file, line, ra, rf, rl)
                    if nxt is None:
                        return
                if ra != address:
                    ra, rf, rl = address, file, line  # the first row at an address speaks for it
            elif op == 5:  # set_column
                pos = pos + 1 if data[pos] < 0x80 else r.uleb_at(pos)[1]
            elif op == 0:
                n, pos = (data[pos], pos + 1) if data[pos] < 0x80 else r.uleb_at(pos)
                sub = data[pos]
                if sub == 1:  # end_sequence: `address` is the first byte past the sequence
                    if address > nxt and ra is not None and hits.end(nxt, address, ra, rf, rl):
                        return
                    address, file, line = 0, 1, 1
                    ra = None
                    nxt = _NEVER
                elif sub == 2:  # set_address: a sequence starts
                    address = int.from_bytes(data[pos + 1 : pos + n], "little")
                    nxt = hits.first_from(address)
                pos += n
            elif op == 2:  # advance_pc
                v, pos = (data[pos], pos + 1) if data[pos] < 0x80 else r.uleb_at(pos)
                address += v * min_len
            elif op == 3:  # advance_line
                b = data[pos]
                v, pos = (b - 0x80 if b & 0x40 else b, pos + 1) if b < 0x80 else r.sleb_at(pos)
                line += v
            elif op == 4:  # set_file
                file, pos = (data[pos], pos + 1) if data[pos] < 0x80 else r.uleb_at(pos)
            elif op == 8:
                address += const_add
            elif op == 9:
                address += data[pos] | data[pos + 1] << 8
                pos += 2
            else:  # negate_stmt, basic_block, prologue/epilogue, set_isa, unknown
                for _ in range(std_lengths[op - 1]):
                    pos = r.uleb_at(pos)[1]

    def _entries(self, r: _Reader):
        """The v5 entry format, then one format per entry (the same each time)."""
        fmt = [(r.uleb(), r.uleb()) for _ in range(r.u8())]
        return [fmt] * _count(r)

    def _entry(self, r: _Reader, fmt, off_size: int) -> dict[int, object]:
        out: dict[int, object] = {}
        for ctype, form in fmt:
            if form == 0x1F:
                v: object = _cstr_at(self.line_str, r.u(off_size))
            elif form == 0x0E:
                v = _cstr_at(self.str, r.u(off_size))
            else:
                v = _form_value(r, form, off_size, 8, 5, None)
            out[ctype] = v
        return out

    def all_programs(self) -> list[int]:
        """Every line program's offset (a module's few units, which need no aranges)."""
        out, pos, buf = [], 0, self.line
        while buf is not None and pos + 4 <= len(buf):
            out.append(pos)
            length = int.from_bytes(buf[pos : pos + 4], "little")
            if length == 0xFFFFFFFF:
                length = int.from_bytes(buf[pos + 4 : pos + 12], "little") + 8
            if length == 0:
                break
            pos += 4 + length
        return out


def _bases(img: _Image, kernel) -> dict[int, int]:
    """Section index -> the base fbt-audit gave the section in a module (by name, as elf.py does)."""
    by_name = {s.name: s.addr for s in kernel.sections}
    return {i: by_name[n] for i, n in enumerate(img.names) if img.shdrs[i].sh_flags & SHF_ALLOC and n in by_name}


def has_dwarf(kernel) -> bool:
    try:
        return ".debug_line" in _Image(kernel.data).index
    except DwarfError:
        return False


def source_lines(kernel, addrs: Iterable[int]) -> dict[int, SourceLine]:
    """The source line of each address that has a line-table row at exactly that address.
    Addresses without DWARF, or without a row, are absent; malformed DWARF yields what was read."""
    wanted = set(addrs)
    out: dict[int, SourceLine] = {}
    if not wanted:
        return out
    try:
        _find_lines(kernel, wanted, out)
    except MALFORMED:  # what was found stands, the rest falls back
        pass
    return out


def _find_lines(kernel, wanted: set[int], out: dict[int, SourceLine]) -> None:
    """source_lines into `out`: in a linked image, only the units .debug_aranges says cover a wanted
    address; in a relocatable object (a few units, no aranges), every line program."""
    img = _Image(kernel.data)
    if ".debug_line" not in img.index:
        return
    dw = _Dwarf(img, _bases(img, kernel) if img.rel else None)
    starts, ends, cus = dw.spans
    if not starts or img.rel:
        for off in dw.all_programs():
            dw.run(off, wanted, out)
        return
    units: dict[int, set[int]] = {}
    for a in wanted:
        i = bisect.bisect_right(starts, a) - 1
        if i >= 0 and a < ends[i]:
            units.setdefault(cus[i], set()).add(a)
    programs: dict[int, set[int]] = {}  # line program offset -> the wanted addresses its unit covers
    for cu in sorted(units):
        off = dw.stmt_list(cu)
        if off is not None:
            programs.setdefault(off, set()).update(units[cu])
    for off, mine in sorted(programs.items()):
        dw.run(off, mine, out, len(mine))


def symbol_files(kernel, names: Iterable[str]) -> dict[tuple[str, int], str]:
    """(name, address) -> the STT_FILE name that precedes each LOCAL text symbol of those names in
    .symtab (the assembler's file symbol: the source's base name, e.g. `irqflags.c`)."""
    want = set(names)
    out: dict[tuple[str, int], str] = {}
    if not want:
        return out
    try:
        img = _Image(kernel.data)
    except DwarfError:
        return out
    si = next((i for i, h in enumerate(img.shdrs) if h.sh_type == "SHT_SYMTAB"), None)
    if si is None or img.shdrs[si].sh_link >= len(img.shdrs):
        return out
    try:
        return _symbol_files(img, si, kernel, want, out)
    except MALFORMED:  # a damaged .symtab: no file names, fingerprints without them
        return out


def _symbol_files(img: _Image, si: int, kernel, want: set[str], out: dict[tuple[str, int], str]):
    raw = bytes(img.raw(si))
    strtab = bytes(img.raw(img.shdrs[si].sh_link))
    bases = _bases(img, kernel) if img.rel else {}
    encoded = {n.encode(): n for n in want}
    current = ""
    for st_name, info, _other, shndx, value, _size in SYM.iter_unpack(raw[: len(raw) // SYM.size * SYM.size]):
        if info & 0xF == STT_FILE:
            current = strtab[st_name : strtab.find(b"\0", st_name)].decode("utf-8", "replace")
            continue
        if info >> 4 != 0 or info & 0xF not in (0, 2):  # LOCAL NOTYPE/FUNC only: statics
            continue
        name = strtab[st_name : strtab.find(b"\0", st_name)]
        n = encoded.get(name)
        if n is not None:
            out[(n, bases.get(shndx, 0) + value)] = current
    return out


@dataclass(frozen=True)
class PathMap:
    """Build paths -> paths relative to a kernel source checkout (the repository's root, for GitHub).

    `prefix_map` pairs (OLD, NEW) rewrite a leading OLD as NEW, the first that matches winning, as
    gcc's -ffile-prefix-map does; `source_root` is then cut off the front. What is still absolute is
    cut at the first top-level kernel directory (arch/, kernel/, fs/ ...), or gives None."""

    prefix_map: tuple[tuple[str, str], ...] = ()
    source_root: str | None = None

    @classmethod
    def parse(cls, maps: Iterable[str] = (), source_root: str | None = None) -> PathMap:
        from fbt_audit.model.errors import UsageError

        pairs = []
        for m in maps:
            old, sep, new = m.partition("=")
            if not sep or not old:
                raise UsageError(f"bad --path-prefix-map {m!r}: expected OLD=NEW")
            pairs.append((old.rstrip("/"), new.rstrip("/")))
        root = source_root.rstrip("/") if source_root else None
        return cls(tuple(pairs), root or None)

    def relative(self, path: str) -> str | None:
        p = path.replace("\\", "/")
        mapped = False
        for old, new in self.prefix_map:
            if p == old or p.startswith(old + "/"):
                p, mapped = new + p[len(old) :], True
                p = p.lstrip("/") if not new.startswith("/") else p
                break
        if self.source_root and (p == self.source_root or p.startswith(self.source_root + "/")):
            p, mapped = p[len(self.source_root) :].lstrip("/"), True
        if mapped and p and not p.startswith("/"):
            parts = [s for s in posixpath.normpath(p).split("/") if s and s != "."]
            return "/".join(parts) if parts and ".." not in parts else None
        return relative_source(p) if p else None


def add_source_lines(results, limit: int | None = None) -> None:
    """Fill Patchpoint.source from DWARF for every patchpoint with findings (the first `limit` per
    image in address order, when given), where the image has a line table covering it. A `.cold`
    fragment (outlined by GCC into .text.unlikely, which Debian's .debug_aranges leave out) takes
    the line of the function it was split from."""
    for r in results:
        js = [j for j in r.with_findings() if j.pp.source is None]
        if limit is not None:
            js = js[:limit]
        if not js or not has_dwarf(r.kernel):
            continue
        parents: dict[int, int] = {}
        cold = [j for j in js if ".cold" in j.pp.name]
        if cold:
            names = r.kernel.names
            for j in cold:
                base = names.get(j.pp.name.split(".cold", 1)[0])
                if base is not None:
                    parents[j.pp.addr] = base
        lines = source_lines(r.kernel, [j.pp.addr for j in js] + list(parents.values()))
        for j in js:
            s = lines.get(j.pp.addr) or lines.get(parents.get(j.pp.addr, -1))
            if s is not None:
                j.pp.source = (s.file, s.line)


# Top-level directories of a kernel tree: where an absolute DWARF path is cut to be repo-relative.
_TREE_DIRS = (
    "arch", "block", "certs", "crypto", "drivers", "fs", "include", "init", "io_uring", "ipc", "kernel",
    "lib", "mm", "net", "rust", "samples", "security", "sound", "tools", "usr", "virt",
)  # fmt: skip


def relative_source(path: str) -> str | None:
    """A repo-relative form of a DWARF file name, or None when it cannot be made relative."""
    p = posixpath.normpath(path.replace("\\", "/")) if path else ""
    parts = [s for s in p.split("/") if s and s != "."]
    if not p.startswith("/") and parts and (parts[0] in _TREE_DIRS or ".." in parts or len(parts) == 1):
        return "/".join(parts) if ".." not in parts else None
    # An absolute path, or one under a build directory (Debian's debian/build/build_amd64_none_amd64/):
    # cut at the first top-level directory of a kernel tree.
    for i, part in enumerate(parts[:-1]):
        if part in _TREE_DIRS:
            return "/".join(parts[i:])
    return None if p.startswith("/") else ("/".join(parts) or None)
