"""initramfs.py: the guest initramfs: static busybox, fbt.ko, the arm list, the workload, some modules (newc cpio)."""

from __future__ import annotations

import gzip
import shutil
import stat
from pathlib import Path

from fbt_audit.verify.deps import InputError

BUSYBOX_PATHS = ("/bin/busybox", "/usr/bin/busybox")
# Loaded after the case, in dependency order, to write the results to the virtio disk (reference/qemu.md).
VIRTIO = ("virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci", "virtio_blk")
# Loaded and unloaded by the workload: no dependencies, harmless.
WORKLOAD_MODULES = ("crc7", "dummy")
MARK = "FBT-VERIFY:"

# The start every /init of ours shares (verify boots, oracle boots): busybox, the file systems, /out, marks.
INIT_START = r"""/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
mount -t debugfs debugfs /sys/kernel/debug
mount -t tmpfs tmpfs /tmp
mkdir -p /out
up() { cut -d' ' -f1 /proc/uptime; }
mark() { echo "@MARK@ $* t=$(up)"; }
mark init
"""

INIT = r"""#!/bin/busybox sh
# /init of an fbt-audit verify boot: load fbt.ko, arm, run the workload, save hits, write /out to /dev/vda.
""" + INIT_START + r"""ifconfig lo 127.0.0.1 up
if ! insmod /fbt.ko @FBT_ARGS@; then mark insmod-failed; poweroff -f; fi
mark loaded
cat /arm.txt > /sys/kernel/debug/fbt/control
mark armed
sh /workload.sh > /out/workload.log 2>&1
mark workload-end rc=$?
cat /sys/kernel/debug/fbt/hits > /out/hits
cat /sys/kernel/debug/fbt/status > /out/status
mark collected
rmmod fbt
mark unloaded rc=$?
dmesg > /out/dmesg
for m in @VIRTIO@; do insmod /mod/$m.ko; done
n=0; while [ ! -b /dev/vda ] && [ $n -lt 100 ]; do sleep 0.1; n=$((n+1)); done
tar cf /dev/vda -C /out . && sync
mark done
poweroff -f
"""

WORKLOAD = r"""#!/bin/sh
# The built-in workload: fork/exec, files, pipes, loopback TCP, module load/unload; @N@ rounds.
mkdir -p /www /tmp/w
seq 1 2000 > /www/index.html
httpd -p 127.0.0.1:8080 -h /www
i=0
while [ $i -lt @N@ ]; do
  /bin/true; ls -l /proc/self/ > /dev/null; id > /dev/null
  echo "round $i" > /tmp/w/f.$i; cat /tmp/w/f.$i >> /tmp/w/all; mv /tmp/w/f.$i /tmp/w/g; rm /tmp/w/g
  dd if=/dev/zero of=/tmp/w/big bs=64k count=8 2>/dev/null; md5sum /tmp/w/big > /dev/null
  seq 1 300 | sort -r | uniq | wc -l > /dev/null
  wget -q -O - http://127.0.0.1:8080/index.html | tail -n 1 > /dev/null
  for m in @MODULES@; do insmod /mod/$m.ko && rmmod $m; done
  i=$((i+1))
done
echo "workload rounds: $i"
"""


def find_busybox() -> Path:
    for p in BUSYBOX_PATHS:
        if Path(p).is_file():
            return Path(p)
    raise InputError("busybox is not installed: verify needs the Debian package busybox-static")


class Newc:
    """A newc ("070701") cpio archive written in memory, as the kernel's initramfs unpacker reads it."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.ino = 1

    def _add(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        nm = name.encode() + b"\0"
        fields = (self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(nm), 0)
        hdr = b"070701" + b"".join(b"%08x" % f for f in fields)
        self.ino += 1
        self.parts.append(hdr + nm + b"\0" * ((4 - (len(hdr) + len(nm)) % 4) % 4))
        self.parts.append(data + b"\0" * ((4 - len(data) % 4) % 4))

    def dir(self, name: str) -> None:
        self._add(name, stat.S_IFDIR | 0o755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._add(name, stat.S_IFREG | mode, data)

    def chardev(self, name: str, major: int, minor: int) -> None:
        self._add(name, stat.S_IFCHR | 0o600, rdev=(major, minor))

    def bytes(self) -> bytes:
        self._add("TRAILER!!!", 0)
        return b"".join(self.parts)


def module_path(modules_dir: Path, name: str) -> Path:
    found = sorted(modules_dir.glob(f"kernel/**/{name}.ko"))
    if not found:
        raise InputError(f"{modules_dir}: module {name}.ko not found (a kernel package without modules?)")
    return found[0]


def build(out: Path, *, fbt_ko: Path, arm_text: str, modules_dir: Path, workload: str | None, rounds: int,
          fbt_args: str = "") -> Path:
    """Write out (an initramfs.gz) and return it."""
    busybox = find_busybox()
    a = Newc()
    for d in ("bin", "dev", "proc", "sys", "tmp", "mod", "out", "root"):
        a.dir(d)
    a.chardev("dev/console", 5, 1)
    a.chardev("dev/null", 1, 3)
    a.file("bin/busybox", busybox.read_bytes(), 0o755)
    init = INIT.replace("@MARK@", MARK).replace("@VIRTIO@", " ".join(VIRTIO)).replace("@FBT_ARGS@", fbt_args)
    a.file("init", init.encode(), 0o755)
    a.file("fbt.ko", fbt_ko.read_bytes())
    a.file("arm.txt", arm_text.encode())
    if workload is None:
        workload = WORKLOAD.replace("@N@", str(rounds)).replace("@MODULES@", " ".join(WORKLOAD_MODULES))
    a.file("workload.sh", workload.encode(), 0o755)
    for m in (*VIRTIO, *WORKLOAD_MODULES):
        a.file(f"mod/{m}.ko", module_path(modules_dir, m).read_bytes())
    out.write_bytes(gzip.compress(a.bytes(), compresslevel=1))
    return out


def have_tools() -> str | None:
    """None when qemu and busybox are installed, else what is missing (one line)."""
    missing = [p for p, ok in (("qemu-system-x86", shutil.which("qemu-system-x86_64")),
                               ("busybox-static", any(Path(p).is_file() for p in BUSYBOX_PATHS))) if not ok]
    return f"not installed: {', '.join(missing)} (Debian packages: {' '.join(missing)})" if missing else None
