"""test_rule_fixtures.py: each rule's fail.S and pass.S, built and audited; markers name the rules per function."""

from __future__ import annotations

import dataclasses
import functools
import re
from pathlib import Path

import pytest

from fbt_audit.judge.registry import REGISTRY
from fbt_audit.model.abi import EmuFlags, Fixup, Handling, StepIF, StepMechanism
from fbt_audit.pipeline import api
from fbt_audit.table import emulation as tables

SOURCES = Path(__file__).resolve().parent.parent / "fixtures" / "rules"


def _fixups(v: str) -> Fixup:
    return Fixup(0) if v == "0" else functools.reduce(lambda a, b: a | b, (Fixup[x.upper()] for x in v.split(",")))


# `# table: NAME [FIELD=VALUE ...]` overrides (fixtures/rules/README.md): header fields no shipped table has.
FIELDS = {
    "default": ("default_handling", lambda v: Handling[v.upper()]),
    "mechanism": ("step_mechanism", lambda v: StepMechanism[v.upper()]),
    "step_if": ("step_if", lambda v: StepIF[v.upper()]),
    "emu": ("emu_flags", lambda v: EmuFlags[v.upper()]),
    "step_fixups": ("step_fixups", _fixups),
    "entries": ("entries", lambda v: {"none": ()}[v]),
}


def table_for(spec: str):
    name, *over = spec.split()
    kw = {}
    for o in over:
        k, v = o.split("=", 1)
        field, conv = FIELDS[k]
        kw[field] = conv(v)
    t = tables.load(name)
    return dataclasses.replace(t, **kw) if kw else t


def markers(text: str) -> dict[str, list[str]]:
    """function -> rule ids expected at its entry, from the marker on its first instruction's line."""
    expect: dict[str, list[str]] = {}
    cur, first = None, False
    for line in text.splitlines():
        m = re.match(r"^(\w[\w.]*):", line)
        if m:
            cur, first = m.group(1), True
            continue
        stripped = line.lstrip()
        if cur and first and line.startswith("\t") and not stripped.startswith((".globl", ".type", ".size", "#")):
            mm = re.search(r"#\s*((?:FBT\d{3}[ ,]*)+|OK)\b", line)
            assert mm, f"{cur}: first instruction has no marker"
            expect[cur] = sorted(set(re.findall(r"FBT\d{3}", mm.group(1))))
            first = False
    return expect


CASES = sorted(SOURCES.glob("FBT*/*.S"))


def fixture_options(text: str) -> tuple[str, ...]:
    """The audit options of a fixture's optional `# options:` line (fixtures/rules/README.md): only --deep."""
    m = re.search(r"^# options: (.+)$", text, re.M)
    opts = tuple(m.group(1).split()) if m else ()
    assert set(opts) <= {"--deep"}, opts
    return opts


@pytest.mark.parametrize("src", CASES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_fixture_markers(src, fixtures_built):
    text = src.read_text()
    spec = re.search(r"^# table: (.+)$", text, re.M).group(1).strip()
    obj = fixtures_built / "rules" / src.parent.name / (src.stem + ".o")
    result = api.audit(obj, table_for(spec), deep="--deep" in fixture_options(text))
    got = {j.pp.name: j.rule_ids for j in result.judgements}
    assert got == markers(text)
    rule = src.parent.name
    fired = {r for ids in got.values() for r in ids}
    if src.stem == "fail":
        assert rule in fired, f"{rule} never fires in its fail.S"
    else:
        assert rule not in fired, f"{rule} fires in its pass.S"


def test_every_rule_has_both_fixtures():
    for rid in REGISTRY:
        assert (SOURCES / rid / "fail.S").exists() and (SOURCES / rid / "pass.S").exists(), rid
