"""test_hits.py: hits files parsed and merged on the embedded sample image: the seed's own /proc/dtrace/fbt rows,
ftrace profile rows, bad hits files (one line, exit 2), the map's JSON and a bisection by exact byte."""

from __future__ import annotations

import json

from fbt_audit.cli.main import run
from fbt_audit.investigate import hits
from fbt_audit.pipeline import api

from .conftest import SAMPLE

# The two rows the seed quotes, verbatim (2011: no `*` column yet), and a row with the later `*` mark.
SEED = """# count patchpoint opcode inslen modrm name
21603 0000 ffffffff81032704 9c 1 -1 kernel:end_pv_irq_ops_restore_fl:entry 9c
24295 0010 ffffffff81539c00 9c 1 -1 kernel:native_load_gs_index:entry 9c
24296 0005* ffffffff81539c10 9c 1 -1 kernel:native_save_fl:entry 9c
"""


def test_parse_seed_rows():
    kind, rows = hits.parse(SEED, "fbt")
    assert kind == "dtrace"
    assert [(r.probe, r.hits, r.star, r.addr) for r in rows] == [
        ("kernel:end_pv_irq_ops_restore_fl:entry", 0, False, 0xFFFFFFFF81032704),
        ("kernel:native_load_gs_index:entry", 10, False, 0xFFFFFFFF81539C00),
        ("kernel:native_save_fl:entry", 5, True, 0xFFFFFFFF81539C10),
    ]


def test_parse_ftrace_rows():
    text = "  Function    Hit    Time     Avg     s^2\n  --------    ---    ----     ---     ---\n" \
           "  native_save_fl    7    1.0 us    0.1 us    0.0 us\n"  # fmt: skip
    kind, rows = hits.parse(text, "function0")
    assert kind == "ftrace" and [(r.function, r.hits, r.probe) for r in rows] == [("native_save_fl", 7, None)]


def test_merge_on_sample_reports_unmatched(tmp_path, capsys):
    f = tmp_path / "fbt.txt"
    f.write_text(SEED)
    merged = hits.merge(hits.load([f]), [api.audit(SAMPLE, "legacy-2011")])
    assert merged.counts == {"kernel:native_load_gs_index:entry": 10, "kernel:native_save_fl:entry": 5}
    assert [r.probe for r in merged.unmatched] == ["kernel:end_pv_irq_ops_restore_fl:entry"]
    assert merged.notification() == (
        "hits: 1 of 3 rows matched no patchpoint, e.g. "
        "21603 0000 ffffffff81032704 9c 1 -1 kernel:end_pv_irq_ops_restore_fl:entry 9c"
    )
    out = tmp_path / "list"
    assert run([str(SAMPLE), "--table", "legacy-2011", "--format", "list", "--hits", str(f), "-o", str(out)]) == 1
    rows = {r.split("\t")[6]: r.split("\t")[1] for r in out.read_text().splitlines() if not r.startswith("#")}
    assert rows["kernel:native_load_gs_index:entry"] == "10"
    assert rows["kernel:native_save_fl:entry"] == "5"
    assert rows["kernel:native_restore_fl:entry"] == "-"
    assert capsys.readouterr().err.startswith("fbt-audit: hits: 1 of 3 rows matched no patchpoint")


def test_bad_hits_file_one_line_exit_2(tmp_path, capsys):
    f = tmp_path / "junk"
    f.write_text("hello world\n")
    assert run([str(SAMPLE), "--hits", str(f)]) == 2
    assert (
        capsys.readouterr().err == f"fbt-audit: error: {f}: not a /proc/dtrace/fbt dump or an ftrace function profile\n"
    )
    f.write_text(SEED + "24297 00x1 zz\n")
    assert run([str(SAMPLE), "--hits", str(f)]) == 2
    assert capsys.readouterr().err == f"fbt-audit: error: {f}:5: not a /proc/dtrace/fbt row: 24297 00x1 zz\n"
    assert run([str(SAMPLE), "--hits", str(tmp_path / "missing")]) == 2
    assert "no such hits file" in capsys.readouterr().err


def test_map_json_on_sample(capsys):
    assert run(["map", str(SAMPLE), "--table", "legacy-2011", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    cell = doc["cells"][0x9C]
    assert (cell["count"], cell["worst"], cell["verdicts"]["unsafe"]) == (2, "unsafe", 2)
    assert [p[0] for p in cell["patchpoints"]] == ["kernel:native_save_fl:entry", "kernel:native_load_gs_index:entry"]


def test_bisect_by_byte_on_sample(tmp_path, capsys):
    args = ["bisect", str(SAMPLE), "--table", "legacy-2011", "--by", "byte", "-o", str(tmp_path)]
    assert run(args) == 0
    assert capsys.readouterr().out.splitlines() == [
        "step 1: suspects 0x0f..0xff (12 groups) at level byte, 16 patchpoints, at most 4 more steps at this level",
        "enable 0x0f..0x9d (6 groups) (8 patchpoints), disable the rest; then give --verdict crashed|clean",
        f"wrote {tmp_path / 'enable.txt'} and {tmp_path / 'disable.txt'}",
    ]
    enable = tmp_path.joinpath("enable.txt").read_text().splitlines()
    disable = tmp_path.joinpath("disable.txt").read_text().splitlines()
    assert enable[1].startswith("# format denylist") and enable[:4] == disable[:4]
    # the suspects split by first byte: 0x0f..0x9d on one side, the rest on the other
    assert enable[4:] == ["# bisect step 1 level byte: enable", *(f"kernel:{f}+0x0" for f in (
        "native_save_fl", "native_load_gs_index", "native_restore_fl", "sample_push_rbp", "sample_sub_rsp",
        "sample_bug", "entry_SAMPLE_64", "sample_mov_ss"))]  # fmt: skip
    assert disable[4:] == ["# bisect step 1 level byte: disable", *(f"kernel:{f}+0x0" for f in (
        "__fentry__", "native_irq_disable", "native_irq_enable", "sample_call_indirect", "sample_ret",
        "sample_traced", "sample_rep_movsb", "sample_invalid"))]  # fmt: skip
    assert run([*args, "--verdict", "clean"]) == 2  # --verdict needs --state
    assert "bisect: --verdict and --step need --state" in capsys.readouterr().err


def test_sort_rarity_on_sample(tmp_path, capsys):
    f = tmp_path / "fbt.txt"
    f.write_text(SEED)
    assert run([str(SAMPLE), "--table", "legacy-2011", "--hits", str(f), "--sort", "rarity"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("vmlinux-sample: native_save_fl+0x0 (.text+0x10): FBT102 ") and lines[0].endswith(
        " hits 5"
    )
    assert lines[1].startswith("vmlinux-sample: native_load_gs_index+0x0 (.text+0x20): FBT102 ")
    assert lines[1].endswith(" hits 10")
    assert lines[2].startswith("vmlinux-sample: native_restore_fl+0x0 ") and lines[2].endswith(" hits 0")
    assert lines[-1] == "hits: 2 of 3 rows merged into 2 probes, 1 unmatched, 1 marked *"
    assert run([str(SAMPLE), "--format", "list", "--sort", "rarity"]) == 2
