"""test_report_list.py: the probe-safety list: header, exact rows for every patchpoint, counts, numbering."""

from helpers_report import BUILD_ID, MODULE_BUILD_ID, module_result, table, vmlinux_result, with_judgements

from fbt_audit import __version__
from fbt_audit.report.formats import render
from fbt_audit.report.listing import render_list

SHA = table().sha256
HEADER_COLUMNS = "# index\tcount\tpatchpoint\topcode\tinslen\tmodrm\tname\tverdict\trules\tbytes\tsymoff\tkind\tlive"
VMLINUX_ROWS = [
    "0\t-\tffffffff81100000\t55\t1\t-1\tkernel:do_one_initcall:entry\tsafe\t-\t55\t+0x0\tFUNC\t-",
    "1\t-\tffffffff81100040\t48\t7\t2\tkernel:read_tsc:entry\tsafe\t-\t488b0510203000\t+0x0\tFUNC\t-",
    "2\t-\tffffffff81123450\te8\t5\t-1\tkernel:vfs_read:entry\tdeny\tFBT202\te800000000\t+0x0\tFUNC"
    "\tftrace-nop=0f1f440000",
    "3\t-\tffffffff811e2c70\t9c\t1\t-1\tkernel:native_save_fl:entry\tunsafe\tFBT102,FBT204\t9c\t+0x0\tFUNC\t-",
    "4\t-\tffffffff81e00000\t0f\t3\t2\tkernel:entry_SYSCALL_64:entry\trefused\tFBT110\t0f01f8\t+0x0\tNOTYPE\t-",
]


def test_single_vmlinux_exact():
    out = render_list([vmlinux_result()])
    assert out.splitlines() == [
        f"# fbt-audit {__version__}",
        f"# release 6.1.0-56-amd64 build-id {BUILD_ID}",
        f"# table legacy-2011 sha256 {SHA}",
        HEADER_COLUMNS,
        *VMLINUX_ROWS,
    ]
    assert out.endswith("\n")


def test_columns_in_the_briefs_order():
    """The header line the list prints names the brief's columns in its order, and every row has one field each."""
    lines = render_list([vmlinux_result(), module_result()]).splitlines()
    header = [line for line in lines if line.startswith("# index\t")]
    assert header == [HEADER_COLUMNS]
    assert HEADER_COLUMNS[2:].split("\t") == ["index", "count", "patchpoint", "opcode", "inslen", "modrm", "name",
                                              "verdict", "rules", "bytes", "symoff", "kind", "live"]  # fmt: skip
    assert {len(line.split("\t")) for line in lines if not line.startswith("#")} == {13}


def test_modules_use_section_offsets_and_numbering_continues():
    out = render_list([module_result(), vmlinux_result()]).splitlines()
    assert out[1] == f"# release 6.1.0-56-amd64 build-id {BUILD_ID} image vmlinux"
    assert out[2] == f"# release 6.1.0-56-amd64 build-id {MODULE_BUILD_ID} image kvm.ko"
    assert out[3] == f"# table legacy-2011 sha256 {SHA}"
    rows = [line for line in out if not line.startswith("#")]
    assert rows[:5] == VMLINUX_ROWS
    assert rows[5:] == [
        "5\t-\t40\t9c\t1\t-1\tkvm:kvm_save_flags.isra.0:entry\tunsafe\tFBT102\t9c\t+0x0\tFUNC\t-",
        "6\t-\t1a0\t41\t2\t-1\tkvm:kvm_arch_init:entry\tsafe\t-\t4157\t+0x0\tFUNC\t-",
    ]


def test_merged_hit_counts():
    counts = {"kernel:native_save_fl:entry": 1, "kernel:vfs_read:entry": 123456}
    rows = [line.split("\t") for line in render("list", [vmlinux_result()], counts=counts).splitlines()
            if not line.startswith("#")]  # fmt: skip
    assert [r[1] for r in rows] == ["-", "-", "123456", "1", "-"]


def test_missing_identity_and_determinism():
    r = vmlinux_result(release=None)
    r.kernel.build_id = None
    out = render_list([r])
    assert out.splitlines() == [f"# fbt-audit {__version__}", "# release - build-id -",
                                f"# table legacy-2011 sha256 {SHA}", HEADER_COLUMNS, *VMLINUX_ROWS]  # fmt: skip
    # rows in address order and numbered whatever order the judgements come in
    assert render_list([with_judgements(r, r.judgements[::-1])]) == out
