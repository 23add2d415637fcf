"""batch.py: audit many inputs (files, module trees) across worker processes; failures stay apart from results."""

from __future__ import annotations

import copyreg
import gc
import io
import os
import pickle
import signal
import struct
import sys
from collections import Counter
from dataclasses import dataclass, fields
from operator import attrgetter
from pathlib import Path

from fbt_audit.input.loader import SymbolOptions
from fbt_audit.input.modfile import SUFFIXES, is_module_name
from fbt_audit.judge.result import AuditResult
from fbt_audit.model.core import Finding, Insn, Judgement, Patchpoint, Variant
from fbt_audit.model.errors import AuditError, InputError
from fbt_audit.model.kernel import Kernel
from fbt_audit.table.emulation import EmulationTable

MAX_CHUNK = 16  # modules per worker task: few enough that the progress bar moves and the load balances
CHUNK_BYTES = 4 << 20  # and file bytes per task


class Results(list):
    """A batch's AuditResults in input order, and `failures`: one line per input that could not be
    audited. The SARIF report reads `failures` to add them as tool execution notifications."""

    failures: list[str]

    def __init__(self, results=(), failures=()):
        super().__init__(results)
        self.failures = list(failures)


@dataclass(frozen=True)
class Input:
    path: Path
    module: bool  # by its name: a module goes to a worker, anything else (vmlinux, vmlinuz) is audited here
    listed: bool  # named on the command line (not found under a directory)


# --- inputs -------------------------------------------------------------------------------------


def module_files(root: Path) -> tuple[list[Path], list[str]]:
    """Every module file under a directory (regular files, or symlinks to them, named .ko, .ko.xz,
    .ko.zst, .ko.gz), sorted by path; directory symlinks (`build`, `source`) are not followed.
    Also one line per directory that could not be read."""
    found: list[str] = []
    problems: list[str] = []

    def onerror(e: OSError) -> None:
        problems.append(f"{e.filename}: cannot read the directory: {e.strerror or e}")

    for top, dirs, files in os.walk(root, onerror=onerror, followlinks=False):
        dirs.sort()
        for name in files:
            if is_module_name(name):
                p = os.path.join(top, name)
                if os.path.isfile(p):
                    found.append(p)
    return [Path(p) for p in sorted(found)], sorted(problems)


def expand(paths) -> tuple[list[Input], list[str]]:
    """The inputs PATH... name: files as given, directories replaced by their modules (sorted). A file
    reached twice (a tree and a module in it, or through a symlink) is audited once."""
    inputs: list[Input] = []
    problems: list[str] = []
    seen: set[str] = set()

    def add(p: Path, listed: bool) -> None:
        key = os.path.realpath(p)
        if key not in seen:
            seen.add(key)
            inputs.append(Input(p, is_module_name(p.name), listed))

    for p in map(Path, paths):
        if p.is_dir():
            mods, bad = module_files(p)
            problems.extend(bad)
            if not mods and not bad:
                problems.append(f"{p}: is a directory with no kernel modules ({', '.join(SUFFIXES)}) under it")
            for m in mods:
                add(m, False)
        else:
            add(p, True)
    return inputs, problems


# --- detached results: what the reports read, without the image -------------------------------

# pickle's default for slots dataclasses goes through a state dict per object; these reducers call the
# constructors with the field values instead: 20% fewer bytes, half the time to dump and 40% of the time to
# load (measured against one flat tuple per judgement too: as fast to dump, slower to load in the parent).
_DISPATCH = copyreg.dispatch_table.copy()
for _cls in (Insn, Variant, Patchpoint, Finding, Judgement):
    _DISPATCH[_cls] = (lambda cls, get: lambda o: (cls, get(o)))(_cls, attrgetter(*(f.name for f in fields(_cls))))


def dumps(obj) -> bytes:
    buf = io.BytesIO()
    p = pickle.Pickler(buf, protocol=pickle.HIGHEST_PROTOCOL)
    p.dispatch_table = _DISPATCH
    p.dump(obj)
    return buf.getvalue()


