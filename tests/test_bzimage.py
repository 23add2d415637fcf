"""test_bzimage.py: vmlinuz decompression (six compressions, caps, bad headers) and embedded kallsyms tables."""

from __future__ import annotations

import bz2
import importlib.util
import lzma
import random
import shutil
import struct
import subprocess
import sys
import tracemalloc
import zlib

import pytest

from fbt_audit.cli.main import run
from fbt_audit.input import bzimage
from fbt_audit.input import kallsyms as kallsyms_blob
from fbt_audit.model.errors import InputError
from fbt_audit.model.kernel import Section
from fbt_audit.pipeline import api

from .conftest import BUILD, ROOT, SAMPLE

MAKER = ROOT / "fixtures" / "bzimage" / "make_bzimage.py"
KINDS = ("gzip", "xz", "zstd", "lz4", "bzip2", "lzma")


def _maker():
    spec = importlib.util.spec_from_file_location("make_bzimage", MAKER)
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("make_bzimage", mod)
    spec.loader.exec_module(mod)
    return mod


mk = _maker()


@pytest.fixture(scope="session")
def bzfx():
    """build/fixtures/bzimage: the sample in a bzImage per compression, and stripped with its kallsyms."""
    out = BUILD / "bzimage"
    subprocess.run([sys.executable, str(MAKER), str(out)], check=True)
    return out


def one_line(exc: pytest.ExceptionInfo, name: str, *words: str) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith(f"{name}: "), msg
    for w in words:
        assert w in msg, msg
    return msg


# ---- bzImage ----


@pytest.mark.parametrize("kind", KINDS)
def test_each_compression_gives_the_elf_back(bzfx, kind):
    elf = SAMPLE.read_bytes()
    data = (bzfx / f"bzImage.{kind}").read_bytes()
    assert bzimage.is_bzimage(data[:4096])
    assert bzimage.compression(data[1024 + 0x40 :]) == kind
    assert bzimage.extract(data, "vmlinuz") == elf


@pytest.mark.parametrize("kind", KINDS)
def test_python_fallback_compressors(kind):
    """The builder's library path (used where the CLI is missing) makes streams extract() reads too."""
    elf = SAMPLE.read_bytes()
    assert bzimage.extract(mk.wrap(elf, kind, cli=False), "vmlinuz") == elf


def test_cli_fixtures_use_the_real_tools():
    """Which compressions the fixtures built with the real CLI on this machine (xz with --x86, lz4 -l)."""
    missing = [k for k in KINDS if not shutil.which(mk.CLI[k][0])]
    if missing:
        pytest.skip(f"CLIs not installed, library fallback used: {missing}")
    xz = mk.compress("xz", SAMPLE.read_bytes())
    assert lzma.LZMADecompressor().decompress(xz) == SAMPLE.read_bytes()
    assert mk.compress("lz4", b"x")[:4] == struct.pack("<I", mk.LZ4_LEGACY_MAGIC)


def test_lz4_legacy_frames_and_trailer():
    """Several 8 MiB legacy blocks, a repeated magic (concatenated frames) and the 4-byte size trailer."""
    import lz4.block

    body = b"\x7fELF" + bytes(range(256)) * (40 << 10)  # 10 MiB: two blocks
    frame = mk.compress("lz4", body, cli=False)
    block = lz4.block.compress(b"tail", store_size=False)
    second = struct.pack("<I", mk.LZ4_LEGACY_MAGIC) + struct.pack("<I", len(block)) + block
    payload = frame + second + struct.pack("<I", len(body) + 4)
    data = mk.bzimage(payload, init_size=len(body) + (1 << 20))
    assert bzimage.extract(data, "v") == body + b"tail"


@pytest.mark.parametrize("kind", KINDS)
def test_past_init_size_is_refused(kind):
    elf = SAMPLE.read_bytes()
    with pytest.raises(InputError) as e:
        bzimage.extract(mk.wrap(elf, kind, init_size=4096, cli=False), "vmlinuz")
    one_line(e, "vmlinuz", "past 0x1000")


