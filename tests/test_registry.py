"""test_registry.py: every rule is registered, documented and has fixtures; selection works like ruff's."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest

import fbt_audit.rules
from fbt_audit.judge import registry
from fbt_audit.judge.registry import REGISTRY, Status
from fbt_audit.judge.rule import SECTIONS, Rule
from fbt_audit.model.errors import UsageError

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures" / "rules"
MODULES = sorted(m.name for m in pkgutil.iter_modules(fbt_audit.rules.__path__) if not m.name.startswith("_"))
ALLOWED_IMPORTS = {"__future__", "fbt_audit.model.core", "fbt_audit.model.abi", "fbt_audit.model.facts",
                   "fbt_audit.judge.rule"}  # fmt: skip


def rule_classes(module_name: str) -> list[type[Rule]]:
    mod = importlib.import_module(f"fbt_audit.rules.{module_name}")
    return [
        c
        for _, c in inspect.getmembers(mod, inspect.isclass)
        if issubclass(c, Rule) and c is not Rule and c.__module__ == mod.__name__
    ]


@pytest.mark.parametrize("module_name", MODULES)
def test_every_rule_module_defines_one_registered_rule(module_name):
    (cls,) = rule_classes(module_name)
    assert cls.id in REGISTRY, f"{module_name}: {cls.id} is not in audit/judge/registry.py"
    assert REGISTRY[cls.id][1] is cls
    # the file is named after the rule: fbt102_pushed_flags_leak.py <-> FBT102 pushed-flags-leak
    assert module_name == f"{cls.id.lower()}_{cls.name.replace('-', '_')}"


@pytest.mark.parametrize("module_name", MODULES)
def test_rule_modules_import_only_the_model_abi_and_rule(module_name):
    src = (ROOT / "rules" / f"{module_name}.py").read_text()
    tree = ast.parse(src)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            names = {node.module or ""}
        else:
            continue
        assert names <= ALLOWED_IMPORTS, f"{module_name} imports {names - ALLOWED_IMPORTS}"


@pytest.mark.parametrize("module_name", MODULES + ["__init__"])
def test_rule_files_open_with_a_one_line_banner(module_name):
    src = (ROOT / "rules" / f"{module_name}.py").read_text()
    first = src.splitlines()[0]
    assert re.fullmatch(r'""".+"""', first), first
    assert ast.get_docstring(ast.parse(src)) == first[3:-3]


def test_registered_modules_are_all_present():
    registered = {cls.__module__.rsplit(".", 1)[-1] for _, cls in REGISTRY.values()}
    assert registered == set(MODULES)


def test_ids_sorted_in_range_and_names_unique():
    ids = list(REGISTRY)
    assert ids == sorted(ids)
    for rid, (_, cls) in REGISTRY.items():
        assert re.fullmatch(r"FBT[123]\d\d", rid)
        assert cls.id == rid
    names = [cls.name for _, cls in REGISTRY.values()]
    assert len(set(names)) == len(names)
    runnable = [rid for rid, (st, _) in REGISTRY.items() if st is not Status.REMOVED]
    assert [r.id for r in registry.all_rules()] == runnable


@pytest.mark.parametrize("rule_id", list(REGISTRY))
def test_rule_metadata(rule_id):
    cls = REGISTRY[rule_id][1]
    assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", cls.name)
    assert cls.summary and cls.summary == cls.summary.lower() and not cls.summary.endswith(".")
    assert "\n" not in cls.summary
    assert "check" in cls.__dict__


@pytest.mark.parametrize("rule_id", list(REGISTRY))
def test_rule_docstring_has_every_section(rule_id):
    cls = REGISTRY[rule_id][1]
    sections = cls.doc_sections()
    assert list(sections) == list(SECTIONS)
    for name, body in sections.items():
        assert body.strip(), f"{rule_id}: empty section {name!r}"
    assert cls.doc().splitlines()[0].strip(), f"{rule_id}: no summary line before the sections"


@pytest.mark.parametrize("rule_id", list(REGISTRY))
def test_rule_has_fixture_sources(rule_id):
    for kind in ("fail", "pass"):
        src = FIXTURES / rule_id / f"{kind}.S"
        assert src.is_file(), f"missing {src.relative_to(ROOT)}"
        text = src.read_text()
        assert text.splitlines()[0] == f"# build: gcc -c -o {rule_id}-{kind}.o {kind}.S"
        assert re.search(r"^# table: (reference|legacy-2011|kprobes-6\.1-optprobe)( \w+=\S+)*$", text, re.M)
        markers = re.findall(r"^\t[^#\n]+#\s*(FBT\d{3}|OK)\b", text, re.M)  # on instruction lines
        assert markers, f"{src}: no # FBTnnn / # OK markers"
        if kind == "fail":
            assert rule_id in markers
        else:
            assert rule_id not in markers


# --- get / select / ignore ---------------------------------------------------------------------------


def ids(rules) -> list[str]:
    return [r.id for r in rules]


ALL = [rid for rid, (st, _) in REGISTRY.items() if st in (Status.STABLE, Status.PREVIEW)]


def test_get_returns_the_shared_instance_case_insensitively():
    r = registry.get("fbt102")
    assert r.id == "FBT102" and r is registry.get("FBT102")
    assert r in registry.all_rules()
    with pytest.raises(UsageError, match="unknown rule 'FBT999'"):
        registry.get("FBT999")


def test_select_default_is_every_stable_and_preview_rule():
    assert ids(registry.select()) == ALL
    assert ids(registry.select(None, None)) == ALL
    assert ids(registry.select(["ALL"])) == ALL
    assert ids(registry.select([])) == []


def test_select_by_id_and_prefix():
    assert ids(registry.select(["FBT102"])) == ["FBT102"]
    assert ids(registry.select(["FBT10"])) == [rid for rid in ALL if rid.startswith("FBT10")]
    assert ids(registry.select(["FBT1"])) == [rid for rid in ALL if rid.startswith("FBT1")]
    assert ids(registry.select(["FBT"])) == ALL
    assert ids(registry.select(["fbt11", "FBT102"])) == ["FBT102"] + [r for r in ALL if r.startswith("FBT11")]


def test_ignore_by_id_and_prefix():
    assert "FBT102" not in ids(registry.select(ignore=["FBT102"]))
    assert ids(registry.select(ignore=["FBT10"])) == [rid for rid in ALL if not rid.startswith("FBT10")]
    want = [r for r in ALL if r.startswith("FBT1") and not r.startswith("FBT11")]
    assert ids(registry.select(["FBT1"], ["FBT11"])) == want


def test_more_specific_selector_wins_and_ignore_wins_ties():
    assert ids(registry.select(["FBT102"], ["FBT1"])) == ["FBT102"]
    assert ids(registry.select(["FBT10"], ["FBT1"])) == [r for r in ALL if r.startswith("FBT10")]
    assert ids(registry.select(["FBT1"], ["FBT1"])) == []
    assert ids(registry.select(["FBT102"], ["FBT102"])) == []


def test_reserved_ranges_select_nothing_yet():
    assert ids(registry.select(["FBT3"])) == [r for r in ALL if r.startswith("FBT3")]
    assert ids(registry.select(ignore=["FBT3"])) == [r for r in ALL if not r.startswith("FBT3")]


@pytest.mark.parametrize("bad", ["E501", "FBT1x", "FBT1021", "102", ""])
def test_bad_selectors_are_usage_errors(bad):
    with pytest.raises(UsageError):
        registry.select([bad])
    with pytest.raises(UsageError):
        registry.select(ignore=[bad])


def test_unknown_full_id_is_a_usage_error():
    with pytest.raises(UsageError, match="FBT208"):  # in the site range, not registered
        registry.select(["FBT208"])


def test_lifecycle_deprecated_runs_only_by_full_id(monkeypatch):
    monkeypatch.setitem(REGISTRY, "FBT113", (Status.DEPRECATED, REGISTRY["FBT113"][1]))
    assert "FBT113" not in ids(registry.select())
    assert "FBT113" not in ids(registry.select(["FBT11"]))
    assert ids(registry.select(["FBT113"])) == ["FBT113"]
    assert registry.status("fbt113") is Status.DEPRECATED
    assert "FBT113" in ids(registry.all_rules())


def test_lifecycle_removed_never_runs(monkeypatch):
    monkeypatch.setitem(REGISTRY, "FBT113", (Status.REMOVED, REGISTRY["FBT113"][1]))
    assert "FBT113" not in ids(registry.all_rules())
    assert "FBT113" not in ids(registry.select())
    with pytest.raises(UsageError, match="removed"):
        registry.select(["FBT113"])
