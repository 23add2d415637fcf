"""loader.py: open any input fbt-audit reads (vmlinux, vmlinuz, .ko, .ko.xz/.zst/.gz) and pick its symbol source."""

from __future__ import annotations

import mmap
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from fbt_audit.input import elf
from fbt_audit.input.symbols import ExternalSymbols
from fbt_audit.model.errors import InputError
from fbt_audit.model.kernel import Kernel, Section

HEAD = 4096  # enough for the ELF identification and a bzImage setup header


@dataclass(frozen=True)
class SymbolOptions:
    """Where a stripped image's symbols come from, in order of preference after its own .symtab."""

    system_map: Path | None = None  # --system-map FILE
    kallsyms: Path | None = None  # --kallsyms FILE (a /proc/kallsyms dump, KASLR-shifted or not)
    kallsyms_module: str | None = None  # keep this module's symbols of the dump instead of the kernel's


def _head(path: Path) -> tuple[bytes, mmap.mmap | None]:
    """The file's first HEAD bytes and, when they start an ELF, the whole file mapped (opened once: a module
    tree's audit opened each module twice). None when the map fails: elf.load maps it again and says why."""
    try:
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):  # open() on a FIFO waits for a writer forever
            raise InputError(f"{path}: not a regular file (a pipe, socket or device cannot be read as an image)")
        with open(path, "rb") as f:
            head = f.read(HEAD)
            if head[:4] != b"\x7fELF":
                return head, None
            try:
                return head, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            except (OSError, ValueError):
                return head, None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory") from None
    except OSError as e:
        raise InputError(f"{path}: {e.strerror or e}") from None


def _fallback(opts: SymbolOptions, name: str):
    """The function elf.load calls when the ELF has no .symtab: the first source that answers."""

    def symbols(sections: list[Section], data) -> ExternalSymbols | None:
        from fbt_audit.input import symbols as sym

        if opts.system_map is not None:
            return sym.read_system_map(opts.system_map, sections)
        if opts.kallsyms is not None:
            return sym.read_kallsyms(opts.kallsyms, sections, module=opts.kallsyms_module)
        from fbt_audit.input.kallsyms import recover

        return recover(sections, data, name)

    return symbols


def load_input(path: str | Path, opts: SymbolOptions | None = None) -> Kernel:
    """Load one image. A vmlinuz is decompressed in memory; a compressed module is decompressed and its
    appended signature cut off; both then load as the ELF they carry."""
    path = path if isinstance(path, Path) else Path(path)  # Path(a Path) parses it again: ~20 us a module
    opts = opts or SymbolOptions()
    head, mapped = _head(path)
    fallback = _fallback(opts, str(path))
    if head[:4] == b"\x7fELF":
        return elf.load(path, data=mapped, symbols=fallback)
    from fbt_audit.input import bzimage

    if bzimage.is_bzimage(head):
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > bzimage.CAP:  # read whole: a sparse 100 GB file must not be
                raise InputError(f"{path}: a bzImage of {size} bytes is larger than any kernel image; refused")
            payload = bzimage.extract(f.read(), str(path))
        return elf.load(path, data=payload, symbols=fallback)
    from fbt_audit.input import modfile

    if modfile.compression(head) is not None:  # by content, not name: a .ko holding xz is decompressed
        return elf.load(path, data=modfile.read(path))
    if not head:
        raise InputError(f"{path}: empty file")
    raise InputError(f"{path}: not an ELF file, bzImage or compressed module (vmlinux, vmlinuz or .ko expected)")
