"""bzimage.py: find and decompress the vmlinux ELF inside an x86 bzImage (vmlinuz), bounded by its setup header."""

from __future__ import annotations

import struct

from fbt_audit.input.inflate import LZ4_LEGACY_MAGIC, Corrupt, PastCap, Truncated, inflate
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
        out = inflate(kind, payload, cap)
    except PastCap:
        what = "uncompressed" if kind == "none" else kind
        raise InputError(
            f"{name}: the {what} payload inflates past {cap:#x} bytes (the setup header's bound); refused"
        ) from None
    except Truncated:
        raise InputError(f"{name}: corrupt {kind} payload: the stream ends before its end marker") from None
    except (Corrupt, MemoryError) as e:
        raise InputError(f"{name}: corrupt {kind} payload: {_one_line(getattr(e, 'cause', e))}") from None
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
