"""test_name_heads.py: sites/annotate.py's tests of a vmlinux's symbol names over arrays (_NameHeads) and its label
walk over arrays answer as the Python tests and walk do."""

from __future__ import annotations

import random

import numpy as np

from fbt_audit.model.kernel import SymbolColumns
from fbt_audit.sites import annotate as A

WORDS = ["foo", "bar", "do_int3", "__pfx_foo", "__cfi_bar", "__SCT__x", "__x64_sys_read", "a.cold", "b.part.0",
         "c.isra.0.cold", "", "x", "exc_int3", "notify_die", "__", "_", "longer_than_eight.cold.1",
         "__pfx_"]  # fmt: skip


def _columns(rng: random.Random, n: int) -> SymbolColumns:
    """Functions laid one after another, some with aliases, labels (unsized, or sized within) and padding symbols
    inside, and now and then one that runs past the next (what the walk keeps and the arrays decline)."""
    syms: list[tuple[int, str, int, bool]] = []
    at = 0x1000
    while len(syms) < n:
        size = rng.choice((16, 48, 100, 300))
        syms.append((at, rng.choice(WORDS) + str(rng.randrange(100)), size, True))
        for _ in range(rng.choice((0, 0, 1, 2))):  # aliases, labels, padding names inside
            off = rng.choice((0, rng.randrange(1, size)))
            inner = rng.choice((0, 0, rng.randrange(1, size - off + 1)))
            if rng.random() < 0.01:
                inner = size * 3  # past its holder
            syms.append((at + off, rng.choice(WORDS), inner or 1, bool(inner)))
        at += size + rng.choice((0, 0, 8))
    syms.sort(key=lambda t: (t[0], t[1]))
    k = len(syms)
    return SymbolColumns([t[0] for t in syms], [t[1] for t in syms], [t[2] for t in syms], ["FUNC"] * k,
                         ["GLOBAL"] * k, [".text"] * k, [t[3] for t in syms])  # fmt: skip


def _walk(cols: SymbolColumns) -> dict[int, str]:
    return A._label_walk(cols)


def test_heads_and_labels():
    said = sum(_heads_and_labels(seed) for seed in range(30))
    assert said >= 5  # the arrays answered (else the walk did) for a good share of the seeds


def _heads_and_labels(seed: int) -> bool:
    rng = random.Random(seed)
    cols = _columns(rng, rng.choice((20, 50, 500, 5000)))
    heads = A._NameHeads.joined(cols.name)
    nm = cols.name
    assert heads.dotted.tolist() == ["." in x for x in nm]
    for prefixes in (("__pfx_", "__cfi_"), A._NAMED, ("__",), ("foo",)):
        assert heads.prefixed(prefixes).tolist() == [x.startswith(prefixes) for x in nm]
    wanted = {"do_int3", "exc_int3", "notify_die", "longer_than_eight.cold.1", "__"}
    assert heads.equal(wanted).tolist() == [x in wanted for x in nm]
    got = A._label_containers_over_columns(cols, heads)
    assert got is None or got == _walk(cols)  # None: the walk decides (a label ending past its holder)
    return got is not None


def test_labels_over_columns_decline_what_they_cannot_say():
    """A label that ends past its holder: the walk keeps the holder, the arrays would not; they say None."""
    cols = SymbolColumns([0x100, 0x110, 0x180], ["f", "inner", "g"], [0x40, 0x100, 8], ["FUNC"] * 3,
                         ["GLOBAL"] * 3, [".text"] * 3, [True, True, True])  # fmt: skip
    assert A._label_containers_over_columns(cols, A._NameHeads.joined(cols.name)) is None
    assert _walk(cols) == {0x110: "f"}


def test_joined_declines_a_nul():
    assert A._NameHeads.joined(["a", "b\0c", "d"]) is None
    assert np.array_equal(A._NameHeads.joined(["ab", "", "c"]).lens, [2, 0, 1])


def test_symbol_table_heads_are_the_names(vmlinux61):
    """The 6.1 vmlinux's SymbolColumns.arrays (input/bigsymtab.py): each name's length, '.', prefixes and handler
    names as the Python names say, and its label walk over arrays as the walk."""
    from fbt_audit.pipeline import api
    from fbt_audit.sites.handler_path import handler_path

    kernel = api.load_kernel(vmlinux61)
    cols = kernel.symbol_columns()
    heads = A._NameHeads.of(kernel)
    assert heads is not None and heads.heads is cols.arrays.heads
    nm = cols.name
    assert heads.lens.tolist() == [len(x) for x in nm] and heads.dotted.tolist() == ["." in x for x in nm]
    assert heads.prefixed(A._NAMED).tolist() == [x.startswith(A._NAMED) for x in nm]
    hp = handler_path()
    assert heads.equal(hp).tolist() == [x in hp for x in nm]
    assert cols.arrays.addr.tolist() == cols.addr and cols.arrays.size.tolist() == cols.size
    assert A._label_containers_over_columns(cols, heads) == _walk(cols)


def test_entry_arrays_are_the_lists(vmlinux61):
    """EntryRows.first_idx and end_arr (a vmlinux's, made from the symbol table's arrays) hold its lists' values."""
    from fbt_audit.patchpoints.entry import entry_rows
    from fbt_audit.pipeline import api

    rows = entry_rows(api.load_kernel(vmlinux61), api.load_table(None))
    assert rows.first_idx.tolist() == rows.first and rows.end_arr.tolist() == rows.end
    assert rows.sym_addr.tolist() == [rows.kernel.symbol_columns().addr[k] for k in rows.first]
