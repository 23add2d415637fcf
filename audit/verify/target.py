"""target.py: the kernel to verify: a release of the corpus lock (scripts/fetch-kernel) or an unpacked image package."""

from __future__ import annotations

import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path

from fbt_audit.verify.deps import InputError

ROOT = Path(__file__).resolve().parent.parent.parent
LOCK = ROOT / "tests" / "kernels.lock"
FETCH = ROOT / "scripts" / "fetch-kernel"


@dataclass
class Target:
    release: str
    vmlinuz: Path
    modules: Path  # lib/modules/<release>
    image: Path  # what the audit reads: the -dbg vmlinux when the lock has it, else the vmlinuz


def _fetch(kind: str) -> Path:
    proc = subprocess.run([str(FETCH), kind], capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise InputError(f"scripts/fetch-kernel {kind} failed: {last}")
    return Path(proc.stdout.strip().splitlines()[-1])


def _lock() -> dict:
    try:
        with open(LOCK, "rb") as f:
            return tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise InputError(f"{LOCK}: cannot read the corpus lock: {e}") from None


def _from_dir(d: Path, image: Path | None = None) -> Target:
    vmlinuz = sorted((d / "boot").glob("vmlinuz-*"))
    if not vmlinuz:
        raise InputError(f"{d}: no boot/vmlinuz-* (not an unpacked linux-image package)")
    release = vmlinuz[0].name[len("vmlinuz-"):]
    modules = d / "lib" / "modules" / release
    if not (modules / "kernel").is_dir():
        raise InputError(f"{d}: no lib/modules/{release}/kernel: a kernel package without modules")
    return Target(release, vmlinuz[0], modules, image or vmlinuz[0])


def resolve(kernel: str) -> Target:
    """KERNEL: an unpacked linux-image-* directory, or a release the lock pins an image package for."""
    p = Path(kernel)
    if p.is_dir():
        return _from_dir(p)
    lock = _lock()
    kinds = {k: v for k, v in lock.items() if v.get("release") == kernel}
    image = next((k for k in sorted(kinds) if k.startswith("image-")), None)
    if image is None:
        known = sorted({v["release"] for k, v in lock.items() if k.startswith("image-")})
        raise InputError(f"verify: {kernel!r} is neither a directory nor a locked release ({', '.join(known)})")
    dbg = next((k for k in sorted(kinds) if k.startswith("dbg-")), None)
    return _from_dir(_fetch(image), _fetch(dbg) if dbg else None)
