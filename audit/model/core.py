"""model.py: the arch-neutral data model every stage shares: instructions, symbols, patchpoints, findings."""

from __future__ import annotations

import enum
from dataclasses import MISSING, dataclass, field, fields

from fbt_audit.model.abi import Target


class IC:
    """Instruction classes: what a rule needs to know about an instruction, without opcodes.

    Plain int bits rather than an IntFlag: every patchpoint tests several of them, and IntFlag
    arithmetic builds a new enum member per operation (a million of them per vmlinux)."""

    NONE = 0
    READS_FLAGS = 1 << 0  # pushf, lahf, jcc, setcc, cmovcc, adc, sbb
    PUSHES_FLAGS = 1 << 1  # pushf: the flags end up in memory
    WRITES_IF = 1 << 2  # cli, sti, popf, iret
    WRITES_TF = 1 << 3  # popf, iret
    RIP_RELATIVE = 1 << 4  # ModRM mod=00 rm=101 in 64-bit mode
    REL_BRANCH = 1 << 5  # jmp rel, jcc rel, loop/jrcxz
    REL_CALL = 1 << 6  # call rel32
    INDIRECT_CALL = 1 << 7  # call through a register or memory (ff /2)
    INDIRECT_JUMP = 1 << 8  # jmp through a register or memory (ff /4)
    RETURN = 1 << 9  # ret, ret imm16
    PRIVILEGED = 1 << 10  # hlt, mwait, swapgs, sysret, sysexit, VM entry, mov to DRn
    TRAP = 1 << 11  # int3, int n, int1, into, ud0, ud1, ud2
    FAR_TRANSFER = 1 << 12  # far call/jmp/ret through memory, lret, iret
    IRET = 1 << 13  # iret, iretq
    REP_STRING = 1 << 14  # string instruction with a REP/REPNE prefix
    STACK = 1 << 15  # reads or writes through %rsp
    ENDBR = 1 << 16  # endbr64/endbr32 and the IBT-seal poison
    NOP = 1 << 17  # the NOP family
    TRAP_SHADOW = 1 << 18  # mov to %ss: the next instruction runs with traps masked
    INVALID = 1 << 19  # does not decode, or is invalid in 64-bit mode

    @classmethod
    def names(cls, value: int) -> list[str]:
        """The class names set in value, lowercase, in bit order."""
        return [k.lower() for k, v in vars(cls).items() if k.isupper() and v and value & v]


def _fast_init(cls):
    """Give a frozen slots dataclass an __init__ that stores through its slot descriptors.
    By hand: dataclasses' frozen __init__ calls object.__setattr__ per field, twice as slow, and an
    Insn is built ~150,000 times per vmlinux. Same parameters, defaults and immutability."""
    fs = fields(cls)
    params = ", ".join(f.name if f.default is MISSING else f"{f.name}=_d_{f.name}" for f in fs)
    body = "".join(f"    _s_{f.name}(self, {f.name})\n" for f in fs)
    ns = {f"_s_{f.name}": getattr(cls, f.name).__set__ for f in fs}
    ns.update({f"_d_{f.name}": f.default for f in fs if f.default is not MISSING})
    exec(f"def __init__(self, {params}):\n{body}", ns)
    ns["__init__"].__qualname__ = f"{cls.__qualname__}.__init__"
    cls.__init__ = ns["__init__"]
    return cls


