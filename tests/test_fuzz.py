"""test_fuzz.py: fuzz every input fbt-audit reads (hypothesis): a report or a one-line error, never a traceback or hang.

Mutated real inputs (the committed vmlinux-sample, the DWARF gate image, an ET_REL module linked from the rule
fixtures, compressed .ko.xz/.zst/.gz copies, stripped images with embedded kallsyms tables, and bzImages of them
in all seven compressions) run through `fbt_audit.cli.run` in-process, SARIF and one more format per case,
under a per-run alarm and an address-space limit. Split a long campaign across processes with different seeds
(two runs of FBT_FUZZ_EXAMPLES=50000, --hypothesis-seed=1 and =2, side by side on 2 cores).

    python3 -m pytest -q tests/test_fuzz.py                                   # CI: 3,000 fixed cases, ~1 min
    FBT_FUZZ_EXAMPLES=100000 python3 -m pytest -q tests/test_fuzz.py \\
        -p no:cacheprovider --hypothesis-show-statistics --hypothesis-seed=1  # the long campaign

FBT_FUZZ_EXAMPLES is the total number of cases, shared out by weight between the fuzz tests (docs/fuzzing.md).
"""

from __future__ import annotations

import itertools
import os
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase

from .conftest import ROOT, SAMPLE
from .helpers_fuzz import (
    EXTRA,
    Shape,
    audit_all,
    bomb,
    bounded_memory,
    bz_bomb,
    bz_shape,
    bzimage,
    cached_tables,
    check_run,
    compress,
    dwarf_shape,
    mutate,
    shape,
    signed,
    with_kallsyms,
)

EXAMPLES = int(os.environ.get("FBT_FUZZ_EXAMPLES", "3000"))
WEIGHTS = {"elf": 6, "compressed": 2, "bzimage": 2, "stripped": 1}
BZ_KINDS = ("gzip", "xz", "zstd", "lz4", "bzip2", "lzma", "none")
MODINFO = b"vermagic=6.1.0-56-amd64 SMP preempt mod_unload modversions \0name=fuzzmod\0license=GPL\0"


CAMPAIGN = "FBT_FUZZ_EXAMPLES" in os.environ  # a campaign draws new cases (and replays its finds); the suite does not


