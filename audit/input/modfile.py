"""modfile.py: read a kernel module file: decompress .ko.xz/.ko.zst/.ko.gz and cut off the appended signature."""

from __future__ import annotations

import lzma
import struct
import zlib
from pathlib import Path

from fbt_audit.input.inflate import Corrupt, PastCap, Truncated, inflate
from fbt_audit.model.errors import InputError

# The largest module Debian ships is amdgpu.ko (20 MB in 6.1, 28 MB in 6.12); one built with -g can be
# ten times that. Anything that decompresses past this cap is refused, never allocated.
MAX_MODULE = 512 << 20
SUFFIXES = (".ko", ".ko.xz", ".ko.zst", ".ko.gz")  # what a module tree holds (scripts/Makefile.modinst)
SIG_MAGIC = b"~Module signature appended~\n"  # include/linux/module_signature.h
# struct module_signature: algo, hash, id_type, signer_len, key_id_len, __pad[3], __be32 sig_len
SIG_INFO = struct.Struct(">BBBBB3xI")
PKEY_ID_PKCS7 = 2  # the only id_type the kernel accepts (mod_check_sig)
_MAGICS = {b"\xfd7zXZ\x00": "xz", b"\x28\xb5\x2f\xfd": "zstd", b"\x1f\x8b": "gzip"}
# Kbuild compresses modules with `xz --lzma2=dict=1MiB`; a header asking for a 3 GiB dictionary is refused
# by liblzma ("Memory usage limit was exceeded", inflate.LZMA_MEMLIMIT) instead of being allocated.
_SAID_AS_IS = (lzma.LZMAError, zlib.error, EOFError, ValueError)  # the stdlib's errors; others (ZstdError) are named


def is_module_name(name: str) -> bool:
    """Whether a file name is one a module tree's modules have (`kvm.ko`, `kvm.ko.xz`, ...)."""
    return name.endswith(SUFFIXES)


def compression(head: bytes) -> str | None:
    """'xz', 'zstd' or 'gzip' from a file's first bytes; None for anything else (an ELF .ko)."""
    for magic, kind in _MAGICS.items():
        if head.startswith(magic):
            return kind
    return None


def _bounded(path: Path, kind: str, blob: bytes) -> bytes:
    """Decompress at most MAX_MODULE bytes: a bomb stops at the cap, never allocating far past it."""
    try:
        return inflate(kind, blob, MAX_MODULE)
    except PastCap:
        raise InputError(f"{path}: decompresses to more than {MAX_MODULE >> 20} MiB; refused") from None
    except Truncated:
        raise InputError(f"{path}: truncated {kind} stream") from None
    except Corrupt as c:
        e = c.cause
        said = str(e) if isinstance(e, _SAID_AS_IS) else f"{type(e).__name__}: {e}"
        raise InputError(f"{path}: corrupt {kind} stream ({said})") from None
    except MemoryError:
        raise InputError(f"{path}: {kind} stream needs more memory than is available; refused") from None


def strip_signature(blob: bytes) -> bytes:
    """The module without its appended PKCS#7 signature (scripts/sign-file's layout: module, signature,
    struct module_signature, magic), if it has one the kernel would parse; else the bytes unchanged
    (the ELF reader never looks past the section headers, so a damaged trailer is harmless)."""
    if not blob.endswith(SIG_MAGIC) or len(blob) < len(SIG_MAGIC) + SIG_INFO.size:
        return blob
    end = len(blob) - len(SIG_MAGIC) - SIG_INFO.size
    algo, hash_, id_type, signer_len, key_id_len, sig_len = SIG_INFO.unpack_from(blob, end)
    if id_type != PKEY_ID_PKCS7 or algo or hash_ or signer_len or key_id_len or not 0 < sig_len < end:
        return blob
    return blob[: end - sig_len]


def read(path: Path) -> bytes:
    """A module file's ELF bytes: decompressed if it is xz, zstd or gzip, its signature cut off. The
    signature sits inside the compressed stream (the kernel build signs, then compresses); one
    appended to the compressed file is cut off too."""
    try:
        size = path.stat().st_size
        if size > MAX_MODULE:  # read whole: a sparse 20 GB .ko.xz must not be
            raise InputError(f"{path}: a compressed module of {size} bytes is over the {MAX_MODULE >> 20} MiB cap")
        blob = path.read_bytes()
    except OSError as e:
        raise InputError(f"{path}: {e.strerror or e}") from None
    kind = compression(blob[:8])
    if kind is not None:
        blob = _bounded(path, kind, strip_signature(blob))
    return strip_signature(blob)
