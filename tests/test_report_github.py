"""test_report_github.py: `--format github` workflow commands; denylist names and keys count symbols, not sites."""

import dataclasses

from helpers_report import module_result, vmlinux_result

from fbt_audit.report.formats import render
from fbt_audit.report.github import render_github


def test_exact_commands():
    out = render_github([vmlinux_result(), module_result()], show="note")
    assert out.splitlines() == [
        "::warning title=fbt-audit FBT202 ftrace-site::vmlinux: vfs_read+0x0 (.text+0x123450): FBT202 int3 on ftrace "
        "site call __fentry__ [deny]",
        "::error title=fbt-audit FBT102 pushed-flags-leak::vmlinux: native_save_fl+0x0 (.text+0x1e2c70): FBT102 "
        "pushfq stepped without flags repair [unsafe]",
        "::warning title=fbt-audit FBT204 deny-region::vmlinux: native_save_fl+0x0 (.text+0x1e2c70): FBT204 "
        "deny region: noinstr text [unsafe]",
        "::notice title=fbt-audit FBT110 not-in-table::vmlinux: entry_SYSCALL_64+0x0 (.text+0xe00000): FBT110 "
        "no table entry for swapgs, no default handling [refused]",
        "::error file=arch/x86/kvm/x86.c,line=1234,title=fbt-audit FBT102 pushed-flags-leak::kvm.ko: "
        "kvm_save_flags.isra.0+0x0 (.text+0x40): FBT102 pushfq stepped without flags repair [unsafe]",
    ]
    assert render("github", [vmlinux_result(), module_result()], show="note") == out
    # by default errors and warnings, as SARIF carries them: the notice goes
    default = render("github", [vmlinux_result(), module_result()]).splitlines()
    assert default == [x for x in out.splitlines() if not x.startswith("::notice")]


def test_escaping():
    r = vmlinux_result()
    pushf = r.judgements[3].findings[0]
    assert pushf.rule_id == "FBT102"
    r.judgements[3].findings[0] = dataclasses.replace(pushf, message="100% wrong,\nreally")
    line = [x for x in render_github([r]).splitlines() if "FBT102" in x][0]
    assert line.endswith("FBT102 100%25 wrong,%0Areally [unsafe]")
    r = module_result(source=("arch/x86/kvm/a,b:c.c", 3))
    assert "file=arch/x86/kvm/a%2Cb%3Ac.c,line=3," in render_github([r])


def test_denylist_and_fingerprints_count_symbols_not_sites():
    """A return site of a function does not make its name ambiguous; two statics sharing it do."""
    import json

    from helpers_report import TEXT, insn, patchpoint

    from fbt_audit.model.core import IC, Finding, Judgement, Level
    from fbt_audit.report.denylist import entries
    from fbt_audit.report.sarif import render_sarif

    r = vmlinux_result()
    pushf = insn(TEXT + 0x500, "9c", "pushfq", classes=IC.PUSHES_FLAGS)
    ret = insn(TEXT + 0x510, "c3", "ret", classes=IC.RETURN)
    bad = [Finding("FBT102", Level.ERROR, "pushfq stepped without flags repair")]
    r.judgements = [
        Judgement(patchpoint("solo", TEXT + 0x500, pushf), findings=list(bad)),
        Judgement(patchpoint("solo", TEXT + 0x510, ret, sym_addr=TEXT + 0x500, site="return"),
                  findings=[Finding("FBT113", Level.ERROR, "ret stepped without the ip fixup")]),
        Judgement(patchpoint("twin", TEXT + 0x600, pushf), findings=list(bad)),
        Judgement(patchpoint("twin", TEXT + 0x700, pushf), findings=list(bad)),
    ]  # fmt: skip
    assert entries(r) == ["kernel:solo+0x0", "kernel:solo+0x10", "kernel:twin+0x0@#1", "kernel:twin+0x0@#2"]
    results = json.loads(render_sarif([r]))["runs"][0]["results"]
    keys = [res["partialFingerprints"]["fbtPatchpoint/v1"] for res in results]
    assert keys == ["FBT102|kernel|solo|entry|#1", "FBT113|kernel|solo|return|#1", "FBT102|kernel|twin|entry|#1",
                    "FBT102|kernel|twin|entry|#2"]  # fmt: skip
