"""test_decode_many.py: decode.insn.decode_many (one capstone call for many instructions) answers as decode_fields."""

from __future__ import annotations

import random

import numpy as np
import pytest

from fbt_audit.decode import insn as dec
from fbt_audit.decode import lengths as xlen

from .test_xlen import _insn

RIP = [b"\x48\x8b\x05", b"\x48\x8d\x0d", b"\xff\x25", b"\xff\x15", b"\x0f\x1f\x05", b"\x66\x0f\x6f\x05", b"\x8b\x1d"]


def _codes(rng: random.Random, count: int) -> list[bytes]:
    """Random instructions (test_xlen's mix: prefixes, REX, 0f maps, int3 runs, invalid opcodes) and RIP-relative
    ones, each with 15 bytes after it, as an entry's bytes are read."""
    out = []
    for _ in range(count):
        head = rng.choice(RIP) if rng.random() < 0.2 else _insn(rng)
        out.append((head + bytes(rng.randrange(256) for _ in range(15)))[: dec.MAX_INSN])
    return out


def _fresh() -> None:
    dec._SHAPES.clear()
    for lengths in dec._LENGTHS:
        lengths.clear()


@pytest.mark.parametrize("seed", range(3))
def test_decode_many_is_decode_fields(seed):
    """At addresses far apart (the batch decodes them elsewhere), with the tables' lengths and with lengths off by
    one (those are decoded on their own): every field as decode_fields gives it, its shape cache empty."""
    rng = random.Random(seed)
    codes = _codes(rng, 3000)
    addrs = [rng.randrange(1 << 64) for _ in codes]
    words = np.array([int.from_bytes(c[:8].ljust(8, b"\0"), "little") for c in codes], dtype=np.uint64)
    avail = np.array([len(c) for c in codes], dtype=np.int64)
    n, bad = xlen.lengths_at(words, avail, lambda i, end: dec.insn_length(codes[i][: end - i]))
    lengths = [int(x) if not b else 0 for x, b in zip(n.tolist(), bad.tolist(), strict=True)]
    if seed == 2:
        lengths = [x + rng.choice((-1, 0, 1)) for x in lengths]
    _fresh()
    want = [dec.decode_fields(c, a) for c, a in zip(codes, addrs, strict=True)]
    _fresh()
    got = dec.decode_many(codes, addrs, lengths)
    assert got == want
    assert dec.decode_many(codes, addrs, lengths) == want  # again: from the shape cache where it holds them
    assert sum(1 for f in got if f[1] and not f[8] & (dec.IC.INVALID | dec._REL)) > 1000  # most went through the batch


def test_unique_rows_is_np_unique():
    """patchpoints.entry._unique_rows (the entry groups' distinct encodings) gives np.unique(axis=0)'s index and
    inverse: the same groups in the same order, so the same shape ids."""
    from fbt_audit.patchpoints.entry import _unique_rows

    rng = np.random.default_rng(0)
    for n in (0, 1, 2, 7, 500, 3000):
        keys = rng.integers(0, 4, size=(n, 3)).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        keys[: n // 2, 1] |= np.uint64(1 << 63)
        _u, first, inv = np.unique(keys, axis=0, return_index=True, return_inverse=True)
        got_first, got_inv = _unique_rows(keys)
        assert got_first.tolist() == first.tolist() and got_inv.tolist() == inv.reshape(-1).tolist()