@_fast_init
@dataclass(frozen=True, slots=True)
class Insn:
    """One decoded instruction. `opcode` excludes prefixes; `modrm_off` is -1 without ModRM."""

    addr: int
    raw: bytes
    mnemonic: str
    operands: str
    prefixes: bytes
    rex: int
    opcode: bytes
    modrm_off: int
    classes: int  # IC bits
    target: int | None = None  # direct branch/call target (link-time address)
    target_name: str | None = None
    target_class: Target = Target.ANY

    @property
    def length(self) -> int:
        return 0 if self.classes & IC.INVALID else len(self.raw)

    @property
    def modrm(self) -> int | None:
        return self.raw[self.modrm_off] if self.modrm_off >= 0 else None

    @property
    def first_byte(self) -> int:
        return self.raw[0] if self.raw else 0

    @property
    def text(self) -> str:
        if self.classes & IC.INVALID:
            return "(bad)"
        ops = self.operands
        if self.target_name:
            ops = self.target_name
        return f"{self.mnemonic} {ops}".strip()

    def has(self, classes: int) -> bool:
        return bool(self.classes & classes)


@dataclass(frozen=True, slots=True)
class Symbol:
    """A text symbol as a kallsyms walker sees it. `kind` is FUNC or NOTYPE; `size` is never 0."""

    name: str
    addr: int
    size: int
    kind: str
    bind: str
    section: str
    sized: bool  # False when the size was inferred from the next symbol


@_fast_init
@dataclass(frozen=True, slots=True)
class Variant:
    """A form the bytes at a patchpoint take: 'disk', or a run-time form such as 'ftrace-nop'."""

    label: str
    insn: Insn


@dataclass(slots=True)
class Patchpoint:
    """One probe site: where the int3 goes, the instruction it displaces and its run-time variants."""

    module: str  # 'kernel' for vmlinux, else the module name
    name: str  # primary symbol name
    aliases: tuple[str, ...]
    kind: str  # FUNC | NOTYPE
    site: str  # entry | return
    sym_addr: int
    addr: int  # effective patchpoint (after moves)
    section: str
    sec_off: int  # offset of addr within its section
    insn: Insn  # on-disk instruction at addr
    variants: tuple[Variant, ...]  # every form judged; variants[0] is 'disk'
    moved: tuple[Insn, ...] = ()  # instructions the patchpoint moved past
    facts: frozenset[str] = frozenset()  # site facts, e.g. 'ftrace-site'
    source: tuple[str, int] | None = None  # (file, line) from DWARF, when known

    @property
    def symoff(self) -> int:
        return self.addr - self.sym_addr

    @property
    def probe_name(self) -> str:
        return f"{self.module}:{self.name}:{self.site}"


class Level(enum.IntEnum):
    """SARIF levels, ordered so that comparisons follow severity."""

    NOTE = 1
    WARNING = 2
    ERROR = 3

    @property
    def sarif(self) -> str:
        return self.name.lower()


class Verdict(enum.IntEnum):
    """A patchpoint's verdict, worst wins: unsafe > deny > refused > safe."""

    SAFE = 0
    REFUSED = 1
    DENY = 2
    UNSAFE = 3

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def of_level(cls, level: Level) -> Verdict:
        return _VERDICT_OF_LEVEL[level]

    @classmethod
    def of_findings(cls, findings) -> Verdict:
        """The verdict a patchpoint with these findings takes: the worst of their levels', SAFE without any."""
        return max((_VERDICT_OF_LEVEL[f.level] for f in findings), default=Verdict.SAFE)


_VERDICT_OF_LEVEL = {Level.ERROR: Verdict.UNSAFE, Level.WARNING: Verdict.DENY, Level.NOTE: Verdict.REFUSED}


@dataclass(frozen=True, slots=True)
class Finding:
    """One rule firing at one patchpoint. `variant` names the run-time form it fired on."""

    rule_id: str
    level: Level
    message: str
    variant: str = "disk"


@dataclass(slots=True)
class Judgement:
    """A patchpoint, the handling the table gives each variant, and every finding, worst first."""

    pp: Patchpoint
    findings: list[Finding] = field(default_factory=list)
    handling: str = ""  # handling of the disk form, e.g. 'step', 'emulate', 'ftrace'

    @property
    def verdict(self) -> Verdict:
        return Verdict.of_findings(self.findings)

    @property
    def rule_ids(self) -> list[str]:
        return sorted({f.rule_id for f in self.findings})
