"""kallsyms_blob.py: recover symbols from the kallsyms tables compiled into a stripped vmlinux, found by structure."""

# Hand-written because no library parses these tables: their layout is scripts/kallsyms.c's output, and the
# tables are found by their shape (as vmlinux-to-elf does), since a stripped image has no symbol naming them.
#
# What scripts/kallsyms.c emits into .rodata, every label aligned to 8 bytes on 64-bit:
#   kallsyms_token_table  256 NUL-terminated tokens; token c is the single character c wherever c occurs in
#                         a name, so the digits make the run "0\0" "1\0" ... "9\0" at tokens 0x30..0x39
#   kallsyms_token_index  256 u16: the offset of each token in the table
#   kallsyms_num_syms     u32 (a pointer-sized word in old kernels) N
#   kallsyms_names        N entries: length (1 byte, or 2 bytes ULEB128 when >= 0x80, since 6.1) + token bytes;
#                         the first expanded character is the nm type letter
#   kallsyms_markers      u32 offset into kallsyms_names of every 256th entry
#   kallsyms_seqs_of_names  3 bytes per symbol (6.2+, and backported to 6.1.y)
#   kallsyms_offsets      s32/u32 per symbol, with kallsyms_relative_base (u64) (CONFIG_KALLSYMS_BASE_RELATIVE),
#                         or kallsyms_addresses, u64 per symbol
# Order up to 6.3 (and bookworm's 6.1): offsets, relative_base, num_syms, names, markers, [seqs], token_table,
# token_index. Order from 6.4 (commit 404bad70fcf7): num_syms, names, markers, token_table, token_index,
# offsets, relative_base, seqs_of_names. Both keep num_syms + names + markers together and markers before the
# token table, so the search goes token table -> markers (scanning back) -> num_syms -> names -> addresses.

from __future__ import annotations

import struct
from collections.abc import Sequence

from fbt_audit.input.symbols import ExternalSymbols
from fbt_audit.model.errors import InputError
from fbt_audit.model.kernel import Section

SOURCE = "embedded kallsyms"

_DIGITS = b"".join(bytes([c]) + b"\0" for c in b"0123456789")
_MAX_TOKEN = 256  # tokens are short substrings of names; anything longer is not a token table
_MAX_ENTRY = 2 + 512  # a names entry: its length bytes and at most KSYM_NAME_LEN (512 since 6.1) token bytes
_MAX_SYMS = 1 << 24  # seqs_of_names holds 3-byte indices
_MARKER_STEP = 256
_BACK_SCAN = 16 << 20  # how far before the token table kallsyms_markers may start (seqs_of_names: 3 bytes/symbol)
_TRIES = 64  # candidate (markers, num_syms) pairs checked per token table, so hostile input cannot stall
_TABLES = 4  # token tables followed up per image


def recover(sections: Sequence[Section], data, name: str) -> ExternalSymbols | None:
    """The image's own kallsyms as ExternalSymbols, at link-time addresses; None when the image has no
    kallsyms token table. Raises InputError (one line naming `name`) when a token table is found but the
    tables around it are inconsistent."""
    view = memoryview(data)
    if view.ndim != 1 or view.itemsize != 1:
        view = view.cast("B")
    image = _Image(sections, len(view))
    failure: str | None = None
    tables = 0
    for sec in sorted(image.sections, key=lambda s: s.addr):
        if sec.executable:
            continue  # the tables are data (.rodata)
        raw = bytes(view[sec.offset : sec.offset + sec.size])
        at = raw.find(_DIGITS)
        while at >= 0:
            table = _token_table(raw, sec.addr, at)
            if table is not None:
                tables += 1
                if tables > _TABLES:
                    break
                try:
                    return _recover_at(raw, sec, image, table)
                except (_Inconsistent, IndexError, ValueError, struct.error) as e:
                    failure = failure or f"kallsyms token table at {sec.addr + table.start:#x}: {e}"
            at = raw.find(_DIGITS, at + 1)
    if failure is not None:
        raise InputError(f"{name}: embedded kallsyms unusable: {failure}")
    return None


class _Inconsistent(Exception):
    """A token table was found, but the tables around it do not add up."""


