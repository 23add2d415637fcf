#!/usr/bin/env python3
"""bench.py: fbt-audit against `objdump -d` on the same binaries, same run: median seconds, ratio, peak RSS, target.

Usage: python3 tests/bench/bench.py [--vmlinux V] [--modules DIR] [--xz-modules DIR] [--repeat N]
                                    [--cases entry,returns,modules,xz] [--markdown FILE] [--jobs J]
                                    [--installed [--python PY]]
Reproduces the README's speed table (issue 16, "What it must show"):
  python3 tests/bench/bench.py --repeat 5 --markdown bench.md
Without --vmlinux/--modules it uses (fetching once, cached) bookworm's 6.1 -dbg vmlinux and the module
tree of the same release's image package (scripts/fetch-kernel dbg-6.1 / image-6.1). Each command runs
N times, objdump's and fbt-audit's runs in turn (round by round); the table shows the median wall time, objdump's
median over the same input(s), their ratio, the target ratio and PASS/MISS, and the child's peak RSS (ru_maxrss,
the largest of the N runs).
Module trees: objdump runs over the same .ko files (compressed ones decompressed beforehand, untimed),
in as many parallel processes as fbt-audit has workers (-j, default: the CPU count). The `xz` case is the
6.12 image package's .ko.xz tree (or --xz-modules) against what a user would run: `xz -dc` then
`objdump -d` on each module, timed together, as many processes as -j.
The modules are byte-compiled first (a pip install does that; PYTHONDONTWRITEBYTECODE would otherwise
make every run compile them). With --installed, fbt-audit runs as a user's `pip install .` has it: this checkout
installed (not editable) into build/bench-venv, made once (its dependencies from pip's configured index) and
refreshed each run; an editable install's import hook costs every run ~10% of a vmlinux audit's CPU. --python PY
makes that venv with another interpreter (its own venv, build/bench-venv-<path>); the footer names the one measured.
fbt-audit runs in an empty working directory, as in a kernel tree (this checkout's pyproject.toml is not read).
The machine's load average is printed before and after: timings on a shared machine are only
comparable within one run. Named bench*.py so that pytest does not collect it.
"""

from __future__ import annotations

import argparse
import gzip
import lzma
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FBT = [sys.executable, "-m", "fbt_audit"]
RSS_LIMIT_GB = 0.25  # issue 16: no higher than before it (0.24 GB on the 6.1 -dbg vmlinux)


@dataclass
class Run:
    seconds: float  # median wall time
    rss_gb: float  # largest ru_maxrss of the runs
    rc: int  # exit code of the last run
    err: str  # first line of its stderr


def installed(python: str | None = None) -> list[str]:
    """The command of this checkout installed as a user installs it (`pip install .`, not editable), in
    build/bench-venv: the venv and the dependencies made once, the package reinstalled from the checkout each run.
    `python`: the interpreter of that venv (build/bench-venv-<its real path, flattened>), else this one."""
    venv = ROOT / "build" / "bench-venv"
    if python is not None:
        venv = venv.with_name("bench-venv-" + os.path.realpath(python).strip("/").replace("/", "-"))
    py = venv / "bin" / "python"
    quiet = {"stdout": subprocess.DEVNULL, "check": True}
    if not py.exists():
        subprocess.run([python or sys.executable, "-m", "venv", str(venv)], **quiet)
        subprocess.run([str(py), "-m", "pip", "install", "-q", str(ROOT)], **quiet)
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--force-reinstall", "--no-deps", str(ROOT)], **quiet)
    return [str(py), "-m", "fbt_audit"]


def _version(python: str) -> str:
    """The interpreter fbt-audit runs under, e.g. `CPython 3.11.2 at /usr/bin/python3.11`: builds differ (Debian's is
    built with PGO and LTO, pyenv's by default is not: ~10% slower on this machine's module trees)."""
    code = "import platform, sys, os; print(platform.python_implementation(), platform.python_version(), 'at', " \
           "os.path.realpath(sys._base_executable))"
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, check=False).stdout.strip()
    return out or python


def measure(cmd: list[str], repeat: int) -> Run:
    """Run cmd repeat times (stdout discarded): median wall time, peak RSS of the child from wait4."""
    return rounds([cmd], repeat)[0]


