"""test_symbols.py: System.map and /proc/kallsyms parsers, and finding the running kernel (fast, no kernel package)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import click
import pytest
from conftest import SAMPLE

from fbt_audit.cli.main import run
from fbt_audit.input import running, symbols
from fbt_audit.input.loader import SymbolOptions
from fbt_audit.model.errors import InputError
from fbt_audit.model.kernel import Section

TEXT = 0xFFFFFFFF81000000
SECTIONS = [
    Section(".text", TEXT, 0x1000, 0x1000, 0x6, True, False),
    Section(".init.text", TEXT + 0x2000, 0x100, 0x3000, 0x6, True, False),
    Section(".data", TEXT + 0x4000, 0x100, 0x4000, 0x3, False, False),
]
MAP = """\
0000000000000000 D __per_cpu_start
0000000000035000 D __per_cpu_end
ffffffff81000000 T _stext
ffffffff81000000 T _text
ffffffff81000010 t local_fn

ffffffff81000020 W weak_fn
ffffffff81002000 T init_fn
ffffffff81004000 D linux_banner
"""
KASLR = 0x1E600000
REL = os.uname().release


def shifted(text: str, offset: int, modules: bool = True) -> str:
    """A /proc/kallsyms-style dump of a System.map: kernel-half addresses moved by `offset`, per-CPU
    offsets left alone (as the kernel prints them), and module lines mixed in."""
    out = []
    for i, line in enumerate(text.splitlines()):
        if not line.strip():
            continue
        a, t, n = line.split()
        addr = int(a, 16)
        if addr >= 1 << 63:
            addr += offset
        out.append(f"{addr:016x} {t} {n}")
        if modules and i % 3 == 1:
            out.append(f"ffffffffc0{i:04x}00 t mod_fn_{i}\t[fakemod]")
    if modules:
        out += ["ffffffffc1000000 T kvm_init\t[kvm]", "ffffffffc1000100 t _text\t[kvm]"]
    return "\n".join(out) + "\n"


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return p


def _no_kind(row: str) -> str:
    """A --format list row without its kind column (FUNC/NOTYPE)."""
    f = row.split("\t")
    return row if row.startswith("#") else "\t".join(f[:11] + f[12:])


def one_line_error(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg
    return msg


# --- System.map -------------------------------------------------------------------------------------


def test_system_map_parsed_in_order(tmp_path):
    ext = symbols.read_system_map(write(tmp_path, "System.map-6.1.0-56-amd64", MAP), SECTIONS)
    assert ext.source == "System.map-6.1.0-56-amd64"
    assert ext.names == ["__per_cpu_start", "__per_cpu_end", "_stext", "_text", "local_fn", "weak_fn", "init_fn",
                         "linux_banner"]  # fmt: skip
    assert ext.types == ["D", "D", "T", "T", "t", "W", "T", "D"]
    assert ext.addrs[4] == TEXT + 0x10 and ext.addrs[1] == 0x35000


def test_system_map_tolerates_crlf_and_trailing_blanks(tmp_path):
    ext = symbols.read_system_map(write(tmp_path, "m", MAP.replace("\n", " \r\n") + "\n\n"), SECTIONS)
    assert len(ext.names) == 8


@pytest.mark.parametrize(
    "text, where, words",
    [
        (MAP + "ffffffff8100 T short_address\n", ":10:", "not a System.map line"),
        (MAP + "ffffffff81000030 T\n", ":10:", "ADDRESS TYPE NAME expected"),
        ("hello world\n", ":1:", "'hello world'"),
        (MAP.replace("local_fn", "local_fn extra"), ":5:", "not a System.map line"),
        (MAP + "ffffffffc0000000 t fn\t[kvm]\n", ":10:", "--kallsyms"),
    ],
)
def test_system_map_garbage_names_file_and_line(tmp_path, text, where, words):
    p = write(tmp_path, "System.map", text)
    with pytest.raises(InputError) as e:
        symbols.read_system_map(p, SECTIONS)
    msg = one_line_error(e)
    assert f"{p}{where}" in msg and words in msg


def test_system_map_binary_empty_long(tmp_path, monkeypatch):
    for name, data, words in [
        ("bin", b"\x7fELF\x02\x01\x01\0" * 4, "bin:1: binary data (a NUL byte), not a System.map"),
        ("bin2", MAP.encode() + b"\0", "bin2:10: binary data"),
        ("empty", b"", "empty file"),
        ("blank", b"\n \n", "empty file"),
        ("longline", b"ffffffff81000000 T " + b"x" * 5000 + b"\n", "line longer than 1024 bytes"),
    ]:
        with pytest.raises(InputError) as e:
            symbols.read_system_map(write(tmp_path, name, data), SECTIONS)
        assert words in one_line_error(e), name
    monkeypatch.setattr(symbols, "MAX_BYTES", 100)
    with pytest.raises(InputError) as e:
        symbols.read_system_map(write(tmp_path, "big", MAP), SECTIONS)
    assert "larger than" in one_line_error(e)
    with pytest.raises(InputError) as e:
        symbols.read_system_map(tmp_path, SECTIONS)
    assert "is a directory" in one_line_error(e)
    with pytest.raises(InputError) as e:
        symbols.read_system_map(tmp_path / "missing", SECTIONS)
    assert "No such file" in one_line_error(e)


def test_debian_stub_system_map_points_at_dbg_package(tmp_path):
    stub = "ffffffffffffffff B The real System.map is in the linux-image-<version>-dbg package\n"
    assert len(stub) == 83  # Debian's /boot/System.map-<release>, byte for byte
    p = write(tmp_path, "System.map-6.1.0-56-amd64", stub)
    with pytest.raises(InputError) as e:
        symbols.read_system_map(p, SECTIONS)
    assert one_line_error(e) == (
        f"{p}: Debian's stub System.map (no symbols; the real one is /usr/lib/debug/boot/System.map-6.1.0-56-amd64 "
        "in the linux-image-6.1.0-56-amd64-dbg package)"
    )
    with pytest.raises(InputError, match="stub System.map"):  # given to --kallsyms by mistake: same answer
        symbols.read_kallsyms(p, SECTIONS)


def test_system_map_all_zero_or_of_another_image(tmp_path):
    zero = "".join("0" * 16 + line[16:] + "\n" for line in MAP.splitlines() if line)
    with pytest.raises(InputError, match="every address is 0"):
        symbols.read_system_map(write(tmp_path, "zero", zero), SECTIONS)
    with pytest.raises(InputError) as e:  # a KASLR-shifted dump without module lines, given as a System.map
        symbols.read_system_map(write(tmp_path, "dump", shifted(MAP, KASLR, modules=False)), SECTIONS)
    assert "_text is at 0xffffffff9f600000 but the image's .text starts at 0xffffffff81000000" in one_line_error(e)
    elsewhere = [Section(".text", 0x1000, 0x100, 0x1000, 0x6, True, False)]
    nosym = MAP.replace(" _stext", " x_stext").replace(" _text", " x_text")
    with pytest.raises(InputError, match="none of its 5 text symbols lies in the image's text"):
        symbols.read_system_map(write(tmp_path, "other", nosym), elsewhere)
    with pytest.raises(InputError, match="no text symbols"):
        symbols.read_system_map(write(tmp_path, "data", "ffffffff81004000 D linux_banner\n"), SECTIONS)


def test_symbols_of_another_build_are_refused(tmp_path):
    good = MAP + "ffffffff81002000 T _sinittext\nffffffff81002100 T _einittext\n"
    assert symbols.read_system_map(write(tmp_path, "good", good), SECTIONS).names[-1] == "_einittext"
    p = write(tmp_path, "other", good.replace("81002100 T _einittext", "81002180 T _einittext"))
    with pytest.raises(InputError) as e:
        symbols.read_system_map(p, SECTIONS)
    assert one_line_error(e) == (
        f"{p}: _einittext is at 0xffffffff81002180 but the image's .init.text ends at 0xffffffff81002100: "
        "not this image's System.map (another build?)"
    )
    with pytest.raises(InputError, match="_einittext is at .* not a dump of this image's build"):
        symbols.read_kallsyms(write(tmp_path, "dump", shifted(p.read_text(), KASLR)), SECTIONS)
    ext = symbols.read_kallsyms(write(tmp_path, "dump2", shifted(good, KASLR)), SECTIONS)
    assert ext.addrs[-2:] == [TEXT + 0x2000, TEXT + 0x2100]


# --- /proc/kallsyms ---------------------------------------------------------------------------------


def test_kallsyms_kaslr_offset_taken_off(tmp_path):
    plain = symbols.read_system_map(write(tmp_path, "System.map", MAP), SECTIONS)
    ext = symbols.read_kallsyms(write(tmp_path, "kallsyms", shifted(MAP, KASLR)), SECTIONS)
    assert ext.source == "kallsyms dump kallsyms (KASLR offset 0x1e600000)"
    assert (ext.addrs, ext.types, ext.names) == (plain.addrs, plain.types, plain.names)
    assert ext.addrs[:2] == [0, 0x35000]  # per-CPU offsets are not moved


def test_kallsyms_without_kaslr_and_negative_offset(tmp_path):
    ext = symbols.read_kallsyms(write(tmp_path, "k0", shifted(MAP, 0)), SECTIONS)
    assert ext.source == "kallsyms dump k0 (KASLR offset 0x0)"
    ext = symbols.read_kallsyms(write(tmp_path, "kneg", shifted(MAP, -0x200000)), SECTIONS)
    assert ext.source == "kallsyms dump kneg (KASLR offset -0x200000)" and ext.addrs[2] == TEXT


def test_kallsyms_stext_when_no_text(tmp_path):
    text = shifted(MAP.replace("ffffffff81000000 T _text\n", ""), KASLR)
    ext = symbols.read_kallsyms(write(tmp_path, "k", text), SECTIONS)
    assert "KASLR offset 0x1e600000" in ext.source and "_text" not in ext.names
    with pytest.raises(InputError) as e:
        symbols.read_kallsyms(write(tmp_path, "k2", text.replace(" _stext", " _start")), SECTIONS)
    assert "no _text or _stext symbol: cannot work out the KASLR offset" in one_line_error(e)


def test_kallsyms_module_lines_dropped_or_kept(tmp_path):
    p = write(tmp_path, "kallsyms", shifted(MAP, KASLR))
    ext = symbols.read_kallsyms(p, SECTIONS)
    assert not any(n.startswith("mod_fn") or n == "kvm_init" for n in ext.names)
    assert ext.names.count("_text") == 1  # kvm's own _text is not the kernel's
    modsecs = [Section(".text", 0xFFFFFFFFC1000000, 0x1000, 0x40, 0x6, True, False)]
    kvm = symbols.read_kallsyms(p, modsecs, module="kvm")
    assert kvm.source == "kallsyms dump kallsyms [kvm]"
    assert list(zip(kvm.addrs, kvm.types, kvm.names, strict=True)) == [
        (0xFFFFFFFFC1000000, "T", "kvm_init"),
        (0xFFFFFFFFC1000100, "t", "_text"),
    ]
    with pytest.raises(InputError) as e:
        symbols.read_kallsyms(p, modsecs, module="nope")
    assert one_line_error(e) == f"{p}: no symbols of module nope (modules in the dump: fakemod, kvm)"
    with pytest.raises(InputError, match="module kvm's symbols are for the module's own image"):
        symbols.read_kallsyms(p, SECTIONS, module="kvm")  # a vmlinux is not the module's image
    only_modules = "".join(line + "\n" for line in shifted(MAP, KASLR).splitlines() if "[" in line)
    with pytest.raises(InputError, match="no kernel symbols"):
        symbols.read_kallsyms(write(tmp_path, "mods", only_modules), SECTIONS)


def test_kallsyms_read_without_cap_syslog_is_refused(tmp_path):
    dump = shifted(MAP, KASLR)
    zero = "".join("0" * 16 + line[16:] + "\n" for line in dump.splitlines())
    p = write(tmp_path, "kallsyms", zero)
    with pytest.raises(InputError) as e:
        symbols.read_kallsyms(p, SECTIONS)
    assert one_line_error(e) == (
        f"{p}: every address is 0: /proc/kallsyms was read without CAP_SYSLOG (kptr_restrict); "
        "dump it as root: sudo cat /proc/kallsyms > FILE"
    )


def test_kallsyms_garbage(tmp_path):
    p = write(tmp_path, "k", shifted(MAP, KASLR) + "ffffffffc0000000 t fn [kvm\n")
    with pytest.raises(InputError) as e:
        symbols.read_kallsyms(p, SECTIONS)
    assert f"{p}:" in one_line_error(e) and "not a /proc/kallsyms dump line" in str(e.value)
    with pytest.raises(InputError, match="b:1: binary data"):
        symbols.read_kallsyms(write(tmp_path, "b", b"\0" * 10), SECTIONS)


# --- the running kernel -----------------------------------------------------------------------------


def fake_root(tmp_path: Path, *, dbg=False, vmlinuz=False, kallsyms: str | None = None) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    if dbg:
        (root / "usr/lib/debug/boot").mkdir(parents=True)
        shutil.copy(SAMPLE, root / f"usr/lib/debug/boot/vmlinux-{REL}")
    if vmlinuz:
        (root / "boot").mkdir()
        shutil.copy(SAMPLE, root / f"boot/vmlinuz-{REL}")
    if kallsyms is not None:
        (root / "proc").mkdir()
        (root / "proc/kallsyms").write_text(kallsyms)
    return root


def said(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err.strip()


def test_running_prefers_dbg_vmlinux(tmp_path, capsys):
    root = fake_root(tmp_path, dbg=True, vmlinuz=True, kallsyms=shifted(MAP, KASLR))
    path, opts = running.running_kernel(SymbolOptions(), root=root)
    assert path == root / f"usr/lib/debug/boot/vmlinux-{REL}" and opts == SymbolOptions()
    assert said(capsys) == f"fbt-audit: auditing the running kernel: {path}"


def test_running_vmlinuz_with_proc_kallsyms(tmp_path, capsys):
    root = fake_root(tmp_path, vmlinuz=True, kallsyms=shifted(MAP, KASLR))
    path, opts = running.running_kernel(SymbolOptions(), root=root)
    assert path == root / f"boot/vmlinuz-{REL}" and opts == SymbolOptions(kallsyms=root / "proc/kallsyms")
    assert said(capsys) == f"fbt-audit: auditing the running kernel: {path} with {root / 'proc/kallsyms'}"


def test_running_vmlinuz_keeps_the_users_symbols(tmp_path, capsys):
    root = fake_root(tmp_path, vmlinuz=True, kallsyms=shifted(MAP, KASLR))
    mine = SymbolOptions(kallsyms=Path("my.dump"))
    assert running.running_kernel(mine, root=root) == (root / f"boot/vmlinuz-{REL}", mine)
    assert said(capsys).endswith(f"vmlinuz-{REL} with --kallsyms my.dump")
    mine = SymbolOptions(system_map=Path("System.map"))
    assert running.running_kernel(mine, root=root)[1] == mine
    assert said(capsys).endswith(f"vmlinuz-{REL} with --system-map System.map")


def test_running_vmlinuz_with_zeroed_kallsyms_uses_embedded(tmp_path, capsys):
    zero = "".join("0" * 16 + line[16:] + "\n" for line in shifted(MAP, KASLR).splitlines())
    root = fake_root(tmp_path, vmlinuz=True, kallsyms=zero)
    path, opts = running.running_kernel(SymbolOptions(), root=root)
    assert path == root / f"boot/vmlinuz-{REL}" and opts == SymbolOptions()
    assert said(capsys) == (
        f"fbt-audit: auditing the running kernel: {path} with its embedded kallsyms "
        f"({root / 'proc/kallsyms'}: all addresses 0 without CAP_SYSLOG; run as root to use it)"
    )


def test_running_vmlinuz_unreadable_is_a_usage_error(tmp_path, monkeypatch):
    root = fake_root(tmp_path, vmlinuz=True, kallsyms=shifted(MAP, KASLR))
    monkeypatch.setattr(running.os, "access", lambda p, mode: not str(p).endswith(f"vmlinuz-{REL}"))
    with pytest.raises(click.UsageError) as e:
        running.running_kernel(SymbolOptions(), root=root)
    assert e.value.format_message() == (
        f"no PATH given and {root}/boot/vmlinuz-{REL} is not readable: run as root, or give a vmlinux, vmlinuz, "
        f".ko or module directory (the unstripped vmlinux is in linux-image-{REL}-dbg)"
    )


def test_running_root_from_environment(tmp_path, monkeypatch, capsys):
    root = fake_root(tmp_path, dbg=True)
    monkeypatch.setenv(running.ROOT_ENV, str(root))
    assert running.running_kernel(SymbolOptions(), release=REL)[0] == root / f"usr/lib/debug/boot/vmlinux-{REL}"
    capsys.readouterr()


def test_running_nothing_found_is_a_usage_error(tmp_path):
    root = fake_root(tmp_path, kallsyms=shifted(MAP, KASLR))
    with pytest.raises(click.UsageError) as e:
        running.running_kernel(SymbolOptions(), root=root, release="6.1.0-56-amd64")
    msg = e.value.format_message()
    assert "\n" not in msg
    for words in ("no PATH given", "linux-image-6.1.0-56-amd64-dbg", "vmlinuz-6.1.0-56-amd64", "vmlinux, vmlinuz, .ko",
                  "module directory", "--system-map FILE", "--kallsyms FILE"):  # fmt: skip
        assert words in msg


def test_cli_no_path_exit_2_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(running.ROOT_ENV, str(fake_root(tmp_path)))
    assert run([]) == 2
    cap = capsys.readouterr()
    assert cap.out == ""
    assert cap.err.count("\n") == 1 and cap.err.startswith("fbt-audit: error: no PATH given and no image")
    assert f"linux-image-{REL}-dbg" in cap.err


def test_cli_no_path_audits_the_found_image(tmp_path, monkeypatch, capsys):
    root = fake_root(tmp_path, dbg=True)
    monkeypatch.setenv(running.ROOT_ENV, str(root))
    assert run(["--format", "list"]) == 1  # the sample holds unsafe entries on purpose
    running_out = capsys.readouterr()
    assert running_out.err == f"fbt-audit: auditing the running kernel: {root}/usr/lib/debug/boot/vmlinux-{REL}\n"
    assert run([str(SAMPLE), "--format", "list"]) == 1
    assert running_out.out == capsys.readouterr().out


# --- end to end on the sample: stripped, with a System.map or a shifted dump ---------------------------


def test_cli_stripped_sample_with_map_and_dump(tmp_path, capsys):
    stripped = tmp_path / "vmlinux-sample"
    subprocess.run(["objcopy", "--strip-all", str(SAMPLE), str(stripped)], check=True)
    nm = subprocess.run(["nm", "-n", str(SAMPLE)], check=True, capture_output=True, text=True).stdout
    sysmap = write(tmp_path, "System.map-sample", nm)
    dump = write(tmp_path, "kallsyms-sample", shifted(nm, KASLR))

    def listing(*args) -> list[str]:
        assert run([*args, "--format", "list"]) == 1
        return capsys.readouterr().out.splitlines()

    full = listing(str(SAMPLE))
    by_map = listing(str(stripped), "--system-map", str(sysmap))
    by_dump = listing(str(stripped), "--kallsyms", str(dump))
    assert "# symbols System.map-sample" in by_map
    assert "# symbols kallsyms dump kallsyms-sample (KASLR offset 0x1e600000)" in by_dump
    assert [x for x in by_map if not x.startswith("# symbols")] == [x for x in by_dump if not x.startswith("# symbols")]
    # Against the unstripped image: the same rows but for the kind column, FUNC for every outside symbol
    # (a System.map does not tell STT_FUNC from STT_NOTYPE).
    assert [_no_kind(x) for x in by_map if not x.startswith("# symbols")] == [_no_kind(x) for x in full]
    assert any(x.split("\t")[11] == "NOTYPE" for x in full if not x.startswith("#"))  # so kind does differ

    zero = write(tmp_path, "kallsyms-zero", "".join("0" * 16 + x[16:] + "\n" for x in dump.read_text().splitlines()))
    assert run([str(stripped), "--kallsyms", str(zero)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "every address is 0" in err and "CAP_SYSLOG" in err
