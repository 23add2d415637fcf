"""helpers_kmod.py: build kmod/'s engine and a native runner as userspace libraries, and drive both through ctypes."""

from __future__ import annotations

import ctypes
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KMOD = ROOT / "kmod"
CSRC = Path(__file__).resolve().parent / "c"
ENGINE_SOURCES = (KMOD / "fbt_engine.c", KMOD / "fbt_listing.c", CSRC / "fbt_shim.c")

# RFLAGS bits (kmod/fbt_engine.h)
CF, PF, AF, ZF, SF, TF, IF, DF, OF = 0x1, 0x4, 0x10, 0x40, 0x80, 0x100, 0x200, 0x400, 0x800
FIXED, IOPL, NT, RF, VM, AC, VIF, VIP, ID = 0x2, 0x3000, 0x4000, 0x10000, 0x20000, 0x40000, 0x80000, 0x100000, 0x200000
ARITH = (CF, PF, AF, ZF, SF, OF)
# What user mode can observe of RFLAGS after a trap (RF, VM, VIF and VIP it cannot).
USER_FLAGS = CF | PF | AF | ZF | SF | TF | IF | DF | OF | IOPL | NT | AC | ID
RSP = 4
GPR_NAMES = ("rax rcx rdx rbx rsp rbp rsi rdi r8 r9 r10 r11 r12 r13 r14 r15").split()
MASK64 = (1 << 64) - 1

# Engine errors and step results (fbt_engine.h)
ENOTSUPP, ERANGE, EESCAPED = -2, -3, -4
STEP_DONE, STEP_AGAIN = 0, 1
SI_KERNEL, TRAP_TRACE = 0x80, 2


