"""test_initramfs.py: the guest's initramfs is a newc cpio that Debian's cpio lists, with busybox, fbt.ko and /init."""

from __future__ import annotations

import gzip
import shutil
import subprocess

import pytest

from fbt_audit.verify import initramfs


def test_newc_archive_reads_back_with_cpio(tmp_path):
    if shutil.which("cpio") is None:
        pytest.fail("cpio is not installed (README, System packages): the independent reader of the archive",
                    pytrace=False)
    a = initramfs.Newc()
    a.dir("bin")
    a.file("bin/hello", b"hi\n", 0o755)
    a.file("odd", b"12345")
    a.chardev("console", 5, 1)
    data = a.bytes()
    listing = subprocess.run(["cpio", "-itv", "--quiet"], input=data, capture_output=True, check=True).stdout
    rows = [line.split() for line in listing.decode().splitlines()]
    assert [(r[0], r[-1]) for r in rows] == [
        ("drwxr-xr-x", "bin"), ("-rwxr-xr-x", "bin/hello"), ("-rw-r--r--", "odd"), ("crw-------", "console")]
    assert rows[3][4:6] == ["5,", "1"]
    out = tmp_path / "x"
    out.mkdir()
    subprocess.run(["cpio", "-id", "--quiet"], input=data, cwd=out, check=True)
    assert (out / "bin" / "hello").read_bytes() == b"hi\n" and (out / "odd").read_bytes() == b"12345"


def test_guest_initramfs_holds_what_the_boot_needs(tmp_path, image61):
    if initramfs.have_tools():
        pytest.fail(initramfs.have_tools(), pytrace=False)
    ko = tmp_path / "fbt.ko"
    ko.write_bytes(b"\x7fELF-not-really")
    modules = next(image61.glob("lib/modules/*"))
    out = initramfs.build(tmp_path / "i.gz", fbt_ko=ko, arm_text="force\nkernel:foo+0x0\n", modules_dir=modules,
                          workload=None, rounds=3, fbt_args="trace_arm=1")
    names = subprocess.run(["cpio", "-it", "--quiet"], input=gzip.decompress(out.read_bytes()), capture_output=True,
                           check=True).stdout.decode().split()
    assert names[:12] == ["bin", "dev", "proc", "sys", "tmp", "mod", "out", "root", "dev/console", "dev/null",
                          "bin/busybox", "init"]
    assert {"fbt.ko", "arm.txt", "workload.sh", "mod/virtio_blk.ko", "mod/crc7.ko", "mod/dummy.ko"} <= set(names)
    init = initramfs.INIT.replace("@FBT_ARGS@", "trace_arm=1")
    assert "insmod /fbt.ko trace_arm=1" in init and "cat /arm.txt > /sys/kernel/debug/fbt/control" in init
