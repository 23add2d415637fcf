"""test_docs.py: docs/rules.md matches the rule docstrings; the example workflow and the list format doc hold."""

from __future__ import annotations

from fbt_audit.cli.main import run
from fbt_audit.judge.registry import REGISTRY
from fbt_audit.judge.rulesdoc import markdown
from fbt_audit.report.denylist import FORMAT_LINE

from .conftest import ROOT

RULES_MD = ROOT / "docs" / "rules.md"
WORKFLOW = ROOT / "examples" / "github-actions" / "fbt-audit.yml"


def test_rules_md_is_fresh():
    stale = "docs/rules.md is stale: run `fbt-audit rules --markdown > docs/rules.md`"
    assert RULES_MD.read_text() == markdown(), stale


def test_rules_markdown_command(capsys):
    assert run(["rules", "--markdown"]) == 0
    assert capsys.readouterr().out == RULES_MD.read_text()


def test_rules_md_has_every_rule_and_section():
    text = RULES_MD.read_text()
    for rid, (_, cls) in REGISTRY.items():
        assert f"\n## {rid} {cls.name}\n" in text
        for section in cls.doc_sections():
            assert cls.doc_sections()[section] in text


def test_rules_and_explain(capsys):
    assert run(["rules"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[:4] == ["FBT102", "error", "stable", "pushed-flags-leak"]
    assert run(["explain", "fbt102"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("FBT102 pushed-flags-leak [error]\n")
    assert "What it finds:" in out and "References:" in out
    assert run(["explain", "FBT999"]) == 2


def test_example_workflow_is_documented():
    """The example (tests/test_signal.py checks it uses the action) is described where users look."""
    assert not (ROOT / ".github" / "workflows" / "fbt-audit.yml").exists()
    assert "examples/github-actions/fbt-audit.yml" in (ROOT / "docs" / "code-scanning.md").read_text()
    assert "action.yml" in (ROOT / "docs" / "code-scanning.md").read_text()


def test_list_format_documented():
    doc = (ROOT / "docs" / "probe-safety-list.md").read_text()
    from fbt_audit.report.listing import COLUMNS

    for i, col in enumerate(COLUMNS, 1):
        assert f"| {i} | `{col}` |" in doc
    assert "module:function+0xsymoff[@file[#N]]" in doc and "[@file[#N]]" in FORMAT_LINE
    assert "check-list" in doc
