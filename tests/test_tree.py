"""test_tree.py: module trees: plain, xz, zstd, gzip and signed modules, a corrupt one, -j N gives the same bytes."""

from __future__ import annotations

import gzip
import json
import lzma
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import zstandard

from fbt_audit.cli.main import run
from fbt_audit.input import modfile
from fbt_audit.input.dwarf import PathMap
from fbt_audit.model.errors import InputError
from fbt_audit.pipeline import api
from fbt_audit.pipeline.batch import detach, dumps, expand, module_files, run_batch
from fbt_audit.report.formats import render
from fbt_audit.report.jsonout import render_json
from fbt_audit.report.listing import render_list

from .conftest import ROOT

SARIF_SCHEMA = Path(__file__).parent / "data" / "sarif-schema-2.1.0.json"
FORMATS = ("text", "json", "sarif", "list", "denylist", "github")

# Two C files with a static function of the same name (STT_FILE tells them apart), compiled with DWARF:
# `helper` starts with pushfq (unsafe under legacy-2011), `idle` with hlt (refused under every table).
A_C = """
static __attribute__((noinline, used)) void helper(void) { __asm__ volatile("pushfq; popfq"); }
static __attribute__((noinline, used)) void idle(void) { __asm__ volatile("hlt"); }
void a_entry(void) { helper(); idle(); }
"""
B_C = """
static __attribute__((noinline, used)) void helper(void) { __asm__ volatile("pushfq; popfq"); }
void b_entry(void) { helper(); }
"""
# Two modules whose functions each have a .cold fragment (FBT206) starting with the same instruction:
# what a finding says about one must not leak into the other, whatever order a worker audits them in.
COLD_C = """
extern void __attribute__((cold)) slow(int);
extern int g;
void NAME(int x) { if (x > 5) { slow(x); slow(x + 1); slow(x + 2); } g = x; }
"""


def signed(blob: bytes) -> bytes:
    """The module with a PKCS#7 signature appended as scripts/sign-file lays it out (a fake 264-byte one)."""
    sig = bytes(range(256)) + bytes(8)
    return blob + sig + modfile.SIG_INFO.pack(0, 0, modfile.PKEY_ID_PKCS7, 0, 0, len(sig)) + modfile.SIG_MAGIC


@pytest.fixture(scope="module")
def objects(tmp_path_factory, fixtures_built) -> dict[str, bytes]:
    """Module-like ET_REL objects (ld -r): `mod` from the C files above, `gate` from the gate fixture's
    assembler sources (DWARF line tables)."""
    work = tmp_path_factory.mktemp("objs")
    (work / "a.c").write_text(A_C)
    (work / "b.c").write_text(B_C)
    cc = ["gcc", "-O2", "-g", "-fcf-protection=none", "-fno-pic", "-c"]
    subprocess.run([*cc, "a.c", "b.c"], cwd=work, check=True)
    subprocess.run(["ld", "-r", "-o", "mod.ko", "a.o", "b.o"], cwd=work, check=True)
    gate = sorted((fixtures_built / "gate-base.d").glob("*.o"))
    subprocess.run(["ld", "-r", "-o", str(work / "gate.ko"), *map(str, gate)], check=True)
    out = {"mod": (work / "mod.ko").read_bytes(), "gate": (work / "gate.ko").read_bytes()}
    for name in ("alpha", "beta"):
        (work / f"{name}.c").write_text(COLD_C.replace("NAME", name))
        subprocess.run([*cc, f"{name}.c"], cwd=work, check=True)
        subprocess.run(["ld", "-r", "-o", f"{name}.ko", f"{name}.o"], cwd=work, check=True)
        out[name] = (work / f"{name}.ko").read_bytes()
    return out


