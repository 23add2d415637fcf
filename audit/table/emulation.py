"""emulation.py: read an FBT emulation table (named, or from any ELF carrying its section) and match instructions."""

from __future__ import annotations

import mmap
from dataclasses import dataclass
from pathlib import Path

from fbt_audit import data_bytes
from fbt_audit.input.elf import section_headers
from fbt_audit.model import abi
from fbt_audit.model.abi import EmuFlags, Fixup, Handling, StepIF, StepMechanism, Target
from fbt_audit.model.core import Insn
from fbt_audit.model.errors import ElfFormatError, InputError, TableFormatError

# Named tables ship as the raw section bytes the C source in kmod/tables/ compiles to.
NAMED = {
    "reference": "reference",
    "legacy-2011": "legacy-2011",
    "kprobes-6.1": "kprobes-6.1",
    "kprobes-6.12": "kprobes-6.12",
    "kprobes-6.1-optprobe": "kprobes-6.1-optprobe",  # kprobes-6.1 with the 5-byte jmp of an optimized probe
    "kprobes": "kprobes-6.12",  # alias: the newest kprobes model
}
DEFAULT = "reference"


@dataclass(frozen=True, slots=True)
class Entry:
    index: int
    prefix: bytes
    rex_mask: int
    rex_value: int
    opcode: bytes
    opcode_mask: int
    modrm_mask: int
    modrm_value: int
    target: Target
    handling: Handling
    match_flags: int
    fixups: Fixup
    mnemonic: str

    def matches(self, insn: Insn) -> bool:
        op = insn.opcode
        n = len(self.opcode)
        if len(op) != n or op[: n - 1] != self.opcode[: n - 1]:
            return False
        if (op[-1] & self.opcode_mask) != (self.opcode[-1] & self.opcode_mask):
            return False
        if (insn.rex & self.rex_mask) != self.rex_value:
            return False
        for p in self.prefix:
            if p not in insn.prefixes:
                return False
        if self.match_flags & abi.MATCH_EXACT_PREFIX and any(p not in self.prefix for p in insn.prefixes):
            return False
        if self.modrm_mask:
            m = insn.modrm
            if m is None or (m & self.modrm_mask) != self.modrm_value:
                return False
        if self.target != Target.ANY and insn.target_class != self.target:
            return False
        return True

    def describe_match(self) -> str:
        """The match as readable text: prefixes, opcode (with mask), ModRM and target constraints."""
        parts = []
        if self.prefix:
            parts.append("pfx=" + self.prefix.hex(" ") + ("!" if self.match_flags & abi.MATCH_EXACT_PREFIX else ""))
        if self.rex_mask:
            parts.append(f"rex&{self.rex_mask:02x}={self.rex_value:02x}")
        op = self.opcode.hex(" ")
        if self.opcode_mask != 0xFF:
            op += f"/{self.opcode_mask:02x}"
        parts.append(op)
        if self.modrm_mask:
            parts.append(f"modrm&{self.modrm_mask:02x}={self.modrm_value:02x}")
        if self.target != Target.ANY:
            parts.append("->" + self.target.name.lower())
        return " ".join(parts)


_SHA256: dict[int, tuple[bytes, str]] = {}  # EmulationTable.sha256 by its raw bytes: a module tree asks per module


