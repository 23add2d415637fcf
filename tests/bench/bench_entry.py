#!/usr/bin/env python3
"""bench_entry.py: entry-patchpoint audit time against `objdump -d` on the same vmlinux, in the same run.

Usage: python tests/bench/bench_entry.py [VMLINUX] [--repeat N]
Without VMLINUX it fetches bookworm's 6.1 -dbg vmlinux with scripts/fetch-kernel (cached).
Prints wall times (best of N) and the ratios; the brief's targets are 1/20 for entry-only.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def best(cmd: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, check=False)
        times.append(time.perf_counter() - t)
    return min(times)


def in_process(path: str, repeat: int) -> dict[str, float]:
    from fbt_audit import elf
    from fbt_audit.api import audit, load_table
    from fbt_audit.enumerate import entry_patchpoints

    out: dict[str, float] = {}
    tab = load_table("reference")
    for _ in range(repeat):
        t0 = time.perf_counter()
        k = elf.load(path)
        t1 = time.perf_counter()
        entry_patchpoints(k, tab)
        t2 = time.perf_counter()
        audit(k, tab)
        t3 = time.perf_counter()
        for key, v in (("load", t1 - t0), ("enumerate+decode", t2 - t1), ("enumerate+decode+judge", t3 - t2)):
            out[key] = min(out.get(key, v), v)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("vmlinux", nargs="?")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    path = (
        a.vmlinux
        or subprocess.run(
            [str(ROOT / "scripts" / "fetch-kernel"), "dbg-6.1"], check=True, capture_output=True, text=True
        ).stdout.split()[-1]
    )
    objdump = best(["objdump", "-d", path], a.repeat)
    cli = best([sys.executable, "-m", "fbt_audit", path, "--format", "list", "--fail-on", "none"], a.repeat)
    parts = in_process(path, a.repeat)
    print(f"image: {path}")
    print(f"objdump -d:                        {objdump:7.3f} s")
    print(f"fbt-audit entry (CLI, list):       {cli:7.3f} s   ratio {cli / objdump:.3f} (1/{objdump / cli:.1f})")
    for k, v in parts.items():
        print(f"  in-process {k:<22} {v:7.3f} s   ratio {v / objdump:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
