"""test_symbol_sources.py: a stripped bookworm 6.1 vmlinux audited with its System.map or a shifted kallsyms dump."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

pytestmark = pytest.mark.kernel

KASLR = 0x1E600000  # 2 MiB-aligned, as CONFIG_PHYSICAL_ALIGN makes every x86-64 KASLR offset
# scripts/mksysmap of 6.1: nm -n vmlinux minus these; the result is byte-identical to the -dbg package's map.
MKSYSMAP_DROP = (" a ", " N ", " U ", " w ", "__crc_", " $a", " $d", " $t", " .L", " L0", "__kstrtab_", "__kstrtabns_")
FAKE_MODULES = [
    "ffffffffc0a00000 t kvm_fake_init\t[kvm]",
    "ffffffffc0a00100 T _text\t[kvm]",
    "ffffffffc0b00000 t ftrace_trampoline\t[__builtin__ftrace]",
    "ffffffffc0c00000 t bpf_prog_6deef7357e7b4530_sd_fw_ingress\t[bpf]",
]


def fbt_audit(*args, check_rc: int | None = None) -> subprocess.CompletedProcess:
    """The installed CLI in its own process (an audit leaves the collector disabled: see cli.audit_cmd)."""
    out = subprocess.run([sys.executable, "-m", "fbt_audit", *map(str, args)], capture_output=True, text=True)
    if check_rc is not None:
        assert out.returncode == check_rc, out.stderr
    return out


def _alloc_sections(path: Path) -> list[tuple]:
    with open(path, "rb") as f:
        elf = ELFFile(f)
        return [
            (s.name, s["sh_type"], s["sh_addr"], s["sh_size"], s["sh_flags"], s["sh_offset"] and s.data()[:64])
            for s in elf.iter_sections()
            if s["sh_flags"] & 0x2  # SHF_ALLOC: what a stripped image must keep, bytes and all
        ]


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("symbol-sources")


@pytest.fixture(scope="module")
def stripped(vmlinux61, work) -> Path:
    """objcopy --strip-all of the -dbg vmlinux (65 MB, 0.2 s): .symtab, debug info and .rela.* gone."""
    out = work / vmlinux61.name
    subprocess.run(["objcopy", "--strip-all", str(vmlinux61), str(out)], check=True)
    return out


@pytest.fixture(scope="module")
def generated_map(vmlinux61, work) -> Path:
    """System.map as kbuild makes it: scripts/mksysmap (6.1) over nm -n."""
    nm = subprocess.run(["nm", "-n", str(vmlinux61)], check=True, capture_output=True, text=True).stdout
    out = work / f"System.map-{vmlinux61.name.removeprefix('vmlinux-')}"
    out.write_text("".join(line + "\n" for line in nm.splitlines() if not any(d in line for d in MKSYSMAP_DROP)))
    return out


@pytest.fixture(scope="module")
def sysmap(vmlinux61, generated_map) -> Path:
    """The -dbg package's own /usr/lib/debug/boot/System.map-<release>, unpacked next to the vmlinux in the
    cache (test_generated_map_is_the_real_one shows kbuild's recipe makes the identical file)."""
    return vmlinux61.parent / generated_map.name


@pytest.fixture(scope="module")
def dump(sysmap, work) -> Path:
    """A /proc/kallsyms-style dump of the map: kernel addresses moved by KASLR (per-CPU offsets and
    absolute values stay, as the kernel prints them), tab-separated [module] lines mixed in."""
    lines = []
    for i, line in enumerate(sysmap.read_text().splitlines()):
        addr, kind, name = line.split()
        a = int(addr, 16)
        lines.append(f"{a + KASLR if a >= 1 << 63 else a:016x} {kind} {name}")
        if i % 25000 == 7:
            lines.append(FAKE_MODULES[(i // 25000) % len(FAKE_MODULES)])
    lines += FAKE_MODULES
    out = work / "kallsyms"
    out.write_text("\n".join(lines) + "\n")
    return out


@pytest.fixture(scope="module")
def listings(vmlinux61, stripped, sysmap, dump, work) -> dict[str, list[str]]:
    """--format list of the unstripped vmlinux, and of the stripped copy with each symbol source."""
    out = {}
    for key, args in {
        "symtab": [vmlinux61],
        "map": [stripped, "--system-map", sysmap],
        "dump": [stripped, "--kallsyms", dump],
    }.items():
        path = work / f"{key}.list"
        fbt_audit(*args, "--format", "list", "--fail-on", "none", "-o", path, check_rc=0)
        out[key] = path.read_text().splitlines()
    return out


def _rows(lines: list[str]) -> dict[tuple[str, str], dict[str, str]]:
    """(patchpoint address, name) -> the row's columns, without the index (a row on one side only shifts it)."""
    header = next(x for x in lines if x.startswith("# index"))[2:].split("\t")
    rows = {}
    for line in lines:
        if not line.startswith("#"):
            row = dict(zip(header, line.split("\t"), strict=True))
            del row["index"]
            rows[row["patchpoint"], row["name"]] = row
    return rows


def test_stripped_copy_keeps_every_allocated_section(vmlinux61, stripped):
    assert _alloc_sections(stripped) == _alloc_sections(vmlinux61)
    with open(stripped, "rb") as f:
        names = [s.name for s in ELFFile(f).iter_sections()]
    assert ".symtab" not in names and not any(n.startswith((".debug", ".rela")) for n in names)
    assert stripped.stat().st_size < vmlinux61.stat().st_size // 5


def test_generated_map_is_the_real_one(vmlinux61, generated_map):
    real = vmlinux61.parent / generated_map.name  # scripts/fetch-kernel dbg-6.1 unpacks it beside the vmlinux
    assert real.is_file(), f"{real} was not unpacked from the -dbg package (./usr/lib/debug/boot/{real.name})"
    assert generated_map.read_bytes() == real.read_bytes()


def test_map_and_shifted_dump_give_identical_lists(listings, sysmap):
    by_map, by_dump = listings["map"], listings["dump"]
    assert f"# symbols {sysmap.name}" in by_map
    assert "# symbols kallsyms dump kallsyms (KASLR offset 0x1e600000)" in by_dump
    assert [x for x in by_map if not x.startswith("# symbols ")] == [
        x for x in by_dump if not x.startswith("# symbols ")
    ]
    assert len(by_map) == 5 + 49569  # the header and every entry patchpoint of the locked 6.1 (no section markers)


def test_against_the_unstripped_vmlinux(listings, k61):
    """Outside symbols have no sizes and no STT_FUNC/STT_NOTYPE: every difference from .symtab follows from that.

    - kind: elf.py guesses it from the name (not a verdict: not pinned);
    - FBT206 "label inside a function": a symbol that starts inside a sized one (SYM_INNER_LABEL such as
      entry_SYSCALL_64_after_hwframe; retbleed_return_thunk inside retbleed_untrain_ret) looks like one
      more function: 74 patchpoints lose FBT206, and the 33 where it was the only finding go from
      refused to safe;
    - aliases: at 0xffffffff81c01150, .symtab prefers the sized common_interrupt_return (LOCAL, 398 bytes),
      outside symbols the GLOBAL swapgs_restore_regs_and_return_to_usermode (both unsized there).
    _einittext, the end of .init.text, is where .altinstr_aux begins: by address alone it would be that
    section's first function (elf.py drops end markers at a section's end, as .symtab's st_shndx does).
    Verdicts otherwise agree, row for row (bytes, rules, live variants)."""
    full, ext = _rows(listings["symtab"]), _rows(listings["map"])
    only_full, only_ext = sorted(set(full) - set(ext)), sorted(set(ext) - set(full))
    # Pinned on the locked build (k61 checks the release against tests/kernels.lock).
    assert only_full == [("ffffffff81c01150", "kernel:common_interrupt_return:entry")]
    assert only_ext == [("ffffffff81c01150", "kernel:swapgs_restore_regs_and_return_to_usermode:entry")]
    # Rows on one side only are aliases: the same patchpoint and verdict under another name.
    alias = {key[0]: ext[key] for key in only_ext}
    for key in only_full:
        assert {k: v for k, v in full[key].items() if k not in ("name", "kind")} == {
            k: v for k, v in alias[key[0]].items() if k not in ("name", "kind")
        }
    assert len(full) == len(ext)  # the same patchpoints: _einittext (.altinstr_aux's first byte) is no entry

    columns = Counter()
    lost_206, verdict_changed = [], []
    for key in sorted(set(full) & set(ext)):
        a, b = full[key], ext[key]
        for col in a:
            columns[col] += a[col] != b[col]
        if a["rules"] != b["rules"]:
            kept = [r for r in a["rules"].split(",") if r != "FBT206"]
            assert kept == (b["rules"].split(",") if b["rules"] != "-" else [])
            lost_206.append(key)
        if a["verdict"] != b["verdict"]:
            assert (a["verdict"], a["rules"], b["verdict"], b["rules"]) == ("refused", "FBT206", "safe", "-")
            verdict_changed.append(key[1].split(":")[1])
    assert {c for c, n in columns.items() if n} <= {"kind", "rules", "verdict"}
    # Each lost FBT206 is a .symtab symbol that starts strictly inside another, sized one.
    cols = k61.columns
    sized = [(a, a + s) for a, s, z in zip(cols.addr, cols.size, cols.sized, strict=True) if z]
    for key in lost_206:
        addr = int(key[0], 16)
        assert any(lo < addr < hi for lo, hi in sized), key
    assert (columns["rules"], columns["verdict"]) == (74, 33)
    assert verdict_changed == INNER_LABELS_61


INNER_LABELS_61 = [  # .symtab: refused (FBT206, label inside a function); outside symbols: safe
    "secondary_startup_64_no_verify", "ftrace_caller_op_ptr", "ftrace_call", "ftrace_caller_end",
    "ftrace_regs_caller_op_ptr", "ftrace_regs_call", "ftrace_regs_caller_jmp", "ftrace_regs_caller_end",
    ".E_read_words", ".E_leading_bytes", ".E_trailing_bytes", ".E_write_words", ".E_copy",
    "__put_user_nocheck_1", "__put_user_nocheck_2", "__put_user_nocheck_4", "__put_user_nocheck_8", ".slowpath",
    *(f"__x86_indirect_its_thunk_{r}" for r in "rcx rdx rbx rsp rbp rsi rdi r8 r9 r10 r11 r12 r13 r14 r15".split()),
]  # fmt: skip


def test_cli_kallsyms_dump_and_zeroed_dump(stripped, dump, work):
    ok = fbt_audit(stripped, "--kallsyms", dump, "--format", "list", "--fail-on", "none", check_rc=0)
    assert "# symbols kallsyms dump kallsyms (KASLR offset 0x1e600000)" in ok.stdout.splitlines()
    zero = work / "kallsyms-zero"
    zero.write_text("".join("0" * 16 + x[16:] + "\n" for x in dump.read_text().splitlines()))
    bad = fbt_audit(stripped, "--kallsyms", zero)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr == (
        f"fbt-audit: error: {zero}: every address is 0: /proc/kallsyms was read without CAP_SYSLOG "
        "(kptr_restrict); dump it as root: sudo cat /proc/kallsyms > FILE\n"
    )


def test_cli_image_package_system_map_is_debians_stub(stripped, image61):
    stub = next((image61 / "boot").glob("System.map-*"))
    assert stub.stat().st_size == 83
    bad = fbt_audit(stripped, "--system-map", stub)
    release = stub.name.removeprefix("System.map-")
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr == (
        f"fbt-audit: error: {stub}: Debian's stub System.map (no symbols; the real one is "
        f"/usr/lib/debug/boot/System.map-{release} in the linux-image-{release}-dbg package)\n"
    )


def test_cli_symbols_of_another_build_are_refused(stripped, vmlinux612, work):
    """bookworm's 6.12 map given for the 6.1 image: its .init.text markers are elsewhere, so no verdicts."""
    nm = subprocess.run(["nm", "-n", str(vmlinux612)], check=True, capture_output=True, text=True).stdout
    other = work / "System.map-6.12"
    other.write_text("".join(line + "\n" for line in nm.splitlines() if not any(d in line for d in MKSYSMAP_DROP)))
    bad = fbt_audit(stripped, "--system-map", other)
    assert bad.returncode == 2 and bad.stdout == "" and bad.stderr.count("\n") == 1
    assert bad.stderr.startswith(f"fbt-audit: error: {other}: _sinittext is at 0x")
    with open(stripped, "rb") as f:
        init_text = ELFFile(f).get_section_by_name(".init.text")["sh_addr"]
    assert bad.stderr.endswith(f"the image's .init.text starts at {init_text:#x}: not this image's System.map "
                               "(another build?)\n")  # fmt: skip


def test_running_kernel_vmlinuz_with_proc_kallsyms(image61, dump, listings, work):
    """No PATH, under a fake root: the image package's /boot/vmlinuz (bzImage) with the dump as
    /proc/kallsyms gives the stripped vmlinux's list, row for row."""
    release = os.uname().release
    root = work / "root"
    (root / "boot").mkdir(parents=True)
    (root / "proc").mkdir()
    os.symlink(next((image61 / "boot").glob("vmlinuz-*")), root / "boot" / f"vmlinuz-{release}")
    shutil.copy(dump, root / "proc" / "kallsyms")
    env = {**os.environ, "FBT_AUDIT_ROOT": str(root)}
    out = subprocess.run([sys.executable, "-m", "fbt_audit", "--format", "list", "--fail-on", "none"],
                         capture_output=True, text=True, env=env)  # fmt: skip
    assert out.returncode == 0, out.stderr
    said = out.stderr.splitlines()
    assert said[0] == f"fbt-audit: auditing the running kernel: {root}/boot/vmlinuz-{release} with {root}/proc/kallsyms"
    assert said[1:] == [f"fbt-audit: vmlinuz-{release}: symbols from kallsyms dump kallsyms (KASLR offset 0x1e600000)"]
    assert out.stdout.splitlines() == listings["dump"]