@dataclass(frozen=True, slots=True)
class EmulationTable:
    name: str
    source: str  # where it was read from: 'named:reference' or a path
    raw: bytes
    default_handling: Handling
    step_mechanism: StepMechanism
    step_if: StepIF
    emu_flags: EmuFlags
    fault_fixup: bool
    step_fixups: Fixup
    entries: tuple[Entry, ...]
    patch_len: int = 0  # bytes the probe writes at the patchpoint; > 1: FBT115 checks the window (--deep)

    @property
    def window(self) -> int:
        """The patch window's length: what a branch must not land strictly inside (1: the int3 alone)."""
        return max(self.patch_len, 1)

    @property
    def sha256(self) -> str:
        got = _SHA256.get(id(self.raw))
        if got is None or got[0] is not self.raw:  # (the raw bytes kept: their id is not reused while cached)
            import hashlib  # here: only the reports that print the table's digest, and judge_for, pay its import

            got = _SHA256[id(self.raw)] = (self.raw, hashlib.sha256(self.raw).hexdigest())
        return got[1]

    def lookup(self, insn: Insn) -> Entry | None:
        """The first entry that matches insn, or None."""
        return self.handling(insn)[0]

    def handling(self, insn: Insn) -> tuple[Entry | None, Handling, Fixup]:
        """The matching entry (or None), the handling and the fixups this table gives insn.

        handling = the entry's, or the header default when nothing matches; fixups = the entry's, plus
        the header's step_fixups when it is stepped, unless the entry has FBT_M_OWN_FIXUPS; an unmatched
        instruction under a step default gets step_fixups. Memoised on match_key(insn): a kernel's
        entries repeat a few hundred shapes, and enumeration and judging both ask for every patchpoint."""
        ident = (id(self.entries), self.default_handling, self.step_fixups)  # all that the answer depends on
        cached = _INDEX.get(ident)
        if cached is None or cached[0] is not self.entries:
            cached = _INDEX[ident] = (self.entries, _index(self.entries), {})
        key = match_key(insn)
        memo = cached[2]
        if key is not None:
            hit = memo.get(key)
            if hit is not None:
                return hit
        found = None
        op = insn.opcode
        for e in cached[1].get(op[-1] if op else -1, ()):
            if e.matches(insn):
                found = e
                break
        if found is None:
            h = self.default_handling
            f = self.step_fixups if h == Handling.STEP else Fixup(0)
        else:
            h, f = found.handling, found.fixups
            if h == Handling.STEP and not found.match_flags & abi.MATCH_OWN_FIXUPS:
                f = f | self.step_fixups
        hit = (found, h, f)
        if key is not None and len(memo) < _MEMO_MAX:
            memo[key] = hit
        return hit


def match_key(insn: Insn) -> tuple | None:
    """Everything Entry.matches reads from an Insn (equal keys match the same entry); None for a hand-built
    Insn whose ModRM offset lies past its bytes (not memoised)."""
    raw, mo = insn.raw, insn.modrm_off
    if mo >= len(raw):
        return None
    return (insn.opcode, insn.prefixes, insn.rex, raw[mo] if mo >= 0 else None, insn.target_class)


# Entries bucketed by the last opcode byte they accept, in table order, and the lookup memo: lookup
# is the hot path (one call per patchpoint variant, ~100k on a vmlinux), and a linear scan of ~50
# entries dominated it.
_INDEX: dict[tuple, tuple[tuple[Entry, ...], dict[int, tuple[Entry, ...]], dict[tuple, tuple]]] = {}
_MEMO_MAX = 1 << 16


def _index(entries: tuple[Entry, ...]) -> dict[int, tuple[Entry, ...]]:
    buckets: dict[int, list[Entry]] = {}
    for b in range(256):
        for e in entries:
            if (b & e.opcode_mask) == (e.opcode[-1] & e.opcode_mask):
                buckets.setdefault(b, []).append(e)
    return {b: tuple(v) for b, v in buckets.items()}


def _cstr(b: bytes) -> str:
    return b.split(b"\0", 1)[0].decode("ascii", "replace")


def _enum(kind, value: int, what: str):
    try:
        return kind(value)
    except ValueError:
        raise TableFormatError(f"emulation table: bad {what} value {value}") from None


