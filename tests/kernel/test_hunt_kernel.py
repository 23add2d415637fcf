"""test_hunt_kernel.py: the seed's one-in-a-million hunt on the real bookworm 6.1 vmlinux: hits merged from a
synthesised /proc/dtrace/fbt dump and ftrace profile, the rarity ranking, the bisection, the map in Chromium."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
from helpers_sarif import github_violations, validator

from fbt_audit.cli.main import run
from fbt_audit.pipeline import api
from fbt_audit.report.jsonout import schema

pytestmark = pytest.mark.kernel

ROOT = Path(__file__).resolve().parent.parent.parent
ARTIFACTS = ROOT / "build" / "test-artifacts"
SHIFT = 0x2E400000  # the KASLR slide the synthesised dump was "taken" under (2 MiB aligned)
PUSHF_61 = ["ftrace_regs_caller", "native_save_fl", "this_cpu_cmpxchg16b_emu", "verify_cpu"]

# (function, hits, fired while disabled): the rows the assertions name.
NAMED = [
    ("native_save_fl", 16, False),
    ("this_cpu_cmpxchg16b_emu", 3, True),
    ("asm_load_gs_index", 2, True),
    ("native_load_gs_index", 10, False),  # the seed's function; on 6.1 it starts with push %rbx and is safe
    ("do_syscall_64", 987654, False),
    ("verify_cpu", 0, False),
]
UNMATCHED = [
    "208 0042  ffffffffc0a13370 55 1 -1 ext4:ext4_sync_fs:entry 55",  # a module the audit did not read
    "209 0007* ffffffff8ee00000 90 1 -1 kernel:no_such_function_61:entry <unmapped>",
]


@pytest.fixture(scope="module")
def legacy(vmlinux61):
    return api.audit(vmlinux61, "legacy-2011")


def _row(ordinal: int, hits: int, star: bool, pp) -> str:
    """One row exactly as dtrace4linux fbt_seq_show prints it: "%d %04u%c %p %02x %d %2d %s:%s:%s %s\\n"."""
    raw = pp.insn.raw
    return "%d %04u%c %x %02x %d %2d %s:%s:%s %s" % (  # noqa: UP031 - the driver's format, verbatim
        ordinal, hits, "*" if star else " ", pp.sym_addr + SHIFT, raw[0], len(raw), pp.insn.modrm_off,
        pp.module, pp.name, pp.site, " ".join(f"{b:02x}" for b in raw),
    )  # fmt: skip


@pytest.fixture(scope="module")
def dump(legacy, tmp_path_factory) -> Path:
    """A /proc/dtrace/fbt dump: the named rows, 200 ordinary probes hit often, and two rows matching nothing."""
    by_name = {j.pp.name: j.pp for j in legacy.judgements}
    lines = ["# count patchpoint opcode inslen modrm name"]
    for i, (name, hits, star) in enumerate(NAMED):
        lines.append(_row(i, hits, star, by_name[name]))
    named = {n for n, _, _ in NAMED}
    others = [j.pp for j in legacy.judgements if j.pp.name not in named and j.pp.insn.raw][:200]
    for i, pp in enumerate(others):
        lines.append(_row(len(NAMED) + i, 100000 + i, i % 50 == 0, pp))
    lines.extend(UNMATCHED)
    out = tmp_path_factory.mktemp("hits") / "fbt.txt"
    out.write_text("\n".join(lines) + "\n")
    return out


def _list_counts(text: str) -> dict[str, str]:
    rows = [line.split("\t") for line in text.splitlines() if not line.startswith("#")]
    return {r[6]: r[1] for r in rows}


def test_dtrace_dump_merged_into_list(vmlinux61, dump, tmp_path, capsys):
    out = tmp_path / "list.txt"
    assert run([str(vmlinux61), "--table", "legacy-2011", "--format", "list", "--hits", str(dump), "-o", str(out)]) == 1
    counts = _list_counts(out.read_text())
    assert counts["kernel:native_save_fl:entry"] == "16"
    assert counts["kernel:this_cpu_cmpxchg16b_emu:entry"] == "3"
    assert counts["kernel:asm_load_gs_index:entry"] == "2"
    assert counts["kernel:native_load_gs_index:entry"] == "10"
    assert counts["kernel:do_syscall_64:entry"] == "987654"
    assert counts["kernel:verify_cpu:entry"] == "0"
    assert counts["kernel:ftrace_regs_caller:entry"] == "-"  # not in the dump
    assert sum(1 for c in counts.values() if c != "-") == 206
    err = capsys.readouterr().err
    assert err.startswith("fbt-audit: hits: 2 of 208 rows matched no patchpoint, e.g. ")
    assert "ext4:ext4_sync_fs:entry" in err and "kernel:no_such_function_61:entry" in err


def test_dtrace_dump_merged_into_text_json_sarif(vmlinux61, dump, tmp_path):
    text = tmp_path / "out.txt"
    assert run([str(vmlinux61), "--table", "legacy-2011", "--hits", str(dump), "-o", str(text)]) == 1
    lines = text.read_text().splitlines()
    pushf = [line for line in lines if " native_save_fl+0x0 " in line and "FBT102" in line]
    assert len(pushf) == 1 and pushf[0].startswith(f"{vmlinux61.name}: native_save_fl+0x0 (.text+0xa45ff0): FBT102 ")
    assert pushf[0].endswith("[error] hits 16")
    assert (
        lines[-1] == f"hits: 206 of 208 rows merged into 206 probes, 2 unmatched, 7 marked *; KASLR shift 0x{SHIFT:x}"
    )

    js = tmp_path / "out.json"
    assert run([str(vmlinux61), "--table", "legacy-2011", "--format", "json", "--hits", str(dump), "-o", str(js)]) == 1
    doc = json.loads(js.read_text())
    jsonschema.Draft202012Validator(schema()).validate(doc)
    assert doc["hits"]["unmatched"] == 2 and doc["hits"]["shift"] == f"0x{SHIFT:x}" and doc["hits"]["starred"] == 7
    pps = {p["probe"]: p for img in doc["images"] for p in img["patchpoints"]}
    assert pps["kernel:native_save_fl:entry"]["hits"] == 16
    assert pps["kernel:verify_cpu:entry"]["hits"] == 0

    sarif = tmp_path / "out.sarif"
    assert (
        run([str(vmlinux61), "--table", "legacy-2011", "--format", "sarif", "--hits", str(dump), "-o", str(sarif)]) == 1
    )
    doc = json.loads(sarif.read_text())
    validator().validate(doc)
    assert github_violations(doc) == []
    (run_,) = doc["runs"]
    hits = {(r["properties"]["probe"], r["ruleId"]): r["properties"]["hits"] for r in run_["results"]}
    assert hits[("kernel:native_save_fl:entry", "FBT102")] == 16
    assert hits[("kernel:this_cpu_cmpxchg16b_emu:entry", "FBT102")] == 3
    assert hits[("kernel:asm_load_gs_index:entry", "FBT107")] == 2
    notes = [n["message"]["text"] for n in run_["invocations"][0]["toolExecutionNotifications"]]
    assert any(n.startswith("hits: 2 of 208 rows matched no patchpoint") for n in notes)


def test_ftrace_profile_per_cpu_summed(vmlinux61, tmp_path, capsys):
    stat = tmp_path / "trace_stat"
    stat.mkdir()
    head = "  Function                               Hit    Time            Avg             s^2\n" \
           "  --------                               ---    ----            ---             ---\n"  # fmt: skip
    (stat / "function0").write_text(
        head + "  native_save_fl                          10    3.200 us    0.320 us    0.010 us\n"
        "  asm_load_gs_index                        1    0.400 us    0.400 us    0.000 us\n"
    )
    (stat / "function1").write_text(
        head + "  native_save_fl                           6    2.000 us    0.333 us    0.020 us\n"
        "  no_such_fn_xyz                           9    1.000 us    0.111 us    0.000 us\n"
    )
    out = tmp_path / "list.txt"
    args = [str(vmlinux61), "--table", "legacy-2011", "--format", "list", "--hits", str(stat), "-o", str(out)]
    assert run(args) == 1
    counts = _list_counts(out.read_text())
    assert counts["kernel:native_save_fl:entry"] == "16"
    assert counts["kernel:asm_load_gs_index:entry"] == "1"
    assert counts["kernel:verify_cpu:entry"] == "-"
    assert "hits: 1 of 4 rows matched no patchpoint, e.g. no_such_fn_xyz" in capsys.readouterr().err


def test_rank_rarest_first(vmlinux61, dump, capsys):
    assert run(["rank", str(vmlinux61), "--table", "legacy-2011", "--hits", str(dump)]) == 0
    rows = [line.split("\t") for line in capsys.readouterr().out.splitlines() if not line.startswith("#")]
    assert [(r[1], r[4]) for r in rows[:3]] == [
        ("2", "kernel:asm_load_gs_index:entry"),
        ("3", "kernel:this_cpu_cmpxchg16b_emu:entry"),
        ("16", "kernel:native_save_fl:entry"),
    ]
    hit = [r for r in rows if r[1] != "-"]
    assert [int(r[1]) for r in hit] == sorted(int(r[1]) for r in hit)
    assert rows.index(hit[-1]) == len(hit) - 1  # never-hit ones follow every hit one
    never = {r[4] for r in rows[len(hit) :]}
    assert {"kernel:verify_cpu:entry", "kernel:ftrace_regs_caller:entry"} <= never
    assert "kernel:native_load_gs_index:entry" not in {r[4] for r in rows}  # safe: not a candidate
    assert run(["rank", str(vmlinux61), "--table", "legacy-2011", "--hits", str(dump), "--at-least", "unsafe"]) == 0
    rows = [line.split("\t") for line in capsys.readouterr().out.splitlines() if not line.startswith("#")]
    assert [r[4] for r in rows[:3]] == [
        "kernel:asm_load_gs_index:entry", "kernel:this_cpu_cmpxchg16b_emu:entry", "kernel:native_save_fl:entry",
    ]  # fmt: skip
    assert {r[2] for r in rows} == {"unsafe"} and rows[3][1] == "-"  # the other unsafe ones were never hit


def _nibbles_probed(legacy) -> list[int]:
    return sorted({j.pp.insn.raw[0] >> 4 for j in legacy.judgements if j.verdict.label != "refused" and j.pp.insn.raw})


def test_seed_hunt_bisection_reaches_pushf(vmlinux61, legacy, tmp_path, capsys):
    """The seed's binary search over high nibbles, scripted: a run crashes while a PUSHF entry is enabled.
    It must reach 0x9n, then 0x9c and its four PUSHF patchpoints, in the steps binary search predicts."""
    nibbles = _nibbles_probed(legacy)
    bytes9 = sorted({j.pp.insn.raw[0] for j in legacy.judgements
                     if j.verdict.label != "refused" and j.pp.insn.raw and j.pp.insn.raw[0] >> 4 == 9})  # fmt: skip
    assert len(nibbles) == 12 and bytes9 == [0x90, 0x9C]
    predicted = math.ceil(math.log2(len(nibbles))) + math.ceil(math.log2(len(bytes9)))
    assert predicted == 5

    state, sets = tmp_path / "hunt.json", tmp_path / "sets"
    base = ["bisect", str(vmlinux61), "--table", "legacy-2011", "--state", str(state), "-o", str(sets)]
    assert run(base) == 0
    pushf = re.compile(r"^kernel:(?:" + "|".join(PUSHF_61) + r")\+0x0$", re.M)
    verdicts = []
    out = capsys.readouterr().out
    while "level probe" not in out:
        enabled = sets.joinpath("enable.txt").read_text()
        disabled = sets.joinpath("disable.txt").read_text()
        assert not (set(enabled.splitlines()[5:]) & set(disabled.splitlines()[5:]))
        v = "crashed" if pushf.search(enabled) else "clean"
        verdicts.append(v)
        assert run([*base, "--verdict", v]) == 0
        out = capsys.readouterr().out
        assert len(verdicts) <= 10
    assert verdicts == ["crashed", "clean", "crashed", "clean", "clean"]
    assert len(verdicts) == predicted
    assert "nibble 0x9n: 68 patchpoints" in out
    assert "byte 0x9c: 4 patchpoints" in out
    assert "suspects kernel:verify_cpu+0x0..kernel:native_save_fl+0x0 (4 groups) at level probe" in out
    assert json.loads(state.read_text())["verdicts"] == verdicts
    # The step number alone rewrites an earlier step's halves from the state: step 5 split 0x90 from 0x9c.
    assert run([*base, "--step", "5"]) == 0
    assert "enable 0x90 (64 patchpoints)" in capsys.readouterr().out
    enable = sets.joinpath("enable.txt").read_text().splitlines()
    assert enable[4] == "# bisect step 5 level byte: enable" and len(enable) == 5 + 64
    assert not pushf.search("\n".join(enable))


def test_bisect_by_rule_and_module(vmlinux61, legacy, tmp_path, capsys):
    suspect = [j for j in legacy.judgements if j.verdict.label != "safe"]
    args = ["bisect", str(vmlinux61), "--table", "legacy-2011", "--population", "suspect", "-o", str(tmp_path)]
    assert run([*args, "--by", "rule", "--verdicts", "crashed"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("step 1: FBT102..FBT114 ")
    enable = tmp_path.joinpath("enable.txt").read_text().splitlines()
    assert enable[4] == "# bisect step 2 level rule: enable"
    assert "kernel:native_save_fl+0x0" in enable or "kernel:native_save_fl+0x0" in tmp_path.joinpath(
        "disable.txt").read_text().splitlines()  # fmt: skip
    assert run([*args, "--by", "module"]) == 0  # one module: straight on to single patchpoints
    assert capsys.readouterr().out.startswith(f"module kernel: {len(suspect)} patchpoints\nstep 1: ")


def _chromium() -> str:
    """Debian's chromium, a declared system package (README, "System packages"; .ci/run installs it)."""
    exe = shutil.which("chromium")
    if exe is None:
        pytest.fail("chromium is not installed: the opcode-map test needs Debian's chromium package "
                    "(README, System packages)", pytrace=False)
    return exe


