"""test_external_symbols.py: a stripped image audited with outside symbols gives the unstripped image's verdicts."""

from __future__ import annotations

import subprocess

import pytest
from conftest import SAMPLE

from fbt_audit.input import elf
from fbt_audit.input.symbols import ExternalSymbols
from fbt_audit.model.errors import ElfFormatError
from fbt_audit.pipeline import api


def _nm(path) -> ExternalSymbols:
    out = subprocess.run(["nm", "-n", str(path)], check=True, capture_output=True, text=True).stdout
    rows = [line.split() for line in out.splitlines() if len(line.split()) == 3]
    return ExternalSymbols("nm of the sample", [int(a, 16) for a, _, _ in rows], [t for _, t, _ in rows],
                           [n for _, _, n in rows])  # fmt: skip


@pytest.fixture(scope="module")
def stripped(tmp_path_factory):
    out = tmp_path_factory.mktemp("stripped") / "vmlinux-sample-stripped"
    subprocess.run(["objcopy", "--strip-all", str(SAMPLE), str(out)], check=True)
    return out


def _verdicts(result):
    return [(j.pp.name, j.pp.addr, j.verdict.label, tuple(f.rule_id for f in j.findings)) for j in result.judgements]


def test_stripped_with_nm_symbols_matches_symtab(stripped):
    ext = _nm(SAMPLE)
    k = elf.load(stripped, symbols=ext)
    assert k.symbol_source == "nm of the sample"
    assert k.release == "6.1.0-sample-amd64"  # linux_banner found through the outside names
    cols = k.symbol_columns()
    # unsized: native_load_gs_index runs to the next symbol, native_restore_fl at +0x10
    i = cols.name.index("native_load_gs_index")
    assert (cols.addr[i], cols.size[i], cols.sized[i]) == (0xFFFFFFFF81000020, 0x10, False)
    assert _verdicts(api.audit(k, "legacy-2011")) == _verdicts(api.audit(SAMPLE, "legacy-2011"))


def test_symbol_source_called_only_without_symtab(stripped):
    calls = []

    def source(sections, data):
        calls.append([s.name for s in sections])
        return None

    assert elf.load(SAMPLE, symbols=source).symbol_source == ".symtab"
    assert calls == []
    with pytest.raises(ElfFormatError, match=r"stripped image \(no \.symtab\).*--system-map FILE.*--kallsyms FILE"):
        elf.load(stripped, symbols=source)
    assert calls == [[".text", ".rodata", ".notes", ".data", ".init.data"]]


def test_stripped_in_memory_matches(stripped):
    k = elf.load("named-in-reports", data=stripped.read_bytes(), symbols=_nm(SAMPLE))
    assert k.display == "named-in-reports"
    assert [j.pp.probe_name for j in api.audit(k).judgements][:3] == [
        "kernel:__fentry__:entry", "kernel:native_save_fl:entry", "kernel:native_load_gs_index:entry",
    ]  # fmt: skip
