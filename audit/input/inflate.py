"""inflate.py: the one bounded decompressor (gzip, xz, lzma, bzip2, zstd, lz4, none) of vmlinuz payloads and modules."""

from __future__ import annotations

import bz2
import lzma
import struct
import zlib

# Hand-written loops over the stdlib, zstandard and lz4 decoders (no library bounds its output across
# all seven formats): each decoder is driven so that it never produces much past `cap`.
STEP = 16 << 20  # most output produced by one decompressor call
LZ4_LEGACY_MAGIC = 0x184C2102
LZ4_LEGACY_BLOCK = 8 << 20  # each legacy block inflates to at most 8 MiB
_LZ4_BOUND = LZ4_LEGACY_BLOCK + LZ4_LEGACY_BLOCK // 255 + 16  # LZ4_compressBound(8 MiB)
_ZSTD_RATIO = 1 << 15  # a zstd block yields at most 128 KiB from at least 4 input bytes
LZMA_MEMLIMIT = 1 << 28  # the kernel's xz/lzma dictionaries are 32-64 MiB (modules: 1 MiB); 3 GiB is refused
KINDS = ("gzip", "xz", "lzma", "bzip2", "zstd", "lz4", "none")


class InflateError(Exception):
    """A stream that does not inflate within its cap; each caller words it its own way."""


class PastCap(InflateError):
    """The stream inflates to more than `cap` bytes (decoding stopped near the cap)."""


class Truncated(InflateError):
    """The stream ends before its end marker."""


class Corrupt(InflateError):
    """The decoder refused the stream; `cause` is its own exception (zlib.error, LZMAError, ZstdError ...)."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


def inflate(kind: str, blob, cap: int) -> bytes:
    """The decompressed bytes of `blob` (bytes or a memoryview), a stream of `kind` (one of KINDS), when
    they are at most `cap` bytes. Raises PastCap, Truncated or Corrupt; MemoryError is left to the caller."""
    decode = _DECODERS[kind]
    try:
        return decode(blob, cap)
    except _errors(kind) as e:
        raise Corrupt(e) from None


def _errors(kind: str) -> tuple[type[BaseException], ...]:
    """What each decoder raises on a malformed stream (bz2: OSError; liblzma past its memlimit: LZMAError)."""
    base: tuple[type[BaseException], ...] = (zlib.error, lzma.LZMAError, OSError, EOFError, ValueError)
    if kind == "zstd":
        import zstandard

        return (*base, zstandard.ZstdError)
    if kind == "lz4":
        import lz4.block

        return (*base, lz4.block.LZ4BlockError)
    return base


def _stdlib(make):
    """Inflate with a stdlib decompressor object that honours max_length (zlib, lzma, bz2). A stream that ends
    within the first call (a module: STEP is 16 MiB) is returned as the decompressor made it, not copied: the
    input is not copied either (each decompressor reads a bytes-like object), nor the output to a bytearray and back."""

    def run(blob, cap: int) -> bytes:
        d = make()
        want = min(cap + 1, STEP)
        first = d.decompress(blob, max_length=want)
        if len(first) > cap:
            raise PastCap()
        if d.eof:
            return first
        out = bytearray(first)
        chunk = first
        while True:
            # zlib hands back what it did not read; lzma and bz2 keep it, and are fed b"" to go on.
            pending = getattr(d, "unconsumed_tail", b"")
            if len(chunk) < want and not pending:
                raise Truncated()
            want = min(cap + 1 - len(out), STEP)
            chunk = d.decompress(pending, max_length=want)
            out += chunk
            if len(out) > cap:
                raise PastCap()
            if d.eof:
                return bytes(out)

    return run


class _Zlib:
    """zlib.decompressobj for gzip (wbits 31), with the call signature of the lzma and bz2 objects."""

    def __init__(self) -> None:
        self._d = zlib.decompressobj(wbits=31)

    def decompress(self, data: bytes, max_length: int) -> bytes:
        return self._d.decompress(data, max_length)

    @property
    def eof(self) -> bool:
        return self._d.eof

    @property
    def unconsumed_tail(self) -> bytes:
        return self._d.unconsumed_tail


def _zstd(blob, cap: int) -> bytes:
    """zstd through `zstandard`: its decompressobj has no max_length, so it is fed input in pieces
    small enough that one call cannot inflate past the cap (at most 128 KiB per 4 input bytes)."""
    import zstandard

    d = zstandard.ZstdDecompressor().decompressobj()
    out = bytearray()
    pos, end = 0, len(blob)
    while not d.eof:
        if pos >= end:
            raise Truncated()
        room = cap - len(out)
        step = max(16, min(1 << 16, room // _ZSTD_RATIO))
        out += d.decompress(blob[pos : pos + step])
        pos += step
        if len(out) > cap:
            raise PastCap()
    return bytes(out)


def _lz4(blob, cap: int) -> bytes:
    """The kernel's lz4 *legacy* frames (lz4 -l): magic, then blocks of u32 length + lz4 block, each
    inflating to at most 8 MiB; a repeated magic starts a new frame. The boot decompressor drops the
    4-byte size the build appends (lib/decompress_unlz4.c: in_len - 4), so 4 trailing bytes end it."""
    import lz4.block

    out = bytearray()
    pos, end = 4, len(blob)
    while end - pos >= 4:
        if end - pos == 4 and pos > 4:
            break  # the appended uncompressed size
        size = struct.unpack_from("<I", blob, pos)[0]
        pos += 4
        if size == LZ4_LEGACY_MAGIC:
            continue
        if size == 0 or size > _LZ4_BOUND or pos + size > end:
            raise Corrupt(ValueError(f"block of {size:#x} bytes at {pos - 4:#x} is out of bounds"))
        out += lz4.block.decompress(blob[pos : pos + size], uncompressed_size=LZ4_LEGACY_BLOCK)
        pos += size
        if len(out) > cap:
            raise PastCap()
    if not out:
        raise Truncated()
    return bytes(out)


def _none(blob, cap: int) -> bytes:
    if len(blob) > cap:
        raise PastCap()
    return bytes(blob)


_DECODERS = {
    "gzip": _stdlib(_Zlib),
    "xz": _stdlib(lambda: lzma.LZMADecompressor(format=lzma.FORMAT_XZ, memlimit=LZMA_MEMLIMIT)),
    "lzma": _stdlib(lambda: lzma.LZMADecompressor(format=lzma.FORMAT_ALONE, memlimit=LZMA_MEMLIMIT)),
    "bzip2": _stdlib(bz2.BZ2Decompressor),
    "zstd": _zstd,
    "lz4": _lz4,
    "none": _none,
}
