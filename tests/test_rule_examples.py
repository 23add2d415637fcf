"""test_rule_examples.py: each rule's docstring Example quotes, verbatim, what `fbt-audit` prints for its fail.S."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from fbt_audit.cli.main import run
from fbt_audit.judge.registry import REGISTRY
from fbt_audit.model import abi
from fbt_audit.table import emulation as tables

from .test_rule_fixtures import SOURCES, fixture_options, table_for

# The auditor lines an Example quotes for its rule fixture (indented in the docstring) ...
QUOTED = re.compile(r"^\s*(FBT\d{3}_fail\.ko: .+)$", re.M)
# ... each a finding line, `FBTnnn_fail.ko: func+0x0 (.text+0x0): FBTnnn message [level]` (or `[level; patchpoint
# verdict]`), or, for a rule the text report folds into one line per image (FBT206), that line.
FINDING = re.compile(
    r"^FBT\d{3}_fail\.ko: (\S+)\+0x[0-9a-f]+ \(\S+\+0x[0-9a-f]+\): (FBT\d{3}) .+ \[(\w+)(?:; [^\]]+)?\]$"
)
# Every distinct shipped table ("kprobes" is an alias of "kprobes-6.12").
SHIPPED = sorted({v: k for k, v in reversed(tables.NAMED.items())}.values())
HEADER_TYPES = dict(abi.HEADER_FIELDS)
HEADER_AT = abi.offsets(abi.HEADER_FIELDS)


def example(rule_id: str) -> str:
    return REGISTRY[rule_id][1].doc_sections()["Example"]


def example_tables(text: str) -> list[str]:
    """The table specs the Example runs under: the fixture table it names, else `Under <spec>`; `Any table`
    claims every shipped table."""
    m = re.search(r"fixture table\s+`([^`]+)`", text) or re.match(r"Under `([^`]+)`", text)
    if m:
        return [m.group(1)]
    if text.startswith("Any table"):
        return SHIPPED
    raise AssertionError(f"the Example names no table: {text.splitlines()[0]!r}")


def table_arg(spec: str, tmp_path: Path) -> str:
    """--table for a spec: a named table as is; with FIELD=VALUE overrides, an ELF whose .fbt_emu_table is the
    named table's bytes with those header fields rewritten (and no entries for entries=none)."""
    name, *over = spec.split()
    if not over:
        return name
    want = table_for(spec)  # the table the fixture markers are checked under (test_rule_fixtures)
    raw = bytearray(tables.named_bytes(name))
    for field in ("default_handling", "step_mechanism", "step_if", "emu_flags", "step_fixups"):
        struct.pack_into("<" + HEADER_TYPES[field], raw, HEADER_AT[field], int(getattr(want, field)))
    if not want.entries:
        del raw[abi.HEADER_SIZE :]
        struct.pack_into("<" + HEADER_TYPES["count"], raw, HEADER_AT["count"], 0)
    got = tables.parse(bytes(raw), spec)
    fields = ("default_handling", "step_mechanism", "step_if", "emu_flags", "fault_fixup", "step_fixups", "entries")
    assert [getattr(got, f) for f in fields] == [getattr(want, f) for f in fields], spec
    blob = tmp_path / (spec.replace(" ", "_").replace("=", "-").replace(",", "+") + ".bin")
    blob.write_bytes(raw)
    elf = blob.with_suffix(".o")
    subprocess.run(
        ["objcopy", "-I", "binary", "-O", "elf64-x86-64", f"--rename-section=.data={abi.SECTION}", blob.name,
         elf.name],
        cwd=tmp_path, check=True,
    )  # fmt: skip
    return str(elf)


def fixture_object(rule_id: str, built: Path, tmp_path: Path) -> Path:
    """The built fail.S under the name its `# build:` line gives it (FBTnnn-fail.o, shown as FBTnnn_fail.ko)."""
    first = (SOURCES / rule_id / "fail.S").read_text().splitlines()[0]
    name = re.fullmatch(r"# build: gcc -c -o (\S+\.o) fail\.S", first).group(1)
    obj = tmp_path / name
    shutil.copyfile(built / "rules" / rule_id / "fail.o", obj)
    return obj


def audit_text(obj: Path, table: str, capsys, options: tuple[str, ...] = ()) -> list[str]:
    code = run([str(obj), "--table", table, "--fail-on", "note", "--show", "all", *options])
    out = capsys.readouterr()
    assert (code, out.err) == (1, ""), out.out + out.err
    return out.out.splitlines()


@pytest.mark.parametrize("rule_id", list(REGISTRY))
def test_example_lines_are_the_real_output(rule_id, fixtures_built, tmp_path, capsys):
    text = example(rule_id)
    quoted = QUOTED.findall(text)
    assert quoted, f"{rule_id}: the Example quotes no `{rule_id}_fail.ko: ...` line of the auditor"
    level = REGISTRY[rule_id][1].level.sarif
    for line in quoted:
        m = FINDING.match(line)
        if m:
            assert m.group(2, 3) == (rule_id, level) and line.startswith(f"{rule_id}_fail.ko: "), line
        else:  # the text report's one line for a folded rule
            assert line.startswith(f"{rule_id}_fail.ko: {rule_id} "), line
    obj = fixture_object(rule_id, fixtures_built, tmp_path)
    missing = []
    opts = fixture_options((SOURCES / rule_id / "fail.S").read_text())
    for spec in example_tables(text):
        out = audit_text(obj, table_arg(spec, tmp_path), capsys, opts)
        missing += [f"under {spec}: {line}" for line in quoted if line not in out]
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize("rule_id", list(REGISTRY))
def test_example_quotes_the_first_function_of_fail_s(rule_id):
    """fixtures/rules/README.md: the Example quotes the line of the first function of fail.S (or, when the text
    report folds the rule's findings, lists that function)."""
    text = example(rule_id)
    source = (SOURCES / rule_id / "fail.S").read_text()
    first = re.search(r"^\t\.type\s+([\w.]+),\s*@function", source, re.M).group(1)
    lines = [m for m in map(FINDING.match, QUOTED.findall(text)) if m]
    if lines:
        assert lines[0].group(1) == first
    else:
        assert re.search(rf"^\s+{re.escape(first)}:$", text, re.M), f"{rule_id}: the Example does not show {first}"


def test_table_specs_are_read_from_the_example():
    assert example_tables("Under `legacy-2011`, which steps POPF") == ["legacy-2011"]
    wrapped = "Under `reference` with LIVE_IF dropped (fixture table\n    `reference step_fixups=rip_disp`: an int3"
    assert example_tables(wrapped) == ["reference step_fixups=rip_disp"]
    assert example_tables("Any table, a function on the list:") == [
        "kprobes-6.1", "kprobes-6.1-optprobe", "kprobes-6.12", "legacy-2011", "reference"]  # fmt: skip
    with pytest.raises(AssertionError, match="names no table"):
        example_tables("Some table")
