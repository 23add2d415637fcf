"""qemu.py: build kmod/ for the target kernel and boot it under qemu-system-x86_64, keeping the serial log."""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from fbt_audit.verify.deps import InputError, UsageError
from fbt_audit.verify.initramfs import MARK

ROOT = Path(__file__).resolve().parent.parent.parent
KMOD = ROOT / "kmod"
# The tables kmod/ compiles in, and the make variable that selects each (kmod/fbt_table.c).
KMOD_TABLES = {"reference": (), "legacy-2011": ("FBT_LEGACY_2011=1",)}
APPEND = "console=ttyS0 panic=-1 oops=panic nokaslr loglevel=7 log_buf_len=64M"
DISK_MB = 64


def build_kmod(release: str, table: str, out: Path) -> Path:
    """Build a copy of kmod/ in out against /lib/modules/<release>/build with the named table; returns fbt.ko."""
    if table not in KMOD_TABLES:
        raise UsageError(f"verify --table {table}: kmod/ compiles in only {', '.join(KMOD_TABLES)}")
    kdir = Path(f"/lib/modules/{release}/build")
    if not (kdir / "Makefile").is_file():
        raise InputError(f"{kdir}: no kernel headers for {release} (install linux-headers-{release})")
    if shutil.which("make") is None:
        raise InputError("make is not installed: building kmod/ needs make and gcc")
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(KMOD, out, ignore=shutil.ignore_patterns("*.o", "*.ko", "*.mod*", ".*.cmd", "Module.symvers",
                                                             "modules.order"))  # fmt: skip
    proc = subprocess.run(["make", "-C", str(kdir), f"M={out}", "modules", *KMOD_TABLES[table]],
                          capture_output=True, text=True)
    ko = out / "fbt.ko"
    if proc.returncode != 0 or not ko.is_file():
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise InputError(f"building kmod/ against {kdir} failed: {last}")
    return ko


def accel() -> str:
    """kvm when /dev/kvm is usable and the CPU has VMX or SVM (a /dev/kvm without them was seen to hang the
    guest), else tcg; FBT_VERIFY_ACCEL=kvm|tcg overrides."""
    forced = os.environ.get("FBT_VERIFY_ACCEL")
    if forced in ("kvm", "tcg"):
        return forced
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        flags = ""
    virt = " vmx" in flags or " svm" in flags
    return "kvm" if virt and os.access("/dev/kvm", os.R_OK | os.W_OK) else "tcg"


@dataclass
class Boot:
    """One boot: where its files are, how it ended, and what the guest wrote to its disk."""

    serial: Path
    seconds: float
    timed_out: bool
    marks: dict[str, float] = field(default_factory=dict)  # marker -> guest uptime
    files: dict[str, str] = field(default_factory=dict)  # /out/<name> -> text

    @property
    def log(self) -> str:
        return self.serial.read_text(errors="replace") if self.serial.exists() else ""


def _marks(log: str) -> dict[str, float]:
    out = {}
    for line in log.splitlines():
        i = line.find(MARK)
        if i < 0:
            continue
        words = line[i + len(MARK):].split()
        t = next((w[2:] for w in words if w.startswith("t=")), "0")
        try:
            out[words[0]] = float(t)
        except (ValueError, IndexError):
            continue
    return out


def boot(vmlinuz: Path, initrd: Path, workdir: Path, *, cpu: str, smp: int | str, timeout: float,
         memory: str = "2G") -> Boot:
    """Boot once; kill QEMU after timeout seconds (a hang). The serial log stays in workdir."""
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        raise InputError("qemu-system-x86_64 is not installed (the Debian package qemu-system-x86)")
    workdir.mkdir(parents=True, exist_ok=True)
    serial = workdir / "serial.log"
    disk = workdir / "out.img"
    with open(disk, "wb") as f:
        f.truncate(DISK_MB << 20)
    a = accel()
    cmd = [qemu, "-machine", f"q35,accel={a}", "-cpu", cpu, "-m", memory, "-smp", str(smp), "-nographic",
           "-no-reboot", "-kernel", str(vmlinuz), "-initrd", str(initrd), "-append", APPEND,
           "-drive", f"file={disk},format=raw,if=virtio,cache=unsafe", "-serial", f"file:{serial}",
           "-monitor", "none", "-display", "none"]
    (workdir / "qemu.cmd").write_text(" ".join(cmd) + "\n")
    start = time.monotonic()
    timed_out = False
    with open(workdir / "qemu.stderr", "wb") as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=err, stderr=err)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            proc.kill()
            proc.wait()
    seconds = time.monotonic() - start
    if proc.returncode not in (0, None) and not timed_out and not serial.exists():
        msg = (workdir / "qemu.stderr").read_text(errors="replace").strip().splitlines()
        raise InputError(f"qemu-system-x86_64 failed: {msg[-1] if msg else proc.returncode}")
    b = Boot(serial, seconds, timed_out)
    b.marks = _marks(b.log)
    if "done" in b.marks:
        try:
            with tarfile.open(disk) as t:
                for m in t.getmembers():
                    if m.isfile():
                        b.files[Path(m.name).name] = t.extractfile(m).read().decode(errors="replace")
        except (tarfile.TarError, OSError):
            pass
    disk.unlink(missing_ok=True)
    return b
