"""lengths.py: the linear sweep's instruction boundaries over whole text sections, vectorised with numpy.

What `decode.sweep` yields, restarted at every chunk, without calling capstone per instruction:
through its Python binding capstone sweeps ~1.7 million instructions a second, and bookworm's 6.1
vmlinux has 6.6 million (3.8 million of them int3 padding): 4 s. By hand (no installed library
measures lengths in bulk): a table-driven x86-64 length decoder for the common encodings,
run on every chunk's walk at once; any encoding outside its tables (VEX, x87, SSE, F0/F2/F3/67
prefixes, ...) is measured by capstone itself, so the boundaries are capstone's by construction.
`tests/test_xlen.py` compares the two on random bytes and, with the kernels present, on whole images.

Each chunk is cut into segments decoded in parallel, each from its first byte. A segment whose
predecessor's last instruction ends past its start is re-walked from there until it meets its old
path (x86 re-synchronises within a few instructions) or leaves the segment; repeated until every
segment starts where its predecessor ends, which is exactly the sequential walk.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

if not hasattr(np, "bitwise_count"):  # numpy < 2.0: returns.py falls back to the capstone sweep
    raise ImportError("audit/decode/lengths.py needs numpy 2.0 or later (numpy.bitwise_count)")

SEGMENT = 256  # bytes per segment: longer ones take more (vectorised) steps, shorter ones more re-walks
PAD = 32  # zero bytes after a section: reads past the end of the last instruction stay in bounds
TRIM = 4096  # chunks longer than this lose their trailing int3 padding before the walk

# INFO bits per opcode (0-255: one-byte map, 256-511: 0f xx)
_MODRM = 1 << 0
_SLOW = 1 << 1  # always measured by capstone
_SLOW66 = 1 << 2  # with a 66 prefix: capstone
_SLOWPFX = 1 << 3  # with any legacy prefix: capstone
_MOD3_SLOW = 1 << 4  # register form (mod=3): capstone
_IMM_SHIFT = 8  # 4 bits: immediate kind (below)
_REG_SHIFT = 16  # 8 bits: the ModRM.reg values decoded here; others go to capstone

# immediate kinds -> bytes for (no 66, no REX.W), (no 66, REX.W), (66, no REX.W), (66, REX.W)
_NONE, _IB, _IW, _IZ, _ENTER, _IV, _MOFFS, _G3B, _G3Z, _REL32 = range(10)
_IMM = {
    _NONE: (0, 0, 0, 0),
    _IB: (1, 1, 1, 1),
    _IW: (2, 2, 2, 2),
    _IZ: (4, 4, 2, 4),
    _ENTER: (3, 3, 3, 3),
    _IV: (4, 8, 2, 8),
    _MOFFS: (8, 8, 8, 8),
    _G3B: (1, 1, 1, 1),  # f6 /0: test r/m8, imm8 (the other forms have none)
    _G3Z: (4, 4, 2, 4),  # f7 /0
    _REL32: (4, 4, 4, 4),
}
_SEG_OR_66 = b"\x26\x2e\x36\x3e\x64\x65\x66"  # prefixes that change no length but 66's immediates; f0 f3 where valid


def _tables() -> tuple[np.ndarray, ...]:
    """(prefix, rep-able, lockable, length, length with 66, prefix-able) tables the walk indexes."""
    info = _opcode_info()
    pfx, rep_ok, lock_regs = _prefix_tables()
    lock_ok, tabs = _length_tables(info, lock_regs)
    pfx_ok = (info & _SLOWPFX) == 0
    return pfx, rep_ok, lock_ok.reshape(-1), tabs[0].reshape(-1), tabs[1].reshape(-1), pfx_ok


def _opcode_info() -> np.ndarray:
    """INFO bits of each opcode (0-255: one-byte map, 256-511: 0f xx); _SLOW unless listed here."""
    info = np.full(512, _SLOW, dtype=np.uint32)

    def one(ops, imm=_NONE, modrm=False, regs=0xFF, flags=0):
        for op in ops:
            info[op] = (_MODRM if modrm else 0) | (imm << _IMM_SHIFT) | (regs << _REG_SHIFT) | flags

    _one_byte_map(one)
    _two_byte_map(one)
    info[0xCC] = 0  # int3: the caller measures runs of them
    return info


_INFO: list[int] = []  # _opcode_info() as ints, made on the first modrm_offset


def modrm_offset(code: bytes, prefixes: bytes, i: int) -> int | None:
    """The ModRM byte's offset (-1: none) of the instruction whose opcode starts at code[i], from the tables above;
    None where they do not say for sure (an opcode they leave to capstone, a prefix that may change the map, a
    ModRM.reg value not listed). decode_fields then needs no capstone detail for it: 5x cheaper."""
    if not _INFO:
        _INFO.extend(_opcode_info().tolist())
    if i >= len(code):
        return None
    op, n = code[i], 1
    if op == 0x0F:
        if i + 1 >= len(code) or code[i + 1] in (0x38, 0x3A):
            return None
        op, n = 256 + code[i + 1], 2
    f = _INFO[op]
    if f & _SLOW or (prefixes and f & (_SLOW66 | _SLOWPFX)):
        return None
    if not f & _MODRM:
        return -1
    at = i + n
    if at >= len(code) or not (f >> _REG_SHIFT) & (1 << ((code[at] >> 3) & 7)):
        return None
    if f & _MOD3_SLOW and code[at] >= 0xC0:
        return None
    return at


def _one_byte_map(one: Callable[..., None]) -> None:
    """The one-byte map: its general-purpose instructions."""
    for base in range(0x00, 0x40, 8):  # add or adc sbb and sub xor cmp
        one(range(base, base + 4), modrm=True)
        one([base + 4], _IB)
        one([base + 5], _IZ)
    one(range(0x50, 0x60))  # push/pop reg
    one([0x63], modrm=True)  # movslq
    one([0x68], _IZ)
    one([0x69], _IZ, modrm=True)
    one([0x6A], _IB)
    one([0x6B], _IB, modrm=True)
    one(range(0x6C, 0x70))  # ins/outs
    one(range(0x70, 0x80), _IB, flags=_SLOWPFX)  # jcc rel8
    one([0x80, 0x83], _IB, modrm=True)
    one([0x81], _IZ, modrm=True)
    one(range(0x84, 0x8C), modrm=True)  # test xchg mov
    one([0x8C], modrm=True, regs=0x3F)  # mov from sreg
    one([0x8D], modrm=True, flags=_MOD3_SLOW)  # lea
    one([0x8E], modrm=True, regs=0x3D)  # mov to sreg (not %cs)
    one([0x8F], modrm=True, regs=0x01)  # pop r/m (other regs: XOP)
    one(range(0x90, 0x9A))  # xchg, cwtl, cltd
    one(range(0x9C, 0xA0))  # pushf popf sahf lahf
    one(range(0xA0, 0xA4), _MOFFS)
    one(range(0xA4, 0xA8))  # movs cmps
    one([0xA8], _IB)
    one([0xA9], _IZ)
    one(range(0xAA, 0xB0))  # stos lods scas
    one(range(0xB0, 0xB8), _IB)
    one(range(0xB8, 0xC0), _IV)
    one([0xC0, 0xC1], _IB, modrm=True, regs=0xBF)  # shifts (not the /6 alias)
    one([0xC2], _IW, flags=_SLOWPFX)
    one([0xC3], flags=_SLOWPFX)
    one([0xC6], _IB, modrm=True, regs=0x01)
    one([0xC7], _IZ, modrm=True, regs=0x01)
    one([0xC8], _ENTER)
    one([0xC9])  # leave
    one([0xCD], _IB)  # int n
    one(range(0xD0, 0xD4), modrm=True, regs=0xBF)
    one([0xE4, 0xE5, 0xE6, 0xE7], _IB)  # in/out imm8
    one(range(0xE0, 0xE4), _IB, flags=_SLOWPFX)  # loop jrcxz
    one([0xE8, 0xE9], _REL32, flags=_SLOWPFX)
    one([0xEB], _IB, flags=_SLOWPFX)
    one(range(0xEC, 0xF0))  # in/out dx
    one([0xF4, 0xF5])  # hlt cmc
    one([0xF6], _G3B, modrm=True, regs=0xFD)  # (not the /1 alias)
    one([0xF7], _G3Z, modrm=True, regs=0xFD)
    one(range(0xF8, 0xFE))  # clc stc cli sti cld std
    one([0xFE], modrm=True, regs=0x03)
    one([0xFF], modrm=True, regs=0x57)  # inc dec call jmp push (not far, not /7)


def _two_byte_map(one: Callable[..., None]) -> None:
    """0f xx: general-purpose instructions only; 66 makes most of this map SSE."""
    two = 256

    def two_byte(ops, imm=_NONE, modrm=True, regs=0xFF, flags=0):
        one([two + op for op in ops], imm, modrm, regs, flags | _SLOW66)

    two_byte([0x05, 0x08, 0x09, 0x0B, 0x30, 0x31, 0x32, 0xA2], modrm=False)  # syscall invd wbinvd ud2 msr tsc cpuid
    one([two + 0x1F], modrm=True, regs=0x01)  # nopl/nopw
    two_byte(range(0x40, 0x50))  # cmovcc
    two_byte(range(0x80, 0x90), _REL32, modrm=False, flags=_SLOWPFX)
    two_byte(range(0x90, 0xA0), regs=0x01)  # setcc
    two_byte([0xA3, 0xA5, 0xAB, 0xAD, 0xAF, 0xB0, 0xB1, 0xB3, 0xB6, 0xB7, 0xBB, 0xBC, 0xBD, 0xBE, 0xBF, 0xC0, 0xC1])
    two_byte([0xA4, 0xAC], _IB)  # shld/shrd imm8
    two_byte([0xBA], _IB, regs=0xF0)  # bt* imm8
    two_byte(range(0xC8, 0xD0), modrm=False)  # bswap


def _prefix_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The prefixes measured here; the opcodes f3 is valid on; the ModRM.reg values f0 is valid on."""
    pfx = np.zeros(256, dtype=bool)
    pfx[list(_SEG_OR_66 + b"\xf0\xf3")] = True
    rep_ok = np.zeros(512, dtype=bool)  # f3: rep ins outs movs cmps stos lods scas, and pause
    rep_ok[[0x6C, 0x6D, 0x6E, 0x6F, 0x90, *range(0xA4, 0xA8), *range(0xAA, 0xB0)]] = True
    lock_regs = np.zeros(512, dtype=np.uint8)  # f0: the ModRM.reg values of lockable memory forms
    lock_regs[[0x00, 0x01, 0x08, 0x09, 0x10, 0x11, 0x18, 0x19, 0x20, 0x21, 0x28, 0x29, 0x30, 0x31, 0x86, 0x87]] = 0xFF
    lock_regs[[0x80, 0x81, 0x83]] = 0x7F  # not cmp
    lock_regs[[0xF6, 0xF7]] = 0x0C  # not neg
    lock_regs[[0xFE, 0xFF]] = 0x03  # inc dec
    lock_regs[[256 + 0xB0, 256 + 0xB1, 256 + 0xC0, 256 + 0xC1, 256 + 0xAB, 256 + 0xB3, 256 + 0xBB]] = 0xFF
    lock_regs[256 + 0xBA] = 0xE0  # bts btr btc imm8
    return pfx, rep_ok, lock_regs


