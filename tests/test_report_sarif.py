"""test_report_sarif.py: SARIF 2.1.0 validity, GitHub's required fields, runs, fingerprints, the result cap."""

import json
import re
from pathlib import Path

import jsonschema
import pytest
from helpers_report import module_result, table, vmlinux_result, with_judgements

from fbt_audit import __version__
from fbt_audit.gate.identity import normalise_function
from fbt_audit.input.dwarf import relative_source
from fbt_audit.model.core import Finding, Level
from fbt_audit.report.formats import render
from fbt_audit.report.sarif import render_sarif

# The OASIS SARIF 2.1.0 schema, as GitHub code scanning validates against it (copied from shared/reference).
SARIF_SCHEMA = Path(__file__).parent / "data" / "sarif-schema-2.1.0.json"


@pytest.fixture(scope="module")
def validator():
    schema = json.loads(SARIF_SCHEMA.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def log(results, **kw):
    return json.loads(render_sarif(results, **kw))


def all_results(doc):
    return [res for run in doc["runs"] for res in run["results"]]


def test_valid_and_github_fields(validator):
    doc = log([vmlinux_result(), module_result(), vmlinux_result(release="6.1.0-56-cloud-amd64")])
    validator.validate(doc)
    assert doc["version"] == "2.1.0"
    for run in doc["runs"]:
        rules = run["tool"]["driver"]["rules"]
        for res in run["results"]:
            assert res["message"]["text"].strip()
            loc = res["locations"][0]["physicalLocation"]
            assert loc["artifactLocation"]["uri"] and not loc["artifactLocation"]["uri"].startswith("/")
            assert loc["region"]["startLine"] >= 1
            assert rules[res["ruleIndex"]]["id"] == res["ruleId"]
            assert res["partialFingerprints"]["primaryLocationLineHash"]
    # one per (patchpoint, rule) at warning or above (--show warning, the default): the FBT110 note is left out
    vmlinux = [("FBT202", "kernel:vfs_read:entry"), ("FBT102", "kernel:native_save_fl:entry"),
               ("FBT204", "kernel:native_save_fl:entry")]
    assert [
        (run["automationDetails"]["id"], [(r["ruleId"], r["locations"][0]["logicalLocations"][0]["fullyQualifiedName"])
                                          for r in run["results"]])
        for run in doc["runs"]
    ] == [
        ("fbt-audit/amd64/vmlinux/", vmlinux),
        ("fbt-audit/cloud-amd64/vmlinux/", vmlinux),
        ("fbt-audit/amd64/modules/", [("FBT102", "kvm:kvm_save_flags.isra.0:entry")]),
    ]  # fmt: skip
    assert [r["properties"]["resultsNotShown"] for r in doc["runs"][:2]] == [1, 1]
    with_notes = log([vmlinux_result(), module_result(), vmlinux_result(release="6.1.0-56-cloud-amd64")], show="note")
    assert [(r["ruleId"], r["locations"][0]["logicalLocations"][0]["fullyQualifiedName"])
            for r in with_notes["runs"][0]["results"]] == [*vmlinux, ("FBT110", "kernel:entry_SYSCALL_64:entry")]
    assert "resultsNotShown" not in with_notes["runs"][0]["properties"]


def test_one_run_per_kind_and_flavour():
    doc = log([module_result(), vmlinux_result(release="6.1.0-56-cloud-amd64"), vmlinux_result()])
    ids = [run["automationDetails"]["id"] for run in doc["runs"]]
    assert ids == ["fbt-audit/amd64/vmlinux/", "fbt-audit/cloud-amd64/vmlinux/", "fbt-audit/amd64/modules/"]
    vm = doc["runs"][0]
    assert vm["properties"]["releases"] == ["6.1.0-56-amd64"]
    assert vm["properties"]["buildIds"] == [vmlinux_result().kernel.build_id]
    assert vm["properties"]["tables"] == [{"name": "legacy-2011", "sha256": table().sha256}]
    driver = vm["tool"]["driver"]
    assert driver["name"] == "fbt-audit" and driver["version"] == __version__
    assert driver["informationUri"] == "https://github.com/fbt-audit/fbt-audit"  # = pyproject's Homepage
    assert [r["id"] for r in driver["rules"]] == ["FBT102", "FBT110", "FBT202", "FBT204"]
    assert vm["invocations"] == [{"executionSuccessful": True}]


def test_rule_metadata_from_docstrings():
    """The driver's rules are the real rules' (registry) metadata: summary, What it finds, every section, level."""
    rules = log([vmlinux_result()])["runs"][0]["tool"]["driver"]["rules"]
    assert [(r["id"], r["name"], r["defaultConfiguration"]["level"], r["properties"]["tags"]) for r in rules] == [
        ("FBT102", "pushed-flags-leak", "error", ["flags", "interrupts", "step"]),
        ("FBT110", "not-in-table", "note", ["table"]),
        ("FBT202", "ftrace-site", "warning", ["site", "ftrace"]),
        ("FBT204", "deny-region", "warning", ["site", "blacklist"]),
    ]
    rule = rules[0]
    assert rule["shortDescription"]["text"] == "pushf stores the handler's flags instead of the interrupted context's"
    full = rule["fullDescription"]["text"]  # What it finds, on one line
    assert full.startswith("PUSHF/PUSHFQ (`9c`), when the table steps it without the PUSHED_FLAGS fixup, or emulates")
    assert full.endswith("This is the bug behind the seed's one-in-a-million hang.") and "\n" not in full
    text, md = rule["help"]["text"], rule["help"]["markdown"]
    titles = ("What it finds", "Why it is unsafe", "Example", "Fix", "References")
    assert [t for t in re.findall(r"^([A-Z][\w ]+):$", text, re.M) if t in titles] == list(titles)
    assert re.findall(r"^## (.+)$", md, re.M) == list(titles)
    example = "FBT102_fail.ko: f_pushf+0x0 (.text+0x0): FBT102 pushfq stepped without flags repair [error]"
    assert example in text and example in md
    assert (rule["properties"]["precision"], rule["properties"]["problem.severity"]) == ("very-high", "error")
    assert [r["properties"]["problem.severity"] for r in rules] == ["error", "recommendation", "warning", "warning"]


def test_result_content():
    doc = log([vmlinux_result(), module_result()])
    vm = {(r["ruleId"], r["locations"][0]["logicalLocations"][0]["name"]): r for r in doc["runs"][0]["results"]}
    r = vm[("FBT102", "native_save_fl")]
    assert r["level"] == "error"
    assert r["message"]["text"] == "native_save_fl+0x0: pushfq stepped without flags repair [unsafe]"
    assert r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "kernel/vmlinux"
    assert r["locations"][0]["physicalLocation"]["region"] == {"startLine": 1}
    assert r["locations"][0]["logicalLocations"] == [
        {"name": "native_save_fl", "fullyQualifiedName": "kernel:native_save_fl:entry", "kind": "function"}
    ]
    p = r["properties"]
    assert (p["address"], p["symoff"], p["section"], p["bytes"], p["verdict"], p["variant"]) == (
        "0xffffffff811e2c70", "+0x0", ".text+0x1e2c70", "9c", "unsafe", "disk")  # fmt: skip
    assert vm[("FBT204", "native_save_fl")]["level"] == "warning"
    (kvm,) = doc["runs"][1]["results"]
    loc = kvm["locations"][0]["physicalLocation"]
    assert loc == {"artifactLocation": {"uri": "arch/x86/kvm/x86.c"}, "region": {"startLine": 1234}}
    nosrc = log([module_result(source=None)])["runs"][0]["results"][0]["locations"][0]["physicalLocation"]
    assert nosrc == {"artifactLocation": {"uri": "modules/kvm.ko"}, "region": {"startLine": 1}}


def test_byte_identical_and_no_absolute_paths():
    rs = [vmlinux_result(), module_result()]
    a = render_sarif(rs)
    assert a == render_sarif(rs) == render("sarif", rs) == render_sarif(list(reversed(rs)))
    assert "/home/" not in a and "/lib/modules" not in a


def fingerprints(doc):
    return sorted(
        (r["ruleId"], r["locations"][0]["logicalLocations"][0]["fullyQualifiedName"],
         r["partialFingerprints"]["primaryLocationLineHash"])
        for r in all_results(doc)
    )  # fmt: skip


def test_fingerprints_ignore_addresses():
    a = log([vmlinux_result(), module_result()])
    b = log([vmlinux_result(shift=0x4321), module_result(shift=0x80)])
    assert fingerprints(a) == fingerprints(b)
    assert render_sarif([vmlinux_result()]) != render_sarif([vmlinux_result(shift=0x10)])  # addresses do show
    hashes = [h for _, _, h in fingerprints(a)]
    assert len(set(hashes)) == len(hashes)
    assert all(len(h.split(":")[0]) == 16 and h.endswith(":1") for h in hashes)


def test_fingerprints_follow_the_source_function_not_the_clone_number():
    a = log([module_result()])
    r = module_result()
    r.judgements[0].pp.name = "kvm_save_flags.isra.3"
    assert fingerprints(a)[0][2] == fingerprints(log([r]))[0][2]
    r.judgements[0].pp.name = "kvm_other"
    assert fingerprints(a)[0][2] != fingerprints(log([r]))[0][2]


def test_fingerprints_tell_same_named_functions_apart():
    r = vmlinux_result()
    for j in r.judgements:
        j.pp.name = "helper.constprop.0"
        j.findings = [Finding("FBT102", Level.ERROR, "pushfq stepped without flags repair")]
    hashes = [h for _, _, h in fingerprints(log([r]))]
    assert len(set(hashes)) == 5
    assert {h.split(":")[1] for h in hashes} == {"1", "2", "3", "4", "5"}


def test_normalise_function():
    assert normalise_function("foo.isra.0") == "foo"
    assert normalise_function("foo.constprop.12") == "foo"
    assert normalise_function("foo.part.3") == "foo"
    assert normalise_function("foo.constprop.0.isra.0") == "foo"
    assert normalise_function("foo.cold") == "foo.cold"
    assert normalise_function("foo.part.0.cold") == "foo.cold"
    assert normalise_function("foo.isra.0.cold.17") == "foo.cold"
    assert normalise_function("native_save_fl") == "native_save_fl"
    assert normalise_function("__pfx_foo") == "__pfx_foo"


def test_relative_source():
    assert relative_source("arch/x86/kernel/irqflags.S") == "arch/x86/kernel/irqflags.S"
    assert relative_source("./kernel/sched/core.c") == "kernel/sched/core.c"
    assert relative_source("/build/linux-Xy12/kernel/sched/core.c") == "kernel/sched/core.c"
    assert relative_source("/nowhere/file.c") is None


def test_cap_keeps_the_most_severe(validator):
    doc = log([vmlinux_result()], max_results=2, show="note")
    validator.validate(doc)
    run = doc["runs"][0]
    # the error and the first warning survive, in report order; the later warning and the note go
    assert [(r["ruleId"], r["level"]) for r in run["results"]] == [("FBT202", "warning"), ("FBT102", "error")]
    assert run["properties"]["resultsTotal"] == 4 and run["properties"]["resultsOmitted"] == 2
    assert "omittedResults" not in run["properties"]  # counts only: no per-result lists in the run
    (note,) = run["invocations"][0]["toolExecutionNotifications"]
    assert note["level"] == "warning" and "2 of 4 results omitted" in note["message"]["text"]
    assert run["invocations"][0]["executionSuccessful"] is True


def test_tool_errors_are_notifications(validator):
    doc = log([vmlinux_result(errors=["vmlinux: .symtab truncated at entry 1234"])])
    validator.validate(doc)
    inv = doc["runs"][0]["invocations"][0]
    assert inv["executionSuccessful"] is False
    assert inv["toolExecutionNotifications"] == [
        {"level": "error", "message": {"text": "vmlinux: .symtab truncated at entry 1234"}}
    ]


def test_variants_merge_into_one_result_per_rule(validator):
    r = vmlinux_result()
    r.judgements[2].findings = [
        Finding("FBT202", Level.WARNING, "ftrace site", variant="disk"),
        Finding("FBT202", Level.WARNING, "ftrace site", variant="ftrace-nop"),
    ]
    doc = log([r])
    validator.validate(doc)
    res = [x for x in doc["runs"][0]["results"] if x["ruleId"] == "FBT202"]
    assert len(res) == 1 and res[0]["properties"]["variants"] == ["disk", "ftrace-nop"]


def test_unknown_rule_keeps_rule_index_valid(validator):
    r = with_judgements(vmlinux_result(), vmlinux_result().judgements)
    r.rules = []
    doc = log([r], show="note")
    validator.validate(doc)
    run = doc["runs"][0]
    ids = [d["id"] for d in run["tool"]["driver"]["rules"]]
    assert ids == ["FBT102", "FBT110", "FBT202", "FBT204"]
    for res in run["results"]:
        assert ids[res["ruleIndex"]] == res["ruleId"]


def test_empty(validator):
    doc = log([])
    validator.validate(doc)
    assert doc["runs"] == []


def test_github_rules_on_synthetic_results():
    from helpers_sarif import github_violations

    doc = log([vmlinux_result(), module_result(), vmlinux_result(errors=["x: truncated"])])
    assert github_violations(doc) == []
    res = all_results(doc)[0]
    assert [loc["message"]["text"] for loc in res["relatedLocations"]] == [
        "patchpoint kernel:vfs_read:entry at 0xffffffff81123450 (.text+0x123450), vfs_read+0x0: "
        "e800000000 call __fentry__; the int3 displaces 5 bytes"
    ]
    assert res["partialFingerprints"]["fbtPatchpoint/v1"] == "FBT202|kernel|vfs_read|entry|#1"
    broken = json.loads(json.dumps(doc))
    del broken["runs"][0]["results"][0]["relatedLocations"][0]["message"]
    broken["runs"][0]["results"][1]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] = "/abs/x.c"
    del broken["runs"][0]["results"][2]["locations"][0]["physicalLocation"]["region"]
    assert [v.split(": ", 1)[1] for v in github_violations(broken)] == [
        "GH1007 message not flattened to non-empty text",
        "GH1005/GH1006 uri '/abs/x.c' is not relative to the checkout",
        "GH1003 no region.startLine",
    ]


def test_path_map_in_sarif():
    from fbt_audit.input.dwarf import PathMap

    r = module_result(source=("/build/reproducible-path/linux-6.1.192/arch/x86/kvm/x86.c", 77))
    plain = log([r])["runs"][0]["results"][0]["locations"][0]["physicalLocation"]
    assert plain == {"artifactLocation": {"uri": "arch/x86/kvm/x86.c"}, "region": {"startLine": 77}}
    mapped = json.loads(render_sarif([r], paths=PathMap.parse(["/build/reproducible-path/linux-6.1.192=src"])))
    loc = mapped["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
    assert loc == "src/arch/x86/kvm/x86.c"