def parse(raw: bytes, source: str) -> EmulationTable:
    """Parse the section bytes: check magic, ABI version and that size = header + count * entry."""
    if len(raw) < abi.HEADER_SIZE:
        raise TableFormatError(f"{source}: emulation table is {len(raw)} bytes, shorter than its header")
    h = dict(zip((n for n, _ in abi.HEADER_FIELDS), abi.HEADER_STRUCT.unpack_from(raw, 0), strict=True))
    if h["magic"] != abi.MAGIC:
        raise TableFormatError(f"{source}: not an emulation table (bad magic {h['magic']!r})")
    if h["abi_version"] != abi.ABI_VERSION:
        raise TableFormatError(
            f"{source}: emulation table ABI version {h['abi_version']}, this fbt-audit reads {abi.ABI_VERSION}"
        )
    if h["header_size"] != abi.HEADER_SIZE or h["entry_size"] != abi.ENTRY_SIZE:
        raise TableFormatError(
            f"{source}: header/entry size {h['header_size']}/{h['entry_size']}, "
            f"expected {abi.HEADER_SIZE}/{abi.ENTRY_SIZE}"
        )
    want = abi.HEADER_SIZE + h["count"] * abi.ENTRY_SIZE
    if len(raw) != want:
        raise TableFormatError(
            f"{source}: section is {len(raw)} bytes, header says {abi.HEADER_SIZE} + "
            f"{h['count']} x {abi.ENTRY_SIZE} = {want}"
        )
    entries = []
    names = [n for n, _ in abi.ENTRY_FIELDS]
    for i in range(h["count"]):
        e = dict(zip(names, abi.ENTRY_STRUCT.unpack_from(raw, abi.HEADER_SIZE + i * abi.ENTRY_SIZE), strict=True))
        if not 1 <= e["opcode_len"] <= 3:
            raise TableFormatError(f"{source}: entry {i} has opcode length {e['opcode_len']}")
        handling = _enum(Handling, e["handling"], f"entry {i} handling")
        if handling == Handling.NONE:
            raise TableFormatError(f"{source}: entry {i} has no handling")
        entries.append(
            Entry(
                index=i,
                prefix=bytes(p for p in e["prefix"] if p),
                rex_mask=e["rex_mask"],
                rex_value=e["rex_value"],
                opcode=e["opcode"][: e["opcode_len"]],
                opcode_mask=e["opcode_mask"],
                modrm_mask=e["modrm_mask"],
                modrm_value=e["modrm_value"],
                target=_enum(Target, e["target"], f"entry {i} target"),
                handling=handling,
                match_flags=e["match_flags"],
                fixups=Fixup(e["fixups"]),
                mnemonic=_cstr(e["mnemonic"]),
            )
        )
    return EmulationTable(
        name=_cstr(h["name"]) or Path(source).name,
        source=source,
        raw=bytes(raw),
        default_handling=_enum(Handling, h["default_handling"], "default handling"),
        step_mechanism=_enum(StepMechanism, h["step_mechanism"], "step mechanism"),
        step_if=_enum(StepIF, h["step_if"], "step IF policy"),
        emu_flags=_enum(EmuFlags, h["emu_flags"], "emulation flags source"),
        fault_fixup=bool(h["fault_fixup"]),
        step_fixups=Fixup(h["step_fixups"]),
        entries=tuple(entries),
        patch_len=h["patch_len"],
    )


def named_bytes(name: str) -> bytes:
    return data_bytes("fbt_audit.table", "named", f"{NAMED[name]}.fbt")


def read_section(path: Path) -> bytes:
    """The raw bytes of the table section in any x86-64 ELF file (object, module or image), its section
    headers read by the loader's reader (input/elf.section_headers) over a read-only map of the file."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            why = _not_elf64(head)
            if why:
                raise TableFormatError(f"{path}: not a readable ELF file ({why})")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
                try:
                    secs = section_headers(path, data, len(data))
                except ElfFormatError as e:
                    raise TableFormatError(f"{path}: not a readable ELF file ({e})") from None
                sec = next((s for s in secs if s.name == abi.SECTION), None)
                if sec is None:
                    raise TableFormatError(f"{path}: no {abi.SECTION} section: not built from kmod/")
                if sec.sh_type == "SHT_NOBITS":
                    raise TableFormatError(f"{path}: {abi.SECTION} has no file contents")
                return data[sec.sh_offset : sec.sh_offset + sec.sh_size]
    except OSError as e:
        raise InputError(f"{path}: {e.strerror}") from None


def _not_elf64(head: bytes) -> str | None:
    """Why an ELF header is not one of a 64-bit little-endian file (the only kind a table is built into)."""
    if head[:4] != b"\x7fELF":
        return "Magic number does not match"
    if len(head) < 64:
        return "truncated ELF header"
    if head[4] != 2 or head[5] != 1:
        return "not a 64-bit little-endian ELF"
    return None


def load(spec: str | None) -> EmulationTable:
    """A table by name (reference, legacy-2011, ...) or by path to an ELF file that carries one."""
    spec = spec or DEFAULT
    if spec in NAMED:
        return parse(named_bytes(spec), f"named:{spec}")
    p = Path(spec)
    if not p.exists():
        raise TableFormatError(f"{spec}: no such table; named tables are {', '.join(sorted(NAMED))}")
    return parse(read_section(p), str(p))
