"""abi.py: the Python mirror of kmod/fbt_table.h, the emulation-table ABI shared with the FBT module."""

import enum
import struct

SECTION = ".fbt_emu_table"
MAGIC = b"FBTEMUTB"
ABI_VERSION = 1


class Handling(enum.IntEnum):
    NONE = 0
    EMULATE = 1
    STEP = 2
    REFUSE = 3
    MOVE = 4
    FTRACE = 5


class StepMechanism(enum.IntEnum):
    TF = 1
    INT3 = 2


class StepIF(enum.IntEnum):
    MASKED = 1
    PRESERVED = 2


class EmuFlags(enum.IntEnum):
    SAVED = 1
    LIVE = 2


class Target(enum.IntEnum):
    ANY = 0
    FENTRY = 1
    RETURN_THUNK = 2
    INDIRECT_THUNK = 3


class Fixup(enum.IntFlag):
    PUSHED_FLAGS = 0x01
    LIVE_IF = 0x02
    RIP_DISP = 0x04
    BRANCH_TARGET = 0x08
    RETURN_ADDR = 0x10
    REP_CONT = 0x20
    TRANSFER_IP = 0x40


MATCH_EXACT_PREFIX = 0x01
MATCH_OWN_FIXUPS = 0x02  # a step applies only the entry's fixups, not the header's step_fixups

# struct fbt_emu_header: descriptor of (field, struct code); '<' = little endian, no padding.
HEADER_FIELDS = (
    ("magic", "8s"),
    ("abi_version", "H"),
    ("header_size", "H"),
    ("entry_size", "H"),
    ("count", "H"),
    ("default_handling", "B"),
    ("step_mechanism", "B"),
    ("step_if", "B"),
    ("emu_flags", "B"),
    ("fault_fixup", "B"),
    ("patch_len", "B"),  # bytes the probe writes at the patchpoint (0/1: int3 only; 5: jmp rel32, FBT115)
    ("reserved0", "2s"),
    ("step_fixups", "I"),
    ("reserved1", "I"),
    ("name", "32s"),
)

# struct fbt_emu_entry
ENTRY_FIELDS = (
    ("prefix", "3s"),
    ("rex_mask", "B"),
    ("rex_value", "B"),
    ("opcode", "3s"),
    ("opcode_len", "B"),
    ("opcode_mask", "B"),
    ("modrm_mask", "B"),
    ("modrm_value", "B"),
    ("target", "B"),
    ("handling", "B"),
    ("match_flags", "B"),
    ("reserved", "B"),
    ("fixups", "I"),
    ("mnemonic", "12s"),
)

HEADER_STRUCT = struct.Struct("<" + "".join(code for _, code in HEADER_FIELDS))
ENTRY_STRUCT = struct.Struct("<" + "".join(code for _, code in ENTRY_FIELDS))
HEADER_SIZE = HEADER_STRUCT.size  # 64
ENTRY_SIZE = ENTRY_STRUCT.size  # 32


def offsets(fields) -> dict[str, int]:
    """Field offsets of a descriptor, for the sizeof/offsetof sync test against the C header."""
    out, off = {}, 0
    for name, code in fields:
        out[name] = off
        off += struct.calcsize("<" + code)
    return out


def target_class(name: str | None) -> Target:
    if name is None:
        return Target.ANY
    if name in ("__fentry__", "mcount", "__mcount"):
        return Target.FENTRY
    if name == "__x86_return_thunk":
        return Target.RETURN_THUNK
    if name.startswith("__x86_indirect_thunk_"):
        return Target.INDIRECT_THUNK
    return Target.ANY
