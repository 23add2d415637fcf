"""test_gate.py: fingerprints across a rebuild, the --baseline gate, allowlist, settings files, denylist, check-list,
github annotations and DWARF source lines, on the gate fixture (fixtures/gate, built three ways)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from helpers_sarif import github_violations, validator

from fbt_audit.cli.main import run
from fbt_audit.input.dwarf import PathMap, source_lines
from fbt_audit.pipeline import api
from fbt_audit.report.sarif import render_sarif

from .conftest import ROOT

LEGACY = ["--table", "legacy-2011"]
SRC = ["--source-root", str(ROOT)]
# (probe, rule, fbtPatchpoint/v1) of every result of gate-base under legacy-2011, in report order.
BASE_RESULTS = [
    ("kernel:gate_save_fl:entry", "FBT102", "FBT102|kernel|gate_save_fl|entry|#1"),
    ("kernel:gate_restore_fl:entry", "FBT101", "FBT101|kernel|gate_restore_fl|entry|#1"),
    ("kernel:gate_swapgs:entry", "FBT107", "FBT107|kernel|gate_swapgs|entry|#1"),
    ("kernel:helper:entry", "FBT102", "FBT102|kernel|helper|entry|static-a.o#1"),
    ("kernel:helper:entry", "FBT102", "FBT102|kernel|helper|entry|static-b.o#1"),
    ("kernel:helper.constprop.0:entry", "FBT102", "FBT102|kernel|helper|entry|static-b.o#2"),
]


def audit_cli(capsys, *args):
    code = run([str(a) for a in args])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def sarif(capsys, image, *extra):
    code, out, err = audit_cli(capsys, image, *LEGACY, "--format", "sarif", *extra)
    return code, json.loads(out), err


def rows(doc):
    return [(r["properties"]["probe"], r["ruleId"], r["partialFingerprints"]["fbtPatchpoint/v1"])
            for r in doc["runs"][0]["results"]]  # fmt: skip


def hashes(doc):
    return [(r["properties"]["probe"], r["partialFingerprints"]["primaryLocationLineHash"])
            for r in doc["runs"][0]["results"]]  # fmt: skip


def test_fingerprints_survive_a_rebuild(fixtures_built, capsys):
    g = fixtures_built
    _, base, _ = sarif(capsys, g / "gate-base")
    _, shift, _ = sarif(capsys, g / "gate-shift")
    assert api.load_kernel(g / "gate-base").build_id != api.load_kernel(g / "gate-shift").build_id
    addrs = [r["properties"]["address"] for r in base["runs"][0]["results"]]
    assert addrs != [r["properties"]["address"] for r in shift["runs"][0]["results"]]  # every address moved
    assert rows(base) == rows(shift) == BASE_RESULTS
    assert hashes(base) == hashes(shift)
    fps = [h for _, h in hashes(base)]
    assert len(set(fps)) == len(fps)
    # the two static helpers differ by file, the clone by its ordinal within static-b.o
    helper = [h for p, h in hashes(base) if p.startswith("kernel:helper")]
    assert helper[1].split(":")[0] == helper[2].split(":")[0] != helper[0].split(":")[0]
    assert [h.split(":")[1] for h in helper] == ["1", "1", "2"]


def test_dwarf_locations_and_path_maps(fixtures_built, capsys):
    g = fixtures_built
    _, doc, _ = sarif(capsys, g / "gate-base", *SRC)
    locs = {(r["properties"]["probe"], r["partialFingerprints"]["fbtPatchpoint/v1"]):
            r["locations"][0]["physicalLocation"] for r in doc["runs"][0]["results"]}  # fmt: skip
    loc = {k[1]: (v["artifactLocation"]["uri"], v["region"]["startLine"]) for k, v in locs.items()}
    gate_lines = (ROOT / "fixtures/gate/gate.S").read_text().splitlines()
    uri, line = loc["FBT102|kernel|gate_save_fl|entry|#1"]
    assert uri == "fixtures/gate/gate.S" and gate_lines[line - 1].strip().startswith("pushfq")
    assert gate_lines[loc["FBT101|kernel|gate_restore_fl|entry|#1"][1] - 1].strip().startswith("popfq")
    assert loc["FBT102|kernel|helper|entry|static-a.o#1"][0] == "fixtures/gate/static-a.S"
    assert loc["FBT102|kernel|helper|entry|static-b.o#2"][0] == "fixtures/gate/static-b.S"
    # without a source root the build path is not under a kernel tree: the pseudo-path, line 1
    _, doc, _ = sarif(capsys, g / "gate-base")
    assert {r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] for r in doc["runs"][0]["results"]} == {
        "kernel/vmlinux"
    }
    # a prefix map puts the checkout under another directory of the repository
    _, doc, _ = sarif(capsys, g / "gate-base", "--path-prefix-map", f"{ROOT}=linux")
    assert doc["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == (
        "linux/fixtures/gate/gate.S"
    )
    assert str(ROOT) not in json.dumps(doc)
    assert not github_violations(doc)
    validator().validate(doc)


def test_source_lines_reads_only_what_is_asked(fixtures_built):
    k = api.load_kernel(fixtures_built / "gate-base")
    addr = k.names["gate_swapgs"]
    got = source_lines(k, [addr, 0x1234])
    assert list(got) == [addr]
    assert got[addr].file.endswith("fixtures/gate/gate.S") and got[addr].unit.endswith("gate/gate.S")


def test_path_map():
    pm = PathMap.parse(["/build/reproducible-path/linux-6.1.192=", "/opt/src=linux"], None)
    assert pm.relative("/build/reproducible-path/linux-6.1.192/arch/x86/kernel/irqflags.S") == (
        "arch/x86/kernel/irqflags.S"
    )
    assert pm.relative("/opt/src/kernel/fork.c") == "linux/kernel/fork.c"
    assert PathMap.parse([], "/home/me/linux").relative("/home/me/linux/mm/slub.c") == "mm/slub.c"
    assert PathMap().relative("debian/build/build_amd64_none_amd64/fs/read_write.c") == "fs/read_write.c"
    assert PathMap().relative("/somewhere/else.c") is None
    assert run(["fixtures/sample/vmlinux-sample", "--format", "sarif", "--path-prefix-map", "nomap"]) == 2


def test_gate_round_trip(fixtures_built, capsys, tmp_path):
    g = fixtures_built
    code, out, _ = audit_cli(capsys, g / "gate-base", *LEGACY, "--format", "sarif", "-o", tmp_path / "base.sarif")
    assert code == 1
    for fail_on in ("none", "note", "warning", "error"):
        code, doc, err = sarif(capsys, g / "gate-shift", "--baseline", tmp_path / "base.sarif", "--fail-on", fail_on)
        assert code == 0, fail_on
        assert [r["baselineState"] for r in doc["runs"][0]["results"]] == ["unchanged"] * 6
        assert doc["runs"][0]["properties"]["baseline"] == {"new": 0, "unchanged": 6, "updated": 0, "absent": 0}
        assert err == "fbt-audit: baseline: 0 new, 6 unchanged, 0 updated, 0 absent\n"
    code, doc, err = sarif(capsys, g / "gate-extra", "--baseline", tmp_path / "base.sarif")
    assert code == 1
    states = [(r["properties"]["probe"], r["ruleId"], r["baselineState"]) for r in doc["runs"][0]["results"]]
    assert [s for s in states if s[2] != "unchanged"] == [("kernel:gate_extra_pushf:entry", "FBT102", "new")]
    assert len(states) == 7
    validator().validate(doc)
    assert not github_violations(doc)
    # text output gates the same way
    assert audit_cli(capsys, g / "gate-extra", *LEGACY, "--baseline", tmp_path / "base.sarif")[0] == 1
    assert audit_cli(capsys, g / "gate-shift", *LEGACY, "--baseline", tmp_path / "base.sarif")[0] == 0


def test_absent_results_are_counted_not_uploaded(fixtures_built, capsys, tmp_path):
    g = fixtures_built
    audit_cli(capsys, g / "gate-extra", *LEGACY, "--format", "sarif", "-o", tmp_path / "extra.sarif")
    code, doc, err = sarif(capsys, g / "gate-base", "--baseline", tmp_path / "extra.sarif", "--fail-on", "note")
    assert code == 0
    assert "kernel:gate_extra_pushf:entry" not in {r["properties"]["probe"] for r in doc["runs"][0]["results"]}
    assert doc["runs"][0]["properties"]["baseline"] == {"new": 0, "unchanged": 6, "updated": 0, "absent": 1}
    assert err == "fbt-audit: baseline: 0 new, 6 unchanged, 0 updated, 1 absent\n"


def test_updated_when_the_level_changes(fixtures_built, capsys, tmp_path):
    g = fixtures_built
    audit_cli(capsys, g / "gate-base", *LEGACY, "--format", "sarif", "-o", tmp_path / "base.sarif")
    doc = json.loads((tmp_path / "base.sarif").read_text())
    doc["runs"][0]["results"][2]["level"] = "warning"  # gate_swapgs FBT107 was a warning before
    (tmp_path / "old.sarif").write_text(json.dumps(doc))
    code, doc, _ = sarif(capsys, g / "gate-base", "--baseline", tmp_path / "old.sarif")
    assert code == 1
    assert [(r["properties"]["probe"], r["baselineState"]) for r in doc["runs"][0]["results"]
            if r["baselineState"] != "unchanged"] == [("kernel:gate_swapgs:entry", "updated")]  # fmt: skip


def test_bad_baseline_is_one_line_exit_2(fixtures_built, capsys, tmp_path):
    (tmp_path / "b.sarif").write_text("{not json")
    code, out, err = audit_cli(capsys, fixtures_built / "gate-base", "--baseline", tmp_path / "b.sarif")
    assert code == 2 and err.count("\n") == 1 and "baseline is not JSON" in err
    code, _, err = audit_cli(capsys, fixtures_built / "gate-base", "--baseline", tmp_path / "missing.sarif")
    assert code == 2 and err.count("\n") == 1


ALLOW = """
[[allow]]
rule = "FBT102"
function = "kernel:helper"   # both static helpers and the clone
justification = "helpers run with interrupts off; never probed"

