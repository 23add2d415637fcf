"""test_bad_input_fuzzfound.py: minimal inputs the fuzzer (tests/test_fuzz.py) found, each once a crash or blow-up."""

from __future__ import annotations

import lzma
import struct
import zlib

import pytest

from .conftest import BUILD
from .helpers_fuzz import check_run

FBT202 = BUILD / "rules" / "FBT202" / "fail.o"  # ET_REL: .rela.text, __mcount_loc


def _patched(tmp_path, src, name: str, offset: int, fmt: str, value: int):
    blob = bytearray(src.read_bytes())
    struct.pack_into(fmt, blob, offset, value)
    p = tmp_path / name
    p.write_bytes(bytes(blob))
    return p


@pytest.mark.parametrize("sh_name", [76, 0x43, 0xFFFFFFFF])
def test_module_section_name_past_shstrtab(fixtures_built, tmp_path, sh_name):
    """sh_name of .data (section 3) at or past the end of .shstrtab (0x43 bytes): pyelftools reads on,
    sites._Reader's own header walk did shstr.index(b"\\0") and raised ValueError from the --returns sweep
    (internal error). Now such a name ends with the table."""
    shoff = struct.unpack_from("<Q", FBT202.read_bytes(), 40)[0]
    p = _patched(tmp_path, FBT202, "m.ko", shoff + 3 * 64, "<I", sh_name)
    for args in (["--returns", "--statistics"], ["--format", "sarif"], ["--format", "list"]):
        code, err = check_run([str(p), *args])
        assert code in (0, 1, 2), err


def test_module_shstrndx_xindex(fixtures_built, tmp_path):
    """e_shstrndx = SHN_XINDEX (0xffff) with section 0's sh_link 0: sites._Reader indexed hdrs[0xffff]
    (IndexError, an internal error under --returns); the module now audits with its tables unnamed."""
    p = _patched(tmp_path, FBT202, "m.ko", 62, "<H", 0xFFFF)
    code, err = check_run([str(p), "--returns", "--statistics"])
    assert code in (0, 1), err


def test_module_xz_asking_for_3gib_dictionary(tmp_path):
    """A 100-byte .ko.xz whose LZMA2 filter asks for a 3 GiB dictionary: liblzma allocated it (or, under
    an address-space limit, MemoryError); modfile now gives liblzma a memory limit, so it is refused."""
    x = bytearray(
        lzma.compress(b"\x7fELF" + bytes(1000), format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32,
                      filters=[{"id": lzma.FILTER_LZMA2, "dict_size": 4096}])
    )  # fmt: skip
    size = (x[12] + 1) * 4  # the block header, after the 12-byte stream header
    hdr = x[12 : 12 + size]
    props = hdr.index(b"\x21\x01", 2) + 2  # LZMA2 filter id, 1 property byte: the dictionary size
    hdr[props] = 39  # 3 GiB
    struct.pack_into("<I", hdr, size - 4, zlib.crc32(bytes(hdr[: size - 4])))
    x[12 : 12 + size] = hdr
    p = tmp_path / "dict.ko.xz"
    p.write_bytes(bytes(x))
    code, err = check_run([str(p)])
    assert code == 2 and "memory" in err.lower(), err


def _many_names_vmlinux(tmp_path, symbols: int, copies: int):
    """The sample with a .symtab of `symbols` undefined symbols and a .strtab holding the table names
    (__start_mcount_loc, linux_banner ...) `copies` times each: 1.6 MB for 40,000 x 5,000."""
    from .conftest import SAMPLE

    b = bytearray(SAMPLE.read_bytes())
    shoff = struct.unpack_from("<Q", b, 40)[0]
    hdrs = [list(struct.unpack_from("<IIQQQQIIQQ", b, shoff + 64 * i)) for i in range(b[60])]
    symi = next(i for i, h in enumerate(hdrs) if h[1] == 2)  # SHT_SYMTAB
    names = [b"__start_mcount_loc", b"__stop_mcount_loc", b"linux_banner", b"__alt_instructions",
             b"__alt_instructions_end", b"__start___jump_table", b"__x86_return_thunk"]  # fmt: skip
    strtab = b"\0" + b"".join(n + b"\0" for n in names) * copies
    last = len(strtab) - len(names[-1]) - 1
    symtab = bytes(24) + struct.pack("<IBBHQQ", last, 0x12, 0, 0, 0, 0) * symbols  # all SHN_UNDEF
    hdrs[hdrs[symi][6]][4:6] = len(b), len(strtab)
    b += strtab
    hdrs[symi][4:6] = len(b), len(symtab)
    b += symtab
    for i, h in enumerate(hdrs):
        struct.pack_into("<IIQQQQIIQQ", b, shoff + 64 * i, *h)
    p = tmp_path / "vmlinux-many-names"
    p.write_bytes(bytes(b))
    return p