@pytest.fixture(scope="module")
def tree(tmp_path_factory, objects) -> Path:
    """/lib/modules/<release>-like: every module form, a non-module file and symlinks that loop or dangle."""
    root = tmp_path_factory.mktemp("tree") / "6.1.0-test"
    mod = objects["mod"]
    files = {
        "kernel/a/plain.ko": mod,
        "kernel/a/xz_mod.ko.xz": lzma.compress(mod, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32),
        "kernel/b/zst_mod.ko.zst": zstandard.ZstdCompressor().compress(mod),
        "kernel/b/gz_mod.ko.gz": gzip.compress(mod),
        "kernel/c/signed.ko": signed(mod),
        "kernel/c/signed_xz.ko.xz": lzma.compress(signed(mod), check=lzma.CHECK_CRC32),
        "kernel/d/gate.ko": objects["gate"],
        "kernel/f/alpha.ko": objects["alpha"],
        "kernel/f/beta.ko": objects["beta"],
        "modules.order": b"kernel/a/plain.ko\n",
    }
    for rel, blob in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(blob)
    (root / "build").symlink_to("..")  # a loop if followed
    (root / "source").symlink_to("/nonexistent/linux-source")
    return root


@pytest.fixture(scope="module")
def broken_tree(tree, tmp_path_factory) -> Path:
    """The tree plus one module whose section headers lie past the end of the file."""
    root = tmp_path_factory.mktemp("broken") / "6.1.0-test"
    shutil.copytree(tree, root, symlinks=True)
    (root / "kernel/e").mkdir()
    (root / "kernel/e/broken.ko").write_bytes((tree / "kernel/a/plain.ko").read_bytes()[:300])
    return root


GOOD = ["a/plain.ko", "a/xz_mod.ko.xz", "b/gz_mod.ko.gz", "b/zst_mod.ko.zst", "c/signed.ko", "c/signed_xz.ko.xz",
        "d/gate.ko", "f/alpha.ko", "f/beta.ko"]  # fmt: skip


