"""helpers_fuzz.py: the fuzzer's parts: ELF structure maps, hypothesis mutations, and the one-line-error oracle."""

from __future__ import annotations

import contextlib
import gc
import hashlib
import io
import lzma
import os
import resource
import signal
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import event
from hypothesis import strategies as st

from fbt_audit.cli.main import run

ROOT = Path(__file__).resolve().parent.parent
FAILURES = ROOT / "build" / "fuzz-failures"  # every failing input is kept here for triage (build/ is not committed)
RUN_TIMEOUT = float(os.environ.get("FBT_FUZZ_TIMEOUT", "30"))  # seconds one cli.run may take before it is a hang
MEMORY = int(os.environ.get("FBT_FUZZ_MEMORY_GB", "3")) << 30  # address space a run may add to the process

# (offset, width) of the ELF64 header fields worth corrupting
EHDR = {
    "e_type": (16, 2), "e_entry": (24, 8), "e_phoff": (32, 8), "e_shoff": (40, 8), "e_flags": (48, 4),
    "e_ehsize": (52, 2), "e_phentsize": (54, 2), "e_phnum": (56, 2), "e_shentsize": (58, 2),
    "e_shnum": (60, 2), "e_shstrndx": (62, 2),
}  # fmt: skip
SHDR = {
    "sh_name": (0, 4), "sh_type": (4, 4), "sh_flags": (8, 8), "sh_addr": (16, 8), "sh_offset": (24, 8),
    "sh_size": (32, 8), "sh_link": (40, 4), "sh_info": (44, 4), "sh_addralign": (48, 8), "sh_entsize": (56, 8),
}  # fmt: skip
PHDR = {"p_type": (0, 4), "p_offset": (8, 8), "p_vaddr": (16, 8), "p_filesz": (32, 8), "p_memsz": (40, 8)}
SYM = {
    "st_name": (0, 4),
    "st_info": (4, 1),
    "st_other": (5, 1),
    "st_shndx": (6, 2),
    "st_value": (8, 8),
    "st_size": (16, 8),
}
RELA = {"r_offset": (0, 8), "r_type": (8, 4), "r_sym": (12, 4), "r_addend": (16, 8)}
NOTE = {"n_namesz": (0, 4), "n_descsz": (4, 4), "n_type": (8, 4)}
SHT_SYMTAB, SHT_RELA, SHT_NOTE, SHT_NOBITS = 2, 4, 7, 8


@dataclass(frozen=True)
class Field:
    name: str
    offset: int
    width: int


@dataclass
class Shape:
    """Where the structure of one ELF lies: the fields to overwrite and the offsets to cut at."""

    fields: list[Field] = field(default_factory=list)
    cuts: list[int] = field(default_factory=list)


def section_names(blob: bytes) -> list[str]:
    """The section names of a well-formed ELF64 little-endian file."""
    shoff, (shnum, shstrndx) = struct.unpack_from("<Q", blob, 40)[0], struct.unpack_from("<HH", blob, 60)
    hdrs = [struct.unpack_from("<IIQQQQIIQQ", blob, shoff + 64 * i) for i in range(shnum)]
    strtab = blob[hdrs[shstrndx][4] : hdrs[shstrndx][4] + hdrs[shstrndx][5]]
    return [strtab[h[0] : strtab.index(b"\0", h[0])].decode() for h in hdrs]