def _length_tables(info: np.ndarray, lock_regs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which (opcode, ModRM byte) take f0; and by (opcode, ModRM byte), one table without and one with
    a 66 prefix: bits 0-4 the length from the opcode byte on (ModRM, SIB, displacement, immediate),
    0 when capstone decides; bit 5: a SIB with mod=0, whose base 5 adds a disp32; bit 6: REX.W adds 4
    (mov $imm64). Each distinct opcode kind's rows made once over the ModRM bytes, then indexed per opcode: built on
    every run's import."""
    m = np.arange(256)
    mod, rm, reg = m >> 6, m & 7, (m >> 3) & 7
    sib = (mod != 3) & (rm == 4)
    mlen = 1 + sib + np.select([mod == 1, mod == 2, (mod == 0) & (rm == 5)], [1, 4, 4], 0)
    sib0 = ((mod == 0) & (rm == 4)).astype(np.int64) << 5
    distinct, which = np.unique(info, return_inverse=True)  # a few dozen kinds of opcode: each row made once
    v = distinct.astype(np.int64)[:, None]  # (kinds, 1) against the ModRM bytes' (256,)
    kind = (v >> _IMM_SHIFT) & 15
    lock_ok = ((mod != 3) & (((np.arange(256)[:, None] >> reg) & 1) == 1))[lock_regs]
    ok = (((v >> _REG_SHIFT) >> reg) & 1 == 1) & ~((v & _MOD3_SLOW != 0) & (mod == 3))
    g3 = (kind == _G3B) | (kind == _G3Z)
    tabs = np.zeros((2, len(distinct), 256), dtype=np.uint8)
    for o66 in (0, 1):
        imm = np.array([_IMM.get(k, (0, 0, 0, 0))[2 * o66] for k in range(16)])[kind]
        skip = (v & _SLOW != 0) | (o66 and ((v & (_SLOW66 | _SLOWPFX) != 0) | (kind == _IV)))
        with_modrm = np.where(ok, 1 + mlen + np.where(g3 & (reg != 0), 0, imm), 0) | np.where(ok, sib0, 0)
        tabs[o66] = np.where(skip, 0, np.where(v & _MODRM != 0, with_modrm, 1 + imm))
    tabs[0] |= np.where(kind == _IV, 1 << 6, 0).astype(np.uint8)
    return lock_ok, tabs[:, which.reshape(-1)]


_PFX, _REP_OK, _LOCK_OK, _LEN, _LEN66, _PFX_OK = _tables()
_CC8 = np.uint64(0xCCCCCCCCCCCCCCCC)
_ENDBR64 = np.uint64(0xFA1E0FF3)  # f3 0f 1e fa, as the low four bytes of a little-endian word
_SH = np.arange(0, 64, 8, dtype=np.uint64)  # byte i of an 8-byte word: (w >> _SH[i]) & 0xFF


def _lengths(
    t64: np.ndarray, p: np.ndarray, se: np.ndarray, ce: np.ndarray, slow: Callable[[int, int], int]
) -> tuple[np.ndarray, np.ndarray]:
    """(length, undecodable) of the instruction at each offset p, given the end of its segment se and
    of its chunk ce; a run of int3 padding counts as one step (to at most se). Undecodable (capstone
    finds nothing, or the instruction runs past ce) has length 1, as the sweep skips one byte.
    Everything up to the SIB byte lies in the first 8 bytes when there are at most 3 prefixes."""
    w = t64[p]
    b0 = (w & 0xFF).astype(np.intp)
    pf = np.flatnonzero(_PFX[b0])
    k = np.zeros(len(p), dtype=np.intp)
    if len(pf):  # at most three prefixes among 26 2e 36 3e 64 65 66 f0 f3; more go to capstone
        wp, bp = w[pf], b0[pf]
        kk = np.ones(len(pf), dtype=np.intp)
        has66, lock, rep = bp == 0x66, bp == 0xF0, bp == 0xF3
        more = np.ones(len(pf), dtype=bool)
        for i in (1, 2, 3):
            bi = ((wp >> _SH[i]) & 0xFF).astype(np.intp)
            more &= _PFX[bi]
            kk += more
            has66 |= more & (bi == 0x66)
            lock |= more & (bi == 0xF0)
            rep |= more & (bi == 0xF3)
        k[pf] = kk
    r = (w >> _SH[k]) & 0xFF
    rex = (r & 0xF0) == 0x40
    k += rex
    op = ((w >> _SH[k]) & 0xFF).astype(np.intp)
    esc = op == 0x0F
    k += esc
    op[esc] = ((w[esc] >> _SH[k[esc]]) & 0xFF).astype(np.intp) + 256
    k += 1  # prefixes, REX and opcode bytes: the ModRM byte, if any, is byte k
    mi = (op << 8) | ((w >> _SH[k]) & 0xFF).astype(np.intp)
    x = _LEN[mi]
    if len(pf):
        mp, rp = mi[pf], rex[pf]
        wbit = rp & ((((wp >> _SH[kk]) & 0xFF) & 8) != 0)
        x[pf] = np.where(has66, _LEN66[mp], x[pf])
        bad = more | ~_PFX_OK[mp >> 8] | (has66 & wbit) | (rep & (lock | ~_REP_OK[mp >> 8])) | (lock & ~_LOCK_OK[mp])
        x[pf[bad]] = 0
    n = k - 1 + (x & 31)  # the table counts the opcode byte
    s0 = np.flatnonzero(x & 32)
    if len(s0):
        n[s0] += np.where(((w[s0] >> _SH[k[s0] + 1]) & 7) == 5, 4, 0)
    iv = np.flatnonzero(x & 64)
    if len(iv):
        n[iv] += np.where(rex[iv] & (((w[iv] >> _SH[k[iv] - 2]) & 8) != 0), 4, 0)
    hard = x == 0
    cc = np.flatnonzero(b0 == 0xCC)
    if len(cc):  # int3 padding: up to 8 at a time, never past the segment
        y = w[cc] ^ _CC8
        run = (np.bitwise_count((y & (~y + np.uint64(1))) - np.uint64(1)) >> 3).astype(np.intp)
        n[cc] = np.minimum(run, se[cc] - p[cc])
        hard[cc] = False
    endbr = np.flatnonzero(hard & ((w & np.uint64(0xFFFFFFFF)) == _ENDBR64))
    if len(endbr):  # f3 0f 1e fa: IBT's first instruction of every function, which the tables leave to capstone
        n[endbr] = 4  # (f3 0f 1e takes f3 only with some ModRM bytes: 0f 1e is not in the tables)
        hard[endbr] = False
    for i in np.flatnonzero(hard).tolist():
        n[i] = slow(int(p[i]), int(ce[i]))  # 0: undecodable
    bad = (n == 0) | (p + n > ce)
    n[bad] = 1
    return n, bad


def boundaries(
    code: bytes | memoryview,
    starts: np.ndarray,
    ends: np.ndarray,
    slow: Callable[[int, int], int],
    hints: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The sweep of each chunk [starts[i], ends[i]) of code (offsets, disjoint, ascending): a byte
    map with 1 at each instruction start (int3 padding runs excluded after their first byte), and
    the offsets where a byte was skipped as undecodable. slow(offset, chunk_end) gives capstone's
    length of the instruction at offset, 0 when it does not decode. hints: offsets that are likely
    instruction starts (the kernel's site tables), where segments start: fewer re-walks."""
    size = len(code)
    t = np.zeros(size + PAD, dtype=np.uint8)
    t[:size] = np.frombuffer(code, dtype=np.uint8)
    t64 = np.ndarray((size + PAD - 7,), dtype="<u8", buffer=t, strides=(1,))  # 8 bytes at any offset
    starts = np.asarray(starts, dtype=np.intp)
    ends = np.asarray(ends, dtype=np.intp)
    big = np.flatnonzero(ends - starts > TRIM)
    if len(big):  # int3 padding after the last instruction of a large chunk (MBs in a vmlinux): not walked
        ends = ends.copy()
        for i in big.tolist():
            lo, hi = int(starts[i]), int(ends[i])
            last = lo + len(bytes(code[lo:hi]).rstrip(b"\xcc"))  # the code before the padding ends here
            ends[i] = min(hi, last + 15)  # an instruction that starts before it ends by last + 14
    s_start, s_end, s_ce, first = _segments(starts, ends, hints)
    total = len(s_start)
    mark = np.zeros(size + PAD, dtype=np.uint8)  # 1: instruction start, 2: undecodable byte
    landing = np.empty(total, dtype=np.intp)  # where each segment's walk leaves it
    chain = s_start.copy()  # where each segment's walk starts
    _walk(t, t64, mark, np.arange(total), s_start, s_end, s_ce, landing, slow, merge=False)
    while True:
        prev_land = np.empty(total, dtype=np.intp)
        prev_land[1:] = landing[:-1]
        fix = np.flatnonzero(~first & (prev_land != chain))
        if not len(fix):
            break
        chain[fix] = prev_land[fix]
        _walk(t, t64, mark, fix, prev_land[fix], s_end[fix], s_ce[fix], landing, slow, merge=True, seg0=s_start[fix])
    return mark[:size], np.flatnonzero(mark[:size] == 2)


def _segments(starts: np.ndarray, ends: np.ndarray, hints: np.ndarray | None) -> tuple[np.ndarray, ...]:
    """(start, end, chunk end, starts a chunk) of each segment: the chunks cut at the hints inside
    them, then every SEGMENT bytes."""
    ce = ends
    first = np.ones(len(starts), dtype=bool)
    if hints is not None and len(hints):
        h = np.sort(np.asarray(hints, dtype=np.intp))  # sorted and unique: np.unique hashes, 5 times slower here
        h = h[np.r_[True, h[1:] != h[:-1]]]
        c = np.searchsorted(starts, h, side="right") - 1
        ok = (c >= 0) & (h < ends[np.maximum(c, 0)])
        ok[ok] &= h[ok] != starts[c[ok]]
        h, c = h[ok], c[ok]
        order = np.argsort(np.concatenate([starts, h]), kind="stable")
        starts = np.concatenate([starts, h])[order]
        ce = np.concatenate([ends, ends[c]])[order]
        first = np.concatenate([first, np.zeros(len(h), dtype=bool)])[order]
        ends = np.where(np.append(first[1:], True), ce, np.append(starts[1:], 0))
    nseg = (ends - starts + SEGMENT - 1) // SEGMENT
    total = int(nseg.sum())
    firsts = np.cumsum(nseg) - nseg
    s_start = np.repeat(starts, nseg) + SEGMENT * (np.arange(total) - np.repeat(firsts, nseg))
    s_end = np.minimum(s_start + SEGMENT, np.repeat(ends, nseg))
    s_first = np.zeros(total, dtype=bool)
    s_first[firsts[first]] = True
    return s_start, s_end, np.repeat(ce, nseg), s_first


def _walk(t, t64, mark, seg, p, se, ce, landing, slow, merge: bool, seg0=None) -> None:
    """Walk the segments seg from offsets p until each leaves its segment (at landing), or, when
    merge, until it reaches an instruction start its old walk had; a re-walk then replaces the old
    walk's marks before that point."""
    paths: list[tuple[np.ndarray, np.ndarray]] = []
    stops: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (index in seg, where the walk ended, segment end)
    idx = np.arange(len(seg))
    while len(p):
        out = p >= se
        if merge:
            out |= mark[p] != 0
        if out.any():
            done = np.flatnonzero(out)
            stops.append((idx[done], p[done], se[done]))
            left = p[done] >= se[done]
            landing[seg[idx[done[left]]]] = p[done[left]]
            keep = ~out
            idx, p, se, ce = idx[keep], p[keep], se[keep], ce[keep]
            if not len(p):
                break
        n, bad = _lengths(t64, p, se, ce, slow)
        if merge:
            paths.append((p, bad))
        else:
            mark[p] = 1
            mark[p[bad]] = 2
        p = p + n
    if not merge or not stops:
        return
    who = np.concatenate([s[0] for s in stops])
    end = np.concatenate([s[1] for s in stops])
    lo = seg0[who]
    hi = np.minimum(end, np.concatenate([s[2] for s in stops]))
    lens = np.maximum(hi - lo, 0)
    if lens.sum():
        off = np.repeat(lo - (np.cumsum(lens) - lens), lens) + np.arange(int(lens.sum()))
        mark[off] = 0
    for q, bad in paths:
        mark[q] = 1
        mark[q[bad]] = 2


def lengths_at(words: np.ndarray, avail: np.ndarray, slow: Callable[[int, int], int]) -> tuple[np.ndarray, np.ndarray]:
    """(length, undecodable) of one instruction per row: words[i] holds row i's first 8 bytes (little-endian),
    avail[i] how many bytes it has; slow(i, i + avail[i]) measures a row the tables leave to capstone (0: undecodable).
    A row starting with int3 counts its whole run of int3 (up to 8), as the sweep steps over padding."""
    p = np.arange(len(words), dtype=np.intp)
    end = p + avail.astype(np.intp)
    return _lengths(words, p, end, end, slow)
