"""test_kmod_build.py: build fbt.ko against Debian's headers; the table in the .ko is the table fbt-audit ships."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from conftest import locked
from elftools.elf.elffile import ELFFile

from fbt_audit.cli.main import run
from fbt_audit.model import abi
from fbt_audit.pipeline import api
from fbt_audit.report.table_text import format_table
from fbt_audit.table import emulation as table

ROOT = Path(__file__).resolve().parent.parent
KMOD = ROOT / "kmod"
PUSHF_61 = ["ftrace_regs_caller", "native_save_fl", "this_cpu_cmpxchg16b_emu", "verify_cpu"]
BUILD_TIMES: dict[str, float] = {}

pytestmark = pytest.mark.kernel  # needs the locked release's linux-headers


@pytest.fixture(scope="session")
def release() -> str:
    """The locked 6.1 release (tests/kernels.lock [headers-6.1]), whose linux-headers package .ci/run installs."""
    entry = locked("headers-6.1")
    for tool in ("make", "gcc"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: building kmod/ needs make and gcc (README, System packages)",
                        pytrace=False)
    makefile = Path(f"/lib/modules/{entry['release']}/build/Makefile")
    if not makefile.is_file():
        pytest.fail(f"{makefile} is missing: install {entry['package']} {entry['version']} "
                    "(scripts/install-headers, or README, System packages)", pytrace=False)
    return entry["release"]


def build(release: str, out: Path, *make_vars: str, wrapper: bool = False) -> Path:
    """Build a copy of kmod/ in out (no build products land in the tree); returns out/fbt.ko."""
    shutil.copytree(KMOD, out, ignore=shutil.ignore_patterns("*.o", "*.ko", "*.mod*", ".*.cmd", "Module.symvers",
                                                               "modules.order"))  # fmt: skip
    kdir = f"/lib/modules/{release}/build"
    if wrapper:  # kmod/Makefile: make KRELEASE=... [FBT_LEGACY_2011=1]
        cmd = ["make", "-C", str(out), f"KRELEASE={release}", *make_vars]
    else:  # the plain kbuild form
        cmd = ["make", "-C", kdir, f"M={out}", "modules", *make_vars]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    BUILD_TIMES[" ".join(make_vars) or "reference"] = time.perf_counter() - start
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "warning:" not in proc.stderr, proc.stderr
    ko = out / "fbt.ko"
    assert ko.exists()
    return ko


@pytest.fixture(scope="session")
def fbt_ko(release, tmp_path_factory) -> Path:
    return build(release, tmp_path_factory.mktemp("kmod-build") / "kmod")


@pytest.fixture(scope="session")
def fbt_ko_legacy(release, tmp_path_factory) -> Path:
    return build(release, tmp_path_factory.mktemp("kmod-build-legacy") / "kmod", "FBT_LEGACY_2011=1", wrapper=True)


def same_table(got: table.EmulationTable, want: table.EmulationTable) -> None:
    assert got.raw == want.raw  # bytes
    assert dataclasses.replace(got, source=want.source) == want  # parsed: header and every entry


def test_built_module_carries_the_reference_table(fbt_ko):
    same_table(table.load(str(fbt_ko)), table.load("reference"))


def test_legacy_build_carries_legacy_2011(fbt_ko_legacy):
    same_table(table.load(str(fbt_ko_legacy)), table.load("legacy-2011"))


def test_fbt_audit_table_reads_the_ko(fbt_ko, capsys):
    """`fbt-audit table kmod-build/fbt.ko` prints the reference table, read back from the module."""
    assert run(["table", str(fbt_ko)]) == 0
    out = capsys.readouterr().out
    assert out == format_table(table.load(str(fbt_ko)))
    assert out.splitlines()[0].split() == ["table:", "reference"]
    ref = format_table(table.load("reference")).splitlines()
    assert [line for line in out.splitlines() if not line.startswith("source:")] == [
        line for line in ref if not line.startswith("source:")
    ]


def test_table_section_is_alone_and_unrelocated(fbt_ko):
    """The section holds the table object and nothing else, and no relocation touches it."""
    with open(fbt_ko, "rb") as f:
        elf = ELFFile(f)
        sec = elf.get_section_by_name(abi.SECTION)
        idx = elf.get_section_index(abi.SECTION)
        t = table.parse(sec.data(), str(fbt_ko))
        assert sec.data_size == abi.HEADER_SIZE + len(t.entries) * abi.ENTRY_SIZE
        for rel in elf.iter_sections():
            if rel.header.sh_type in ("SHT_RELA", "SHT_REL"):
                assert rel.header.sh_info != idx, f"{rel.name} relocates {abi.SECTION}"
        syms = {s.name: s for s in elf.get_section_by_name(".symtab").iter_symbols()}
        sym = syms["fbt_emu_table"]
        assert (sym["st_shndx"], sym["st_value"], sym["st_size"]) == (idx, 0, sec.data_size)


def test_kernel_compiler_lays_out_the_abi_as_python(release, tmp_path):
    """sizeof/offsetof under the kernel's compiler and flags equal audit/model/abi.py (a static_assert per field)."""
    lines = ["// SPDX-License-Identifier: GPL-2.0", "/* abi_check.c: generated by tests/test_kmod_build.py */",
             "#include <linux/build_bug.h>", "#include <linux/module.h>", "#include <linux/stddef.h>",
             '#include "fbt_table.h"']  # fmt: skip
    for struct, fields, size in (
        ("fbt_emu_header", abi.HEADER_FIELDS, abi.HEADER_SIZE),
        ("fbt_emu_entry", abi.ENTRY_FIELDS, abi.ENTRY_SIZE),
    ):
        lines.append(f"static_assert(sizeof(struct {struct}) == {size});")
        for name, off in abi.offsets(fields).items():
            lines.append(f"static_assert(offsetof(struct {struct}, {name}) == {off});")
    lines.append(f"static_assert(offsetof(struct fbt_emu_table, entries) == {abi.HEADER_SIZE});")
    lines.append('MODULE_LICENSE("GPL");')
    (tmp_path / "abi_check.c").write_text("\n".join(lines) + "\n")
    (tmp_path / "Kbuild").write_text(f"obj-m := abi_check.o\nccflags-y := -I{KMOD}\n")
    proc = subprocess.run(["make", "-C", f"/lib/modules/{release}/build", f"M={tmp_path}", "modules"],
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_builds_leave_the_tree_clean(fbt_ko, fbt_ko_legacy):
    products = [p for p in KMOD.rglob("*") if p.suffix in (".o", ".ko", ".cmd") or ".mod" in p.name]
    assert not products, products


def test_build_time(fbt_ko, fbt_ko_legacy):
    """Each build takes seconds (BRIEF: about 10 s for an out-of-tree module)."""
    assert BUILD_TIMES and all(t < 60 for t in BUILD_TIMES.values()), BUILD_TIMES


# --- the seed bug, flagged from a real build ------------------------------------------------------


@pytest.fixture(scope="module")
def k61(vmlinux61):
    return api.load_kernel(vmlinux61)


def verdicts(result) -> list[tuple]:
    return [(j.pp.name, j.pp.addr, j.verdict.label, tuple(j.rule_ids)) for j in result.judgements]


@pytest.mark.kernel
def test_vmlinux61_built_module_judges_as_reference(k61, fbt_ko):
    """`fbt-audit --table kmod-build/fbt.ko` on the real bookworm 6.1 vmlinux = `--table reference`."""
    assert verdicts(api.audit(k61, table.load(str(fbt_ko)))) == verdicts(api.audit(k61, "reference"))


@pytest.mark.kernel
def test_vmlinux61_legacy_build_flags_the_seed(k61, fbt_ko_legacy):
    """Built with -DFBT_LEGACY_2011, the module's own table flags every PUSHF entry: the seed."""
    r = api.audit(k61, table.load(str(fbt_ko_legacy)))
    assert verdicts(r) == verdicts(api.audit(k61, "legacy-2011"))
    pushf = sorted(j.pp.name for j in r.judgements if "FBT102" in j.rule_ids)
    # and the three entries an alternative turns into pushf at boot (variant alt(!8*32+16)).
    assert pushf == sorted(PUSHF_61 + ["__sev_get_ghcb", "rcu_preempt_deferred_qs.part.0", "xen_halt"])
    assert all(j.verdict.label == "unsafe" for j in r.judgements if j.pp.name in PUSHF_61)
