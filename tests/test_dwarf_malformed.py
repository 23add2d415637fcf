"""test_dwarf_malformed.py: malformed DWARF raises DwarfError or IndexError (dwarf.MALFORMED), and never hangs."""

from __future__ import annotations

import pytest

from fbt_audit.input import dwarf
from fbt_audit.input.dwarf import DwarfError, _count, _Files, _form_value, _Reader


def test_malformed_is_what_source_lines_catches():
    assert dwarf.MALFORMED == (DwarfError, IndexError)


def test_indirect_form_chain_is_a_loop_not_recursion():
    """DW_FORM_indirect (0x16) names the form in the data: 5,000 of them then data1 (0x0b) 7."""
    r = _Reader(b"\x16" * 5000 + b"\x0b\x07")
    assert _form_value(r, 0x16, 4, 8, 5, None) == 7


def test_directory_count_past_the_section_is_refused():
    with pytest.raises(DwarfError, match="entries"):
        _count(_Reader(b"\xff" * 9 + b"\x01"))  # 2^64 - 1 directories in 0 bytes
    assert _count(_Reader(b"\x02ab")) == 2


def _files(dirs, files, nfiles=None, fmt=()):
    f = _Files.__new__(_Files)
    f.dw, f.off_size, f.paths, f.files = None, 4, {}, list(files)
    f.dirs, f.comp_dir, f.first, f.nfiles = dirs, dirs[0] if dirs else "", 0, len(files) if nfiles is None else nfiles
    f.fmt, f.fpos = list(fmt), 0
    return f


def test_path_of_non_string_forms_is_dwarf_error():
    """A DW_LNCT_path or directory index of another form class (data, block) is malformed DWARF, not a TypeError."""
    assert _files(["/build", "inc"], [("a.c", 1)]).path(0) == "/build/inc/a.c"
    bad = [([(5, 0)], ["/b"]), ([("a.c", None)], ["/b"]), ([("a.c", "x")], ["/b"]), ([("a.c", 1)], ["/b", 7])]
    for files, dirs in bad:
        with pytest.raises(DwarfError):
            _files(dirs, files).path(0)


def test_zero_size_file_entries_are_not_read_one_by_one():
    """A file format with no fields and 2^60 files: file 2^59 is the one entry they all are, at once."""

    class Dw:
        line = b""

        def _entry(self, r, fmt, off_size):
            return {}

    f = _files(["/b"], [], nfiles=1 << 60)
    f.dw = Dw()
    assert f.entry(1 << 59) == ("", 0) and len(f.files) == 1
    assert f.entry(1 << 61) == ("?", 0)