def test_symbol_name_repeated_in_strtab_is_not_quadratic(tmp_path):
    """Each symbol look-up (elf._Symtab.address_of: ~40 per vmlinux, for the kernel tables' start/stop
    symbols) scanned st_name once per place the string table holds the name: a 1.6 MB vmlinux with the
    names 5,000 times and 40,000 symbols took 29 s. It now indexes the table after 64 scans: < 1 s."""
    p = _many_names_vmlinux(tmp_path, 40000, 5000)
    code, err = check_run([str(p), "--format", "list"], timeout=10)
    assert code in (0, 1), err


def test_address_of_agrees_with_names():
    """Both look-up paths of elf._Symtab.address_of give names()[name] for every name of the sample."""
    from fbt_audit.input import elf

    from .conftest import SAMPLE

    k = elf.load(SAMPLE)
    st = k.lazy["names"].__self__
    names = st.names()
    assert names
    for name, addr in names.items():
        assert st.address_of(name) == addr
        assert st._address_by_offset(name.encode() + b"\0") == addr
    assert st.address_of("no_such_symbol") is None and st._address_by_offset(b"no_such_symbol\0") is None


def _long_uleb_gate(tmp_path, n: int):
    """gate-base with `n` bytes of 0xff (a ULEB128 continuation) after a DW_LNS_advance_pc at the start
    of its .debug_line program, the section moved to the end of the file."""
    b = bytearray((BUILD / "gate-base").read_bytes())
    shoff, (shnum, shstrndx) = struct.unpack_from("<Q", b, 40)[0], struct.unpack_from("<HH", b, 60)
    hdrs = [list(struct.unpack_from("<IIQQQQIIQQ", b, shoff + 64 * i)) for i in range(shnum)]
    strtab = b[hdrs[shstrndx][4] : hdrs[shstrndx][4] + hdrs[shstrndx][5]]
    i = next(j for j, h in enumerate(hdrs) if strtab[h[0] :].startswith(b".debug_line\0"))
    dl = bytearray(b[hdrs[i][4] : hdrs[i][4] + hdrs[i][5]])
    unit_length, version = struct.unpack_from("<IH", dl, 0)
    assert version == 5
    program = 12 + struct.unpack_from("<I", dl, 8)[0]  # after header_length
    dl[program:program] = b"\x02" + b"\xff" * n + b"\x00"
    struct.pack_into("<I", dl, 0, unit_length + n + 2)
    hdrs[i][4:6] = len(b), len(dl)
    b += dl
    for j, h in enumerate(hdrs):
        struct.pack_into("<IIQQQQIIQQ", b, shoff + 64 * j, *h)
    p = tmp_path / "gate-long-uleb"
    p.write_bytes(bytes(b))
    return p


def test_dwarf_megabyte_uleb128_is_not_quadratic(fixtures_built, tmp_path):
    """A 1 MB ULEB128 in .debug_line: dwarf._Reader.uleb OR-ed each byte into an ever wider int, 54 s
    for SARIF's source lines. Bits past 70 are now dropped: well under a second."""
    p = _long_uleb_gate(tmp_path, 1 << 20)
    code, err = check_run([str(p), "--format", "sarif", "--table", "legacy-2011"], timeout=10)
    assert code in (0, 1), err