def cli(capsys, *argv) -> tuple[int, str, str]:
    code = run([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def test_module_files_sorted_without_following_symlinks(tree):
    found, problems = module_files(tree)
    assert [p.relative_to(tree / "kernel").as_posix() for p in found] == GOOD
    assert not problems
    # A module named as well as found under its tree is audited once; argument order is kept.
    inputs, _ = expand([tree / "kernel/d/gate.ko", tree])
    assert [Path(i.path).name for i in inputs] == ["gate.ko", *[g.split("/")[1] for g in GOOD if g != "d/gate.ko"]]
    assert inputs[0].listed and not inputs[1].listed and all(i.module for i in inputs)


def test_modfile_decompresses_and_strips_the_signature(tree, objects):
    for rel in GOOD[:6]:
        assert modfile.read(tree / "kernel" / rel) == objects["mod"], rel
    assert modfile.strip_signature(signed(objects["mod"])) == objects["mod"]
    # A trailer the kernel would not parse (not PKCS#7, or longer than the file) is left alone.
    bad = bytearray(signed(objects["mod"]))
    bad[-len(modfile.SIG_MAGIC) - modfile.SIG_INFO.size + 2] = 1  # id_type PGP
    assert modfile.strip_signature(bytes(bad)) == bytes(bad)
    huge = objects["mod"] + modfile.SIG_INFO.pack(0, 0, 2, 0, 0, 1 << 30) + modfile.SIG_MAGIC
    assert modfile.strip_signature(huge) == huge


@pytest.mark.parametrize("kind", ["xz", "zst", "gz"])
def test_modfile_truncated_and_corrupt_streams(tmp_path, objects, kind):
    pack = {"xz": lzma.compress, "zst": zstandard.ZstdCompressor().compress, "gz": gzip.compress}[kind]
    blob = pack(objects["mod"])
    p = tmp_path / f"m.ko.{kind}"
    p.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(InputError, match="truncated|corrupt"):
        modfile.read(p)
    p.write_bytes(blob[:6] + bytes(b ^ 0x5A for b in blob[6:]))
    with pytest.raises(InputError, match="corrupt|truncated"):
        modfile.read(p)


def test_every_form_audits_alike(tree):
    results, failures = run_batch([tree], api.load_table("legacy-2011"), jobs=2)
    assert not failures
    assert sorted(r.kernel.module for r in results) == sorted(
        ["plain", "xz_mod", "zst_mod", "gz_mod", "signed", "signed_xz", "gate", "alpha", "beta"]
    )
    shapes = {
        r.kernel.module: [(j.pp.name, j.pp.sec_off, j.pp.insn.raw, j.verdict.label, j.rule_ids) for j in r.judgements]
        for r in results
    }
    assert shapes["plain"][0] == ("helper", 0, b"\x9c", "unsafe", ["FBT102"])
    for name in ("xz_mod", "zst_mod", "gz_mod", "signed", "signed_xz"):
        assert shapes[name] == shapes["plain"], name


def test_one_corrupt_module_is_a_notification(capsys, broken_tree, tmp_path):
    out = tmp_path / "out.sarif"
    code, _, err = cli(capsys, broken_tree, "--no-progress", "-j", "2", "--format", "sarif", "-o", out)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fbt-audit: error: ") and "broken.ko" in lines[0], err
    doc = json.loads(out.read_text())
    import jsonschema

    jsonschema.validate(doc, json.loads(SARIF_SCHEMA.read_text()))
    (run_,) = doc["runs"]
    assert run_["properties"]["images"] == len(GOOD)  # the others completed
    inv = run_["invocations"][0]
    assert inv["executionSuccessful"] is False
    notes = [n for n in inv["toolExecutionNotifications"] if "broken.ko" in n["message"]["text"]]
    assert len(notes) == 1 and notes[0]["level"] == "error"
    assert notes[0]["message"]["text"] == lines[0].removeprefix("fbt-audit: error: ")


def test_keep_going_exit_reflects_findings_only(capsys, broken_tree):
    # reference: hlt is refused (a note), below the default --fail-on error
    code, out, err = cli(capsys, broken_tree, "--no-progress", "--keep-going")
    assert code == 0 and "broken.ko" in err and f"in {len(GOOD)} images" in out
    code, _, err = cli(capsys, broken_tree, "--no-progress", "--keep-going", "--table", "legacy-2011")
    assert code == 1 and "broken.ko" in err
    code, _, _ = cli(capsys, broken_tree, "--no-progress", "--table", "legacy-2011")
    assert code == 2


def test_all_inputs_failing_still_give_a_sarif_run(capsys, tmp_path):
    for name in ("x.ko", "y.ko.xz"):
        (tmp_path / name).write_bytes(b"\x7fELF garbage")
    code, out, err = cli(capsys, tmp_path, "--no-progress", "--keep-going", "--format", "sarif")
    assert code == 0 and len(err.strip().splitlines()) == 2
    (run_,) = json.loads(out)["runs"]
    assert run_["results"] == [] and len(run_["invocations"][0]["toolExecutionNotifications"]) == 2


def test_directory_without_modules(capsys, tmp_path):
    (tmp_path / "README").write_text("no modules here\n")
    code, _, err = cli(capsys, tmp_path)
    assert code == 2 and err.startswith("fbt-audit: error: ") and "no kernel modules" in err


@pytest.mark.parametrize("fmt", FORMATS)
def test_jobs_do_not_change_the_bytes(capsys, tree, broken_tree, fmt):
    outs = set()
    for root in (tree, broken_tree):
        for jobs in ("1", "2", "3"):
            extra = ["--statistics"] if fmt == "text" else []
            _, out, _ = cli(capsys, root, "--no-progress", "--keep-going", "-j", jobs, "--format", fmt,
                            "--table", "legacy-2011", "--source-root", ROOT, *extra)  # fmt: skip
            outs.add((root, out))
    assert len(outs) == 2  # one output per tree, whatever -j


def test_batch_renders_like_in_process_audits(capsys, tree):
    """Workers send back detached results (no image): every format must come out as if each module had
    been audited here with its whole Kernel: STT_FILE names (fingerprints, @file) and DWARF lines included."""
    table = api.load_table("legacy-2011")
    full = [api.audit(p, table) for p in module_files(tree)[0]]
    want = {
        "text": render("text", full, statistics=True),
        "json": render_json(full),
        "list": render_list(full),
        "denylist": render("denylist", full),
        "sarif": render("sarif", full, paths=PathMap.parse((), str(ROOT))),
        "github": render("github", full, paths=PathMap.parse((), str(ROOT))),
    }
    assert "@a.c" in want["denylist"] and "@b.c" in want["denylist"]
    assert '"uri":"fixtures/gate/gate.S"' in want["sarif"] and "helper|entry|a.c#1" in want["sarif"]
    for fmt, text in want.items():
        extra = ["--statistics"] if fmt == "text" else []
        code, out, _ = cli(capsys, tree, "--no-progress", "-j", "2", "--format", fmt, "--table", "legacy-2011",
                           "--source-root", ROOT, "--fail-on", "none", *extra)  # fmt: skip
        assert code == 0 and out == text, fmt


@pytest.mark.parametrize("show", ["error", "warning", "note", "all"])
def test_text_made_in_the_workers_is_the_same(capsys, tree, show):
    """For the plain text report the workers send their lines (report.text.TextDigest), not the rows: the
    bytes and the exit code are those of the modules audited here, at every --show, with --statistics."""
    from fbt_audit.report.text import TextDigest

    table = api.load_table("legacy-2011")
    full = [api.audit(p, table) for p in module_files(tree)[0]]
    want = render("text", full, statistics=True, show=show)
    worst = max(f.level for r in full for j in r.judgements for f in j.findings)
    results, _ = run_batch([tree], table, jobs=2, text=(show, False))
    assert all(isinstance(r.rows, TextDigest) for r in results)
    assert render("text", results, statistics=True, show=show) == want
    assert max(r.worst_finding() for r in results) == worst
    code, out, _ = cli(capsys, tree, "--no-progress", "-j", "2", "--table", "legacy-2011", "--show", show,
                       "--statistics", "--fail-on", "error")  # fmt: skip
    assert out == want and code == 1


def test_progress_bar_on_request(capsys, tree):
    code, out, err = cli(capsys, tree, "--progress", "-j", "2", "--fail-on", "none")
    assert code == 0 and err.startswith("\rfbt-audit:") and f"/{len(GOOD)} [" in err  # tqdm, cleared at the end
    code, _, err = cli(capsys, tree, "--no-progress", "-j", "2", "--fail-on", "none")
    assert code == 0 and err == ""


def test_unreadable_directory_is_reported(tree, tmp_path):
    root = tmp_path / "t"
    shutil.copytree(tree, root, symlinks=True)
    (root / "kernel/b").chmod(0)
    # root reads every directory: run the CLI without the capabilities that let it (util-linux setpriv)
    drop = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"] if os.geteuid() == 0 else []
    try:
        proc = subprocess.run([*drop, sys.executable, "-m", "fbt_audit", str(root), "--no-progress", "--keep-going"],
                              capture_output=True, text=True)  # fmt: skip
    finally:
        (root / "kernel/b").chmod(0o755)
    assert proc.returncode == 0 and "cannot read the directory" in proc.stderr, proc.stderr


def test_pickled_results_are_equal(tree):
    """What a worker sends back (batch.dumps: judgements as flat tuples) unpickles equal, field for field."""
    for path in module_files(tree)[0]:
        r = detach(api.audit(path, api.load_table("legacy-2011")), sources=True)
        back = pickle.loads(dumps(r))
        assert back.judgements == r.judgements and back.kernel.display == r.kernel.display
        assert [j.pp.variants[0].insn is j.pp.insn for j in back.judgements] == [
            j.pp.variants[0].insn is j.pp.insn for j in r.judgements
        ]


@pytest.mark.parametrize("jobs", [1, 2])
def test_findings_do_not_leak_between_modules(tree, jobs):
    """alpha.cold and beta.cold start alike: each FBT206 names its own function, in any order and -j."""
    results, _ = run_batch([tree], api.load_table("reference"), jobs=jobs)
    cold = {
        j.pp.name: f.message
        for r in results
        if r.kernel.module in ("alpha", "beta")
        for j in r.judgements
        for f in j.findings
        if f.rule_id == "FBT206"
    }
    assert cold == {
        "alpha.cold": "not a function entry: a .cold fragment of alpha",
        "beta.cold": "not a function entry: a .cold fragment of beta",
    }
