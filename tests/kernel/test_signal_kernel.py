"""test_signal_kernel.py: on the locked kernels, the text report a kernel engineer reads at a glance, SARIF that code
scanning keeps useful, and no linker section marker reported as a patchpoint."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
from helpers_sarif import github_violations, validator
from helpers_tools import multitool_problems

from fbt_audit.cli.main import run
from fbt_audit.model.core import Level

pytestmark = pytest.mark.kernel

LEVEL = {r: lvl for r, lvl in [("error", Level.ERROR), ("warning", Level.WARNING), ("note", Level.NOTE)]}
LINE = re.compile(r"^(?P<img>[^:]+): (?P<name>\S+)\+0x[0-9a-f]+ \([^)]*\): (?P<rule>FBT\d{3}) .* \[(?P<tag>[^\]]+)\]$")


def audit(capsys, *args) -> tuple[int, str]:
    code = run([str(a) for a in args])
    return code, capsys.readouterr().out


def rows(listing: str) -> list[dict[str, str]]:
    header = next(x for x in listing.splitlines() if x.startswith("# index"))[2:].split("\t")
    return [dict(zip(header, x.split("\t"), strict=True)) for x in listing.splitlines() if not x.startswith("#")]


def test_text_lists_the_unsafe_first_and_summarises_the_rest(vmlinux61, capsys):
    _, listing = audit(capsys, vmlinux61, "--format", "list", "--fail-on", "none")
    unsafe = {r["name"].split(":")[1] for r in rows(listing) if r["verdict"] == "unsafe"}
    assert len(unsafe) == 35  # 30, and the 5 FBT207 entries verify found (audit/data/handler-path.txt)
    code, out = audit(capsys, vmlinux61)
    assert code == 1
    lines = out.splitlines()
    blank = lines.index("")
    listed = [LINE.match(x) for x in lines[:blank]]
    assert all(listed) and {m["name"] for m in listed} == unsafe  # every unsafe patchpoint, and only them
    assert {m["tag"] for m in listed} == {"error"}
    summary = lines[blank + 1 :]
    assert len(summary) <= 40 and summary[-1].startswith("audited 49569 patchpoints in 1 image")
    assert "vmlinux-6.1.0-56-amd64: FBT205 2577 warnings not listed (.init.text 2458, .exit.text 119); " \
           "--show warning lists them" in summary  # fmt: skip


def test_show_all_lists_every_finding_worst_patchpoint_first(vmlinux61, capsys):
    _, listing = audit(capsys, vmlinux61, "--format", "list", "--fail-on", "none")
    want = sorted((r["name"].split(":")[1], rule) for r in rows(listing) for rule in r["rules"].split(",")
                  if rule not in ("-", "FBT206"))  # fmt: skip
    _, out = audit(capsys, vmlinux61, "--show", "all", "--fail-on", "none")
    matches = [m for m in map(LINE.match, out.splitlines()) if m]
    assert sorted((m["name"], m["rule"]) for m in matches) == want
    rank = {"unsafe": 3, "deny": 2, "refused": 1, "error": 3, "warning": 2, "note": 1}
    verdicts = [rank[m["tag"].rsplit(" ", 1)[-1]] for m in matches]  # "warning; patchpoint unsafe" -> unsafe
    assert verdicts == sorted(verdicts, reverse=True)  # unsafe, then deny, then refused


def test_sarif_612_carries_every_error_and_warning_under_the_cap(vmlinux612, capsys, tmp_path):
    doc_json = json.loads(audit(capsys, vmlinux612, "--format", "json", "--fail-on", "none")[1])
    want = sorted(
        (p["probe"], f["rule"])
        for img in doc_json["images"] for p in img["patchpoints"] for f in p["findings"]
        if LEVEL[f["level"]] >= Level.WARNING and not p["name"].startswith(("__pfx_", "__cfi_"))
    )  # fmt: skip
    out = tmp_path / "v612.sarif"
    assert run([str(vmlinux612), "--format", "sarif", "-o", str(out), "--fail-on", "none"]) == 0
    assert out.stat().st_size < 10_000_000
    doc = json.loads(out.read_text())
    validator().validate(doc)
    assert github_violations(doc) == []
    (run_,) = doc["runs"]
    got = sorted((r["properties"]["probe"], r["ruleId"]) for r in run_["results"])
    assert got == want and "resultsOmitted" not in run_["properties"]
    assert not [r for r in run_["results"] if r["properties"]["probe"].split(":")[1].startswith(("__pfx_", "__cfi_"))]
    assert run_["tool"]["driver"]["informationUri"].startswith("https://")
    assert multitool_problems(out, tmp_path / "multitool.sarif") == []


MARKER = re.compile(r"__\w+_text_(start|end)|_s?text|_etext|_[se]inittext")


def _markers(vmlinux) -> set[str]:
    """Linker section markers by their symbol table entry: NOTYPE, size 0, a section-boundary name (readelf)."""
    out = subprocess.run(["readelf", "-sW", str(vmlinux)], capture_output=True, text=True, check=True).stdout
    found = set()
    for line in out.splitlines():
        f = line.split()
        if len(f) == 8 and f[3] == "NOTYPE" and f[2] == "0" and MARKER.fullmatch(f[7]):
            found.add(f[7])
    return found


@pytest.mark.parametrize("which", ["vmlinux61", "vmlinux612"])
def test_no_section_marker_is_a_patchpoint(which, request, capsys):
    vmlinux = request.getfixturevalue(which)
    markers = _markers(vmlinux)
    assert {"__sched_text_start", "__entry_text_start", "__noinstr_text_end", "_etext"} <= markers
    _, listing = audit(capsys, vmlinux, "--format", "list", "--fail-on", "none", "--returns")
    names = {r["name"].split(":")[1] for r in rows(listing)}
    assert not names & markers
    assert not {n for n in names if MARKER.fullmatch(n)}
    _, text = audit(capsys, vmlinux, "--show", "all", "--fail-on", "none")
    assert not [x for x in text.splitlines() if any(f": {m}+0x" in x for m in markers)]