[[allow]]
rule = "FBT1"
function = "kernel:gone_function"
justification = "was in 6.1.0-55"
"""


def test_allowlist(fixtures_built, capsys, tmp_path):
    (tmp_path / "allow.toml").write_text(ALLOW)
    code, doc, err = sarif(capsys, fixtures_built / "gate-base", "--allowlist", tmp_path / "allow.toml")
    assert code == 1  # gate_save_fl and others remain
    assert [r[0] for r in rows(doc)] == ["kernel:gate_save_fl:entry", "kernel:gate_restore_fl:entry",
                                         "kernel:gate_swapgs:entry"]  # fmt: skip
    assert doc["runs"][0]["properties"]["allowlisted"] == 3
    stale = f"{tmp_path / 'allow.toml'}: entry 2: stale allowlist entry FBT1 kernel:gone_function: "
    stale += "it matched no finding"
    assert err.splitlines() == [f"fbt-audit: warning: {stale}", "fbt-audit: 3 allowlisted"]
    assert doc["runs"][0]["invocations"][0]["toolExecutionNotifications"] == [
        {"level": "warning", "message": {"text": stale}}
    ]
    assert "suppressions" not in json.dumps(doc)
    validator().validate(doc)
    # allowlisting everything that fires makes the gate pass
    (tmp_path / "all.toml").write_text(ALLOW + '[[allow]]\nrule = "FBT1"\nfunction = "*:gate_save_fl"\n'
                                       'justification = "x"\n[[allow]]\nrule = "FBT10"\nfunction = "kernel:gate_'
                                       'restore_fl"\njustification = "x"\n[[allow]]\nrule = "FBT107"\nfunction = '
                                       '"kernel:gate_swapgs"\njustification = "x"\n')  # fmt: skip
    assert audit_cli(capsys, fixtures_built / "gate-base", *LEGACY, "--allowlist", tmp_path / "all.toml")[0] == 0


@pytest.mark.parametrize(
    "body, message",
    [
        ('[[allow]]\nrule = "FBT102"\nfunction = "kernel:f"\n', "entry 1: needs a justification"),
        ('[[allow]]\nrule = "FBT102"\nfunction = "kernel:f"\njustification = "  "\n', "needs a justification"),
        ('[[allow]]\nrule = "FBT102"\nfunction = "f"\njustification = "x"\n', 'needs function = "module:function"'),
        ('[[allow]]\nrule = "E501"\nfunction = "kernel:f"\njustification = "x"\n', "bad rule 'E501'"),
        ('[[allow]]\nrule = "FBT102"\nfunction = "kernel:f"\nreason = "x"\n', "unknown key 'reason'"),
        ("[[allow]\n", "not valid TOML"),
    ],
)
def test_allowlist_errors(tmp_path, capsys, body, message):
    (tmp_path / "a.toml").write_text(body)
    code, _, err = audit_cli(capsys, "fixtures/sample/vmlinux-sample", "--allowlist", tmp_path / "a.toml")
    assert code == 2 and err.count("\n") == 1 and message in err, err


def test_settings_file_and_cli_override(fixtures_built, capsys, tmp_path, monkeypatch):
    (tmp_path / "allow.toml").write_text(ALLOW)
    (tmp_path / "fbt-audit.toml").write_text('table = "legacy-2011"\nformat = "denylist"\nallowlist = "allow.toml"\n')
    monkeypatch.chdir(tmp_path)
    code, out, err = audit_cli(capsys, fixtures_built / "gate-base")
    assert code == 1
    assert [line for line in out.splitlines() if not line.startswith("#")] == [
        "kernel:gate_save_fl+0x0", "kernel:gate_restore_fl+0x0", "kernel:gate_swapgs+0x0",
        "kernel:helper+0x0@static-a.o", "kernel:helper+0x0@static-b.o", "kernel:helper.constprop.0+0x0",
    ]  # fmt: skip
    assert "3 allowlisted" in err
    # flags on the command line win over the file
    code, out, _ = audit_cli(capsys, fixtures_built / "gate-base", "--table", "reference", "--format", "text",
                             "--show", "note")  # fmt: skip
    assert code == 0
    assert out == (
        "gate-base: gate_swapgs+0x0 (.text+0x30): FBT114 swapgs refused by table entry 'swapgs' [note]\n\n"
        "audited 7 patchpoints in 1 image (table reference): 0 unsafe, 0 deny, 1 refused, 6 safe; 1 finding\n"
    )
    # show = "note" in the file does the same; the command line's --show error wins over it
    (tmp_path / "fbt-audit.toml").write_text('show = "note"\nformat = "text"\ntable = "reference"\n')
    assert audit_cli(capsys, fixtures_built / "gate-base")[1] == out
    assert "not listed" in audit_cli(capsys, fixtures_built / "gate-base", "--show", "error")[1]
    (tmp_path / "fbt-audit.toml").write_text('table = "legacy-2011"\nformat = "denylist"\nallowlist = "allow.toml"\n')
    # [tool.fbt-audit] in pyproject.toml, found from a subdirectory
    (tmp_path / "fbt-audit.toml").unlink()
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n[tool.fbt-audit]\nfail-on = "none"\n'
                                             'table = "legacy-2011"\n')  # fmt: skip
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    code, out, _ = audit_cli(capsys, fixtures_built / "gate-base")
    assert code == 0 and "FBT102" in out
    (tmp_path / "pyproject.toml").write_text('[tool.fbt-audit]\nfail_on = "none"\n')
    code, _, err = audit_cli(capsys, fixtures_built / "gate-base")
    assert code == 2 and "unknown setting tool.fbt-audit.'fail_on'" in err and err.count("\n") == 1
    (tmp_path / "pyproject.toml").write_text('[tool.fbt-audit]\nformat = "xml"\n')
    code, _, err = audit_cli(capsys, fixtures_built / "gate-base")
    assert code == 2 and "setting 'format' is 'xml'" in err


def test_denylist_and_check_list_round_trip(fixtures_built, capsys, tmp_path):
    g = fixtures_built
    k = api.load_kernel(g / "gate-base")
    code, out, _ = audit_cli(capsys, g / "gate-base", *LEGACY, "--format", "denylist")
    assert code == 1
    assert out.splitlines()[2:] == [
        f"# release 6.1.0-gate-amd64 build-id {k.build_id}",
        f"# table legacy-2011 sha256 {api.load_table('legacy-2011').sha256}",
        "kernel:gate_save_fl+0x0",
        "kernel:gate_restore_fl+0x0",
        "kernel:gate_swapgs+0x0",
        "kernel:helper+0x0@static-a.o",
        "kernel:helper+0x0@static-b.o",
        "kernel:helper.constprop.0+0x0",
    ]
    for fmt in ("list", "denylist"):
        lst = tmp_path / f"base.{fmt}"
        audit_cli(capsys, g / "gate-base", *LEGACY, "--format", fmt, "-o", lst)
        code, out, err = audit_cli(capsys, "check-list", lst, g / "gate-base")
        assert (code, err) == (0, "")
        assert out == f"{lst}: matches {g / 'gate-base'} (release 6.1.0-gate-amd64 build-id {k.build_id})\n"
        code, out, err = audit_cli(capsys, "check-list", lst, g / "gate-shift")
        other = api.load_kernel(g / "gate-shift").build_id
        assert (code, out) == (2, "")
        assert err == (f"fbt-audit: error: {lst}: made for build-id {k.build_id} (release 6.1.0-gate-amd64), "
                       f"but {g / 'gate-shift'} is build-id {other} (release 6.1.0-gate-amd64): refused\n")  # fmt: skip
    (tmp_path / "junk").write_text("hello\n")
    code, _, err = audit_cli(capsys, "check-list", tmp_path / "junk", g / "gate-base")
    assert code == 2 and "not a probe-safety list or denylist" in err and err.count("\n") == 1


def test_github_annotations(fixtures_built, capsys):
    code, out, _ = audit_cli(capsys, fixtures_built / "gate-extra", *LEGACY, "--format", "github", *SRC)
    assert code == 1
    lines = out.splitlines()
    assert lines[1] == (
        "::error file=fixtures/gate/gate.S,line=38,title=fbt-audit FBT102 pushed-flags-leak::gate-extra: "
        "gate_extra_pushf+0x0 (.text+0x20): FBT102 pushfq stepped without flags repair [unsafe]"
    )
    assert len(lines) == 7 and all(line.startswith("::error file=fixtures/gate/") for line in lines)


def test_github_annotations_with_baseline_show_only_new(fixtures_built, capsys, tmp_path):
    g = fixtures_built
    audit_cli(capsys, g / "gate-base", *LEGACY, "--format", "sarif", "-o", tmp_path / "base.sarif")
    code, out, _ = audit_cli(capsys, g / "gate-extra", *LEGACY, "--format", "github", "--baseline",
                             tmp_path / "base.sarif")  # fmt: skip
    assert code == 1
    assert out == ("::error title=fbt-audit FBT102 pushed-flags-leak::gate-extra: gate_extra_pushf+0x0 (.text+0x20): "
                   "FBT102 pushfq stepped without flags repair [unsafe]\n")  # fmt: skip


def test_render_without_cli_is_deterministic(fixtures_built):
    """The API's SARIF is byte for byte what `fbt-audit --format sarif` prints, whatever either process's string
    hash seed (set and dict orders that leak into the output would differ between them)."""
    want = render_sarif([api.audit(fixtures_built / "gate-base", "legacy-2011")])
    for seed in ("1", "2"):
        proc = subprocess.run([sys.executable, "-m", "fbt_audit", str(fixtures_built / "gate-base"), *LEGACY,
                               "--format", "sarif"], env={**os.environ, "PYTHONHASHSEED": seed},
                              capture_output=True, text=True)  # fmt: skip
        assert (proc.returncode, proc.stderr, proc.stdout) == (1, "", want), seed


def test_module_dwarf_needs_relocations(fixtures_built, capsys):
    """A relocatable object's line program addresses are 0 until .rela.debug_line is applied."""
    obj = fixtures_built / "gate-base.d" / "static-b.o"
    code, out, _ = audit_cli(capsys, obj, *LEGACY, "--format", "github", *SRC)
    assert code == 1
    assert [line.split("::")[1] for line in out.splitlines()] == [
        "error file=fixtures/gate/static-b.S,line=15,title=fbt-audit FBT102 pushed-flags-leak",
        "error file=fixtures/gate/static-b.S,line=23,title=fbt-audit FBT102 pushed-flags-leak",
    ]


def test_damaged_dwarf_falls_back(fixtures_built, capsys, tmp_path):
    """Garbage in .debug_line (or .debug_info) is never fatal: results fall back to the pseudo-path."""
    import subprocess

    src = fixtures_built / "gate-base"
    out = subprocess.run(["readelf", "-SW", str(src)], capture_output=True, text=True, check=True).stdout
    data = bytearray(src.read_bytes())
    for name in (".debug_line", ".debug_info"):
        line = next(x for x in out.splitlines() if f" {name} " in x)
        off, size = (int(v, 16) for v in line.split(name, 1)[1].split()[2:4])
        data[off + 4 : off + size] = bytes([0xFF]) * (size - 4)
    bad = tmp_path / "gate-bad"
    bad.write_bytes(bytes(data))
    code, doc, err = sarif(capsys, bad, *SRC)
    assert code == 1 and err == ""
    assert {r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] for r in doc["runs"][0]["results"]} == {
        "kernel/vmlinux"
    }
    assert rows(doc) == BASE_RESULTS