def build(out: Path, name: str, sources, *flags: str) -> Path:
    """Compile C sources into out/<name>.so (never into the tree)."""
    out.mkdir(parents=True, exist_ok=True)
    so = out / f"{name}.so"
    cmd = ["gcc", "-O2", "-g", "-Wall", "-Wextra", "-Werror", "-U_FORTIFY_SOURCE", "-fPIC", "-shared"]
    cmd += ["-I", str(KMOD), *flags, "-o", str(so), *map(str, sources)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return so


def build_engine(out: Path, *defines: str) -> Path:
    name = "libfbt_engine" + "".join("_" + d.lower() for d in defines)
    return build(out, name, ENGINE_SOURCES, *(f"-D{d}" for d in defines))


def build_native(out: Path) -> Path:
    return build(out, "libfbt_native", [CSRC / "fbt_native.c"])


class Regs(ctypes.Structure):
    """struct fbt_regs"""

    _fields_ = [("gpr", ctypes.c_uint64 * 16), ("ip", ctypes.c_uint64), ("flags", ctypes.c_uint64),
                ("cs", ctypes.c_uint64)]  # fmt: skip

    def copy(self) -> Regs:
        return Regs.from_buffer_copy(self)

    def key(self) -> tuple:
        return (*self.gpr, self.ip, self.flags & USER_FLAGS, self.cs)

    def diff(self, other: Regs) -> list[str]:
        pairs = enumerate(zip(self.gpr, other.gpr, strict=True))
        out = [f"{GPR_NAMES[i]} {a:#x} != {b:#x}" for i, (a, b) in pairs if a != b]
        if self.ip != other.ip:
            out.append(f"ip {self.ip:#x} != {other.ip:#x}")
        if (self.flags ^ other.flags) & USER_FLAGS:
            out.append(f"flags {self.flags & USER_FLAGS:#x} != {other.flags & USER_FLAGS:#x}")
        if self.cs != other.cs:
            out.append(f"cs {self.cs:#x} != {other.cs:#x}")
        return out


class Decoded(ctypes.Structure):
    """struct shim_decoded (tests/c/fbt_shim.c)"""

    _fields_ = [(n, ctypes.c_int) for n in
                "len modrm_off disp_off disp_len imm_off imm_len map op rex vex nprefix opcode_len".split()] + [
        ("prefix", ctypes.c_ubyte * 16), ("opcode", ctypes.c_ubyte * 4)]  # fmt: skip


def _buf(b: bytes):
    return ctypes.create_string_buffer(bytes(b), max(len(b), 1))


class Engine:
    """kmod/fbt_engine.c built for userspace, with the test shim."""

    def __init__(self, path: Path):
        lib = self.lib = ctypes.CDLL(str(path))
        u64p = ctypes.POINTER(ctypes.c_uint64)
        lib.shim_decode.argtypes = [ctypes.c_char_p, ctypes.c_uint, ctypes.POINTER(Decoded)]
        lib.shim_table_check.argtypes = [ctypes.c_char_p, ctypes.c_ulong]
        lib.shim_lookup.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_uint, ctypes.c_int,
                                    ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_uint)]  # fmt: skip
        lib.shim_emulate.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_uint, ctypes.c_int,
                                     ctypes.POINTER(Regs), u64p]  # fmt: skip
        lib.shim_step_size.restype = ctypes.c_uint
        lib.shim_step_prepare.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_uint, ctypes.c_uint,
                                          ctypes.c_uint64, ctypes.c_uint64, ctypes.c_void_p, ctypes.c_char_p,
                                          ctypes.POINTER(ctypes.c_int)]  # fmt: skip
        lib.shim_step_begin.argtypes = [ctypes.c_void_p, ctypes.POINTER(Regs)]
        lib.shim_step_end.argtypes = [ctypes.c_void_p, ctypes.POINTER(Regs)]
        lib.shim_format.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
                                    ctypes.c_ulong]  # fmt: skip
        lib.shim_format.restype = ctypes.c_ulong
        self.step_size = lib.shim_step_size()

    def decode(self, code: bytes) -> Decoded | None:
        d = Decoded()
        return d if self.lib.shim_decode(bytes(code), len(code), ctypes.byref(d)) > 0 else None

    def table_check(self, raw: bytes) -> int:
        return self.lib.shim_table_check(raw, len(raw))

    def lookup(self, raw: bytes, code: bytes, tclass: int = 0) -> tuple[int, int, int]:
        """(entry index or -1, handling, fixups) as the module takes them; index < -1: undecodable."""
        h, fx = ctypes.c_int(), ctypes.c_uint()
        idx = self.lib.shim_lookup(raw, bytes(code), len(code), tclass, ctypes.byref(h), ctypes.byref(fx))
        return idx, h.value, fx.value

    def emulate(self, raw: bytes, code: bytes, regs: Regs, live: int, tclass: int = 0) -> tuple[int, int]:
        lv = ctypes.c_uint64(live)
        rc = self.lib.shim_emulate(raw, bytes(code), len(code), tclass, ctypes.byref(regs), ctypes.byref(lv))
        return rc, lv.value

    def step_prepare(self, raw: bytes, code: bytes, fixups: int, orig: int, slot: int):
        """(rc, state buffer, copy bytes)"""
        st = ctypes.create_string_buffer(self.step_size)
        copy = ctypes.create_string_buffer(32)
        n = ctypes.c_int()
        rc = self.lib.shim_step_prepare(raw, bytes(code), len(code), fixups, orig, slot, st, copy, ctypes.byref(n))
        return rc, st, copy.raw[: n.value]

    def step_begin(self, st, regs: Regs) -> None:
        self.lib.shim_step_begin(st, ctypes.byref(regs))

    def step_end(self, st, regs: Regs) -> int:
        return self.lib.shim_step_end(st, ctypes.byref(regs))

    def format(self, raw: bytes, source: str, sha256: str) -> str:
        n = self.lib.shim_format(raw, source.encode(), sha256.encode(), None, 0)
        buf = ctypes.create_string_buffer(n + 1)
        self.lib.shim_format(raw, source.encode(), sha256.encode(), buf, n + 1)
        return buf.value.decode("ascii", "replace")