def fuzz_settings(test: str):
    """max_examples from FBT_FUZZ_EXAMPLES by weight; the deadline catches slow cases, the alarm hangs. The test
    command's run is derandomized and keeps no example database: the same cases for the same commit (a case a random
    run found, fixed since, made a fresh clone's CI red before its fix existed); a campaign draws at random."""
    n = max(10, -(-EXAMPLES * WEIGHTS[test] // sum(WEIGHTS.values())))  # rounded up: the shares add up to >= N
    return settings(
        max_examples=n,
        deadline=timedelta(seconds=10),
        derandomize=not CAMPAIGN,
        database=DirectoryBasedExampleDatabase(str(ROOT / "build" / "hypothesis")) if CAMPAIGN else None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
        print_blob=True,
    )


class Corpus:
    """The seed inputs, their structure maps, and a scratch directory for the mutated copies."""

    def __init__(self, build: Path, work: Path):
        self.work = work
        self.counter = itertools.count()
        rules = sorted((build / "rules").glob("*/fail.o")) + [build / "rules" / "FBT201" / "pass.o"]
        ko = work / "fuzzmod.o"
        subprocess.run(["ld", "-r", "-o", str(ko), *map(str, rules)], check=True)
        (work / "modinfo").write_bytes(MODINFO)
        subprocess.run(
            ["objcopy", "--add-section", f".modinfo={work / 'modinfo'}", "--set-section-flags",
             ".modinfo=alloc,readonly", str(ko), str(work / "fuzzmod.ko")], check=True,
        )  # fmt: skip
        # name -> (bytes, suffix of the mutated copy)
        self.elves = {
            "vmlinux-sample": (SAMPLE.read_bytes(), ""),
            "gate-base": ((build / "gate-base").read_bytes(), ""),  # DWARF line tables: SARIF locations
            "fuzzmod.ko": ((work / "fuzzmod.ko").read_bytes(), ".ko"),  # every kernel table, relocated
            "FBT202-fail.o": ((build / "rules" / "FBT202" / "fail.o").read_bytes(), ".ko"),  # .rela.text, mcount
        }
        self.shapes = {name: shape(blob) for name, (blob, _) in self.elves.items()}
        # DWARF (SARIF source locations): the linked image, and an ET_REL whose .debug_* take relocations
        for name, path, suffix in [
            ("gate-dwarf", build / "gate-base", ""),
            ("gate.o-dwarf", build / "gate-base.d" / "gate.o", ".ko"),
        ]:
            blob = path.read_bytes()
            self.elves[name] = (blob, suffix)
            self.shapes[name] = dwarf_shape(blob)
        stripped = work / "vmlinux-stripped"
        subprocess.run(["objcopy", "--strip-all", str(SAMPLE), str(stripped)], check=True)
        # stripped images: no symbols at all, and the sample's symbols as embedded kallsyms tables
        self.kallsyms, kfields = with_kallsyms(SAMPLE, work)
        ks = shape(self.kallsyms)
        self.stripped = {
            "no-symbols": (stripped.read_bytes(), shape(stripped.read_bytes())),
            "kallsyms": (self.kallsyms, Shape(kfields * 4 + ks.fields, ks.cuts)),  # kallsyms fields 4x as likely
        }
        # vmlinuz: the kallsyms image in every compression the kernel builds with, and the sample (.symtab)
        self.bzimages = {kind: bzimage(self.kallsyms, kind) for kind in BZ_KINDS}
        self.bzimages["gzip-symtab"] = bzimage(SAMPLE.read_bytes(), "gzip")
        self.bz_shapes = {kind: bz_shape(blob) for kind, blob in self.bzimages.items()}

    def path(self, suffix: str) -> Path:
        return self.work / f"case{next(self.counter)}{suffix or '-vmlinux'}"


@pytest.fixture(scope="module")
def corpus(fixtures_built, tmp_path_factory) -> Corpus:
    return Corpus(fixtures_built, tmp_path_factory.mktemp("fuzz"))


@pytest.fixture(scope="module", autouse=True)
def memory_limit():
    with bounded_memory(), cached_tables():
        yield


extra_format = st.sampled_from(EXTRA)


@fuzz_settings("elf")
@given(data=st.data())
def test_mutated_elf(corpus, data):
    """vmlinux and .ko with mutated headers, section and symbol tables, relocations, notes and contents."""
    name = data.draw(st.sampled_from(sorted(corpus.elves)), label="seed")
    blob, suffix = corpus.elves[name]
    audit_all(corpus.path(suffix), mutate(data, blob, corpus.shapes[name]), data.draw(extra_format, label="extra"))


@fuzz_settings("compressed")
@given(data=st.data())
def test_compressed_module(corpus, data):
    """.ko.xz/.ko.zst/.ko.gz (and plain .ko) of mutated modules, with signature trailers of any length,
    and with the compressed stream itself mutated or cut."""
    name = data.draw(st.sampled_from(["fuzzmod.ko", "FBT202-fail.o"]), label="seed")
    blob = corpus.elves[name][0]
    if data.draw(st.booleans(), label="mutate the ELF?"):
        blob = mutate(data, blob, corpus.shapes[name])
    if data.draw(st.booleans(), label="signed?"):
        body = data.draw(st.integers(0, 600), label="signature bytes")
        sig_len = data.draw(
            st.sampled_from([body, 0, body + 1, body - 1, len(blob) + body, 0xFFFFFFFF]), label="sig_len"
        )
        blob = signed(blob, sig_len, body)
    kind = data.draw(st.sampled_from(["xz", "zst", "gz", "none"]), label="compression")
    if kind != "none":
        blob = compress(kind, blob)
        if data.draw(st.booleans(), label="mutate the stream?"):
            blob = mutate(data, blob, shape(b""), "stream ")
    audit_all(corpus.path(".ko" if kind == "none" else f".ko.{kind}"), blob, data.draw(extra_format, label="extra"))


@fuzz_settings("stripped")
@given(data=st.data())
def test_stripped_vmlinux(corpus, data):
    """A vmlinux without .symtab: the embedded kallsyms tables (counts, offsets, markers, names, tokens) mutated."""
    name = data.draw(st.sampled_from(sorted(corpus.stripped)), label="seed")
    blob, where = corpus.stripped[name]
    audit_all(corpus.path(""), mutate(data, blob, where), data.draw(extra_format, label="extra"))


@fuzz_settings("bzimage")
@given(data=st.data())
def test_mutated_bzimage(corpus, data):
    """A vmlinuz (bzImage): setup header fields, payload offset and length, the compressed stream, or the
    ELF inside a valid stream."""
    kind = data.draw(st.sampled_from(sorted(corpus.bzimages)), label="compression")
    if data.draw(st.integers(0, 3), label="mutate inside?") == 0:
        if data.draw(st.booleans(), label="inner .symtab?"):
            inner, where = corpus.elves["vmlinux-sample"][0], corpus.shapes["vmlinux-sample"]
        else:
            inner, where = corpus.stripped["kallsyms"]
        blob = bzimage(mutate(data, inner, where), kind.split("-")[0])
    else:
        blob = mutate(data, corpus.bzimages[kind], corpus.bz_shapes[kind])
    audit_all(corpus.path("-vmlinuz"), blob, data.draw(extra_format, label="extra"))


# Decompression bombs: a tiny file that expands past every cap must be refused in bounded time and memory.
@pytest.mark.parametrize("kind", ["xz", "zst", "gz"])
def test_module_bomb(corpus, kind):
    from fbt_audit.input import modfile

    p = corpus.path(f".ko.{kind}")
    p.write_bytes(bomb(kind, modfile.MAX_MODULE + (1 << 20)))
    code, err = check_run([str(p)], timeout=120)
    assert code == 2 and "refused" in err, err


@pytest.mark.parametrize("kind", BZ_KINDS[:-1])
def test_bzimage_bomb_past_init_size(corpus, kind):
    """64 MiB of zeros behind a setup header whose init_size says 16 MiB."""
    p = corpus.path("-vmlinuz")
    p.write_bytes(bzimage(b"", kind, init_size=16 << 20, stream=bz_bomb(kind, 64 << 20)))
    code, err = check_run([str(p)], timeout=120)
    assert code == 2 and "refused" in err, err


@pytest.mark.parametrize("kind", ["gzip", "zstd", "lz4"])
def test_bzimage_bomb_past_cap(corpus, kind):
    """init_size 0 (unknown): a payload inflating past the 1 GiB cap is refused."""
    from fbt_audit.input import bzimage as bz

    p = corpus.path("-vmlinuz")
    p.write_bytes(bzimage(b"", kind, init_size=0, stream=bz_bomb(kind, bz.CAP + (8 << 20))))
    code, err = check_run([str(p)], timeout=120)
    assert code == 2 and "refused" in err, err