def _chrome(exe: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    return subprocess.run([exe, *flags, *args], capture_output=True, text=True, timeout=120, check=True)


def test_map_in_headless_chromium(vmlinux61, dump, tmp_path):
    exe = _chromium()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = ARTIFACTS / "opmap-6.1-legacy-2011.html"
    assert run(["map", str(vmlinux61), "--table", "legacy-2011", "--hits", str(dump), "-o", str(page)]) == 0
    html = page.read_text()
    assert not re.search(r"""\b(?:src|href)\s*=|@import|url\(|https?://""", html.split('id="opmap-data"')[0])
    assert "default-src 'none'" in html
    dom = _chrome(exe, tmp_path, "--dump-dom", page.as_uri() + "#9c").stdout

    def cell(b: str) -> str:
        m = re.search(rf'<td class="([^"]*)" id="c{b}"[^>]*>(.*?)</td>', dom)
        assert m, b
        return m[1] + "|" + re.sub(r"<[^>]+>", " ", m[2]).split().__str__()

    assert cell("9c") == "v-unsafe sel|['9c', '4', '19']"  # 16 + 3 + 0 + not in dump
    assert cell("9d") == "empty|['9d']"
    listing = re.search(r'<table class="rows" id="rows-9c">(.*?)</table>', dom)[1]
    names = re.findall(r"<td>kernel:([a-z0-9_]+):entry</td>", listing)
    assert sorted(names) == PUSHF_61
    # The JSON data agrees with the grid.
    data = json.loads(subprocess.run(
        ["fbt-audit", "map", str(vmlinux61), "--table", "legacy-2011", "--json"], capture_output=True, text=True,
        check=True).stdout)  # fmt: skip
    c = data["cells"][0x9C]
    assert (c["count"], c["worst"], c["hits"]) == (4, "unsafe", None)
    shot = ARTIFACTS / "opmap-6.1-legacy-2011.png"
    shot.unlink(missing_ok=True)
    _chrome(
        exe, tmp_path, "--hide-scrollbars", "--window-size=1100,1000", f"--screenshot={shot}", page.as_uri() + "#9c"
    )
    assert shot.stat().st_size > 10_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_format_html_whole_report(vmlinux61, dump, tmp_path):
    out = tmp_path / "report.html"
    assert run([str(vmlinux61), "--table", "legacy-2011", "--format", "html", "--hits", str(dump), "-o", str(out)]) == 1
    html = out.read_text()
    assert '<p id="summary">audited ' in html and '<table class="rows" id="rules">' in html
    row = re.search(r'<tr class="v-unsafe"><td>[^<]*</td><td>native_save_fl\+0x0 \(\.text\+0xa45ff0\)</td>'
                    r"<td>(\d+)</td><td>FBT102</td>", html)  # fmt: skip
    assert row and row[1] == "16"
    assert 'id="c9c" data-byte="9c" data-count="4"' in html
