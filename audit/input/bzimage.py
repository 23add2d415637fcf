"""bzimage.py: find and decompress the vmlinux ELF inside an x86 bzImage (vmlinuz), bounded by its setup header."""

from __future__ import annotations

import bz2
import lzma
import struct
import zlib

from fbt_audit.model.errors import InputError

# x86 boot protocol (Documentation/arch/x86/boot.rst): offsets into the real-mode setup header.
_SETUP_SECTS = 0x1F1
_BOOT_FLAG = 0x1FE  # 0xAA55
_HEADER = 0x202  # b"HdrS"
_VERSION = 0x206
_PAYLOAD_OFFSET = 0x248  # protocol 2.08+, relative to the protected-mode code
_PAYLOAD_LENGTH = 0x24C
_INIT_SIZE = 0x260  # protocol 2.10+: the memory the kernel needs from its load address
_HEADER_END = 0x264

CAP = 1 << 30  # never inflate more than 1 GiB, whatever the header says
_STEP = 16 << 20  # most output produced by one decompressor call

LZ4_LEGACY_MAGIC = 0x184C2102
LZ4_LEGACY_BLOCK = 8 << 20  # each legacy block inflates to at most 8 MiB
_LZ4_BOUND = LZ4_LEGACY_BLOCK + LZ4_LEGACY_BLOCK // 255 + 16  # LZ4_compressBound(8 MiB)
_ZSTD_RATIO = 1 << 15  # a zstd block yields at most 128 KiB from at least 4 input bytes
_ZSTD_BLOCK = 128 << 10
_LZMA_MEMLIMIT = 1 << 28  # the kernel's xz/lzma dictionaries are 32-64 MiB


def is_bzimage(head: bytes) -> bool:
    """True when head (the file's first bytes, at least 0x206 of them) carries an x86 boot setup header."""
    if len(head) < _VERSION:
        return False
    return head[_HEADER:_VERSION] == b"HdrS" and head[_BOOT_FLAG : _BOOT_FLAG + 2] == b"\x55\xaa"


def extract(data, name: str) -> bytes:
    """The decompressed payload (an ELF vmlinux, maybe followed by relocations) of the bzImage `data`.

    Raises InputError, one line naming `name`, for a truncated or old header, an unknown compression,
    a corrupt or truncated stream, a payload larger than the header's init_size (or 1 GiB), or a
    payload that is not ELF."""
    if len(data) < _HEADER_END or not is_bzimage(bytes(data[:_VERSION])):
        raise InputError(f"{name}: not a bzImage, or its setup header is truncated ({len(data)} bytes)")
    version = struct.unpack_from("<H", data, _VERSION)[0]
    if version < 0x208:
        raise InputError(
            f"{name}: boot protocol {version >> 8}.{version & 0xFF:02d} is older than 2.08 and has no payload_offset"
        )
    setup_sects = data[_SETUP_SECTS] or 4
    offset, length = struct.unpack_from("<II", data, _PAYLOAD_OFFSET)
    start = (setup_sects + 1) * 512 + offset
    if length == 0 or start + length > len(data):
        raise InputError(
            f"{name}: bzImage payload at {start:#x}+{length:#x} runs past the end of the file ({len(data):#x} bytes)"
        )
    init_size = struct.unpack_from("<I", data, _INIT_SIZE)[0] if version >= 0x20A else 0
    cap = min(init_size, CAP) if init_size else CAP
    payload = memoryview(data)[start : start + length]
    kind = compression(payload)
    if kind is None:
        raise InputError(f"{name}: bzImage payload has an unknown compression (magic {bytes(payload[:6]).hex()})")
    try:
        out = _DECOMPRESS[kind](payload, cap, name)
    except InputError:
        raise
    except Exception as e:  # zlib.error, LZMAError, OSError (bz2), ZstdError, LZ4BlockError, MemoryError ...
        raise InputError(f"{name}: corrupt {kind} payload: {_one_line(e)}") from None
    if out[:4] != b"\x7fELF":
        raise InputError(f"{name}: the decompressed {kind} payload is not an ELF vmlinux (starts {out[:4].hex()})")
    return out


def compression(payload) -> str | None:
    """The compression of a bzImage payload by its magic, as scripts/extract-vmlinux tells them apart."""
    head = bytes(payload[:16])
    if head[:3] == b"\x1f\x8b\x08":
        return "gzip"
    if head[:6] == b"\xfd7zXZ\x00":
        return "xz"
    if head[:4] == b"\x28\xb5\x2f\xfd":
        return "zstd"
    if head[:4] == struct.pack("<I", LZ4_LEGACY_MAGIC):
        return "lz4"
    if head[:3] == b"BZh" and head[3:4].isdigit() and head[3:4] != b"0":
        return "bzip2"
    if len(head) >= 13 and head[0] == 0x5D and _sane_dict(struct.unpack_from("<I", head, 1)[0]):
        return "lzma"
    if head[:4] == b"\x7fELF":
        return "none"  # CONFIG_KERNEL_UNCOMPRESSED
    return None