class _Image:
    """The payload's loaded sections, and the address range they span."""

    def __init__(self, sections: Sequence[Section], size: int) -> None:
        self.sections = [s for s in sections if not s.nobits and s.size and s.offset + s.size <= size]
        spans = [(s.addr, s.addr + s.size) for s in sections if s.size and s.addr]
        self.lo = min((a for a, _ in spans), default=0)
        self.hi = max((b for _, b in spans), default=0)
        self.percpu = max((s.size for s in sections if s.addr == 0 and s.size), default=0)


class _Tokens:
    def __init__(self, start: int, index_at: int, tokens: list[str]) -> None:
        self.start = start  # offset of kallsyms_token_table in the section
        self.index_at = index_at  # offset of kallsyms_token_index
        self.tokens = tokens


def _align(pos: int, base: int, n: int = 8) -> int:
    """The first offset >= pos whose address (base + offset) is a multiple of n."""
    return pos + (-(base + pos)) % n


def _read_tokens(raw: bytes, pos: int, count: int) -> tuple[list[int], int] | None:
    """Offsets of `count` NUL-terminated tokens from pos, and the offset after the last; None if not tokens."""
    starts = []
    for _ in range(count):
        end = raw.find(b"\0", pos, pos + _MAX_TOKEN + 1)
        if end < 0:
            return None
        starts.append(pos)
        pos = end + 1
    return starts, pos


def _token_table(raw: bytes, base: int, digits: int) -> _Tokens | None:
    """The token table whose token 0x30 ("0") is at `digits`, checked against the token index after it."""
    tail = _read_tokens(raw, digits, 256 - 0x30)
    if tail is None:
        return None
    end = tail[1]
    for n in (8, 4, 2):
        index_at = _align(end, base, n)
        if index_at + 512 > len(raw) or any(raw[end:index_at]):
            continue
        index = struct.unpack_from("<256H", raw, index_at)
        start = digits - index[0x30]
        if index[0] != 0 or start < 0 or (base + start) % n:
            continue
        got = _read_tokens(raw, start, 256)
        if got is None or got[1] != end or any(s - start != i for s, i in zip(got[0], index, strict=True)):
            continue
        bounds = [*got[0], end]
        tokens = [raw[bounds[i] : bounds[i + 1] - 1].decode("latin-1") for i in range(256)]
        if any(tokens[c] != chr(c) for c in b"0123456789"):
            continue
        return _Tokens(start, index_at, tokens)
    return None


def _recover_at(raw: bytes, sec: Section, image: _Image, table: _Tokens) -> ExternalSymbols:
    names_at, count = _names(raw, sec.addr, table.start)
    addrs = _addresses(raw, sec.addr, image, table, names_at - 8, count)
    tokens = table.tokens
    types: list[str] = []
    names: list[str] = []
    pos = names_at
    for _ in range(count):
        n = raw[pos]
        if n & 0x80:
            n = (n & 0x7F) | (raw[pos + 1] << 7)
            pos += 1
        full = "".join(map(tokens.__getitem__, raw[pos + 1 : pos + 1 + n]))
        pos += 1 + n
        if not full[:1].isascii() or not full[:1].isalpha():
            raise _Inconsistent(f"symbol {len(names)} has no type letter ({full[:20]!r})")
        types.append(full[0])
        names.append(full[1:])
    return ExternalSymbols(source=SOURCE, addrs=addrs, types=types, names=names)


def _names(raw: bytes, base: int, table_start: int) -> tuple[int, int]:
    """(offset of kallsyms_names, num_syms), found by scanning back from the token table for
    kallsyms_markers (0, then rising offsets), then for the num_syms whose names end at the markers."""
    lo = max(0, table_start - _BACK_SCAN)
    top = table_start - (base + table_start) % 8  # 8-aligned address at or before the table
    words = memoryview(raw)[lo + (-(base + lo)) % 8 : top]
    first = lo + (-(base + lo)) % 8
    u32 = words[: len(words) - len(words) % 4].cast("I")
    tries = single = 0
    for w in range((len(u32) - 1) & ~1, -1, -2):  # every 8-aligned word, nearest the token table first
        if u32[w]:
            continue
        chain = [0]
        k = w + 1
        while k < len(u32) and len(chain) <= _MAX_SYMS // _MARKER_STEP:
            step = u32[k] - chain[-1]
            if not 2 * _MARKER_STEP <= step <= _MARKER_STEP * _MAX_ENTRY:
                break
            chain.append(u32[k])
            k += 1
        if len(chain) == 1:
            single += 1
            if single > 16:
                continue  # a zero word; real kernels have thousands of symbols, so many markers
        tries += 1
        if tries > _TRIES:
            break
        found = _num_syms(raw, base, first + 4 * w, chain)
        if found is not None:
            return found
    raise _Inconsistent("no kallsyms_markers and kallsyms_num_syms consistent with kallsyms_names before it")


