"""test_xlen.py: the vectorised sweep (audit/decode/lengths.py) finds exactly capstone's instruction boundaries."""

from __future__ import annotations

import random

import numpy as np
import pytest

from fbt_audit.decode import lengths as xlen
from fbt_audit.decode.insn import insn_length, sweep

# Bytes that steer random code towards what the length tables decide (prefixes, REX, 0f, ModRM
# forms with SIB and displacements, immediates) and towards their edges (int3 runs, invalid opcodes).
PREFIXES = [b"", b"", b"", b"\x66", b"\xf0", b"\xf3", b"\x65", b"\x2e", b"\x66\x66\x2e", b"\xf2", b"\x67", b"\x3e"]
REXES = [b"", b"", b"\x48", b"\x41", b"\x4c", b"\x49", b"\x40"]


def _insn(rng: random.Random) -> bytes:
    op = bytes([rng.randrange(256)])
    if rng.random() < 0.25:
        op = b"\x0f" + bytes([rng.randrange(256)])
    if rng.random() < 0.05:
        return b"\xcc" * rng.randrange(1, 40)
    tail = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 12)))
    return rng.choice(PREFIXES) + rng.choice(REXES) + op + tail


def _reference(code: bytes, chunks: list[tuple[int, int]]) -> tuple[set[int], set[int]]:
    """Instruction starts (int3 left out) and undecodable bytes, by capstone's sweep per chunk."""
    starts, bad = set(), set()
    for lo, hi in chunks:
        for a, size in sweep(code[lo:hi], lo):
            if not size:
                bad.add(a)
            elif code[a] != 0xCC:
                starts.add(a)
    return starts, bad


def _vectorised(code: bytes, chunks: list[tuple[int, int]], hints=None) -> tuple[set[int], set[int]]:
    def slow(off: int, end: int) -> int:
        return insn_length(code[off : min(off + 15, end)])

    lo = np.array([c[0] for c in chunks])
    hi = np.array([c[1] for c in chunks])
    marks, bad = xlen.boundaries(code, lo, hi, slow, hints)
    starts = {int(a) for a in np.flatnonzero(marks == 1) if code[a] != 0xCC}
    return starts, set(bad.tolist())


@pytest.mark.parametrize("seed", range(4))
def test_random_code_same_boundaries_as_capstone(seed, monkeypatch):
    if seed >= 2:
        monkeypatch.setattr(xlen, "TRIM", 8)  # every chunk loses its trailing int3 run
    rng = random.Random(seed)
    code = b"".join(_insn(rng) for _ in range(6000))
    cuts = sorted(rng.sample(range(1, len(code)), 300))
    chunks = [(a, b) for a, b in zip([0, *cuts], [*cuts, len(code)], strict=True) if rng.random() < 0.9]
    hints = np.array(sorted(rng.sample(range(len(code)), 400))) if seed % 2 else None
    assert _vectorised(code, chunks, hints) == _reference(code, chunks)


def test_endbr64_measured_as_capstone_does():
    """f3 0f 1e fa (endbr64, the tables' one f3 0f 1e form: measured without capstone) at chunk starts, after other
    instructions, before int3 padding, cut short by its chunk, and with a REX or a second prefix (capstone's)."""
    endbr = b"\xf3\x0f\x1e\xfa"
    parts = [endbr + b"\xe8\x00\x00\x00\x00", b"\x55" + endbr + b"\xc3", endbr + b"\xcc" * 5, endbr[:3], endbr[:2],
             b"\xf3\x48\x0f\x1e\xfa", b"\x66\xf3\x0f\x1e\xfa", b"\xf3\x0f\x1e\xfb", endbr * 3]
    code, chunks, at = b"", [], 0
    for part in parts:
        code += part + b"\x90"
        chunks.append((at, at + len(part)))
        at += len(part) + 1
    got = _vectorised(code, chunks)
    assert got == _reference(code, chunks)
    assert {0, 4, 10, 11, 15} <= got[0]  # endbr64, call; push, endbr64, ret
    asked = []  # the tables measure a whole endbr64 themselves: capstone is not asked
    xlen.boundaries(endbr * 4, np.array([0]), np.array([16]), lambda off, end: asked.append(off) or 0)
    assert asked == []


def test_every_opcode_and_modrm_form():
    """Each one- and two-byte opcode with each ModRM byte, under the prefixes the tables handle,
    as a chunk of its own followed by fixed bytes (SIB base 5 and 0xff immediates), and cut short."""
    rng = random.Random(7)
    parts, chunks, at = [], [], 0
    for pfx in (b"", b"\x66", b"\x48", b"\xf0", b"\xf3", b"\x65\x48", b"\x66\x48", b"\x2e"):
        for op in [bytes([o]) for o in range(256)] + [b"\x0f" + bytes([o]) for o in range(256)]:
            for modrm in rng.sample(range(256), 12) + [0x04, 0x44, 0x84, 0x05, 0xC0, 0x25, 0x3C]:
                case = pfx + op + bytes([modrm]) + b"\x25\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"
                cut = len(case) if rng.random() < 0.8 else rng.randrange(1, len(case))
                parts.append(case)
                chunks.append((at, at + cut))
                at += len(case)
    code = b"".join(parts)
    assert _vectorised(code, chunks) == _reference(code, chunks)


def test_sample_image_returns_match_capstone_sweep():
    from pathlib import Path

    from fbt_audit.patchpoints.returns import return_patchpoints
    from fbt_audit.pipeline import api

    sample = Path(__file__).resolve().parents[1] / "fixtures" / "sample" / "vmlinux-sample"
    fast, st_fast = return_patchpoints(api.load_kernel(sample))
    slow, st_slow = return_patchpoints(api.load_kernel(sample), vectorised=False)
    assert fast == slow and st_fast == st_slow
