"""test_vmlinux_decode.py: every entry patchpoint of real Debian vmlinux images, checked against readelf and objdump."""

from __future__ import annotations

import re
import subprocess

import pytest

from fbt_audit.input import elf
from fbt_audit.patchpoints.entry import entry_patchpoints
from fbt_audit.table import emulation as table

from .objdump import instructions_at

pytestmark = pytest.mark.kernel

NEWER_THAN_BINUTILS = {"lkgs"}  # native_lkgs+0x4 on 6.12


# Linker section markers (unsized NOTYPE labels such as __sched_text_end): boundaries, not code, no patchpoint.
MARKER = re.compile(r"__\w+_text_(start|end)|_s?text|_etext|_[se]inittext|__indirect_thunk_(start|end)")


def readelf_text_addresses(path) -> set[int]:
    """Independent count: distinct addresses of FUNC/NOTYPE symbols inside executable sections, per readelf,
    but for the addresses only a linker section marker names."""
    secs = {}
    for line in subprocess.run(
        ["readelf", "-SW", str(path)], capture_output=True, text=True, check=True
    ).stdout.splitlines():
        m = re.match(r"\s*\[\s*(\d+)\]\s+(\S+)\s+\S+\s+([0-9a-f]+)\s+[0-9a-f]+\s+([0-9a-f]+)\s+\S+\s+(\S*X\S*)\s", line)
        if m:
            secs[m.group(1)] = (int(m.group(3), 16), int(m.group(4), 16))
    addrs = set()
    for line in subprocess.run(
        ["readelf", "-sW", str(path)], capture_output=True, text=True, check=True
    ).stdout.splitlines():
        f = line.split()
        if len(f) < 8 or f[3] not in ("FUNC", "NOTYPE") or f[6] not in secs:
            continue
        name, value = f[7], int(f[1], 16)
        start, size = secs[f[6]]
        if name.startswith((".L", "$")) or not start <= value < start + size:
            continue
        if f[3] == "NOTYPE" and f[2] == "0" and MARKER.fullmatch(name):
            continue
        addrs.add(value)
    return addrs


def check_image(path):
    kernel = elf.load(path)
    pps = entry_patchpoints(kernel, table.load("reference"))
    want = readelf_text_addresses(path)
    assert {p.sym_addr for p in pps} == want
    assert len(pps) == len(want)
    # Every decoded instruction (the symbol's first one, and the effective one after moves) agrees with objdump.
    sites, facts = {}, {}
    for p in pps:
        for insn in (*p.moved, p.insn):
            sites[insn.addr] = (p.name, insn)
            facts[insn.addr] = p.facts
    oracle = instructions_at(path, set(sites))
    bad = []
    for addr, (name, insn) in sorted(sites.items()):
        if addr not in oracle:
            bad.append(f"{name}@{addr:x}: objdump has no instruction there")
            continue
        raw, text = oracle[addr]
        if "(bad)" in text and insn.mnemonic in NEWER_THAN_BINUTILS:
            continue  # decoded by hand (audit/decode/insn.py); bookworm's binutils 2.40 prints (bad)
        if insn.length == 0:
            if "(bad)" not in text:
                bad.append(f"{name}@{addr:x}: we cannot decode {raw.hex()}, objdump says {text}")
        elif insn.raw != raw and not (
            raw and insn.raw.startswith(raw) and any(f.startswith("crosses-symbol:") for f in facts[addr])
        ):
            # objdump restarts at every symbol, so it truncates an instruction that runs into the next
            # one; fbt-audit decodes it whole and marks both patchpoints (crosses-symbol, mid-instruction).
            bad.append(f"{name}@{addr:x}: we {insn.raw.hex()} ({insn.text}), objdump {raw.hex()} ({text})")
    assert not bad, f"{len(bad)} disagreements, first: {bad[:10]}"
    return kernel, pps


def test_bookworm_61_entries_match_readelf_and_objdump(vmlinux61):
    kernel, pps = check_image(vmlinux61)
    assert kernel.release.startswith("6.1.0-") and kernel.release.endswith("-amd64")
    assert re.fullmatch(r"[0-9a-f]{40}", kernel.build_id)
    by_name = {p.name: p for p in pps}
    # Entry layout on 6.1: no IBT, most functions start with call __fentry__ (an ftrace site).
    p = by_name["vfs_read"]
    assert p.insn.target_name == "__fentry__" and "ftrace-site" in p.facts and p.symoff == 0
    assert [v.label for v in p.variants] == ["disk", "ftrace-nop"]
    assert p.variants[1].insn.raw == bytes.fromhex("0f1f440000")
    # Assembly entry points are NOTYPE and still patchpoints.
    assert by_name["entry_SYSCALL_64"].kind == "NOTYPE"
    assert by_name["entry_SYSCALL_64"].insn.mnemonic == "swapgs"
    for name in ("native_save_fl", "this_cpu_cmpxchg16b_emu", "ftrace_regs_caller", "verify_cpu"):
        assert by_name[name].insn.raw == b"\x9c", name


def test_bookworm_612_entries_match_readelf_and_objdump(vmlinux612):
    kernel, pps = check_image(vmlinux612)
    assert kernel.release.startswith("6.12.")
    by_name = {p.name: p for p in pps}
    # 6.12 has IBT: functions start with endbr64, and the patchpoint moves past it to the ftrace site.
    p = by_name["vfs_read"]
    assert [m.mnemonic for m in p.moved] == ["endbr64"]
    assert p.symoff == 4 and p.insn.target_name == "__fentry__"
    # CALL_PADDING: __pfx_ symbols are FUNC padding in front of each function.
    assert by_name["__pfx_vfs_read"].addr == p.sym_addr - 16