def _num_syms(raw: bytes, base: int, markers_at: int, chain: list[int]) -> tuple[int, int] | None:
    """The kallsyms_num_syms word before the names that end where `chain` (a markers candidate) starts."""
    last = chain[-1]
    hi = markers_at - last - 2  # names start at least one two-byte entry before the last marker's group
    lo = max(0, markers_at - last - _MARKER_STEP * _MAX_ENTRY - 8)
    p = hi - 8
    p -= (base + p) % 8
    while p >= lo:
        n = struct.unpack_from("<I", raw, p)[0]
        groups = (n + _MARKER_STEP - 1) // _MARKER_STEP
        if n and groups in (len(chain), len(chain) - 1) and not any(raw[p + 4 : p + 8]):
            if _names_fit(raw, base, p + 8, n, chain[:groups], markers_at):
                return p + 8, n
        p -= 8
    return None


def _names_fit(raw: bytes, base: int, start: int, count: int, markers: list[int], markers_at: int) -> bool:
    """Whether `count` length-prefixed names from `start` agree with `markers` and end just before markers_at."""
    pos, end = start, markers_at
    for i in range(count):
        if i % _MARKER_STEP == 0 and pos - start != markers[i // _MARKER_STEP]:
            return False
        if pos >= end:
            return False
        n = raw[pos]
        if n & 0x80:
            if pos + 1 >= end:
                return False
            n = (n & 0x7F) | (raw[pos + 1] << 7)
            pos += 1
        if n == 0:
            return False
        pos += 1 + n
    return pos <= end and _align(pos, base) == end and not any(raw[pos:end])


def _addresses(raw: bytes, base: int, image: _Image, table: _Tokens, num_at: int, count: int) -> list[int]:
    """Symbol addresses from kallsyms_offsets + kallsyms_relative_base, or kallsyms_addresses, in either order."""
    after = _align(table.index_at + 512, base)  # 6.4+: right after the token index
    before_rel = num_at - 8 - _align(4 * count, 0)  # up to 6.3: offsets, relative_base, then num_syms
    layouts = [
        ("relative", before_rel, num_at - 8),
        ("relative", after, _align(after + 4 * count, base)),
        ("absolute", num_at - 8 * count, None),
        ("absolute", after, None),
    ]
    reasons = []
    for kind, at, base_at in layouts:
        size = 4 * count if kind == "relative" else 8 * count
        if at < 0 or at + size > len(raw) or (base_at is not None and base_at + 8 > len(raw)) or (base + at) % 4:
            continue
        if kind == "relative":
            rel = struct.unpack_from("<Q", raw, base_at)[0]
            offs = struct.unpack_from(f"<{count}i", raw, at)
            if min(offs) < 0:  # CONFIG_KALLSYMS_ABSOLUTE_PERCPU: percpu symbols absolute, the rest negative
                addrs = [o if o >= 0 else rel - 1 - o for o in offs]
            else:
                addrs = [rel + (o & 0xFFFFFFFF) for o in offs]
        else:
            rel = None
            addrs = list(struct.unpack_from(f"<{count}Q", raw, at))
        why = _implausible(addrs, rel, image)
        if why is None:
            return addrs
        reasons.append(why)
    raise _Inconsistent(f"no address table fits {count} symbols ({reasons[0] if reasons else 'outside the section'})")


def _implausible(addrs: list[int], rel: int | None, image: _Image) -> str | None:
    """Why `addrs` cannot be this image's symbol addresses (unsorted, outside the image), or None."""
    if any(a > b for a, b in zip(addrs, addrs[1:], strict=False)):
        return "addresses not in ascending order"
    if rel is not None and not image.lo <= rel <= image.hi:
        return f"relative base {rel:#x} outside the image"
    low = [a for a in addrs if a < image.lo]
    if any(a > image.percpu for a in low) or addrs[-1] > image.hi:
        bad = next((a for a in addrs if (a < image.lo and a > image.percpu) or a > image.hi), addrs[-1])
        return f"address {bad:#x} outside the image {image.lo:#x}-{image.hi:#x}"
    return None