def dwarf_shape(blob: bytes) -> Shape:
    """Every byte and every unaligned u32 of the .debug_* sections, and the RELA entries that patch them."""
    out = Shape()
    shoff = struct.unpack_from("<Q", blob, 40)[0]
    names = section_names(blob)
    for i, name in enumerate(names):
        sh_type, _, _, off, size, _, info = struct.unpack_from("<IIQQQQII", blob, shoff + 64 * i)[1:]
        if name.startswith(".debug_"):
            out.fields += [Field(f"{name}+{o:#x}", off + o, 1) for o in range(size)]
            out.fields += [Field(f"{name}+{o:#x}/4", off + o, 4) for o in range(size - 3)]
            out.cuts += [off, off + size]
        elif sh_type == SHT_RELA and names[info].startswith(".debug_"):
            for j in range(size // 24):
                out.fields += [Field(f"{name}[{j}].{k}", off + 24 * j + o, w) for k, (o, w) in RELA.items()]
    return out


def shape(blob: bytes) -> Shape:
    """Map the headers, symbols, relocations and notes of a well-formed ELF64 little-endian file."""
    out = Shape()
    out.fields += [Field(k, o, w) for k, (o, w) in EHDR.items()]
    out.cuts += [0, 1, 4, 16, 18, 20, 24, 32, 40, 52, 58, 60, 62, 63, 64]
    if len(blob) < 64 or blob[:4] != b"\x7fELF":
        return out
    phoff, shoff = struct.unpack_from("<QQ", blob, 32)
    phnum, shnum = struct.unpack_from("<H", blob, 56)[0], struct.unpack_from("<H", blob, 60)[0]
    for i in range(phnum):
        base = phoff + 56 * i
        out.fields += [Field(f"phdr[{i}].{k}", base + o, w) for k, (o, w) in PHDR.items()]
        out.cuts.append(base)
    out.cuts += [shoff, shoff + 1, len(blob) - 1]
    for i in range(shnum):
        base = shoff + 64 * i
        if base + 64 > len(blob):
            break
        out.fields += [Field(f"shdr[{i}].{k}", base + o, w) for k, (o, w) in SHDR.items()]
        out.cuts.append(base)
        sh_type, _, _, off, size, _, _, _, ent = struct.unpack_from("<IIQQQQIIQQ", blob, base)[1:]
        if sh_type == SHT_NOBITS:
            continue
        out.cuts += [off, off + size // 2, off + size]
        per = {SHT_SYMTAB: (SYM, 24), SHT_RELA: (RELA, 24), SHT_NOTE: (NOTE, 0)}.get(sh_type)
        if per is None:
            # table sections (__jump_table, .altinstructions ...): each aligned word is a field
            out.fields += [Field(f"sec[{i}]+{o:#x}", off + o, 4) for o in range(0, min(size, 256) - 3, 4)]
            continue
        layout, stride = per
        for j in range(size // stride if stride else 1):
            out.fields += [Field(f"sec[{i}][{j}].{k}", off + j * stride + o, w) for k, (o, w) in layout.items()]
            out.cuts.append(off + j * stride)
    out.fields = [f for f in out.fields if f.offset + f.width <= len(blob)]
    out.cuts = sorted({c for c in out.cuts if 0 <= c < len(blob)})
    return out


def values(width: int, blob_len: int, orig: int) -> st.SearchStrategy[int]:
    """Values that break parsers: 0, 1, all ones, sign bits, section-index sentinels, the file size."""
    mask = (1 << 8 * width) - 1
    special = [0, 1, 2, 3, 7, 8, 24, 64, mask, mask - 1, mask >> 1, (mask >> 1) + 1, 0xFF, 0xFF00, 0xFFF1, 0xFFF2,
               0xFFFF, 0x10000, 0x7FFFFFFF, 0xFFFFFFFF, 1 << 32, 1 << 40, blob_len, blob_len - 1, blob_len + 1,
               orig + 1, orig - 1, orig * 2, orig * 24, orig + blob_len, orig ^ (1 << 31)]  # fmt: skip
    return st.one_of(st.sampled_from(sorted({v & mask for v in special})), st.integers(0, mask))


def mutate(data, blob: bytes, where: Shape, label: str = "") -> bytes:
    """Draw one mutated copy of blob: field overwrites, byte flips, inserts, deletes, splices, a cut.
    Most cases keep the file's layout (overwrites, flips) so that they get past the ELF header checks
    into the table readers; inserts, deletes and cuts, which shift or drop everything after them, are rarer."""
    buf = bytearray(blob)
    for f in data.draw(st.lists(st.sampled_from(where.fields), max_size=4), label=f"{label}fields"):
        orig = int.from_bytes(buf[f.offset : f.offset + f.width], "little")
        v = data.draw(values(f.width, len(blob), orig), label=f.name)
        buf[f.offset : f.offset + f.width] = v.to_bytes(f.width, "little")
    offsets = sorted({f.offset for f in where.fields} | set(where.cuts)) or [0]
    n = data.draw(st.sampled_from((0, 1, 2, 0, 1, 3, 8)), label=f"{label}byte ops")
    for _ in range(n):
        if not buf:
            break
        op = data.draw(st.sampled_from(("flip", "set", "zero", "splice", "flip", "insert", "delete")), label="op")
        at = data.draw(st.sampled_from(offsets) | st.integers(0, len(buf) - 1), label="at") % len(buf)
        if op == "flip":
            buf[at] ^= 1 << data.draw(st.integers(0, 7), label="bit")
        elif op == "set":
            buf[at] = data.draw(st.sampled_from((0, 0xFF, 0x7F, 0x80, 1)) | st.integers(0, 255), label="byte")
        elif op == "insert":
            buf[at:at] = data.draw(st.binary(min_size=1, max_size=64), label="inserted")
        elif op == "delete":
            del buf[at : at + data.draw(st.integers(1, 256), label="deleted")]
        elif op == "zero":
            k = data.draw(st.integers(1, 512), label="zeroed")
            buf[at : at + k] = bytes(len(buf[at : at + k]))
        else:  # copy one region over another: headers and tables that point at the wrong things
            src = data.draw(st.integers(0, len(buf) - 1), label="from")
            k = data.draw(st.integers(1, 128), label="length")
            chunk = buf[src : src + k]
            buf[at : at + len(chunk)] = chunk
    if data.draw(st.integers(0, 4), label=f"{label}cut?") == 4:
        cuts = [c for c in where.cuts if c < len(buf)] or [0]
        at = data.draw(st.sampled_from(cuts) | st.integers(0, len(buf)), label="cut at")
        del buf[max(at + data.draw(st.integers(-2, 2), label="cut slack"), 0) :]
    return bytes(buf)


# module signature trailer (scripts/sign-file): PKCS#7 blob, struct module_signature, magic
SIG_MAGIC = b"~Module signature appended~\n"


def signed(blob: bytes, sig_len: int, body: int) -> bytes:
    """blob with a signature trailer whose sig_len field says sig_len while body bytes are present."""
    return blob + bytes(body) + struct.pack(">BBBBBxxxI", 0, 0, 2, 0, 0, sig_len & 0xFFFFFFFF) + SIG_MAGIC


def compress(kind: str, blob: bytes) -> bytes:
    if kind == "xz":
        return lzma.compress(blob, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32, preset=0)
    if kind == "gz":
        c = zlib.compressobj(1, zlib.DEFLATED, 31)
        return c.compress(blob) + c.flush()
    import zstandard

    return zstandard.ZstdCompressor(level=1).compress(blob)


def bomb(kind: str, size: int) -> bytes:
    """A stream of `size` zero bytes, compressed chunk by chunk (never holding `size` bytes)."""
    chunk, left = bytes(1 << 20), size
    if kind == "xz":
        c = lzma.LZMACompressor(format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32, preset=0)
    elif kind == "gz":
        c = zlib.compressobj(9, zlib.DEFLATED, 31)
    else:
        import zstandard

        c = zstandard.ZstdCompressor(level=3).compressobj(size=size)
    parts = []
    while left > 0:
        parts.append(c.compress(chunk[: min(left, len(chunk))]))
        left -= len(chunk)
    parts.append(c.flush())
    return b"".join(parts)


class Hang(BaseException):
    """Raised by SIGALRM inside a run: a BaseException, so that cli.run's catch-all cannot swallow it."""


def _alarm(signum, frame):
    raise Hang()


def _vsz() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


@contextlib.contextmanager
def bounded_memory(extra: int = MEMORY):
    """RLIMIT_AS at the current address space plus `extra` while the block runs: an unbounded
    allocation becomes a MemoryError (an internal error, so a failed case) instead of an OOM kill."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = _vsz() + extra
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


_runs = 0


def check_run(argv: list[str], timeout: float = RUN_TIMEOUT) -> tuple[int, str]:
    """Run the CLI in-process on argv, under the alarm; assert the robustness contract; return (code, stderr)."""
    global _runs
    out, err = io.StringIO(), io.StringIO()
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = run(argv)
    except Hang:
        raise AssertionError(f"hang: fbt-audit {' '.join(argv)} ran over {timeout} s") from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        gc.enable()  # cli.run turns the collector off for its one-shot process; the fuzzer runs thousands
        _runs += 1
        if _runs % 64 == 0:
            gc.collect()
    text = err.getvalue()
    lines = text.splitlines()
    assert "Traceback" not in text, text
    assert "internal error" not in text, text
    assert code in (0, 1, 2), (code, text)
    if code == 2:
        errors = [ln for ln in lines if ln.startswith("fbt-audit: error: ")]
        info = [ln for ln in lines[:-1] if ": symbols from " in ln]  # said before the audit, when it was loaded
        assert len(errors) == 1 and lines[-1] == errors[0] and len(lines) == 1 + len(info), text
        assert len(errors[0]) < 2000, errors[0]
    else:
        assert not any(ln.startswith("fbt-audit: error") for ln in lines), text
    try:  # what the cases reach, in --hypothesis-show-statistics: exit codes and error kinds
        event(f"exit {code}" + (": " + lines[-1].split(": ", 3)[-1][:40] if code == 2 else ""))
    except Exception:  # outside a hypothesis test
        pass
    return code, text


def keep_failure(blob: bytes, suffix: str) -> Path:
    """Save a failing input as build/fuzz-failures/<sha1><suffix> and return its path."""
    FAILURES.mkdir(parents=True, exist_ok=True)
    p = FAILURES / (hashlib.sha1(blob).hexdigest()[:16] + suffix)
    p.write_bytes(blob)
    return p


# Every case runs SARIF (legacy-2011: more findings, so more DWARF source-line look-ups and gate work) and one
# more run drawn from OTHERS, weighted towards text with --returns --statistics (the return sweep, every
# kernel table) and the list: two in-process runs per case keep 100,000 cases within an hour on 2 shared cores.
FORMATS = [["--format", "sarif", "--table", "legacy-2011", "--source-root", str(ROOT)]]
OTHERS = [["--format", "text", "--returns", "--statistics"]] * 3 + [["--format", "list"]] * 2 + [
    ["--format", "json"], ["--format", "denylist"], ["--format", "github"], ["--format", "html"],
    ["--format", "text", "--table", "legacy-2011"], ["--format", "sarif", "--returns"],
]  # fmt: skip
EXTRA = OTHERS  # the name the tests import


@contextlib.contextmanager
def cached_tables():
    """Parse each named emulation table once, not once per run: the tables are not under test, and
    parsing one is a third of a small image's audit."""
    from fbt_audit.table import emulation as table

    load = table.load
    cache: dict = {}

    def cached(spec):
        if spec not in cache:
            cache[spec] = load(spec)
        return cache[spec]

    table.load = cached
    try:
        yield
    finally:
        table.load = load


def audit_all(path: Path, blob: bytes, extra: list[str] | None, timeout: float = RUN_TIMEOUT) -> None:
    """The oracle: every format of one input keeps the contract; a failing input is kept on disk."""
    path.write_bytes(blob)
    try:
        for args in [*FORMATS, extra or OTHERS[0]]:
            check_run([str(path), *args], timeout)
    except AssertionError as e:
        kept = keep_failure(blob, "".join(path.suffixes) or ".bin")
        raise AssertionError(f"{e}\n(input kept as {kept})") from None
    finally:
        path.unlink(missing_ok=True)


def kallsyms_tables(symbols: list[tuple[int, str, str]], base: int) -> tuple[bytes, dict[str, int]]:
    """scripts/kallsyms.c's tables in 6.1's order (offsets, relative_base, num_syms, names, markers,
    token_table, token_index; each 8-aligned) for (addr, type, name) rows sorted by address, to be placed
    at address `base`; and the offset of each table in the blob. Token c is the character c (token 0 "ab")."""
    rel = symbols[0][0]
    out = bytearray()
    at: dict[str, int] = {}

    def put(name: str, blob: bytes) -> None:
        out.extend(bytes(-(base + len(out)) % 8))
        at[name] = len(out)
        out.extend(blob)

    put("offsets", struct.pack(f"<{len(symbols)}i", *(a - rel for a, _, _ in symbols)))
    put("relative_base", struct.pack("<Q", rel))
    put("num_syms", struct.pack("<II", len(symbols), 0))
    names, markers = bytearray(), []
    for i, (_, kind, name) in enumerate(symbols):
        if i % 256 == 0:
            markers.append(len(names))
        entry = (kind + name).encode("latin-1")
        names += bytes([len(entry)]) + entry
    put("names", bytes(names))
    put("markers", struct.pack(f"<{len(markers)}I", *markers))
    tokens = [b"ab"] + [bytes([c]) for c in range(1, 256)]
    put("token_table", b"".join(t + b"\0" for t in tokens))
    index, pos = [], 0
    for t in tokens:
        index.append(pos)
        pos += len(t) + 1
    put("token_index", struct.pack("<256H", *index))
    out.extend(bytes(-len(out) % 8))
    return bytes(out), at


def nm_symbols(path: Path) -> list[tuple[int, str, str]]:
    import subprocess

    out = subprocess.run(["nm", "-n", str(path)], check=True, capture_output=True, text=True).stdout
    rows = [ln.split() for ln in out.splitlines()]
    return sorted((int(a, 16), t, n) for a, t, n in (r for r in rows if len(r) == 3))


def with_kallsyms(vmlinux: Path, work: Path, base: int = 0xFFFFFFFF81010000) -> tuple[bytes, list[Field]]:
    """vmlinux stripped of .symtab, with its symbols as embedded kallsyms tables in a .rodata.kallsyms
    section at `base`; and the kallsyms fields worth corrupting, at their file offsets."""
    import subprocess

    blob, at = kallsyms_tables(nm_symbols(vmlinux), base)
    (work / "kallsyms.bin").write_bytes(blob)
    out = work / "vmlinux-kallsyms"
    subprocess.run(
        ["objcopy", "--strip-all", "--add-section", f".rodata.kallsyms={work / 'kallsyms.bin'}",
         "--set-section-flags", ".rodata.kallsyms=alloc,readonly,contents",
         "--change-section-address", f".rodata.kallsyms={base:#x}", str(vmlinux), str(out)],
        check=True, capture_output=True,
    )  # fmt: skip
    data = out.read_bytes()
    sec = data.find(blob)
    assert sec > 0, "the kallsyms section is not in the objcopy output"
    n = (at["relative_base"] - at["offsets"]) // 4
    fields = [
        Field("kallsyms_num_syms", sec + at["num_syms"], 4),
        Field("kallsyms_relative_base", sec + at["relative_base"], 8),
    ]
    fields += [Field(f"kallsyms_offsets[{i}]", sec + at["offsets"] + 4 * i, 4) for i in range(0, n, max(1, n // 8))]
    fields += [Field("kallsyms_markers[0]", sec + at["markers"], 4), Field("kallsyms_names[0]", sec + at["names"], 1)]
    fields += [Field(f"kallsyms_names+{o}", sec + at["names"] + o, 1) for o in range(1, 64, 7)]
    fields += [Field(f"kallsyms_token_index[{i}]", sec + at["token_index"] + 2 * i, 2) for i in (0, 1, 0x30, 0x39, 255)]
    fields += [Field(f"kallsyms_token_table+{o}", sec + at["token_table"] + o, 1) for o in (0, 1, 2, 3, 0x60, 0x62)]
    return data, fields


BZ_SETUP_SECTS = 4


def bzimage(payload: bytes, kind: str, init_size: int | None = None, stream: bytes | None = None) -> bytes:
    """An x86 bzImage (boot protocol 2.15) whose compressed payload is `payload` in `kind` compression
    (gzip, xz, zstd, lz4, bzip2, lzma or none), as arch/x86/boot/tools/build.c lays it out; or, given
    `stream`, that already compressed stream as it is."""
    import bz2

    if stream is not None:
        pass
    elif kind == "gzip":
        stream = compress("gz", payload)
    elif kind == "xz":
        stream = lzma.compress(payload, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32, preset=0)
    elif kind == "lzma":
        stream = lzma.compress(payload, format=lzma.FORMAT_ALONE, preset=0)
    elif kind == "zstd":
        stream = compress("zst", payload)
    elif kind == "bzip2":
        stream = bz2.compress(payload, 1)
    elif kind == "lz4":
        import lz4.block

        stream = struct.pack("<I", 0x184C2102)
        for i in range(0, len(payload), 8 << 20):
            block = lz4.block.compress(payload[i : i + (8 << 20)], store_size=False)
            stream += struct.pack("<I", len(block)) + block
        stream += struct.pack("<I", len(payload))
    else:
        stream = payload
    setup = bytearray((BZ_SETUP_SECTS + 1) * 512)
    setup[0x1F1] = BZ_SETUP_SECTS
    setup[0x1FE:0x200] = b"\x55\xaa"
    setup[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", setup, 0x206, 0x020F)
    offset = 0x100  # the payload sits after some decompressor code in the protected-mode part
    struct.pack_into("<II", setup, 0x248, offset, len(stream))
    struct.pack_into("<I", setup, 0x260, init_size if init_size is not None else len(payload) + (1 << 20))
    return bytes(setup) + b"\x90" * offset + stream + b"\0" * 64


def bz_bomb(kind: str, size: int) -> bytes:
    """A bzImage payload stream of `size` zero bytes in any of the kernel's compressions, built chunk by chunk."""
    import bz2

    if kind in ("gzip", "xz", "zstd"):
        return bomb({"gzip": "gz", "zstd": "zst"}.get(kind, kind), size)
    chunk = bytes(8 << 20)
    if kind == "lz4":
        import lz4.block

        block = lz4.block.compress(chunk, store_size=False)
        n, rest = divmod(size, len(chunk))
        tail = lz4.block.compress(chunk[:rest], store_size=False) if rest else b""
        body = (struct.pack("<I", len(block)) + block) * n + (struct.pack("<I", len(tail)) + tail if rest else b"")
        return struct.pack("<I", 0x184C2102) + body + struct.pack("<I", size & 0xFFFFFFFF)
    c = lzma.LZMACompressor(format=lzma.FORMAT_ALONE, preset=0) if kind == "lzma" else bz2.BZ2Compressor(9)
    parts, left = [], size
    while left > 0:
        parts.append(c.compress(chunk[: min(left, len(chunk))]))
        left -= len(chunk)
    parts.append(c.flush())
    return b"".join(parts)


def bz_shape(blob: bytes) -> Shape:
    """The setup header fields of a bzImage (Documentation/arch/x86/boot.rst) and its payload's first words."""
    hdr = {"setup_sects": (0x1F1, 1), "syssize": (0x1F4, 4), "boot_flag": (0x1FE, 2), "header": (0x202, 4),
           "version": (0x206, 2), "kernel_version": (0x20E, 2), "code32_start": (0x214, 4),
           "payload_offset": (0x248, 4), "payload_length": (0x24C, 4), "init_size": (0x260, 4)}  # fmt: skip
    out = Shape([Field(k, o, w) for k, (o, w) in hdr.items()] * 3)
    payload = (blob[0x1F1] + 1) * 512 + int.from_bytes(blob[0x248:0x24C], "little")
    length = int.from_bytes(blob[0x24C:0x250], "little")
    out.fields += [Field(f"payload+{o}", payload + o, 4) for o in range(0, 64, 4)]
    out.fields += [Field(f"payload end-{o}", payload + length - o, 4) for o in range(4, 32, 4)]
    out.cuts = sorted({0x1F1, 0x202, 0x206, 0x250, 0x264, payload, payload + 16, payload + length - 4,
                       payload + length, len(blob) - 4})  # fmt: skip
    out.fields = [f for f in out.fields if f.offset + f.width <= len(blob)]
    out.cuts = [c for c in out.cuts if 0 <= c < len(blob)]
    return out
