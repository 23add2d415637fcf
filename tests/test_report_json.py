"""test_report_json.py: the json report validates against its shipped JSON Schema and is deterministic."""

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import jsonschema
import pytest
from helpers_report import module_result, vmlinux_result

from fbt_audit.report.formats import render
from fbt_audit.report.jsonout import SCHEMA, SCHEMA_FILE, render_json, schema

ROOT = Path(__file__).resolve().parent.parent


def validate(doc):
    jsonschema.Draft202012Validator.check_schema(schema())
    jsonschema.Draft202012Validator(schema()).validate(doc)


def test_wheel_ships_the_schema_and_every_data_file(tmp_path):
    """An editable install reads audit/ itself; a built wheel is what users get: its package data must hold the
    schema (schema() and the report read it), the named tables and the handler-path list, byte for byte."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("audit", "rules"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(src)],
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = tmp_path.glob("fbt_audit-*.whl")
    with zipfile.ZipFile(wheel) as z:
        shipped = {n: z.read(n) for n in z.namelist() if not n.endswith(".py") and n.startswith("fbt_audit/")}
    data = sorted(p for d in ("report/schema", "table/named", "data") for p in (ROOT / "audit" / d).iterdir())
    assert shipped == {"fbt_audit/" + str(p.relative_to(ROOT / "audit")): p.read_bytes() for p in data}
    assert json.loads(shipped["fbt_audit/report/schema/" + SCHEMA_FILE]) == schema()


@pytest.mark.parametrize("all_patchpoints", [False, True])
def test_validates(all_patchpoints):
    doc = json.loads(render_json([vmlinux_result(), module_result()], all_patchpoints=all_patchpoints))
    validate(doc)
    assert doc["schema"] == SCHEMA == "fbt-audit/1"
    assert doc["all_patchpoints"] is all_patchpoints
    names = [[p["name"] for p in img["patchpoints"]] for img in doc["images"]]
    if all_patchpoints:
        assert names == [["do_one_initcall", "read_tsc", "vfs_read", "native_save_fl", "entry_SYSCALL_64"],
                         ["kvm_save_flags.isra.0", "kvm_arch_init"]]  # fmt: skip
    else:  # only those with findings
        assert names == [["vfs_read", "native_save_fl", "entry_SYSCALL_64"], ["kvm_save_flags.isra.0"]]


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
