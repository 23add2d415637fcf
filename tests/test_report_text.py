"""test_report_text.py: the text report: exact finding lines, the summary, --statistics, determinism."""

from helpers_report import module_result, vmlinux_result, with_judgements

from fbt_audit.report.formats import render
from fbt_audit.report.text import render_text

# Worst patchpoint first (unsafe, deny, refused), then image and address; each tagged with its own level, and
# with the patchpoint's verdict where that is worse than the level makes it.
FINDINGS = [
    "vmlinux: native_save_fl+0x0 (.text+0x1e2c70): FBT102 pushfq stepped without flags repair [error]",
    "vmlinux: native_save_fl+0x0 (.text+0x1e2c70): FBT204 deny region: noinstr text [warning; patchpoint unsafe]",
    "kvm.ko: kvm_save_flags.isra.0+0x0 (.text+0x40): FBT102 pushfq stepped without flags repair [error]",
    "vmlinux: vfs_read+0x0 (.text+0x123450): FBT202 int3 on ftrace site call __fentry__ [warning]",
    "vmlinux: entry_SYSCALL_64+0x0 (.text+0xe00000): FBT110 no table entry for swapgs, no default handling [note]",
]
SUMMARY = "audited 7 patchpoints in 2 images (table legacy-2011): 2 unsafe, 1 deny, 1 refused, 3 safe; 5 findings"


def test_lines_and_summary():
    out = render_text([vmlinux_result(), module_result()], False)
    assert out == "\n".join([*FINDINGS, "", SUMMARY]) + "\n"


def test_images_in_report_order_whatever_the_input_order():
    assert render_text([module_result(), vmlinux_result()], False) == render_text(
        [vmlinux_result(), module_result()], False
    )


def test_statistics_most_frequent_first():
    out = render_text([vmlinux_result(), module_result()], True)
    stats = [
        "2  FBT102  pushed-flags-leak",
        "1  FBT110  not-in-table",
        "1  FBT202  ftrace-site",
        "1  FBT204  deny-region",
    ]
    assert out == "\n".join([*FINDINGS, "", *stats, "", SUMMARY]) + "\n"


def test_clean_image_is_only_a_summary():
    r = vmlinux_result()
    r = with_judgements(r, [j for j in r.judgements if not j.findings])
    assert render_text([r], True) == (
        "audited 2 patchpoints in 1 image (table legacy-2011): 0 unsafe, 0 deny, 0 refused, 2 safe; 0 findings\n"
    )


def test_variant_named_and_tool_errors_counted():
    from fbt_audit.model.core import Finding, Level

    r = vmlinux_result(errors=["vmlinux: no __mcount_loc: ftrace sites unknown"])
    j = r.judgements[2]
    j.findings = [Finding("FBT202", Level.WARNING, "ftrace site", variant="ftrace-nop")]
    out = render_text([r], False).splitlines()
    assert "vmlinux: vfs_read+0x0 (.text+0x123450): FBT202 ftrace site (variant ftrace-nop) [warning]" in out
    assert out[-1].endswith("; 4 findings; 1 tool error")


def test_no_absolute_paths_and_deterministic():
    rs = [vmlinux_result(), module_result()]
    a, b = render_text(rs, True), render("text", rs, statistics=True, show="all")
    assert a == b
    assert "/home/" not in a and "/lib/modules" not in a


def test_default_lists_errors_and_summarises_the_rest_per_rule():
    out = render("text", [vmlinux_result(), module_result()]).splitlines()
    assert out == [
        FINDINGS[0],
        FINDINGS[2],
        "",
        "vmlinux: FBT202 1 warning not listed (.text 1); --show warning lists them",
        "vmlinux: FBT204 1 warning not listed (.text 1); --show warning lists them",
        "vmlinux: FBT110 1 note not listed (.text 1); --show note lists them",
        "",
        SUMMARY,
    ]
    warn = render("text", [vmlinux_result(), module_result()], show="warning").splitlines()
    assert warn[:4] == FINDINGS[:4] and warn[5] == "vmlinux: FBT110 1 note not listed (.text 1); --show note lists them"
    assert render("text", [vmlinux_result(), module_result()], show="note") == render_text(
        [vmlinux_result(), module_result()]
    )


def test_colour_only_when_asked():
    plain = render("text", [vmlinux_result()])
    coloured = render("text", [vmlinux_result()], colour=True)
    assert "\033[" not in plain
    assert "[\033[1;31merror\033[0m]" in coloured
    assert coloured.replace("\033[1;31m", "").replace("\033[0m", "") == plain