def _bomb(kind: str, size: int) -> bytes:
    """`size` bytes (an ELF magic, then zeros) compressed as a stream, without holding them in memory."""
    zero = bytes(1 << 20)
    if kind == "lz4":
        import lz4.block

        block = lz4.block.compress(b"\x7fELF" + bytes(mk.LZ4_BLOCK - 4), store_size=False)
        out = [struct.pack("<I", mk.LZ4_LEGACY_MAGIC)] + [struct.pack("<I", len(block)), block] * (size // mk.LZ4_BLOCK)
        return b"".join(out)
    if kind == "zstd":
        import zstandard

        c = zstandard.ZstdCompressor(level=1).compressobj()
    else:
        c = {
            "gzip": lambda: zlib.compressobj(9, wbits=31),
            "xz": lambda: lzma.LZMACompressor(format=lzma.FORMAT_XZ, preset=0),
            "lzma": lambda: lzma.LZMACompressor(format=lzma.FORMAT_ALONE, preset=0),
            "bzip2": lambda: bz2.BZ2Compressor(9),
        }[kind]()
    out = [c.compress(b"\x7fELF")] + [c.compress(zero) for _ in range(size >> 20)] + [c.flush()]
    return b"".join(out)


@pytest.mark.parametrize("kind", KINDS)
def test_decompression_bomb_stops_at_the_cap(kind):
    """A stream inflating to 64 MiB behind a header that declares 1 MiB: refused, with Python allocations
    bounded by the cap (plus one 8 MiB block for lz4), not by the stream."""
    cap = 1 << 20
    data = mk.bzimage(_bomb(kind, 64 << 20), init_size=cap)
    tracemalloc.start()
    try:
        with pytest.raises(InputError) as e:
            bzimage.extract(data, "bomb")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    one_line(e, "bomb", "past 0x100000", "refused")
    budget = 3 * cap + len(data) + (2 * mk.LZ4_BLOCK if kind == "lz4" else 1 << 20)
    assert peak < budget, (kind, peak)


def test_cap_without_init_size_is_one_gib(monkeypatch):
    """Protocol < 2.10 has no init_size: the 1 GiB cap applies (lowered here to keep the test small)."""
    monkeypatch.setattr(bzimage, "CAP", 1 << 20)
    data = bytearray(mk.bzimage(_bomb("zstd", 8 << 20), init_size=0, version=0x0209))
    with pytest.raises(InputError) as e:
        bzimage.extract(bytes(data), "old")
    one_line(e, "old", "past 0x100000")


def test_truncated_header():
    data = SAMPLE.read_bytes()
    for cut in (0, 0x100, 0x205):
        with pytest.raises(InputError) as e:
            bzimage.extract(mk.wrap(data, "gzip")[:cut], "vmlinuz")
        one_line(e, "vmlinuz", "truncated")


def test_payload_past_end_of_file():
    data = mk.wrap(SAMPLE.read_bytes(), "gzip")
    with pytest.raises(InputError) as e:
        bzimage.extract(data[:1200], "vmlinuz")
    one_line(e, "vmlinuz", "runs past the end of the file")


def test_old_boot_protocol():
    data = bytearray(mk.wrap(SAMPLE.read_bytes(), "gzip"))
    struct.pack_into("<H", data, 0x206, 0x0207)
    with pytest.raises(InputError) as e:
        bzimage.extract(bytes(data), "vmlinuz")
    one_line(e, "vmlinuz", "2.07", "payload_offset")


def test_unknown_magic():
    data = mk.bzimage(b"LZO?" + bytes(100), init_size=1 << 20)
    with pytest.raises(InputError) as e:
        bzimage.extract(data, "vmlinuz")
    one_line(e, "vmlinuz", "unknown compression", "4c5a4f3f")


@pytest.mark.parametrize("kind", KINDS)
def test_truncated_stream(kind):
    elf = SAMPLE.read_bytes()
    stream = mk.compress(kind, elf, cli=False)
    data = mk.bzimage(stream[: len(stream) // 2], init_size=1 << 20)
    with pytest.raises(InputError) as e:
        bzimage.extract(data, "vmlinuz")
    one_line(e, "vmlinuz", kind)


@pytest.mark.parametrize("kind", ["gzip", "xz", "zstd", "bzip2"])
def test_corrupt_stream(kind):
    stream = bytearray(mk.compress(kind, SAMPLE.read_bytes(), cli=False))
    for i in range(len(stream) // 3, len(stream) // 3 + 16):
        stream[i] ^= 0x5A
    with pytest.raises(InputError) as e:
        bzimage.extract(mk.bzimage(bytes(stream), init_size=1 << 20), "vmlinuz")
    one_line(e, "vmlinuz", "corrupt")


def test_payload_not_elf():
    with pytest.raises(InputError) as e:
        bzimage.extract(mk.wrap(b"MZ not an elf" * 50, "xz"), "vmlinuz")
    one_line(e, "vmlinuz", "not an ELF")


def test_is_bzimage_rejects_other_files():
    assert not bzimage.is_bzimage(SAMPLE.read_bytes()[:4096])
    assert not bzimage.is_bzimage(b"")
    assert not bzimage.is_bzimage(bytes(0x300))


# ---- embedded kallsyms ----

TEXT = 0xFFFFFFFF81000000
RODATA = 0xFFFFFFFF82000000


def _symbols(n: int, seed: int = 1) -> list[tuple[int, str, str]]:
    """n symbols in text and data, with every digit, long names (two-byte lengths) and aliases."""
    rnd = random.Random(seed)
    words = ["sys", "read", "write", "do", "page", "fault", "lock", "irq", "net", "dev", "init", "x86", "vfs"]
    syms = [(TEXT, "T", "_text"), (TEXT, "T", "_stext"), (RODATA + 0x10, "D", "digits_0123456789")]
    addr = TEXT + 0x100
    for i in range(n):
        name = "_".join(rnd.choice(words) for _ in range(rnd.randint(1, 4))) + f"_{i}"
        if i % 97 == 0:
            name = name + "_" + "long" * 40  # > 0x7f bytes even once tokenised: a two-byte length
        kind = rnd.choice("TTtttW") if i % 5 else "d"
        syms.append((addr if kind != "d" else RODATA + 0x100 + 8 * i, kind, name))
        if i % 50 == 0:
            syms.append((addr, "t", name + ".cold"))  # an alias at the same address
        addr += rnd.randint(1, 40) * 16
    return syms


def _image(syms, layout="6.1", absolute_percpu=False):
    blob = mk.kallsyms_tables(syms, RODATA + 0x200000, layout, absolute_percpu)
    text = Section(".text", TEXT, 0x200000, 0, 0x6, True, False)
    rodata = Section(".rodata", RODATA, 0x200000 + len(blob), 0x200000, 0x2, False, False)
    secs = [text, rodata]
    if absolute_percpu:
        secs.append(Section(".data..percpu", 0, 0x8000, 0, 0x3, False, True))
    data = bytes(0x200000) + bytes(0x200000) + blob
    return secs, data, blob


@pytest.mark.parametrize("layout", ["6.1", "6.12"])
@pytest.mark.parametrize("n", [40, 1500])
def test_kallsyms_layouts(layout, n):
    syms = _symbols(n)
    secs, data, _ = _image(syms, layout)
    got = kallsyms_blob.recover(secs, data, "img")
    want = sorted(syms, key=lambda s: (s[0], s[2]))
    assert got.source == "embedded kallsyms"
    assert list(zip(got.addrs, got.types, got.names, strict=True)) == want


def test_kallsyms_absolute_percpu():
    """CONFIG_KALLSYMS_ABSOLUTE_PERCPU (x86-64 6.1): percpu 'A' symbols absolute, the rest negative offsets."""
    syms = _symbols(600) + [(0, "A", "fixed_percpu_data"), (0x1000, "A", "cpu_debug_store")]
    secs, data, _ = _image(syms, "6.1", absolute_percpu=True)
    got = kallsyms_blob.recover(secs, data, "img")
    assert list(zip(got.addrs, got.types, got.names, strict=True)) == sorted(syms, key=lambda s: (s[0], s[2]))


def test_kallsyms_absent():
    secs, data, _ = _image(_symbols(10))
    assert kallsyms_blob.recover(secs[:1], data, "img") is None  # only .text searched: no table
    assert kallsyms_blob.recover([], b"", "img") is None


def _corrupt(layout: str, what: str):
    syms = _symbols(700)
    secs, data, blob = _image(syms, layout)
    data = bytearray(data)
    base = 0x400000
    n = len(syms)
    if layout == "6.1":
        num_at = base + ((4 * n + 7) & ~7) + 8
        rel_at = num_at - 8
    else:
        num_at = base
        rel_at = None
    if what == "num_syms":
        struct.pack_into("<I", data, num_at, 0x7FFFFFF0)
    elif what == "relative_base":
        struct.pack_into("<Q", data, rel_at, 0x1000)
    elif what == "name_length":
        data[num_at + 8 : num_at + 10] = b"\xff\x7f"  # the first entry claims 0x3fff bytes: names run off
    return secs, bytes(data)


@pytest.mark.parametrize(
    ("layout", "what", "words"),
    [
        ("6.1", "num_syms", "num_syms"),
        ("6.12", "num_syms", "num_syms"),
        ("6.1", "relative_base", "outside the image"),
        ("6.1", "name_length", "kallsyms_names"),
    ],
)
def test_kallsyms_inconsistent_is_one_line(layout, what, words):
    secs, data = _corrupt(layout, what)
    with pytest.raises(InputError) as e:
        kallsyms_blob.recover(secs, data, "img")
    one_line(e, "img", "embedded kallsyms", words)


def test_kallsyms_random_damage_never_escapes():
    """Random byte damage to the tables: symbols, None or one InputError, never another exception."""
    syms = _symbols(300)
    secs, data, blob = _image(syms, "6.12")
    rnd = random.Random(7)
    for _ in range(150):
        d = bytearray(data)
        for _ in range(rnd.randint(1, 6)):
            d[0x400000 + rnd.randrange(len(blob))] = rnd.randrange(256)
        try:
            kallsyms_blob.recover(secs, bytes(d), "img")
        except InputError as e:
            assert "\n" not in str(e)


# ---- the whole path: vmlinuz -> ELF without .symtab -> embedded kallsyms -> audit ----


@pytest.mark.parametrize("layout", ["6.1", "6.12"])
def test_vmlinuz_sample_audits_like_the_sample(bzfx, layout):
    """The sample stripped (objcopy -S) with its own symbols as kallsyms, in an xz bzImage, audits to the
    same rules per (function, address) as the unstripped sample (which has no inner labels, the one
    thing kallsyms cannot tell: see tests/kernel/test_vmlinuz.py), with the same release and build id."""
    z = api.audit(bzfx / f"bzImage-ks-{layout}", "legacy-2011")
    s = api.audit(SAMPLE, "legacy-2011")
    assert z.kernel.symbol_source == "embedded kallsyms"
    assert (z.kernel.release, z.kernel.build_id) == (s.kernel.release, s.kernel.build_id)

    def rules(r):
        return {(j.pp.name, j.pp.addr): j.rule_ids for j in r.judgements}

    assert rules(z) == rules(s)
    assert len(z.judgements) == len(s.judgements) == 19


def test_cli_names_the_symbol_source(bzfx, capsys):
    code = run([str(bzfx / "bzImage-ks-6.1"), "--table", "legacy-2011"])
    cap = capsys.readouterr()
    assert code in (0, 1), cap.err
    assert "embedded kallsyms" in cap.err + cap.out
    assert "Traceback" not in cap.err