@pytest.mark.parametrize(
    "enc, uleb, sleb",
    [(b"\xe5\x8e\x26", 624485, 624485), (b"\x80\x80\x00", 0, 0), (b"\x7f", 127, -1),
     (b"\x80\x7f", 0x3F80, -128), (b"\xff" * 9 + b"\x01", 2**64 - 1, 2**64 - 1)],
)  # fmt: skip
def test_leb128_values_unchanged(enc, uleb, sleb):
    from fbt_audit.input.dwarf import _Reader

    assert _Reader(enc).uleb() == uleb
    assert _Reader(enc).sleb() == sleb


def test_control_characters_in_a_section_name_stay_on_one_line(fixtures_built, tmp_path):
    """A section named "\\r" past the end of the file: the error line carried the raw CR (a terminal
    rewrites the line; a name with LF or ESC would split it or recolour it). AuditError messages are now
    one printable line, control characters escaped."""
    blob = bytearray(FBT202.read_bytes())
    shoff, shstrndx = struct.unpack_from("<Q", blob, 40)[0], struct.unpack_from("<H", blob, 62)[0]
    shstr = struct.unpack_from("<Q", blob, shoff + shstrndx * 64 + 24)[0]
    sh_name = struct.unpack_from("<I", blob, shoff + 3 * 64)[0]  # section 3: .data
    blob[shstr + sh_name : shstr + sh_name + 5] = b"\r\n\x1b[1"
    struct.pack_into("<Q", blob, shoff + 3 * 64 + 32, 1 << 20)  # sh_size: past the end of the file
    p = tmp_path / "m.ko"
    p.write_bytes(bytes(blob))
    code, err = check_run([str(p)])
    assert code == 2 and "section \\r\\n\\x1b[1 extends past the end" in err, err


def _fuzzmod_like(tmp_path):
    """The rule fixtures linked into one ET_REL, as tests/test_fuzz.py's fuzzmod.ko."""
    import subprocess

    objs = sorted((BUILD / "rules").glob("*/fail.o"))
    out = tmp_path / "linked.ko"
    subprocess.run(["ld", "-r", "-o", str(out), *map(str, objs)], check=True)
    return out


@pytest.mark.parametrize("sh_type, sh_size, sh_addralign", [(8, 2**64 - 1, 0), (None, None, 2**63), (8, 1 << 41, 1)])
def test_module_section_beyond_64bit_address_space(fixtures_built, tmp_path, sh_type, sh_size, sh_addralign):
    """Section 1 (.text) of a module made NOBITS with a size of 2^64-1, or aligned to 2^63: the synthetic
    section bases went past 2^64 and the vectorised --returns sweep's int64 offsets overflowed (internal
    error: OverflowError). elf.load now refuses a module whose sections do not fit 2^40 bytes."""
    src = _fuzzmod_like(tmp_path)
    blob = bytearray(src.read_bytes())
    base = struct.unpack_from("<Q", blob, 40)[0] + 64
    for off, fmt, v in ((4, "<I", sh_type), (32, "<Q", sh_size), (48, "<Q", sh_addralign)):
        if v is not None:
            struct.pack_into(fmt, blob, base + off, v)
    src.write_bytes(bytes(blob))
    code, err = check_run([str(src), "--returns", "--statistics"])
    assert code == 2 and "does not fit a module's address space" in err, err


def test_vmlinux_text_spread_over_the_address_space(tmp_path):
    """The sample with .data made executable at address 0x1000 (and its symbol moved with it), while .text
    stays at 0xffffffff81000000: the vectorised --returns sweep's int64 offsets overflowed. Text spread over
    more than 2^62 bytes now takes the per-chunk sweep."""
    from .conftest import SAMPLE

    b = bytearray(SAMPLE.read_bytes())
    shoff, (shnum, shstrndx) = struct.unpack_from("<Q", b, 40)[0], struct.unpack_from("<HH", b, 60)
    hdrs = [list(struct.unpack_from("<IIQQQQIIQQ", b, shoff + 64 * i)) for i in range(shnum)]
    names = bytes(b[hdrs[shstrndx][4] : hdrs[shstrndx][4] + hdrs[shstrndx][5]])
    d = next(i for i, h in enumerate(hdrs) if names[h[0] :].startswith(b".data\0"))
    old = hdrs[d][3]
    hdrs[d][2] |= 0x4  # SHF_EXECINSTR
    hdrs[d][3] = 0x1000
    struct.pack_into("<IIQQQQIIQQ", b, shoff + 64 * d, *hdrs[d])
    symtab = next(h for h in hdrs if h[1] == 2)
    for o in range(symtab[4], symtab[4] + symtab[5], 24):
        name, info, other, shndx, value, size = struct.unpack_from("<IBBHQQ", b, o)
        if shndx == d:
            struct.pack_into("<IBBHQQ", b, o, name, (info & 0xF0) | 2, other, shndx, 0x1000 + value - old, size)
    p = tmp_path / "vmlinux-spread"
    p.write_bytes(bytes(b))
    code, err = check_run([str(p), "--returns", "--statistics"])
    assert code in (0, 1), err