@dataclass
class Stop:
    """Where native code stopped: the registers, the signal, and the IP of the stop."""

    regs: Regs
    sig: int
    code: int

    @property
    def trap(self) -> str:
        if self.sig == signal.SIGTRAP and self.code == SI_KERNEL:
            return "int3"
        if self.sig == signal.SIGTRAP and self.code == TRAP_TRACE:
            return "step"
        return signal.Signals(self.sig).name

    def final(self) -> Regs:
        """The registers with ip at the stop: the int3's own address after an int3."""
        r = self.regs.copy()
        if self.trap == "int3":
            r.ip -= 1
        return r


class Machine:
    """Native execution: a 1 MiB RWX code region full of int3, a 64 KiB stack, both below 2 GiB.

    P is where an instruction under test sits, S where an out-of-line copy runs. Every address
    in the code region that is not an instruction is int3, so whatever a branch targets, the
    CPU stops there and reports where it went."""

    CODE_SIZE = 1 << 20
    STACK_SIZE = 1 << 16
    WINDOW = 256  # stack bytes compared on either side of the initial %rsp

    def __init__(self, path: Path):
        lib = self.lib = ctypes.CDLL(str(path))
        lib.fbt_native_map.restype = ctypes.c_void_p
        lib.fbt_native_map.argtypes = [ctypes.c_size_t, ctypes.c_int]
        lib.fbt_native_cs.restype = ctypes.c_uint64
        lib.fbt_native_run.argtypes = [ctypes.POINTER(Regs), ctypes.POINTER(Regs), ctypes.POINTER(ctypes.c_int)]
        if lib.fbt_native_init() != 0:
            raise OSError("fbt_native_init failed")
        self.code = lib.fbt_native_map(self.CODE_SIZE, 1)
        self.stack = lib.fbt_native_map(self.STACK_SIZE, 0)
        if not self.code or not self.stack:
            raise OSError("cannot map test memory below 2 GiB")
        ctypes.memset(self.code, 0xCC, self.CODE_SIZE)
        self.cs = lib.fbt_native_cs()
        self.P = self.code + self.CODE_SIZE // 2
        self.S = self.P + 0x10000
        self.data = self.code + 0x1000  # pointers that memory-indirect branches read
        self.dirty: list[tuple[int, int]] = []

    # memory ---------------------------------------------------------------------------------
    def put(self, addr: int, b: bytes) -> None:
        ctypes.memmove(addr, bytes(b), len(b))
        if self.code <= addr < self.code + self.CODE_SIZE:
            self.dirty.append((addr, len(b)))

    def get(self, addr: int, n: int) -> bytes:
        return ctypes.string_at(addr, n)

    def clean(self) -> None:
        """Back to int3 wherever code or data was written."""
        for addr, n in self.dirty:
            ctypes.memset(addr, 0xCC, n)
        self.dirty.clear()

    def in_code(self, addr: int) -> bool:
        return self.code <= addr < self.code + self.CODE_SIZE

    # random state ---------------------------------------------------------------------------
    def rsp0(self, rng) -> int:
        return self.stack + self.STACK_SIZE // 2 + 8 * rng.randrange(-256, 256)

    def landing(self, rng) -> int:
        """A random int3 in the code region, away from P, S and the data block."""
        while True:
            a = self.code + rng.randrange(0x10000, self.CODE_SIZE - 0x100)
            if abs(a - self.P) > 64 and abs(a - self.S) > 64:
                return a

    def regs(self, rng, *, flags: int | None = None) -> Regs:
        r = Regs()
        for i in range(16):
            r.gpr[i] = rng.getrandbits(64)
        r.gpr[RSP] = self.rsp0(rng)
        if flags is None:
            flags = FIXED | IF
            for f in (*ARITH, DF, ID):
                if rng.getrandbits(1):
                    flags |= f
        r.flags = flags
        r.ip = self.P
        r.cs = self.cs
        return r

    def window(self, regs: Regs) -> tuple[int, int]:
        return regs.gpr[RSP] - self.WINDOW, 2 * self.WINDOW

    # running --------------------------------------------------------------------------------
    def run(self, regs: Regs) -> Stop:
        out, code = Regs(), ctypes.c_int()
        sig = self.lib.fbt_native_run(ctypes.byref(regs), ctypes.byref(out), ctypes.byref(code))
        return Stop(out, sig, code.value)
