"""test_decode_lite.py: decode.insn without the capstone package's import: libcapstone called alone (_LiteCs) and
the ModRM offsets of the opcodes the length tables leave to capstone (_modrm_by_map) answer as capstone does."""

from __future__ import annotations

import random

import capstone
import pytest

from fbt_audit.decode import insn as dec

from .test_decode_many import _codes, _fresh

PREFIXES = (b"", b"\x66", b"\xf2", b"\xf3", b"\x48", b"\x41", b"\x66\x48", b"\xf3\x48", b"\x65", b"\xf0", b"\x2e")
# What the 6.1 -dbg vmlinux's entries and .cold parts send to capstone's detail without _modrm_by_map.
KERNEL = ["48cf", "0f0117", "0f011f", "0f20c0", "0f01c1", "0f00c8", "0f22d7", "0f22d84889d9", "0f01d9", "0f01f8",
          "c5fa6f07", "410f22d9", "66440fbe06", "f3480fbcc7", "0faee8", "0f01f9", "0f01cb", "0f01ca"]  # fmt: skip


def _detail() -> capstone.Cs:
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    md.detail = True
    md.syntax = capstone.CS_OPT_SYNTAX_ATT
    return md


def _opcodes() -> list[bytes]:
    ops = [bytes([o]) for o in range(256)] + [b"\x0f" + bytes([o]) for o in range(256)]
    ops += [b"\x0f\x38" + bytes([o]) for o in range(256)] + [b"\x0f\x3a" + bytes([o]) for o in range(256)]
    return ops


def test_lite_is_capstones_disasm_lite():
    """The same (address, size, mnemonic, operands) as the package's Cs.disasm_lite, AT&T and Intel, on random code
    and the test mix; and nothing of the package imported for it."""
    if dec._lite_lib() is None:
        pytest.skip("libcapstone not where the package ships it")
    rng = random.Random(3)
    codes = _codes(rng, 400) + [bytes(rng.randrange(256) for _ in range(4000))]
    for att in (True, False):
        ref = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
        if att:
            ref.syntax = capstone.CS_OPT_SYNTAX_ATT
        lite = dec._LiteCs(dec._lite_lib(), att)
        for code in codes:
            addr = rng.randrange(1 << 48)
            assert list(lite.disasm_lite(code, addr)) == list(ref.disasm_lite(code, addr))
            assert list(lite.disasm_lite(code, addr, 1)) == list(ref.disasm_lite(code, addr, 1))
        assert list(lite.disasm_lite(b"", 0)) == [] and list(lite.disasm_lite(b"\x06\x90", 0)) == []


@pytest.mark.parametrize("prefix", PREFIXES)
def test_modrm_by_map_is_capstones_detail(prefix):
    """Every opcode of the one-byte, 0f, 0f 38 and 0f 3a maps with every ModRM byte after the prefix, and VEX forms:
    where _modrm_by_map answers, capstone's detail gives that ModRM offset (0: none)."""
    md = _detail()
    rng = random.Random(len(prefix) * 7 + sum(prefix))
    tail = bytes(rng.randrange(256) for _ in range(12))
    cases = [prefix + op + bytes([m]) + tail for op in _opcodes() for m in range(0, 256, 3)]
    cases += [bytes([v, rng.randrange(256), rng.randrange(256), rng.randrange(256)]) + tail for v in b"\xc4\xc5"
              for _ in range(3000)] if not prefix else []  # fmt: skip
    answered = 0
    for code in cases:
        code = code[: dec.MAX_INSN]
        got = next(md.disasm(code, 0x1000, 1), None)
        pfx, _rex, i = dec.split_prefixes(code)
        mine = dec._modrm_by_map(code, pfx, i)
        if got is None or mine is None:
            continue
        answered += 1
        assert (mine if mine >= 0 else 0) == got.modrm_offset, code.hex()
    assert answered > 1000


@pytest.mark.parametrize("seed", range(2))
def test_decode_without_detail_is_decode_with_it(seed, monkeypatch):
    """decode_fields and decode_many give every field as they do with capstone's detail for the ModRM offsets the
    tables do not know (_modrm_by_map off)."""
    rng = random.Random(seed)
    codes = [bytes.fromhex(h) + bytes(rng.randrange(256) for _ in range(12)) for h in KERNEL] + _codes(rng, 2000)
    codes = [c[: dec.MAX_INSN] for c in codes]
    addrs = [rng.randrange(1 << 64) for _ in codes]
    lengths = [dec.insn_length(c) for c in codes]
    _fresh()
    got = [dec.decode_fields(c, a) for c, a in zip(codes, addrs, strict=True)]
    _fresh()
    many = dec.decode_many(codes, addrs, lengths)
    monkeypatch.setattr(dec, "_modrm_by_map", lambda code, prefixes, i: None)
    _fresh()
    want = [dec.decode_fields(c, a) for c, a in zip(codes, addrs, strict=True)]
    assert got == want and many == want
    assert all(f[7] >= 0 for f in want[: len(KERNEL) - 1] if f[2] not in ("iretq",))  # their ModRM offsets: known


def test_entry_decode_needs_no_capstone_package():
    """A process that decodes the kernel's encodings (those above) imports no capstone module."""
    import subprocess
    import sys

    code = ("import sys; from fbt_audit.decode import insn as d; "
            f"[d.decode_fields(bytes.fromhex(h) + bytes(12), 0x1000) for h in {KERNEL!r}]; "
            "d.decode_many([bytes.fromhex('0f01f8') + bytes(12)], [0], [3]); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'capstone'))")  # fmt: skip
    if dec._lite_lib() is None:
        pytest.skip("libcapstone not where the package ships it")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "[]"
