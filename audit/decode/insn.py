"""decode.py: x86-64 bytes -> arch-neutral Insn; the only module that imports capstone."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import NamedTuple

from fbt_audit.model.core import IC, Insn

LEGACY_PREFIXES = frozenset(b"\xf0\xf2\xf3\x2e\x36\x3e\x26\x64\x65\x66\x67")
# One-byte opcodes that are invalid in 64-bit mode (Intel SDM Vol. 2, Appendix A, "i64").
INVALID_64 = frozenset(b"\x06\x07\x0e\x16\x17\x1e\x1f\x27\x2f\x37\x3f\x60\x61\x82\x9a\xce\xd4\xd5\xd6\xea")
STRING_OPS = frozenset(b"\x6c\x6d\x6e\x6f\xa4\xa5\xa6\xa7\xaa\xab\xac\xad\xae\xaf")
# 0f 01 ModRM forms that only ring 0 or a hypervisor may run, and that a step must not replay.
PRIV_0F01 = {
    0xC1: "vmcall",
    0xC2: "vmlaunch",
    0xC3: "vmresume",
    0xC4: "vmxoff",
    0xC8: "monitor",
    0xC9: "mwait",
    0xD8: "vmrun",
    0xF8: "swapgs",
    0xFA: "monitorx",
    0xFB: "mwaitx",
}
MAX_INSN = 15
_ic = IC

_CS: dict[str, object] = {}  # capstone's decoders, made on first use (_capstone)


class _LiteError(Exception):
    """cs_disasm's error through _LiteCs (capstone's CsError through the package)."""


class _LiteCs:
    """capstone's x86-64 decoder without detail, called in libcapstone itself (the library the capstone package
    ships and loads): the package's import builds every architecture's ctypes structures and constants (~86M
    instructions, a quarter of an entry audit's decoding), and disasm_lite needs none of them. By hand, as the
    package has no way to load its library alone; the same cs_disasm call and answer as its Cs.disasm_lite."""

    def __init__(self, lib, att: bool) -> None:
        import ctypes

        self.lib, self.ctypes = lib, ctypes
        self.csh = ctypes.c_size_t()
        if lib.cs_open(3, 8, ctypes.byref(self.csh)):  # CS_ARCH_X86, CS_MODE_64
            raise _LiteError("cs_open")
        if att and lib.cs_option(self.csh, 1, 2):  # CS_OPT_SYNTAX, CS_OPT_SYNTAX_ATT
            raise _LiteError("cs_option")

    def disasm_lite(self, code: bytes, offset: int, count: int = 0) -> Iterator[tuple[int, int, str, str]]:
        """(address, size, mnemonic, operands) of each instruction decoded, as capstone's Cs.disasm_lite."""
        ctypes, lib = self.ctypes, self.lib
        insns = ctypes.POINTER(_lite_insn())()
        code = bytes(code)
        res = lib.cs_disasm(self.csh, code, len(code), offset, count, ctypes.byref(insns))
        if res > 0:
            try:
                for i in range(res):
                    insn = insns[i]
                    yield insn.address, insn.size, insn.mnemonic.decode("ascii"), insn.op_str.decode("ascii")
            finally:
                lib.cs_free(insns, res)
        elif lib.cs_errno(self.csh):
            raise _LiteError(lib.cs_errno(self.csh))


def _lite_insn():
    """capstone's cs_insn (capstone.h, 4.x and 5.x), the detail pointer left opaque."""
    got = _CS.get("insn_type")
    if got is None:
        import ctypes

        class _Insn(ctypes.Structure):
            _fields_ = (("id", ctypes.c_uint), ("address", ctypes.c_uint64), ("size", ctypes.c_uint16),
                        ("bytes", ctypes.c_ubyte * 24), ("mnemonic", ctypes.c_char * 32),
                        ("op_str", ctypes.c_char * 160), ("detail", ctypes.c_void_p))  # fmt: skip

        got = _CS["insn_type"] = _Insn
    return got


def _lite_lib():
    """libcapstone as the capstone package ships it (capstone/lib/), its prototypes set; None when it is not there
    (another layout, LIBCAPSTONE_PATH set, another API version): the package is imported instead."""
    import ctypes
    import os
    from importlib.util import find_spec

    spec = find_spec("capstone")
    where = spec.submodule_search_locations if spec is not None else None
    if not where or os.environ.get("LIBCAPSTONE_PATH") or not sys.platform.startswith("linux"):
        return None
    path = os.path.join(where[0], "lib", "libcapstone.so")
    if not os.path.exists(path):
        return None
    lib = ctypes.CDLL(path, mode=getattr(os, "RTLD_DEEPBIND", 0))
    major, minor = ctypes.c_int(), ctypes.c_int()
    lib.cs_version.restype = ctypes.c_uint
    lib.cs_version(ctypes.byref(major), ctypes.byref(minor))
    if major.value != 5 or minor.value != 0:
        return None
    size_t, ptr = ctypes.c_size_t, ctypes.c_void_p
    for name, res, args in (
        ("cs_open", ctypes.c_int, (ctypes.c_int, ctypes.c_int, ctypes.POINTER(size_t))),
        ("cs_option", ctypes.c_int, (size_t, ctypes.c_int, size_t)),
        ("cs_errno", ctypes.c_int, (size_t,)),
        ("cs_disasm", size_t, (size_t, ctypes.c_char_p, size_t, ctypes.c_uint64, size_t,
                               ctypes.POINTER(ctypes.POINTER(_lite_insn())))),
        ("cs_free", None, (ptr, size_t)),
    ):  # fmt: skip
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, args
    return lib


def _capstone(lite: bool = False):
    """The capstone decoder (lite: without detail, for the linear sweep; its sizes only); the "att" decoder (text
    without detail) and the error classes with it. Without detail both are _LiteCs where the library is found
    alone; the full decoder (detail: the ModRM offset where the length tables do not know it) imports the package."""
    if "att" not in _CS:
        lib = _lite_lib()
        if lib is not None:
            _CS.update(att=_LiteCs(lib, True), lite=_LiteCs(lib, False), error=(_LiteError,))
    md = _CS.get("lite" if lite else "full")
    if md is None:
        from capstone import CS_ARCH_X86, CS_MODE_64, CS_OPT_SYNTAX_ATT, Cs, CsError

        full = Cs(CS_ARCH_X86, CS_MODE_64)
        full.detail = True  # for the ModRM offset
        full.syntax = CS_OPT_SYNTAX_ATT  # kernel developers read AT&T, as objdump prints it
        _CS["full"] = full
        if "att" not in _CS:
            att = Cs(CS_ARCH_X86, CS_MODE_64)
            att.syntax = CS_OPT_SYNTAX_ATT  # text without detail, where the ModRM offset is known (_disasm)
            _CS.update(lite=Cs(CS_ARCH_X86, CS_MODE_64), att=att)  # lite: addresses and sizes
        _CS["error"] = (*_CS.get("error", ()), CsError)
        md = _CS["lite" if lite else "full"]
    return md


def _att():
    """The decoder of text without detail (_LiteCs where it can be: capstone's package is not imported for it)."""
    md = _CS.get("att")
    if md is None:
        _capstone(lite=True)
        md = _CS["att"]
    return md


def split_prefixes(code: bytes) -> tuple[bytes, int, int]:
    """(legacy prefixes, REX byte or 0, offset of the first opcode byte). By hand: it is four lines
    and capstone's prefix[] array drops repeated and ordering information."""
    i = 0
    while i < len(code) and i < MAX_INSN and code[i] in LEGACY_PREFIXES:
        i += 1
    rex = 0
    if i < len(code) and 0x40 <= code[i] <= 0x4F:
        rex = code[i]
        i += 1
    return bytes(code[:i] if not rex else code[: i - 1]), rex, i


def _opcode(code: bytes, i: int) -> bytes:
    if i >= len(code):
        return b""
    if code[i] == 0x0F and i + 1 < len(code):
        if code[i + 1] in (0x38, 0x3A) and i + 2 < len(code):
            return bytes(code[i : i + 3])
        return bytes(code[i : i + 2])
    return bytes(code[i : i + 1])


def invalid(addr: int, code: bytes) -> Insn:
    """The model of bytes that do not decode: one byte, length 0, class INVALID."""
    prefixes, rex, i = split_prefixes(code)
    return Insn(addr, bytes(code[:1]), "(bad)", "", prefixes, rex, _opcode(code, i), -1, IC.INVALID)


def classify(raw: bytes, prefixes: bytes, rex: int, opcode: bytes, modrm_off: int) -> int:
    """Instruction classes from the encoding alone (what rules need, without mnemonics)."""
    c = 0
    op = opcode[0]
    modrm = raw[modrm_off] if modrm_off >= 0 else None
    reg = (modrm >> 3) & 7 if modrm is not None else -1
    mod = modrm >> 6 if modrm is not None else -1
    if modrm is not None and (modrm & 0xC7) == 0x05:
        c |= _ic.RIP_RELATIVE
    if len(opcode) == 1:
        if op == 0x9C:
            c |= _ic.PUSHES_FLAGS | _ic.READS_FLAGS | _ic.STACK
        elif op == 0x9D:
            c |= _ic.WRITES_IF | _ic.WRITES_TF | _ic.STACK
        elif op in (0xFA, 0xFB):
            c |= _ic.WRITES_IF
        elif op == 0xCF:
            c |= _ic.IRET | _ic.WRITES_IF | _ic.WRITES_TF | _ic.FAR_TRANSFER | _ic.STACK
        elif op == 0xE8:
            c |= _ic.REL_CALL | _ic.STACK
        elif op in (0xE9, 0xEB):
            c |= _ic.REL_BRANCH
        elif 0x70 <= op <= 0x7F:
            c |= _ic.REL_BRANCH | _ic.READS_FLAGS
        elif 0xE0 <= op <= 0xE3:
            c |= _ic.REL_BRANCH | (_ic.READS_FLAGS if op < 0xE2 else _ic.NONE)
        elif op in (0xC3, 0xC2):
            c |= _ic.RETURN | _ic.STACK
        elif op in (0xCA, 0xCB):
            c |= _ic.FAR_TRANSFER | _ic.STACK
        elif op in (0xCC, 0xCD, 0xF1):
            c |= _ic.TRAP
        elif op == 0xF4:
            c |= _ic.PRIVILEGED
        elif op == 0x8E and reg == 2:
            c |= _ic.TRAP_SHADOW
        elif op == 0xFF:
            if reg == 2:
                c |= _ic.INDIRECT_CALL | _ic.STACK
            elif reg == 4:
                c |= _ic.INDIRECT_JUMP
            elif reg in (3, 5):
                c |= _ic.FAR_TRANSFER | (_ic.STACK if reg == 3 else _ic.NONE)
            elif reg == 6:
                c |= _ic.STACK
        elif op in STRING_OPS and (0xF2 in prefixes or 0xF3 in prefixes):
            c |= _ic.REP_STRING
        elif 0x50 <= op <= 0x5F or op in (0x68, 0x6A, 0xC8, 0xC9) or (op == 0x8F and reg == 0):
            c |= _ic.STACK
        elif op == 0x90:
            c |= _ic.NOP
        elif op == 0x9F or 0x10 <= op <= 0x1D and op & 7 < 6 or (0x80 <= op <= 0x83 and reg in (2, 3)):
            c |= _ic.READS_FLAGS
    else:
        op2 = opcode[1]
        if op2 == 0x1E and modrm in (0xFA, 0xFB) and 0xF3 in prefixes:
            c |= _ic.ENDBR
        elif op2 == 0x1F:
            c |= _ic.NOP
            if raw == b"\x66\x0f\x1f\x00":
                c |= _ic.ENDBR  # the IBT seal's poison: a sealed ENDBR64
        elif op2 in (0x0B, 0xB9, 0xFF):
            c |= _ic.TRAP
        elif 0x80 <= op2 <= 0x8F:
            c |= _ic.REL_BRANCH | _ic.READS_FLAGS
        elif 0x90 <= op2 <= 0x9F or 0x40 <= op2 <= 0x4F:
            c |= _ic.READS_FLAGS
        elif op2 in (0x07, 0x35, 0x23) or (op2 == 0x01 and modrm in PRIV_0F01):
            c |= _ic.PRIVILEGED
    if modrm is not None and mod == 3 and (modrm & 7) == 4 and not rex & 1:
        c |= _ic.STACK  # register operand %rsp
    return c


_CALL_CLASSES = IC.REL_CALL | IC.STACK
_REL = IC.REL_BRANCH | IC.REL_CALL

# Decoded shapes by instruction bytes. x86 is decoded front to back and an instruction's length is
# known once its last byte is read, so bytes b[:n] that decoded to an n-byte instruction decode the
# same way whatever follows and at any address. A plain relative branch (e9, eb, 7x, 0f 8x) is keyed
# by its opcode alone: its displacement only moves the target, which its text is. Kernel entries
# repeat a few thousand encodings ~50,000 times (push %rbp, NOP padding, endbr64, jmp), and a dict
# probe costs 1/30 of a capstone call. A shape is the Insn fields after addr, with raw and operands
# None for a relative branch (rebuilt from the bytes and the target) and the displacement width last.
_SHAPES: dict[bytes, tuple] = {}
_LENGTHS: list[list[int]] = [[] for _ in range(256)]  # by first byte: the key lengths in _SHAPES, ascending
_MAX_SHAPES = 1 << 16  # a bound for long-running callers; a full cache only stops growing


def _remember(fields: tuple, op_str: str, target: int | None, width: int) -> None:
    raw, prefixes, rex, opcode = fields[0], fields[3], fields[4], fields[5]
    if len(prefixes) + (1 if rex else 0) + len(opcode) > len(raw) or len(_SHAPES) >= _MAX_SHAPES:
        return  # prefixes or opcode read past the instruction: its shape depends on the bytes after it
    if target is None:
        key, shape = raw, (*fields, 0)
    elif prefixes or rex or op_str != hex(target) or len(raw) != len(opcode) + width:
        return  # only plain rel8/rel32 branches whose operand text is their target
    else:
        key, shape = opcode, (None, fields[1], None, *fields[3:], width)
    _SHAPES[key] = shape
    lengths = _LENGTHS[key[0]]
    if len(key) not in lengths:
        lengths.append(len(key))
        lengths.sort()


def _cached(code: bytes, addr: int) -> tuple | None:
    """decode_fields' answer from the shape cache (_SHAPES), or None when it holds none for code."""
    shapes = _SHAPES
    for n in _LENGTHS[code[0]]:
        s = shapes.get(code[:n])
        if s is not None:
            width = s[8]
            if not width:
                return (addr, *s[:8], None)
            end = n + width
            if len(code) < end:
                return None  # a branch cut off by the end of its section: capstone says what it is
            raw = code[:end]
            target = (addr + end + int.from_bytes(raw[n:], "little", signed=True)) & 0xFFFFFFFFFFFFFFFF
            return (addr, raw, s[1], hex(target), *s[3:8], target)
    return None


def shape_key(code: bytes) -> bytes | None:
    """The key under which decode_fields answers for code from its shape cache (the one _cached finds), or None:
    equal keys of an instruction that is not a relative branch give the same fields but the address."""
    shapes = _SHAPES
    for n in _LENGTHS[code[0]]:
        key = code[:n]
        if key in shapes:
            return key
    return None


def decode_fields(code: bytes, addr: int) -> tuple:
    """Decode the first instruction of code at addr into the Insn constructor's positional
    arguments (addr through target), so that a caller adding the target's name builds one Insn."""
    code = bytes(code[:MAX_INSN])
    if not code:
        return _fields(invalid(addr, code))
    if code[0] == 0xE8 and len(code) >= 5:
        # call rel32 starts four in five kernel functions (call __fentry__) and has one fixed
        # encoding in 64-bit mode, so it skips capstone: 20x faster, and the same answer.
        target = (addr + 5 + int.from_bytes(code[1:5], "little", signed=True)) & 0xFFFFFFFFFFFFFFFF
        return (addr, code[:5], "callq", hex(target), b"", 0, b"\xe8", -1, _CALL_CLASSES, target)
    hit = _cached(code, addr)
    if hit is not None:
        return hit
    prefixes, rex, i = split_prefixes(code)
    opcode = _opcode(code, i)
    got = _disasm(code, addr, _modrm_offset(code, prefixes, i))
    if got is None and opcode == b"\x0f\x00" and prefixes == b"\xf2":
        lkgs = _lkgs(code, addr, rex, i)
        if lkgs is not None:
            return lkgs
    if got is None and opcode == b"\x63" and not rex & 8:
        got = _movsxd(code, addr, rex, i)
    if got is None or not opcode or (len(opcode) == 1 and opcode[0] in INVALID_64):
        return _fields(invalid(addr, code))
    raw = code[: got.size]
    mo = got.modrm_offset
    modrm_off = mo if mo > 0 else -1
    classes = classify(raw, prefixes, rex, opcode, modrm_off)
    target = None
    width = 0
    if classes & _REL:
        width = 1 if (len(opcode) == 1 and opcode[0] not in (0xE8, 0xE9)) else 4
        rel = int.from_bytes(raw[-width:], "little", signed=True)
        target = (addr + len(raw) + rel) & 0xFFFFFFFFFFFFFFFF
    fields = (raw, got.mnemonic, got.op_str, prefixes, rex, opcode, modrm_off, classes)
    _remember(fields, got.op_str, target, width)
    return (addr, *fields, target)


def decode_many(codes: list[bytes], addrs: list[int], lengths: list[int]) -> list[tuple]:
    """decode_fields(codes[j], addrs[j]) for each j, where lengths[j] is the length decode/lengths.py's tables
    measured: the instructions those tables also know the ModRM offset of (not a relative branch, whose text is
    its target) are laid end to end and decoded by one capstone call (a call per instruction costs 4x more);
    each must come out at its place and length, else it is decoded on its own, as is every other one. Their
    text is capstone's at another address: the same, as no such instruction prints an address computed from
    its own (tests/test_decode_many.py)."""
    out: list[tuple | None] = [None] * len(codes)
    batch: list[tuple] = []
    for j, (code, n) in enumerate(zip(codes, lengths, strict=True)):
        code = bytes(code[:MAX_INSN])
        if not 0 < n <= len(code) or code[0] == 0xE8:
            continue
        hit = _cached(code, addrs[j])  # decoded before (a module tree's worker meets the same encodings again)
        if hit is not None:
            out[j] = hit
            continue
        prefixes, rex, i = split_prefixes(code)
        opcode = _opcode(code, i)
        if not opcode or (len(opcode) == 1 and opcode[0] in INVALID_64):
            continue
        mo = _modrm_offset(code, prefixes, i)
        if mo is None:
            continue
        raw = code[:n]
        modrm_off = mo if 0 < mo < n else -1
        classes = classify(raw, prefixes, rex, opcode, modrm_off)
        if not classes & _REL:
            batch.append((j, raw, prefixes, rex, opcode, modrm_off, classes))
    if batch:
        _att()
        got = _decode_laid(b"".join(b[1] for b in batch), [len(b[1]) for b in batch])
        for (j, raw, *rest), hit in zip(batch, got, strict=True):
            if hit is not None:
                fields = (raw, hit[0], hit[1], *rest)
                _remember(fields, hit[1], None, 0)
                out[j] = (addrs[j], *fields, None)
    return [f if f is not None else decode_fields(codes[j], addrs[j]) for j, f in enumerate(out)]


def _decode_laid(buf: bytes, sizes: list[int]) -> list[tuple[str, str] | None]:
    """(mnemonic, operands) of each instruction of buf, laid end to end with these sizes; None for one capstone
    does not decode there at that size (the sweep then starts again after it)."""
    md, error = _CS["att"], _CS["error"]
    out: list[tuple[str, str] | None] = []
    at = 0
    while len(out) < len(sizes):
        k = len(out)
        try:
            for a, size, mnem, ops in md.disasm_lite(buf[at:], at):
                if a != at or size != sizes[k]:
                    break
                out.append((mnem, ops))
                at += size
                k += 1
        except error:
            pass
        if len(out) < len(sizes):
            out.append(None)  # undecodable, or another length: decode_fields decodes it on its own
            at += sizes[len(out) - 1]
    return out


def _modrm_offset(code: bytes, prefixes: bytes, i: int) -> int | None:
    """decode/lengths.py's modrm_offset, imported on the first capstone call (it imports numpy); None without it."""
    f = _CS.get("modrm")
    if f is None:
        try:
            from fbt_audit.decode.lengths import modrm_offset as f
        except ImportError:  # numpy < 2: capstone's detail gives every offset

            def f(code: bytes, prefixes: bytes, i: int) -> None:
                return None

        _CS["modrm"] = f
    got = f(code, prefixes, i)
    return got if got is not None else _modrm_by_map(code, prefixes, i)


# The opcodes capstone decodes with a ModRM byte, right after the opcode (cs_x86.modrm_offset; every other one it
# decodes has none), in the one-byte and the 0f map; in the 0f 38 and 0f 3a maps all have one. Measured over every
# opcode, ModRM byte and common prefix (tests/test_decode_lite.py checks them against capstone's detail).
_MODRM_1 = frozenset(bytes.fromhex(
    "00010203 08090a0b 10111213 18191a1b 20212223 28292a2b 30313233 38393a3b 63 69 6b 80 81 83"
    "8485868788898a8b8c8d8e c0 c1 c6 c7 d0d1d2d3 d8d9dadbdcdddedf f6 f7 fe ff"))  # fmt: skip
_NO_MODRM_0F = frozenset(bytes.fromhex(
    "05 06 07 08 09 0b 0e 30 31 32 33 34 35 37 77 8081828384858687 88898a8b8c8d8e8f a0 a1 a2 a8 a9 aa b9"
    "c8c9cacbcccdcecf ff"))  # fmt: skip


def _modrm_by_map(code: bytes, prefixes: bytes, i: int) -> int | None:
    """The ModRM byte's offset (-1: none) of the instruction at code[i] as capstone's detail says it, for the
    opcodes decode/lengths.py's tables leave to capstone (the 0f 01 and control-register forms, x87, VEX, ...):
    the text then comes from capstone without detail, as for the others. None for EVEX, XOP and a VEX form after a
    prefix, and a prefix after the REX byte (capstone's detail says)."""
    if i >= len(code):
        return None
    op = code[i]
    if op in LEGACY_PREFIXES or 0x40 <= op <= 0x4F:  # a prefix after the REX byte (which it voids): capstone's
        return None
    if op in (0xC4, 0xC5):  # VEX: opcode after its 2 or 3 bytes; vzeroupper and vzeroall (77) have no ModRM
        if i or len(code) < i + 4:
            return None
        if op == 0xC5:
            return -1 if code[i + 2] == 0x77 else i + 3
        return -1 if code[i + 1] & 0x1F == 1 and code[i + 3] == 0x77 else i + 4
    if op in (0x62, 0x8F):
        return None
    if op != 0x0F:
        return i + 1 if op in _MODRM_1 else -1
    if i + 1 >= len(code):
        return None
    op2 = code[i + 1]
    if op2 in (0x38, 0x3A):
        return i + 3
    return -1 if op2 in _NO_MODRM_0F else i + 2


def _disasm(code: bytes, addr: int, mo: int | None):
    """capstone's first instruction of code (None if it decodes none): without detail when the ModRM offset mo is
    known from the length tables (decode/lengths.py), as a _Decoded; else capstone's own, with detail."""
    try:
        if mo is not None:
            got = next(_att().disasm_lite(code, addr, 1), None)
            return None if got is None else _Decoded(got[1], got[2], got[3], mo if mo < got[1] else -1)
        return next(_capstone().disasm(code, addr, 1), None)
    except _CS["error"]:
        return None


_REG16 = ("ax", "cx", "dx", "bx", "sp", "bp", "si", "di", "r8w", "r9w", "r10w", "r11w", "r12w", "r13w", "r14w", "r15w")


def _lkgs(code: bytes, addr: int, rex: int, i: int) -> tuple | None:
    """LKGS r16 (f2 0f 00 /6, register form), which 6.12 runs in native_lkgs: newer than capstone 5
    and binutils 2.40, so it is decoded by hand here; its memory forms stay undecodable."""
    if len(code) < i + 3 or code[i + 2] & 0xF8 != 0xF0:
        return None
    rm = (code[i + 2] & 7) | (8 if rex & 1 else 0)
    name = _REG16[rm]
    raw = bytes(code[: i + 3])
    prefixes = raw[:1]
    return (addr, raw, "lkgs", "%" + name, prefixes, rex, b"\x0f\x00", i + 2, 0, None)


class _Decoded(NamedTuple):
    """The fields of a capstone instruction that decode_fields reads, for the forms decoded around it."""

    size: int
    mnemonic: str
    op_str: str
    modrm_offset: int


_REG64 = ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", *(f"r{n}" for n in range(8, 16)))
_REG32 = ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi", *(f"r{n}d" for n in range(8, 16)))
_NARROW = {4: dict(zip(_REG64, _REG32, strict=True)), 2: dict(zip(_REG64, _REG16, strict=True))}


def _movsxd(code: bytes, addr: int, rex: int, i: int) -> _Decoded | None:
    """MOVSXD r32/r16, r/m32 (63 /r without REX.W), which capstone 5.0.6 (the one angr pins) does not decode
    while 5.0.7+ does (as movslq). Decoded by capstone itself with REX.W set: the length and the source operand
    are the same; only the destination narrows. So both capstones give one answer (tests/test_xlen.py)."""
    if rex:
        wide = code[: i - 1] + bytes([rex | 8]) + code[i:]
        shift = 0
    else:
        wide = code[:i] + b"\x48" + code[i:]
        shift = 1
    got = next(_capstone().disasm(wide[: MAX_INSN + shift], addr, 1), None)
    if got is None or got.size - shift > MAX_INSN:
        return None
    src, sep, dst = got.op_str.rpartition(", %")
    width = 2 if 0x66 in code[: i - (1 if rex else 0)] else 4
    narrow = _NARROW[width].get(dst)
    if not sep or narrow is None:
        return None
    return _Decoded(got.size - shift, got.mnemonic, f"{src}, %{narrow}", got.modrm_offset - shift)


def movsxd_length(code: bytes) -> int:
    """The length of a MOVSXD without REX.W at the start of code (capstone 5.0.6's gap), else 0."""
    prefixes, rex, i = split_prefixes(code)
    if i >= len(code) or code[i] != 0x63 or rex & 8:
        return 0
    got = _movsxd(bytes(code[:MAX_INSN]), 0, rex, i)
    return got.size if got is not None else 0


def _fields(insn: Insn) -> tuple:
    i = insn
    return (i.addr, i.raw, i.mnemonic, i.operands, i.prefixes, i.rex, i.opcode, i.modrm_off, i.classes, i.target)


def decode(code: bytes, addr: int) -> Insn:
    """Decode the first instruction of code at addr. Never raises: bad bytes give an INVALID Insn."""
    return Insn(*decode_fields(code, addr))



def insn_length(code: bytes) -> int:
    """The length of the first instruction of code as the sweep sees it: 0 when it does not decode."""
    for _a, size, _m, _o in _capstone(lite=True).disasm_lite(code, 0, 1):
        return size
    return movsxd_length(code)


def sweep(code: bytes, addr: int) -> Iterator[tuple[int, int]]:
    """(address, size) of each instruction of a linear decode of code at addr. Bytes that do not
    decode are skipped one at a time (a size-0 marker is yielded for each), so the sweep reaches the
    end; callers start a new sweep at each symbol, which keeps it in sync with symbol boundaries."""
    at, end = 0, len(code)
    md = _capstone(lite=True)
    while at < end:
        last = at
        for a, size, _m, _o in md.disasm_lite(code[at:], addr + at):
            yield a, size
            last = a - addr + size
        if last >= end:
            return
        size = movsxd_length(code[last : last + MAX_INSN])
        yield addr + last, size
        at = last + (size or 1)
