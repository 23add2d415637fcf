"""bigsymtab.py: a vmlinux's .symtab as numpy columns: text symbols and name look-ups without a loop per symbol.

A vmlinux has 130,000-250,000 symbols; elf._Symtab's bytes-and-array columns serve modules (tens of symbols,
where numpy's fixed cost per call dominates). Here the record array is viewed in place (np.frombuffer), the
text-symbol filter, sort and sizes run over arrays, and address_of compares the first 8 bytes at every st_name
(read once, as unaligned u64s) instead of indexing every st_name in a dict (37 ms) or scanning st_name per name.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from fbt_audit.input import strtab
from fbt_audit.model.arrays import dotted, name_heads
from fbt_audit.model.kernel import SymbolColumns

_SYM = np.dtype([("name", "<u4"), ("info", "u1"), ("other", "u1"), ("shndx", "<u2"), ("value", "<u8"),
                 ("size", "<u8")])  # fmt: skip  Elf64_Sym
_KIND = np.array(strtab.KIND, dtype=object)
_BIND = np.array(strtab.BIND, dtype=object)
_TEXT = np.frombuffer(strtab.TEXT_TYPE, dtype=bool)


class BigSymtab:
    """The .symtab of a large image (elf.load picks it above elf._INDEX_FROM symbols): the same answers as
    elf._Symtab (address_of, names, text_columns) over numpy columns."""

    def __init__(self, raw: bytes, string_table: bytes, secs: list, bases: dict[int, int], rel: bool) -> None:
        self.raw = raw[: len(raw) - len(raw) % _SYM.itemsize]
        self.strtab = string_table
        self.rec = np.frombuffer(self.raw, dtype=_SYM)
        self.n = len(self.rec)
        self.limit = min(len(secs), strtab.SHN_LORESERVE)
        shndx = self.rec["shndx"].astype(np.int64)
        self.valid = (shndx >= 1) & (shndx < self.limit)
        base = np.zeros(max(len(secs), 1), dtype=np.uint64)
        for i, b in bases.items():
            base[i] = b
        self.addrs = self.rec["value"] + base[np.minimum(shndx, len(base) - 1)] if rel else self.rec["value"]
        self._heads: np.ndarray | None = None

    def names_of(self, idx: np.ndarray) -> list[str]:
        return self._names_and_spans(idx)[0]

    def _names_and_spans(self, idx: np.ndarray) -> tuple[list[str], np.ndarray | None, np.ndarray | None]:
        """The names of symbols idx, and where they are in the string table (start and end offsets) when they are
        its bytes sliced (printable ASCII); else None, None."""
        off = self.rec["name"][idx].astype(np.int64)
        st = self._ascii()
        if st is None or not len(off) or int(off.max()) >= len(self.strtab):
            return strtab.names_at(self.strtab, off.tolist()), None, None
        end = self._nuls()[np.searchsorted(self._nuls(), off)]
        end[off == 0] = 0  # offset 0 names nothing
        return list(map(st.__getitem__, map(slice, off.tolist(), end.tolist()))), off, end

    def _ascii(self) -> str | None:
        """The string table as str when its bytes are printable ASCII (kernel names): str offsets are then byte
        offsets. None otherwise (strtab.names_at decodes and escapes name by name)."""
        if "_str" not in self.__dict__:
            sb = np.frombuffer(self.strtab, dtype=np.uint8)
            nul = sb == 0
            self._nul = np.r_[np.flatnonzero(nul), len(self.strtab)]
            # strtab.PRINTABLE's bytes alone (0x20-0x7e and NUL), over the array: bytes.translate costs 5x more
            ok = self.strtab[:1] == b"\0" and not ((sb - np.uint8(0x20) > np.uint8(0x5E)) & ~nul).any()
            self._str = self.strtab.decode("ascii") if ok else None
        return self._str

    def _nuls(self) -> np.ndarray:
        """Offsets of every NUL of the string table, and one past its end."""
        if "_nul" not in self.__dict__:
            self._ascii()
        return self._nul

    def _name_heads(self) -> np.ndarray:
        """Per symbol: the 8 bytes at its st_name as a little-endian u64 (past the string table: zeros), read through
        one unaligned u64 view of the table (0.5 ms; finding each name's end first took 9)."""
        if self._heads is None:
            pad = self.strtab + b"\0" * 8
            words = np.ndarray(shape=(len(self.strtab) + 1,), dtype="<u8", buffer=pad, strides=(1,))
            self._heads = words[np.minimum(self.rec["name"].astype(np.int64), len(self.strtab))]
        return self._heads

    def address_of(self, name: str) -> int | None:
        """The address of the first defined symbol named `name` (any type), or None: the symbols whose first bytes
        (with the NUL after a name under 8 bytes) match, then each checked whole, NUL included."""
        want = name.encode()
        if not want or b"\0" in want:
            return None
        whole = want + b"\0"
        key = int.from_bytes(whole[:8].ljust(8, b"\0"), "little")
        heads = self._name_heads()
        if len(whole) < 8:
            heads = heads & np.uint64((1 << (8 * len(whole))) - 1)
        valid, names, st, n = self.valid, self.rec["name"], self.strtab, len(want)
        for i in np.flatnonzero(heads == np.uint64(key)).tolist():
            off = int(names[i])
            if valid[i] and st[off : off + n] == want and st[off + n : off + n + 1] in (b"\0", b""):  # b"": table end
                return int(self.addrs[i])
        return None

    def names(self) -> dict[str, int]:
        """Every defined symbol's name -> its address, the first symbol of a name winning."""
        vidx = np.flatnonzero(self.valid)
        names = dict(zip(reversed(self.names_of(vidx)), reversed(self.addrs[vidx].tolist()), strict=True))
        names.pop("", None)
        return names

    def text_columns(self, secs: list, bases: dict[int, int]) -> SymbolColumns:
        """elf._text_columns over arrays: FUNC/NOTYPE symbols within an executable section, not assembler locals,
        sorted by (addr, name); an unsized one runs to the next text symbol or its section's end."""
        lo = np.zeros(len(secs) + 1, dtype=np.uint64)
        hi = np.zeros(len(secs) + 1, dtype=np.uint64)  # empty range [0, 0) for every other section
        for i, sec in enumerate(secs):
            if i in bases and sec.header.sh_flags & strtab.SHF_EXECINSTR:
                lo[i], hi[i] = bases[i], bases[i] + sec.header.sh_size
        rec = self.rec
        shndx = np.where(self.valid, rec["shndx"].astype(np.int64), len(secs))
        addr = self.addrs
        cand = self.valid & _TEXT[rec["info"]] & (addr >= lo[shndx]) & (addr < hi[shndx])
        sb = np.frombuffer(self.strtab + b"\0\0", dtype=np.uint8)
        off = np.minimum(rec["name"].astype(np.int64), len(self.strtab))
        c0, c1 = sb[off], sb[off + 1]
        cand &= (c0 != 0) & (c0 != ord("$")) & ~((c0 == ord(".")) & (c1 == ord("L")))  # elf._LOCAL, and '' names
        idx = np.flatnonzero(cand)
        idx = idx[np.argsort(addr[idx], kind="stable")]
        t_addr = addr[idx]
        names, name_off, name_end = self._names_and_spans(idx)
        same = t_addr[1:] == t_addr[:-1]
        keep = _by_name(np.flatnonzero(same).tolist(), names)  # strtab.sort_aliases, the runs found in numpy
        if keep is not None:
            idx, t_addr = idx[keep], t_addr[keep]
            names = [names[p] for p in keep]
            if name_off is not None:
                name_off, name_end = name_off[keep], name_end[keep]
        size = rec["size"][idx]
        t_shndx = shndx[idx]
        end = hi[t_shndx]
        # The next higher address: the start of the next run of equal addresses (a searchsorted of every address).
        run_end = np.flatnonzero(np.append(~same, True)[: len(t_addr)]) + 1
        q = np.repeat(run_end, np.diff(np.append(0, run_end)))
        nxt = np.where(q < len(t_addr), t_addr[np.minimum(q, len(t_addr) - 1)], end)
        filled = np.maximum(np.minimum(nxt, end) - t_addr, np.uint64(1))
        sized = size != 0
        info = rec["info"][idx]
        sec_names = np.array([sec.name for sec in secs] + [""], dtype=object)
        sizes = np.where(sized, size, filled)
        return SymbolColumns(
            t_addr.tolist(), names, sizes.tolist(), _KIND[info].tolist(),
            _BIND[info].tolist(), sec_names[t_shndx].tolist(), sized.tolist(),
            arrays=None if name_off is None else self._arrays(idx, names, name_off, name_end, t_addr, sizes, sized),
        )  # fmt: skip

    def _arrays(self, idx: np.ndarray, names: list[str], off: np.ndarray, end: np.ndarray, addr: np.ndarray,
                size: np.ndarray, sized: np.ndarray) -> TextArrays | None:  # fmt: skip
        """The text columns' arrays and name heads (SymbolColumns.arrays) of the names at off..end of the string table
        (names_of's slices); '.' found over one join of the names (the string table holds every other symbol's)."""
        if not len(idx):
            return None
        lens = end - off
        starts = np.zeros(len(lens), dtype=np.int64)
        np.cumsum(lens[:-1] + 1, out=starts[1:])
        dots = dotted("\0".join(names).encode("ascii"), starts)
        return TextArrays(addr, size, sized, name_heads(self._name_heads()[idx], lens), lens, dots)


class TextArrays(NamedTuple):
    """SymbolColumns.arrays of a vmlinux's text symbols: addr, size (final), sized; each name's first 8 bytes as a
    little-endian u64 (zeros past its end), its length, and whether it holds a '.'."""

    addr: np.ndarray
    size: np.ndarray
    sized: np.ndarray
    heads: np.ndarray
    lens: np.ndarray
    dotted: np.ndarray


def _by_name(dup: list[int], names: list[str]) -> list[int] | None:
    """strtab.sort_aliases given `dup` (the positions whose address equals the next one's): the order that sorts
    each run of equal addresses by name, or None when that is the order they have."""
    keep: list[int] | None = None
    for first, last in strtab.alias_runs(dup):
        run = list(range(first, last + 1))
        got = sorted(run, key=names.__getitem__)
        if got != run:
            if keep is None:
                keep = list(range(len(names)))
            keep[first : last + 1] = got
    return keep
