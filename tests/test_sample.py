"""test_sample.py: the embedded sample: rebuilt from source it is byte-identical, and its reports match goldens."""

from __future__ import annotations

import subprocess

import pytest

from fbt_audit.cli.main import run
from fbt_audit.pipeline import api

from .conftest import ROOT, SAMPLE

GOLDEN = ROOT / "tests" / "golden"


def test_sample_rebuilds_identically(fixtures_built):
    assert (fixtures_built / "vmlinux-sample").read_bytes() == SAMPLE.read_bytes(), (
        "fixtures/sample/vmlinux-sample is stale: run `make -C fixtures sample` and commit it"
    )


@pytest.mark.parametrize("table", ["reference", "legacy-2011"])
@pytest.mark.parametrize("fmt", ["text", "list", "json", "sarif"])
def test_sample_goldens(table, fmt, capsys, update_goldens):
    code = run([str(SAMPLE), "--table", table, "--format", fmt, "--statistics"] if fmt == "text" else
               [str(SAMPLE), "--table", table, "--format", fmt])
    out = capsys.readouterr().out
    assert code == 1  # both tables leave unsafe entries in the sample
    golden = GOLDEN / f"sample-{table}.{ {'text': 'txt', 'list': 'tsv'}.get(fmt, fmt) }"
    if update_goldens:
        golden.write_text(out)
    assert out == golden.read_text()


def verdicts(table: str) -> dict[str, tuple[str, str]]:
    r = api.audit(SAMPLE, table)
    return {j.pp.name: (j.verdict.label, ",".join(j.rule_ids) or "-") for j in r.judgements}


def test_sample_reference_verdicts():
    assert verdicts("reference") == {
        "__fentry__": ("safe", "-"),
        "native_save_fl": ("safe", "-"),  # pushf emulated from the saved flags
        "native_load_gs_index": ("safe", "-"),
        "native_restore_fl": ("safe", "-"),
        "native_irq_disable": ("safe", "-"),
        "native_irq_enable": ("safe", "-"),
        "native_iret": ("refused", "FBT114"),
        "sample_read_global": ("safe", "-"),  # RIP-relative: displacement rebased for the copy
        "sample_call_rel": ("safe", "-"),
        "sample_call_indirect": ("safe", "-"),
        "sample_ret": ("safe", "-"),
        "sample_push_rbp": ("safe", "-"),
        "sample_sub_rsp": ("safe", "-"),
        "sample_traced": ("safe", "-"),  # moved past endbr64 to call __fentry__, probed through ftrace
        "sample_bug": ("refused", "FBT114"),
        "entry_SAMPLE_64": ("refused", "FBT114"),
        "sample_mov_ss": ("refused", "FBT114"),
        "sample_rep_movsb": ("safe", "-"),  # int3 stepping runs every iteration
        "sample_invalid": ("unsafe", "FBT111"),
    }


def test_sample_legacy_verdicts():
    assert verdicts("legacy-2011") == {
        "__fentry__": ("safe", "-"),
        "native_save_fl": ("unsafe", "FBT102"),  # the seed's bug
        "native_load_gs_index": ("unsafe", "FBT102"),
        "native_restore_fl": ("unsafe", "FBT101"),
        "native_irq_disable": ("safe", "-"),  # cli emulated on the saved flags
        "native_irq_enable": ("safe", "-"),
        "native_iret": ("refused", "FBT114"),
        "sample_read_global": ("refused", "FBT114"),  # RIP-relative refused
        "sample_call_rel": ("refused", "FBT114"),  # e8 refused
        "sample_call_indirect": ("safe", "-"),
        "sample_ret": ("safe", "-"),
        "sample_push_rbp": ("safe", "-"),
        "sample_sub_rsp": ("safe", "-"),
        "sample_traced": ("safe", "-"),  # endbr64 stepped: no IBT rule in this table's era
        "sample_bug": ("unsafe", "FBT105"),
        "entry_SAMPLE_64": ("unsafe", "FBT107"),
        "sample_mov_ss": ("unsafe", "FBT106"),
        "sample_rep_movsb": ("unsafe", "FBT109"),  # TF step: one iteration
        "sample_invalid": ("unsafe", "FBT111"),
    }


def test_sample_identity():
    k = api.load_kernel(SAMPLE)
    assert (k.kind, k.module, k.release, k.flavour) == ("vmlinux", "kernel", "6.1.0-sample-amd64", "sample-amd64")
    out = subprocess.run(["readelf", "-n", str(SAMPLE)], capture_output=True, text=True, check=True).stdout
    assert f"Build ID: {k.build_id}" in out
    ntype = {s.name: s.kind for s in k.symbols}
    assert ntype["native_load_gs_index"] == "NOTYPE" and ntype["native_save_fl"] == "FUNC"
