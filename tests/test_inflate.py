"""test_inflate.py: the one bounded decompressor (audit/input/inflate.py): every kind, its cap, and its three errors."""

from __future__ import annotations

import bz2
import lzma
import struct
import zlib

import pytest

from fbt_audit.input.inflate import KINDS, LZ4_LEGACY_MAGIC, Corrupt, PastCap, Truncated, inflate

DATA = bytes(range(256)) * 64 + b"\x7fELF" * 1000  # 20 KiB that compress well, but not to nothing


def _compress(kind: str, data: bytes) -> bytes:
    if kind == "gzip":
        c = zlib.compressobj(9, wbits=31)
        return c.compress(data) + c.flush()
    if kind == "xz":
        return lzma.compress(data, format=lzma.FORMAT_XZ)
    if kind == "lzma":
        return lzma.compress(data, format=lzma.FORMAT_ALONE)
    if kind == "bzip2":
        return bz2.compress(data)
    if kind == "zstd":
        import zstandard

        return zstandard.ZstdCompressor().compress(data)
    if kind == "lz4":  # a legacy frame, as the kernel's lz4 -l writes it, and the appended size
        import lz4.block

        block = lz4.block.compress(data, store_size=False)
        return struct.pack("<II", LZ4_LEGACY_MAGIC, len(block)) + block + struct.pack("<I", len(data))
    return data


@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_at_exactly_the_cap(kind):
    assert inflate(kind, _compress(kind, DATA), len(DATA)) == DATA
    assert inflate(kind, memoryview(_compress(kind, DATA)), len(DATA)) == DATA  # a bzImage's payload view


@pytest.mark.parametrize("kind", KINDS)
def test_one_byte_past_the_cap(kind):
    with pytest.raises(PastCap):
        inflate(kind, _compress(kind, DATA), len(DATA) - 1)


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "none"])
def test_truncated_or_corrupt_never_anything_else(kind):
    """A stream cut anywhere ends in Truncated or Corrupt (the decoder's own error as its cause)."""
    stream = _compress(kind, DATA)
    seen = set()
    for cut in range(0, len(stream), max(1, len(stream) // 40)):
        try:
            out = inflate(kind, stream[:cut], 1 << 20)
        except Truncated:
            seen.add("truncated")
        except Corrupt as e:
            assert isinstance(e.cause, Exception) and str(e) == str(e.cause)
            seen.add("corrupt")
        else:
            assert kind == "lz4" and out != DATA  # lz4 legacy frames have no end marker
    assert seen


def test_lz4_block_out_of_bounds_names_it():
    stream = struct.pack("<II", LZ4_LEGACY_MAGIC, 0x7FFFFFFF) + bytes(16)
    with pytest.raises(Corrupt, match=r"block of 0x7fffffff bytes at 0x4 is out of bounds"):
        inflate("lz4", stream, 1 << 20)


def test_xz_dictionary_past_the_memory_limit_is_corrupt():
    """A header asking liblzma for a 3 GiB dictionary: refused by its memlimit (LZMAError), never allocated."""
    x = bytearray(lzma.compress(DATA, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32,
                                filters=[{"id": lzma.FILTER_LZMA2, "dict_size": 4096}]))  # fmt: skip
    size = (x[12] + 1) * 4
    hdr = x[12 : 12 + size]
    hdr[hdr.index(b"\x21\x01", 2) + 2] = 39  # the LZMA2 dictionary size: 3 GiB
    struct.pack_into("<I", hdr, size - 4, zlib.crc32(bytes(hdr[: size - 4])))
    x[12 : 12 + size] = hdr
    with pytest.raises(Corrupt) as e:
        inflate("xz", bytes(x), 1 << 20)
    assert isinstance(e.value.cause, lzma.LZMAError) and "Memory" in str(e.value)
