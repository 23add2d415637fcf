"""test_deep.py: --deep's flags paths on fixtures/deep/flags.S: the stack walk (always), value tracking (marker deep:
needs angr, the [deep] extra), the SARIF codeFlows, the text lines and the one-line notice without angr."""

from __future__ import annotations

import json

import pytest
from helpers_sarif import github_violations, validator
from helpers_tools import multitool_problems

from fbt_audit.cli.main import run
from fbt_audit.deep import values
from fbt_audit.deep.run import DeepOptions
from fbt_audit.pipeline.api import audit

NAMES = ("deep_save_fl", "deep_two_exits", "deep_copy", "deep_clobbered", "deep_escape", "deep_jump_label",
         "deep_iret", "deep_cli")  # fmt: skip


@pytest.fixture(scope="module")
def flags_o(fixtures_built):
    return fixtures_built / "deep" / "flags.o"


def _evidence(path, only=NAMES, use_values=False):
    r = audit(path, "legacy-2011", deep=DeepOptions(only=only, values=use_values))
    return {ev.function: ev for ev in r.evidence.values()}


def _ends(ev):
    """Each path as (its end: function offset and instruction, consumer, the branch/copy notes on the way)."""
    base = ev.patchpoint
    return [(p.end.addr - base, p.end.text, p.consumer, [s.note for s in p.steps[1:-1]]) for p in ev.paths]


def test_stack_walk_finds_every_path(flags_o):
    ev = _evidence(flags_o)
    assert _ends(ev["deep_save_fl"]) == [(1, "popq %rax", "pop %rax", [])]
    assert _ends(ev["deep_two_exits"]) == [
        (0xC, "popfq", "popfq", ["branch not taken", "branch not taken"]),
        (0xE, "popfq", "popfq", ["branch not taken", "branch taken"]),
        (0xE, "popfq", "popfq", ["branch taken"]),
    ]
    assert _ends(ev["deep_copy"]) == [
        (0x13, "popfq", "popfq", ["copies the word to %rax", "copies the word to 0x8(%rsp)"])
    ]
    assert _ends(ev["deep_clobbered"]) == [(0xF, "popfq", "popfq", [])]  # the store through %rdx is not followed
    assert _ends(ev["deep_escape"]) == [
        (9, "popfq", "popfq", ["the frame reaches deep_helper in %rdi: it may rewrite the word"])
    ]
    assert _ends(ev["deep_jump_label"]) == [
        (6, "popfq", "popfq", ["jump-label site: falls through"]),
        (8, "popfq", "popfq", ["jump-label site: jumps"]),
    ]
    assert _ends(ev["deep_iret"]) == [(5, "iretq", "iretq", [])]
    assert ev["deep_cli"].paths == []
    assert ev["deep_cli"].note == "cli writes IF directly: no pushed flags word to follow inside the function"
    for name in NAMES[:-1]:
        assert {p.state for p in ev[name].paths} == {"unknown"}, name
        assert ev[name].method == "stack walk"
    assert ev["deep_escape"].paths[0].caveats == (
        "the frame reaches deep_helper in %rdi: it may rewrite the word (call at 0x1041)",
    )


def test_deep_runs_on_flagged_patchpoints_only(flags_o):
    """--deep alone: the FBT102 findings of legacy-2011 (every pushfq entry); deep_cli has none (FBT101 is not
    legacy's), so it has no evidence. Under reference (which emulates pushf) nothing is flagged."""
    assert sorted(_evidence(flags_o, only=())) == sorted(NAMES[:-1])
    r = audit(flags_o, "reference", deep=DeepOptions(values=False))
    assert r.evidence == {}


def test_verdicts_do_not_change(flags_o):
    plain = audit(flags_o, "legacy-2011")
    deep = audit(flags_o, "legacy-2011", deep=DeepOptions(values=False))
    assert [(j.pp.name, j.verdict, j.findings) for j in plain.judgements] == [
        (j.pp.name, j.verdict, j.findings) for j in deep.judgements
    ]