def rounds(cmds: list[list[str]], repeat: int) -> list[Run]:
    """Each of cmds once per round, in turn, for `repeat` rounds (stdout discarded): per command its median wall time
    and the peak RSS of its child from wait4. Interleaved, so that the machine's slow swings (another tenant, the
    clock) fall on objdump and fbt-audit alike instead of on whichever ran in the slow minute."""
    times: list[list[float]] = [[] for _ in cmds]
    rss, rc, err = [0] * len(cmds), [0] * len(cmds), [""] * len(cmds)
    for _ in range(repeat):
        for k, cmd in enumerate(cmds):
            with tempfile.TemporaryFile() as errf:
                t = time.perf_counter()
                p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=errf)
                _, status, usage = os.wait4(p.pid, 0)
                times[k].append(time.perf_counter() - t)
                p.returncode = rc[k] = os.waitstatus_to_exitcode(status)
                rss[k] = max(rss[k], usage.ru_maxrss)  # KiB on Linux
                errf.seek(0)
                first = errf.read().decode(errors="replace").strip().splitlines()[:1]
                err[k] = first[0] if first else ""
    return [Run(statistics.median(times[k]), rss[k] / (1 << 20), rc[k], err[k]) for k in range(len(cmds))]


def fetch(kind: str) -> Path:
    out = subprocess.run([str(ROOT / "scripts" / "fetch-kernel"), kind], check=True, capture_output=True, text=True)
    return Path(out.stdout.split()[-1])


def modules_in(tree: Path) -> list[Path]:
    return sorted(p for p in tree.rglob("*") if p.is_file() and p.name.endswith((".ko", ".ko.xz", ".ko.gz", ".ko.zst")))


def plain_copies(mods: list[Path], into: Path) -> list[Path]:
    """The modules objdump can read: .ko as they are, compressed ones decompressed into `into`."""
    out = []
    for i, m in enumerate(mods):
        if m.name.endswith(".ko"):
            out.append(m)
            continue
        dst = into / f"{i}-{m.name.rsplit('.', 1)[0]}"
        if m.name.endswith(".xz"):
            dst.write_bytes(lzma.decompress(m.read_bytes()))
        elif m.name.endswith(".gz"):
            dst.write_bytes(gzip.decompress(m.read_bytes()))
        else:
            import zstandard

            dst.write_bytes(zstandard.ZstdDecompressor().decompressobj().decompress(m.read_bytes()))
        out.append(dst)
    return out


def objdump_many(files: list[Path], jobs: int, tmp: Path) -> list[str]:
    """One shell command: objdump -d over files, `jobs` processes, 100 files per process."""
    listing = tmp / "files.lst"
    listing.write_text("\0".join(map(str, files)))
    return ["sh", "-c", f"xargs -0 -P {jobs} -n 100 objdump -d < '{listing}'"]