def _sane_dict(size: int) -> bool:
    """An lzma-alone header's dictionary size as the lzma tool writes it: 2^n or 2^n + 2^(n-1), 4 KiB..1.5 GiB."""
    return any(size in (1 << n, 3 << (n - 1)) for n in range(12, 31))


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text[:200]


def _past_cap(name: str, kind: str, cap: int) -> InputError:
    return InputError(f"{name}: the {kind} payload inflates past {cap:#x} bytes (the setup header's bound); refused")


def _truncated(name: str, kind: str) -> InputError:
    return InputError(f"{name}: corrupt {kind} payload: the stream ends before its end marker")


def _stdlib(kind: str, make):
    """Inflate with a stdlib decompressor object that honours max_length (zlib, lzma, bz2)."""

    def run(payload, cap: int, name: str) -> bytes:
        d = make()
        out = bytearray()
        pending = bytes(payload)
        while True:
            want = min(cap + 1 - len(out), _STEP)
            chunk = d.decompress(pending, max_length=want)
            out += chunk
            if len(out) > cap:
                raise _past_cap(name, kind, cap)
            if d.eof:
                return bytes(out)
            # zlib hands back what it did not read; lzma and bz2 keep it, and are fed b"" to go on.
            pending = getattr(d, "unconsumed_tail", b"")
            if len(chunk) < want and not pending:
                raise _truncated(name, kind)

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


def _zstd(payload, cap: int, name: str) -> bytes:
    """zstd through `zstandard`: its decompressobj has no max_length, so it is fed input in pieces
    small enough that one call cannot inflate past the cap (at most 128 KiB per 4 input bytes)."""
    import zstandard

    d = zstandard.ZstdDecompressor().decompressobj()
    out = bytearray()
    pos, end = 0, len(payload)
    while not d.eof:
        if pos >= end:
            raise _truncated(name, "zstd")
        room = cap - len(out)
        step = max(16, min(1 << 16, room // _ZSTD_RATIO))
        out += d.decompress(payload[pos : pos + step])
        pos += step
        if len(out) > cap:
            raise _past_cap(name, "zstd", cap)
    return bytes(out)


def _lz4(payload, cap: int, name: str) -> bytes:
    """The kernel's lz4 *legacy* frames (lz4 -l): magic, then blocks of u32 length + lz4 block, each
    inflating to at most 8 MiB; a repeated magic starts a new frame. The boot decompressor drops the
    4-byte size the build appends (lib/decompress_unlz4.c: in_len - 4), so 4 trailing bytes end it."""
    import lz4.block

    out = bytearray()
    pos, end = 4, len(payload)
    while end - pos >= 4:
        if end - pos == 4 and pos > 4:
            break  # the appended uncompressed size
        size = struct.unpack_from("<I", payload, pos)[0]
        pos += 4
        if size == LZ4_LEGACY_MAGIC:
            continue
        if size == 0 or size > _LZ4_BOUND or pos + size > end:
            raise InputError(f"{name}: corrupt lz4 payload: block of {size:#x} bytes at {pos - 4:#x} is out of bounds")
        out += lz4.block.decompress(payload[pos : pos + size], uncompressed_size=LZ4_LEGACY_BLOCK)
        pos += size
        if len(out) > cap:
            raise _past_cap(name, "lz4", cap)
    if not out:
        raise _truncated(name, "lz4")
    return bytes(out)


def _none(payload, cap: int, name: str) -> bytes:
    if len(payload) > cap:
        raise _past_cap(name, "uncompressed", cap)
    return bytes(payload)


_DECOMPRESS = {
    "gzip": _stdlib("gzip", _Zlib),
    "xz": _stdlib("xz", lambda: lzma.LZMADecompressor(format=lzma.FORMAT_XZ, memlimit=_LZMA_MEMLIMIT)),
    "lzma": _stdlib("lzma", lambda: lzma.LZMADecompressor(format=lzma.FORMAT_ALONE, memlimit=_LZMA_MEMLIMIT)),
    "bzip2": _stdlib("bzip2", bz2.BZ2Decompressor),
    "zstd": _zstd,
    "lz4": _lz4,
    "none": _none,
}