def ambiguous_names(result: AuditResult) -> set[str]:
    """The symbol names for which a report may ask the STT_FILE name (dwarf.symbol_files): names several
    symbols share (the denylist's `@file`) and names that clone suffixes make collide (SARIF's
    fingerprint disambiguator)."""
    from fbt_audit.gate.identity import normalise_function

    syms = {(j.pp.name, j.pp.sym_addr) for j in result.judgements}
    by_name = Counter(n for n, _ in syms)
    by_norm = Counter(normalise_function(n) for n, _ in syms)
    return {n for n, _ in syms if by_name[n] > 1 or by_norm[normalise_function(n)] > 1}


_EHDR_SHOFF = 0x28
_SHDR = struct.Struct("<IIQQQQIIQQ")  # Elf64_Shdr
_SYM = struct.Struct("<IBBHQQ")  # Elf64_Sym
SHT_SYMTAB, SHT_STRTAB, SHT_NOBITS, SHF_ALLOC, STT_FILE = 2, 3, 8, 0x2, 4


def symbol_stub(data, names: set[str]) -> bytes:
    """A small ELF that answers dwarf.symbol_files(kernel, names) as the image does: the same section
    header indices (allocated sections by name and flags, empty), and a .symtab of just the STT_FILE
    symbols and the LOCAL text symbols with those names, in their order. No debug sections, so no
    DWARF lookup runs on it (source lines are looked up before detaching). b"" when nothing is asked."""
    if not names:
        return b""
    from fbt_audit.input.elf import section_headers

    try:
        shdrs = section_headers("", data, len(data))  # the loader's reader: this image passed it already
    except InputError:
        return b""
    shstrndx = struct.unpack_from("<H", data, 0x3E)[0]
    si = next((i for i, h in enumerate(shdrs) if h.sh_type == "SHT_SYMTAB"), None)
    if si is None or not shstrndx < len(shdrs) or si == shstrndx or shdrs[si].sh_link >= len(shdrs):
        return b""

    def contents(i: int) -> bytes:
        h = shdrs[i]
        return b"" if h.sh_type == "SHT_NOBITS" else bytes(data[h.sh_offset : h.sh_offset + h.sh_size])

    strtab, symraw = contents(shdrs[si].sh_link), contents(si)
    want = {n.encode() for n in names}
    strs = bytearray(b"\0")
    name_off = {}

    def intern(s: bytes) -> int:
        if s not in name_off:
            name_off[s] = len(strs)
            strs.extend(s + b"\0")
        return name_off[s]

    syms = [bytes(_SYM.size)]
    for st_name, info, other, shndx, value, size in _SYM.iter_unpack(symraw[: len(symraw) // _SYM.size * _SYM.size]):
        kind = info & 0xF
        if kind != STT_FILE and (info >> 4 != 0 or kind not in (0, 2)):
            continue
        end = strtab.find(b"\0", st_name)
        name = strtab[st_name : end if end >= 0 else len(strtab)]
        if kind == STT_FILE or name in want:
            syms.append(_SYM.pack(intern(name), info, other, shndx, value, size))
    new = []
    for i, h in enumerate(shdrs):
        sname = h.name.encode()
        if i == si:
            new.append([intern(sname), SHT_SYMTAB, 0, 0, 0, 0, shstrndx, h.sh_info, 8, _SYM.size])
        elif i == shstrndx:
            new.append([intern(sname), SHT_STRTAB, 0, 0, 0, 0, 0, 0, 1, 0])
        elif h.sh_flags & SHF_ALLOC:
            new.append([intern(sname), SHT_NOBITS, h.sh_flags, h.sh_addr, 0, 0, 0, 0, h.sh_addralign, 0])
        else:
            new.append([0] * 10)
    symtab = b"".join(syms)
    sym_off = 64
    str_off = sym_off + len(symtab)
    sh_off = (str_off + len(strs) + 7) // 8 * 8
    new[si][4:6] = [sym_off, len(symtab)]
    new[shstrndx][4:6] = [str_off, len(strs)]
    head = bytearray(bytes(data[:64]))
    struct.pack_into("<Q", head, 0x20, 0)  # e_phoff
    struct.pack_into("<Q", head, _EHDR_SHOFF, sh_off)
    struct.pack_into("<H", head, 0x38, 0)  # e_phnum
    body = bytes(head) + symtab + bytes(strs)
    return body + bytes(sh_off - len(body)) + b"".join(_SHDR.pack(*h) for h in new)


def detach(result: AuditResult, sources: bool = False) -> AuditResult:
    """The result with a Kernel that holds no mmap and no loader state, for pickling and to free the
    image: identity, sections and ftrace sites kept; bytes replaced by symbol_stub(); the kernel-table
    summary (--statistics) and return statistics carried over. With `sources`, DWARF source lines are
    looked up first (dwarf.annotate, as the SARIF and GitHub reports do). Renders byte-identically."""
    from fbt_audit.sites.tables import Tables, read_tables

    k = result.kernel
    if sources:
        from fbt_audit.input.dwarf import annotate

        annotate([result])
    t = read_tables(k)
    d = Kernel(
        path=k.path,
        display=k.display,
        kind=k.kind,
        module=k.module,
        release=k.release,
        build_id=k.build_id,
        sections=list(k.sections),
        symbols=[],
        data=symbol_stub(k.data, ambiguous_names(result)),
        mcount_sites=k.mcount_sites,
        call_targets={},
        names={},
        symbol_source=k.symbol_source,
    )
    d.__dict__["_fbt_tables"] = Tables(counts=dict(t.counts), layouts=dict(t.layouts), problems=list(t.problems))
    if "_fbt_returns" in k.__dict__:
        d.__dict__["_fbt_returns"] = k.__dict__["_fbt_returns"]
    return AuditResult(d, result.table, result.judgements, result.rules, list(result.errors))


# --- workers ------------------------------------------------------------------------------------

_job: dict = {}  # what every task of this worker shares: table, rule selection, options


def _setup(table, select, ignore, returns, symbols, sources) -> None:
    """Worker start: the parent's modules come with the fork (no re-import). Ctrl-C is the parent's to
    handle; the objects inherited are frozen so that the collector never scans them."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    gc.freeze()
    _job.update(table=table, select=select, ignore=ignore, returns=returns, symbols=symbols, sources=sources)


def _audit_one(path: Path, job: dict) -> AuditResult:
    from fbt_audit.pipeline.api import audit

    r = audit(path, job["table"], select=job["select"], ignore=job["ignore"], returns=job["returns"],
              symbols=job["symbols"])  # fmt: skip
    return detach(r, job["sources"])


def _failure(path: Path, e: Exception) -> str:
    if isinstance(e, AuditError):
        return str(e)
    return f"{path}: internal error: {type(e).__name__}: {e}".replace("\n", " ")  # one line, as every failure


def _task(chunk: list[tuple[int, Path]]) -> bytes:
    """Audit a chunk of modules; return (index, result or None, failure or None) per module, pickled
    in one go without the table and rules (the parent puts its own back)."""
    out = []
    for i, path in chunk:
        try:
            r = _audit_one(path, _job)
            r.table, r.rules = None, None
            out.append((i, r, None))
        except Exception as e:  # noqa: BLE001 - one bad module is a failure line; the others complete
            out.append((i, None, _failure(path, e)))
    return dumps(out)


def _chunks(items: list[tuple[int, Path]], jobs: int) -> list[list[tuple[int, Path]]]:
    """Largest files first (the long ones start early), in chunks of up to MAX_CHUNK modules and about
    CHUNK_BYTES of files (amdgpu.ko goes alone: a worker holds one chunk's results at a time)."""

    def size(p: Path) -> int:
        try:
            return p.stat().st_size
        except OSError:
            return 0

    sized = sorted(((size(p), i, p) for i, p in items), key=lambda t: (-t[0], t[1]))
    most = max(1, min(MAX_CHUNK, len(items) // (jobs * 8)))
    chunks: list[list[tuple[int, Path]]] = []
    chunk: list[tuple[int, Path]] = []
    total = 0
    for n, i, p in sized:
        chunk.append((i, p))
        total += n
        if len(chunk) >= most or total >= CHUNK_BYTES:
            chunks.append(chunk)
            chunk, total = [], 0
    return chunks + [chunk] if chunk else chunks


def _bar(total: int, enabled: bool):
    if not enabled or total < 2:
        return None
    from tqdm import tqdm

    return tqdm(total=total, file=sys.stderr, unit="input", leave=False, dynamic_ncols=True, desc="fbt-audit")


def run_batch(
    paths,
    table: EmulationTable,
    *,
    select: list[str] | None = None,
    ignore: list[str] | None = None,
    returns: bool = False,
    symbols: SymbolOptions | None = None,
    jobs: int | None = None,
    progress: bool = False,
    sources: bool = False,
) -> tuple[Results, list[str]]:
    """Audit every input PATH... names (directories: every module under them), modules across `jobs`
    worker processes, anything else (vmlinux, vmlinuz) in this one. Returns the results in input order
    (a Results list, whose `failures` the SARIF report shows) and one line per input that failed; the
    others still complete. A lone file named on the command line that fails raises instead, so that
    its error is the run's one line. `sources`: look up DWARF source lines (sarif, github) in the
    worker, which has the image. The output is the same for every `jobs`."""
    from fbt_audit.judge.registry import select as select_rules
    from fbt_audit.pipeline.api import audit

    inputs, problems = expand(paths)
    if not inputs and len(problems) == 1 and len(paths) == 1:
        raise InputError(problems[0])
    if len(inputs) == 1 and inputs[0].listed and not problems:
        r = audit(inputs[0].path, table, select=select, ignore=ignore, returns=returns, symbols=symbols)
        return Results([r]), []
    jobs = max(1, jobs or os.cpu_count() or 1)
    rules = select_rules(select, ignore)
    opts = {"table": table, "select": select, "ignore": ignore, "returns": returns, "symbols": symbols,
            "sources": sources}  # fmt: skip
    got: dict[int, AuditResult] = {}
    failed: dict[int, str] = {}
    modules = [(i, inp.path) for i, inp in enumerate(inputs) if inp.module]
    local = [(i, inp.path) for i, inp in enumerate(inputs) if not inp.module]
    if jobs == 1 or len(modules) < 2:
        local, modules = sorted(local + modules), []
    pool = bar = None
    try:
        if modules:
            pool, pending = _start(modules, jobs, opts)  # forks the workers: before tqdm starts its thread
        bar = _bar(len(inputs), progress)
        for i, path in local:  # a vmlinux keeps its whole Kernel, as a single audit does; a module is detached
            try:
                r = audit(path, table, select=select, ignore=ignore, returns=returns, symbols=symbols)
                got[i] = detach(r, sources) if inputs[i].module else r
            except Exception as e:  # noqa: BLE001 - one bad input is a failure line; the others complete
                if not isinstance(e, AuditError) and os.environ.get("FBT_AUDIT_DEBUG"):
                    raise
                failed[i] = _failure(path, e)
            # One pass frees what an audit left in cycles, and freezing the survivors keeps the next pass to
            # the next image's objects (a vmlinux makes a million of them).
            gc.collect()
            gc.freeze()
            if bar is not None:
                bar.update(1)
        if modules:
            _collect(pending, got, failed, table, rules, bar)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        if bar is not None:
            bar.close()
    results = [got[i] for i in sorted(got)]
    failures = problems + [failed[i] for i in sorted(failed)]
    return Results(results, failures), failures


def _start(modules: list[tuple[int, Path]], jobs: int, opts: dict):
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
    chunks = _chunks(modules, jobs)
    args = (opts["table"], opts["select"], opts["ignore"], opts["returns"], opts["symbols"], opts["sources"])
    pool = ProcessPoolExecutor(max_workers=min(jobs, len(chunks)), mp_context=ctx, initializer=_setup, initargs=args)
    return pool, {pool.submit(_task, c): c for c in chunks}


def _collect(pending: dict, got: dict, failed: dict, table: EmulationTable, rules: list, bar) -> None:
    from concurrent.futures import as_completed

    for fut in as_completed(pending):
        chunk = pending.pop(fut)  # and with it the future, which holds the pickled bytes
        try:
            rows = pickle.loads(fut.result())
        except Exception as e:  # noqa: BLE001 - a worker that died (signal, out of memory): its modules failed
            rows = [(i, None, f"{path}: worker process failed: {type(e).__name__}: {e}") for i, path in chunk]
        for i, r, err in rows:
            if r is not None:
                r.table, r.rules = table, rules
                got[i] = r
            else:
                failed[i] = err
        if bar is not None:
            bar.update(len(chunk))