def test_fifo_is_refused_not_waited_on(tmp_path):
    """A FIFO given as the image: open() waited for a writer forever. Only regular files are read."""
    import os

    p = tmp_path / "fifo.ko"
    os.mkfifo(p)
    code, err = check_run([str(p)], timeout=10)
    assert code == 2 and "not a regular file" in err, err


@pytest.mark.parametrize("kind", ["vmlinux", "ko.xz", "vmlinuz"])
def test_huge_sparse_file_is_refused_in_bounded_memory(tmp_path, kind):
    """A small image followed by a sparse hole (20-100 GB): a .ko.xz or vmlinuz was read whole into memory
    (MemoryError, or the machine's RAM), and the mmap of a vmlinux failed with ENOMEM under an address
    limit (internal error: OSError). Compressed inputs past their cap are now refused before reading, and a
    failed mmap is a one-line error."""
    from .conftest import SAMPLE
    from .helpers_fuzz import bounded_memory, bzimage, compress

    blob = SAMPLE.read_bytes()
    blob = {"vmlinux": blob, "ko.xz": compress("xz", blob), "vmlinuz": bzimage(blob, "gzip")}[kind]
    p = tmp_path / f"sparse.{kind}"
    with open(p, "wb") as f:
        f.write(blob)
        f.truncate(100 << 30 if kind == "vmlinux" else 20 << 30)
    with bounded_memory(2 << 30):
        code, err = check_run([str(p), "--format", "list"], timeout=60)
    assert code in ((0, 1, 2) if kind == "vmlinux" else (2,)), err  # the vmlinux maps when the limit allows


def test_control_characters_in_symbol_names_are_escaped(tmp_path):
    """A symbol named with a newline must not add a line to the list or the denylist (found in review of
    the fuzz campaign): names are escaped when the string table is read."""
    from conftest import SAMPLE

    from fbt_audit.pipeline import api

    blob = bytearray(SAMPLE.read_bytes())
    at = blob.find(b"\0native_iret\0") + 1
    blob[at : at + 11] = b"native\niret"
    p = tmp_path / "vmlinux-newline"
    p.write_bytes(bytes(blob))
    names = [j.pp.name for j in api.audit(p).judgements]
    assert "native\\niret" in names and not any("\n" in n for n in names)


@pytest.mark.parametrize("st_size", [0x7FFFFFFF, (1 << 64) - 1])
def test_symbol_end_past_the_address_space(tmp_path, st_size):
    """The sample's `__fentry__` (at 0xffffffff81000000) given an st_size that ends it past 2**64: the ENDBR move pass
    made the symbol ends a uint64 array and raised OverflowError (an internal error in every format). The end is now
    held at 2**64 - 1."""
    from elftools.elf.elffile import ELFFile

    from .conftest import SAMPLE

    with open(SAMPLE, "rb") as fh:
        symtab = ELFFile(fh).get_section_by_name(".symtab")
        k = next(i for i, s in enumerate(symtab.iter_symbols()) if s.name == "__fentry__")
        at = symtab["sh_offset"] + k * symtab["sh_entsize"] + 16  # Elf64_Sym.st_size
    p = _patched(tmp_path, SAMPLE, "vmlinux", at, "<Q", st_size)
    for args in (["--returns", "--statistics"], ["--format", "json"], ["--format", "list"]):
        code, err = check_run([str(p), *args])
        assert code in (0, 1), err