def xz_objdump_many(files: list[Path], jobs: int, tmp: Path) -> list[str]:
    """One shell command: for each .ko.xz, `xz -dc` into a scratch file and `objdump -d` it, `jobs` processes."""
    listing = tmp / "xz.lst"
    listing.write_text("\0".join(map(str, files)))
    each = f'for f; do xz -dc "$f" > "{tmp}/$$.ko" && objdump -d "{tmp}/$$.ko"; done'
    return ["sh", "-c", f"xargs -0 -P {jobs} -n 100 sh -c '{each}' _ < '{listing}'"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vmlinux", type=Path)
    ap.add_argument("--modules", type=Path, help="a module tree, e.g. .../lib/modules/RELEASE")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--xz-modules", type=Path, help="a .ko.xz module tree (default: the 6.12 image package's)")
    ap.add_argument("--cases", default="entry,returns,modules,xz")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="fbt-audit -j and objdump processes")
    ap.add_argument("--markdown", type=Path, help="also write the table as Markdown")
    ap.add_argument("--installed", action="store_true", help="run a non-editable install of this checkout")
    ap.add_argument("--python", help="with --installed: the interpreter of its venv (e.g. /usr/bin/python3)")
    a = ap.parse_args()
    global FBT
    if a.python and not a.installed:
        ap.error("--python needs --installed")
    if a.installed:
        FBT = installed(a.python)
    for name in ("vmlinux", "modules", "xz_modules", "markdown"):
        if getattr(a, name) is not None:
            setattr(a, name, getattr(a, name).resolve())
    os.chdir(tempfile.mkdtemp(prefix="fbt-bench-"))  # no settings file in reach, as in a kernel tree
    cases = a.cases.split(",")
    if shutil.which("objdump") is None:
        print("bench: objdump not found (binutils)", file=sys.stderr)
        return 2
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "audit"), str(ROOT / "rules")],
                   stdout=subprocess.DEVNULL, check=False)  # fmt: skip
    load0 = os.getloadavg()
    rows: list[tuple[str, Run | None, Run | None, float, str]] = []  # label, fbt, objdump, target, note
    notes: list[str] = []
    vm, tree = a.vmlinux, None
    if {"entry", "returns"} & set(cases):
        vm = vm or fetch("dbg-6.1")
        runs = [("vmlinux, entry patchpoints (`fbt-audit V`)", [*FBT, str(vm)], 1 / 12)] * ("entry" in cases) + [
            ("vmlinux, entry + return patchpoints (`--returns`)", [*FBT, str(vm), "--returns"], 1 / 4)
        ] * ("returns" in cases)  # fmt: skip
        od, *got = rounds([["objdump", "-d", str(vm)]] + [cmd for _l, cmd, _t in runs], a.repeat)
        rows += [(label, run, od, target, "") for (label, _c, target), run in zip(runs, got, strict=True)]
    if "modules" in cases:
        tree = a.modules or fetch("image-6.1") / "lib" / "modules"
        if tree.name == "modules":  # the package's lib/modules: its one release directory
            tree = next((d for d in sorted(tree.iterdir()) if d.is_dir()), tree)
        mods = modules_in(tree)
        probe = measure([*FBT, str(tree), "--format", "list", "-j", str(a.jobs)], 1)
        if probe.rc not in (0, 1):
            notes.append(f"module tree skipped: `fbt-audit {tree}` exited {probe.rc}: {probe.err}")
            rows.append((f"module tree ({len(mods)} modules)", None, None, 1 / 3, "skipped"))
        else:
            with tempfile.TemporaryDirectory() as tmp:
                files = plain_copies(mods, Path(tmp))
                od, run = rounds([objdump_many(files, a.jobs, Path(tmp)), [*FBT, str(tree), "-j", str(a.jobs)]],
                                 a.repeat)  # fmt: skip
            rows.append((f"module tree ({len(mods)} modules, -j {a.jobs})", run, od, 1 / 3, ""))
    xz_tree = None
    if "xz" in cases:
        xz_tree = a.xz_modules or fetch("image-6.12") / "lib" / "modules"
        if xz_tree.name == "modules":
            xz_tree = next((d for d in sorted(xz_tree.iterdir()) if d.is_dir()), xz_tree)
        mods = modules_in(xz_tree)
        with tempfile.TemporaryDirectory() as tmp:
            od, run = rounds([xz_objdump_many(mods, a.jobs, Path(tmp)), [*FBT, str(xz_tree), "-j", str(a.jobs)]],
                             a.repeat)  # fmt: skip
        rows.append((f".ko.xz tree ({len(mods)} modules, -j {a.jobs}; vs xz -d + objdump -d)", run, od, 1 / 3, ""))
    load1 = os.getloadavg()

    head = ["case", "fbt-audit", "objdump -d", "ratio", "target", "result", "peak RSS"]
    table = []
    peak = 0.0
    for label, run, od, target, note in rows:
        if run is None or od is None:
            table.append([label, "-", "-", "-", f"1/{1 / target:.0f}", note, "-"])
            continue
        ratio = run.seconds / od.seconds
        peak = max(peak, run.rss_gb) if "vmlinux" in label else peak
        shown = f"1/{1 / ratio:.1f}" if ratio < 1 else f"{ratio:.2f}x"
        table.append([
            label, f"{run.seconds:.2f} s", f"{od.seconds:.2f} s", shown,
            f"1/{1 / target:.0f}", "PASS" if ratio <= target else "MISS", f"{run.rss_gb:.2f} GB",
        ])  # fmt: skip
    if vm and {"entry", "returns"} & set(cases):
        ok = "PASS" if peak <= RSS_LIMIT_GB else "MISS"
        table.append(["peak RSS, -dbg vmlinux", "", "", "", f"<= {RSS_LIMIT_GB:.2f} GB", ok, f"{peak:.2f} GB"])
    widths = [max(len(str(r[i])) for r in [head, *table]) for i in range(len(head))]
    print("inputs: " + ", ".join([f"vmlinux {vm}"] * bool(vm) + [f"modules {tree}"] * ("modules" in cases)
                                 + [f".ko.xz modules {xz_tree}"] * bool(xz_tree)))  # fmt: skip
    how = f"installed (build/bench-venv, {_version(FBT[0])})" if a.installed else f"this venv ({_version(FBT[0])})"
    print(f"median of {a.repeat} interleaved runs; load average before {load0[0]:.2f}, after {load1[0]:.2f}; "
          f"{os.cpu_count()} CPUs; fbt-audit from {how}")  # fmt: skip
    for r in [head, *table]:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)))
    for n in notes:
        print(n)
    if a.markdown:
        md = [f"| {' | '.join(head)} |", "|" + "---|" * len(head)] + [f"| {' | '.join(map(str, r))} |" for r in table]
        md.append("")
        md.append(
            f"Median of {a.repeat} interleaved runs, load average {load0[0]:.2f} before and {load1[0]:.2f} after, "
            f"{os.cpu_count()} CPUs; `python3 tests/bench/bench.py --repeat {a.repeat}"
            f"{' --installed' if a.installed else ''}{f' --python {a.python}' if a.python else ''}`; "
            f"fbt-audit under {_version(FBT[0])}."
        )
        md += [f"{n}" for n in notes]
        a.markdown.write_text("\n".join(md) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