def test_sarif_code_flows_validate(flags_o, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(values, "available", lambda: False)
    out = tmp_path / "deep.sarif"
    assert run([str(flags_o), "--table", "legacy-2011", "--deep", "--format", "sarif", "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert err == ("fbt-audit: --deep: value tracking needs the [deep] extra (pip install 'fbt-audit[deep]'); "
                   "the flags paths come from the stack walk alone\n")  # fmt: skip
    doc = json.loads(out.read_text())
    validator().validate(doc)
    assert github_violations(doc) == []
    assert multitool_problems(out, tmp_path / "multitool.sarif") == []
    (run_,) = doc["runs"]
    by_probe = {r["properties"]["probe"]: r for r in run_["results"] if r["ruleId"] == "FBT102"}
    two = by_probe["flags:deep_two_exits:entry"]
    flows = two["codeFlows"][0]["threadFlows"]
    assert [[loc["location"]["message"]["text"] for loc in f["locations"]] for f in flows] == [
        ["pushfq: pushes the flags word", "jne 0x1011: branch not taken", "jne 0x1011: branch not taken",
         "popfq: consumes the word"],
        ["pushfq: pushes the flags word", "jne 0x1011: branch not taken", "jne 0x1011: branch taken",
         "popfq: consumes the word"],
        ["pushfq: pushes the flags word", "jne 0x1011: branch taken", "popfq: consumes the word"],
    ]  # fmt: skip
    ends = [f["locations"][-1]["location"]["physicalLocation"]["address"] for f in flows]
    fn = run_["addresses"][ends[0]["parentIndex"]]
    assert fn == {"name": "deep_two_exits", "fullyQualifiedName": "flags:deep_two_exits", "kind": "function",
                  "parentIndex": 1, "relativeAddress": 3}  # fmt: skip
    assert [(a["relativeAddress"], a["fullyQualifiedName"]) for a in ends] == [
        (0xC, "deep_two_exits+0xc"), (0xE, "deep_two_exits+0xe"), (0xE, "deep_two_exits+0xe")
    ]  # fmt: skip
    assert [f["properties"]["proof"] for f in flows] == ["unknown"] * 3
    assert two["properties"]["deep"]["method"] == "stack walk"
    assert [loc["message"]["text"] for loc in two["relatedLocations"][1:]] == [
        "popfq at deep_two_exits+0xc: consumes the word", "popfq at deep_two_exits+0xe: consumes the word"
    ]  # fmt: skip


def test_text_shows_the_paths(flags_o, monkeypatch, capsys):
    monkeypatch.setattr(values, "available", lambda: False)
    assert run([str(flags_o), "--table", "legacy-2011", "--deep-only", "deep_save_fl"]) == 1
    out = capsys.readouterr().out.splitlines()
    at = next(i for i, line in enumerate(out) if "deep_save_fl+0x0" in line)
    assert out[at + 1 : at + 3] == [
        "    deep: 1 flags path (stack walk): 1 unknown",
        "      -> popq %rax at +0x1 (2 steps): unknown: stack walk only: value tracking did not run",
    ]
    assert not any(line.startswith("    deep:") for line in out[at + 3 :])  # only the named function


@pytest.mark.deep
def test_value_tracking_proves_refutes_and_says_why(flags_o):
    ev = _evidence(flags_o, use_values=True)
    states = {name: [p.state for p in ev[name].paths] for name in NAMES[:-1]}
    assert states == {
        "deep_save_fl": ["proven"],
        "deep_two_exits": ["proven", "proven", "proven"],
        "deep_copy": ["proven"],
        "deep_clobbered": ["refuted"],
        "deep_escape": ["unknown"],
        "deep_jump_label": ["proven", "proven"],
        "deep_iret": ["proven"],
    }
    ver = values.version()
    assert ev["deep_clobbered"].paths[0].why == f"value tracking (angr {ver}): popfq takes another word, not the pushed"
    assert ev["deep_escape"].paths[0].why == (
        f"value tracking (angr {ver}) cannot tell: the frame reaches deep_helper in %rdi: it may rewrite the word "
        "(call at 0x1041)"
    )
    assert ev["deep_save_fl"].method == f"stack walk + value tracking (angr {ver})"


def test_json_carries_the_paths_briefly(flags_o, monkeypatch, capsys):
    import jsonschema

    from fbt_audit.report.jsonout import schema

    monkeypatch.setattr(values, "available", lambda: False)
    assert run([str(flags_o), "--table", "legacy-2011", "--deep-only", "deep_iret", "--format", "json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    jsonschema.validate(doc, schema())
    (pp,) = [p for img in doc["images"] for p in img["patchpoints"] if "deep" in p]
    assert (pp["name"], pp["deep"]) == ("deep_iret", {
        "summary": "1 flags path (stack walk): 1 unknown",
        "paths": [{"consumer": "iretq", "at": "0x1057", "steps": 2, "state": "unknown",
                   "why": "stack walk only: value tracking did not run"}]})  # fmt: skip


def test_deep_only_names_what_it_did_not_find(flags_o, monkeypatch, capsys):
    monkeypatch.setattr(values, "available", lambda: True)  # no notice: only the unknown name is said
    monkeypatch.setattr(values, "track", lambda *a, **k: ([], ""))
    monkeypatch.setattr(values, "version", lambda: "0")
    assert run([str(flags_o), "--table", "legacy-2011", "--deep-only", "deep_save_fl", "--deep-only", "nosuch"]) == 1
    assert capsys.readouterr().err == "fbt-audit: --deep-only nosuch: no entry patchpoint of that name\n"
