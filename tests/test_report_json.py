"""test_report_json.py: the json report validates against its shipped JSON Schema and is deterministic."""

import json
from pathlib import Path

import jsonschema
import pytest
from helpers_report import module_result, vmlinux_result

from fbt_audit.report.formats import render
from fbt_audit.report.jsonout import SCHEMA, render_json, schema

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "audit" / "report" / "schema" / "fbt-audit-report.schema.json"


def validate(doc):
    jsonschema.Draft202012Validator.check_schema(schema())
    jsonschema.Draft202012Validator(schema()).validate(doc)


def test_shipped_schema_is_the_repository_file():
    assert schema() == json.loads(SCHEMA_PATH.read_text())


@pytest.mark.parametrize("all_patchpoints", [False, True])
def test_validates(all_patchpoints):
    doc = json.loads(render_json([vmlinux_result(), module_result()], all_patchpoints=all_patchpoints))
    validate(doc)
    assert doc["schema"] == SCHEMA == "fbt-audit/1"
    assert doc["all_patchpoints"] is all_patchpoints
    n = [len(img["patchpoints"]) for img in doc["images"]]
    assert n == ([5, 2] if all_patchpoints else [3, 1])


def test_content():
    doc = json.loads(render_json([module_result(), vmlinux_result()]))
    assert doc["summary"] == {
        "images": 2,
        "patchpoints": 7,
        "findings": 5,
        "verdicts": {"unsafe": 2, "deny": 1, "refused": 1, "safe": 3},
        "rules": {"FBT102": 2, "FBT110": 1, "FBT202": 1, "FBT204": 1},
    }
    vm = doc["images"][0]
    assert (vm["image"], vm["kind"], vm["module"], vm["flavour"]) == ("vmlinux", "vmlinux", "kernel", "amd64")
    assert vm["table"]["name"] == "legacy-2011" and len(vm["table"]["sha256"]) == 64
    pp = {p["name"]: p for p in vm["patchpoints"]}
    nsf = pp["native_save_fl"]
    assert nsf["address"] == "0xffffffff811e2c70"
    assert (nsf["section"], nsf["sec_off"], nsf["symoff"]) == (".text", 0x1E2C70, 0)
    assert (nsf["bytes"], nsf["mnemonic"], nsf["verdict"], nsf["rules"]) == ("9c", "pushfq", "unsafe",
                                                                           ["FBT102", "FBT204"])  # fmt: skip
    assert [f["rule"] for f in nsf["findings"]] == ["FBT102", "FBT204"]  # worst first
    assert nsf["findings"][0] == {"rule": "FBT102", "level": "error",
                                  "message": "pushfq stepped without flags repair", "variant": "disk"}  # fmt: skip
    assert pp["vfs_read"]["live"] == [{"label": "ftrace-nop", "bytes": "0f1f440000",
                                       "mnemonic": "nop dword ptr [rax + rax]"}]  # fmt: skip
    assert pp["vfs_read"]["mnemonic"] == "call __fentry__"
    kvm = doc["images"][1]["patchpoints"][0]
    assert kvm["source"] == {"file": "arch/x86/kvm/x86.c", "line": 1234}
    assert kvm["module"] == "kvm" and kvm["probe"] == "kvm:kvm_save_flags.isra.0:entry"


def test_schema_rejects_drift():
    doc = json.loads(render_json([vmlinux_result()]))
    doc["images"][0]["patchpoints"][0]["surprise"] = 1
    with pytest.raises(jsonschema.ValidationError):
        validate(doc)
    doc = json.loads(render_json([vmlinux_result()]))
    doc["summary"]["surprise"] = 1
    with pytest.raises(jsonschema.ValidationError):
        validate(doc)


def test_errors_empty_input_and_determinism():
    rs = [vmlinux_result(errors=["kvm.ko: truncated .symtab"]), module_result()]
    a = render_json(rs)
    assert a == render("json", rs) == render_json(list(reversed(rs)))
    assert json.loads(a)["images"][0]["errors"] == ["kvm.ko: truncated .symtab"]
    assert "/home/" not in a and "/lib/modules" not in a
    validate(json.loads(render_json([])))
