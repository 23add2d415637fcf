"""running.py: find the running kernel's image and symbols when fbt-audit is given no path."""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

import click

from fbt_audit.input.loader import SymbolOptions

ROOT_ENV = "FBT_AUDIT_ROOT"  # a prefix for every system path looked at (tests point it at a fake tree)
PROBE = 64 << 10  # bytes of /proc/kallsyms read to tell a usable dump from a kptr_restrict'ed one
_NONZERO = re.compile(rb"^(?!0{16})[0-9a-fA-F]{16} ", re.M)


def _root(root: str | Path | None) -> Path:
    if root is None:
        root = os.environ.get(ROOT_ENV) or "/"
    return Path(root)


def _under(root: Path, path: str) -> Path:
    return root / path.lstrip("/")


def kallsyms_usable(path: Path) -> bool:
    """/proc/kallsyms is readable and shows addresses (without CAP_SYSLOG, kptr_restrict prints all zero)."""
    try:
        with open(path, "rb") as f:
            head = f.read(PROBE)
    except OSError:
        return False
    return _NONZERO.search(head) is not None


def running_kernel(
    opts: SymbolOptions, *, root: str | Path | None = None, release: str | None = None
) -> tuple[Path, SymbolOptions]:
    """The image of the running kernel and the symbol options to audit it with, said on stderr in one
    line: the -dbg package's vmlinux, else /boot/vmlinuz with /proc/kallsyms (when readable) or the
    user's --system-map/--kallsyms, else the vmlinuz's embedded kallsyms. No image: a UsageError."""
    root = _root(root)
    release = release or os.uname().release
    dbg = _under(root, f"/usr/lib/debug/boot/vmlinux-{release}")
    if dbg.is_file():
        _say(str(dbg))
        return dbg, opts
    vmlinuz = _under(root, f"/boot/vmlinuz-{release}")
    if vmlinuz.is_file() and not os.access(vmlinuz, os.R_OK):
        raise click.UsageError(
            f"no PATH given and {vmlinuz} is not readable: run as root, or give a vmlinux, vmlinuz, .ko or "
            f"module directory (the unstripped vmlinux is in linux-image-{release}-dbg)"
        )
    if vmlinuz.is_file():
        if opts.system_map is not None:
            _say(f"{vmlinuz} with --system-map {opts.system_map}")
            return vmlinuz, opts
        if opts.kallsyms is not None:
            _say(f"{vmlinuz} with --kallsyms {opts.kallsyms}")
            return vmlinuz, opts
        kallsyms = _under(root, "/proc/kallsyms")
        if kallsyms_usable(kallsyms):
            _say(f"{vmlinuz} with {kallsyms}")
            return vmlinuz, dataclasses.replace(opts, kallsyms=kallsyms)
        why = "not readable" if not os.access(kallsyms, os.R_OK) else "all addresses 0 without CAP_SYSLOG"
        _say(f"{vmlinuz} with its embedded kallsyms ({kallsyms}: {why}; run as root to use it)")
        return vmlinuz, opts
    raise click.UsageError(
        f"no PATH given and no image of the running kernel {release} found "
        f"(neither {dbg} from linux-image-{release}-dbg nor {vmlinuz}): "
        "give a vmlinux, vmlinuz, .ko or module directory, with --system-map FILE or --kallsyms FILE "
        "for a stripped image"
    )


def _say(what: str) -> None:
    click.echo(f"fbt-audit: auditing the running kernel: {what}", err=True)
