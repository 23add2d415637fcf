"""test_movsxd.py: MOVSXD without REX.W decodes the same under capstone 5.0.6 (angr's pin) and 5.0.7+."""

from __future__ import annotations

import pytest

from fbt_audit.decode import insn as dec

# (bytes, text, ModRM offset): what capstone 5.0.7+ prints for them (5.0.6 does not decode them at all)
CASES = [
    ("63c0", "movslq %eax, %eax", 1),
    ("6663c0", "movslq %eax, %ax", 2),
    ("4163c0", "movslq %r8d, %eax", 2),
    ("4463c0", "movslq %eax, %r8d", 2),
    ("664163c0", "movslq %r8d, %ax", 3),
    ("6348c0", "movslq -0x40(%rax), %ecx", 1),
    ("630425aaaaaaaa", "movslq 0xffffffffaaaaaaaa, %eax", 1),
]


@pytest.mark.parametrize(("hexbytes", "text", "modrm"), CASES)
def test_decode_is_the_same_on_every_capstone(hexbytes, text, modrm):
    code = bytes.fromhex(hexbytes)
    i = dec.decode(code + b"\x90", 0x1000)
    assert (i.raw.hex(), i.text, i.modrm_off) == (hexbytes, text, modrm)
    assert dec.insn_length(code + b"\x90") == len(code)
    assert list(dec.sweep(code + b"\x90", 0)) == [(0, len(code)), (len(code), 1)]


@pytest.mark.parametrize(("hexbytes", "text", "modrm"), CASES)
def test_the_hand_path_agrees_with_capstone(hexbytes, text, modrm):
    """The 5.0.6 path (capstone with REX.W set, the destination narrowed) run on any capstone."""
    code = bytes.fromhex(hexbytes)
    _prefixes, rex, i = dec.split_prefixes(code)
    got = dec._movsxd(code, 0x1000, rex, i)
    assert (got.size, f"{got.mnemonic} {got.op_str}", got.modrm_offset) == (len(code), text, modrm)
    assert dec.movsxd_length(code) == len(code)


def test_rex_w_and_other_opcodes_are_not_taken():
    assert dec.movsxd_length(bytes.fromhex("4863c0")) == 0  # REX.W: every capstone decodes it
    assert dec.movsxd_length(bytes.fromhex("90")) == 0
    assert dec.movsxd_length(bytes.fromhex("63")) == 0  # cut off before its ModRM
