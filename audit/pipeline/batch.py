"""batch.py: audit many inputs (files, module trees) across worker processes; failures stay apart from results."""

from __future__ import annotations

import copyreg
import gc
import io
import os
import pickle
import signal
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
from fbt_audit.model.kernel import Kernel, Section
from fbt_audit.table.emulation import EmulationTable

MAX_CHUNK = 16  # modules per worker task: few enough that the progress bar moves and the load balances
CHUNK_BYTES = 4 << 20  # and file bytes per task
COLLECT_EVERY = 64  # modules audited in this process between two passes of the cyclic collector


class Results(list):
    """A batch's AuditResults in input order, and `failures`: one line per input that could not be
    audited. The SARIF report reads `failures` to add them as tool execution notifications."""

    failures: list[str]

    def __init__(self, results=(), failures=()):
        super().__init__(results)
        self.failures = list(failures)


@dataclass(frozen=True)
class Input:
    path: Path | str  # a module found under a directory: its path as a string (a Path each costs the scan ~25%)
    module: bool  # by its name: a module goes to a worker, anything else (vmlinux, vmlinuz) is audited here
    listed: bool  # named on the command line (not found under a directory)
    size: int | None = None  # the file's size, when the directory scan read it (the chunks are sized by it)


# --- inputs -------------------------------------------------------------------------------------


def module_files(root: Path) -> tuple[list[Path], list[str]]:
    """Every module file under a directory (regular files, or symlinks to them, named .ko, .ko.xz,
    .ko.zst, .ko.gz), sorted by path; directory symlinks (`build`, `source`) are not followed.
    Also one line per directory that could not be read."""
    found, problems = _scan(root)
    return [Path(p) for p, _real, _size in found], problems


def _scan(root: Path | str) -> tuple[list[tuple[str, str | None, int]], list[str]]:
    """module_files' walk, by os.scandir: (path, its real path or None for a symlink, size) of each module, sorted
    by path. A directory entry tells its type without a stat, and is stat'ed once for the size; the walk enters no
    symlinked directory, so a file's real path is its directory's, known from the root's, and its name (os.walk,
    then isfile, islink, realpath and the chunks' stat cost ~0.2 s of a tree's start, before any worker)."""
    found: list[tuple[str, str | None, int]] = []
    problems: list[str] = []
    todo = [(os.fspath(root), os.path.realpath(root))]
    while todo:
        top, real = todo.pop()
        try:
            with os.scandir(top) as it:
                entries = list(it)
        except OSError as e:
            problems.append(f"{e.filename}: cannot read the directory: {e.strerror or e}")
            continue
        for entry in entries:
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            if is_dir:
                if not entry.is_symlink():  # as os.walk(followlinks=False): a linked directory is not entered
                    todo.append((entry.path, os.path.join(real, entry.name)))
            elif is_module_name(entry.name):
                try:
                    if entry.is_file():  # a regular file, or a symlink to one (os.path.isfile)
                        link = entry.is_symlink()
                        found.append((entry.path, None if link else os.path.join(real, entry.name),
                                      entry.stat().st_size))  # fmt: skip
                except OSError:
                    continue
    found.sort()
    return found, sorted(problems)


def expand(paths) -> tuple[list[Input], list[str]]:
    """The inputs PATH... name: files as given, directories replaced by their modules (sorted). A file
    reached twice (a tree and a module in it, or through a symlink) is audited once."""
    inputs: list[Input] = []
    problems: list[str] = []
    seen: set[str] = set()
    real_dirs: dict[str, str] = {}

    def add(p: str, listed: bool, real: str | None = None, size: int | None = None) -> None:
        key = real or _realpath(p, real_dirs)
        if key not in seen:
            seen.add(key)
            path = Path(p) if listed else p
            inputs.append(Input(path, is_module_name(path.name if listed else os.path.basename(p)), listed, size))

    for p in map(Path, paths):
        if p.is_dir():
            mods, bad = _scan(p)
            problems.extend(bad)
            if not mods and not bad:
                problems.append(f"{p}: is a directory with no kernel modules ({', '.join(SUFFIXES)}) under it")
            for m, real, size in mods:
                add(m, False, real, size)
        else:
            add(str(p), True)
    return inputs, problems


def _realpath(path: str, dirs: dict[str, str]) -> str:
    """os.path.realpath(path), with each directory's resolved once (dirs): files named on the command line share
    a few directories, and realpath stats every component of every path."""
    d, name = os.path.split(path)
    if not name or name in (".", "..") or os.path.islink(path):
        return os.path.realpath(path)
    rd = dirs.get(d)
    if rd is None:
        rd = dirs[d] = os.path.realpath(d)
    return os.path.join(rd, name)


# --- detached results: what the reports read, without the image -------------------------------

# pickle's default for slots dataclasses goes through a state dict per object; these reducers call the
# constructors with the field values instead: 20% fewer bytes, half the time to dump and 40% of the time to
# load (measured against one flat tuple per judgement too: as fast to dump, slower to load in the parent).
_DISPATCH = copyreg.dispatch_table.copy()
for _cls in (Insn, Variant, Patchpoint, Finding, Judgement, Section):
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

    syms = result.name_addrs()
    by_name = Counter(n for n, _ in syms)
    by_norm = Counter(normalise_function(n) for n, _ in syms)
    return {n for n, _ in syms if by_name[n] > 1 or by_norm[normalise_function(n)] > 1}


def detach(result: AuditResult, sources: bool = False) -> AuditResult:
    """The result made self-contained, for pickling and to let the image go: what the reports need from the
    image is recorded now (the STT_FILE unit names of the symbols a report may have to tell apart; with
    `sources`, the DWARF source lines of the patchpoints with findings, as the SARIF and GitHub reports
    show them), and the Kernel keeps identity, sections, ftrace sites, the kernel-table summary
    (--statistics) and return statistics, but no bytes. Renders byte-identically."""
    from fbt_audit.input.dwarf import add_source_lines, symbol_files

    k = result.kernel
    if sources:
        add_source_lines([result])
    names = ambiguous_names(result)
    units = symbol_files(k, names) if names else {}
    d = detached_kernel(k)
    if "judgements" not in result.__dict__:  # built lazily from the entry rows: they come along instead
        result.rows.detach(d)
        return AuditResult(d, result.table, None, result.rules, list(result.errors), units=units, rows=result.rows,
                           platform=result.platform, evidence=result.evidence)  # fmt: skip
    return AuditResult(d, result.table, result.judgements, result.rules, list(result.errors), units=units,
                       platform=result.platform, evidence=result.evidence)  # fmt: skip


def detached_kernel(k: Kernel, text: bool = False) -> Kernel:
    """k without its bytes and symbols: identity, sections, ftrace sites, the kernel-table summary, return
    statistics. With `text` (a text digest's kernel): the sections only when --statistics may name one (a
    .return_sites entry the decode missed), and no ftrace sites: unpickling a module's ~30 Sections was
    most of the parent's work in a tree."""
    from fbt_audit.sites.tables import Tables, read_tables

    t = read_tables(k)
    missed = k.return_stats is not None and bool(k.return_stats.return_sites_missed)
    return Kernel(
        path=k.path,
        display=k.display,
        kind=k.kind,
        module=k.module,
        release=k.release,
        build_id=k.build_id,
        sections=list(k.sections) if not text or missed else [],
        symbols=[],
        data=b"",
        mcount_sites=k.mcount_sites if not text else frozenset(),
        call_targets={},
        names={},
        symbol_source=k.symbol_source,
        site_tables=Tables(counts=dict(t.counts), layouts=dict(t.layouts), problems=list(t.problems)),
        return_stats=k.return_stats,
    )


def rendered(result: AuditResult, show: str, colour: bool) -> AuditResult:
    """The result as the text report needs it and no more: its lines made here (report.text.TextDigest) in
    place of the rows, the image let go. The parent joins the digests of a tree byte-identically."""
    from fbt_audit.report.text import text_digest

    digest = text_digest(result, show, colour)
    return AuditResult(detached_kernel(result.kernel, text=True), result.table, None, result.rules,
                       list(result.errors), rows=digest, platform=result.platform)  # fmt: skip


# --- workers ------------------------------------------------------------------------------------

_job: dict = {}  # what every task of this worker shares: table, rule selection, options


def _setup(table, select, ignore, returns, symbols, sources, platform="all", deep=None, text=None) -> None:
    """Worker start: the parent's modules come with the fork (no re-import). Ctrl-C is the parent's to
    handle; the objects inherited are frozen so that the collector never scans them."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    gc.freeze()
    _job.update(table=table, select=select, ignore=ignore, returns=returns, symbols=symbols, sources=sources,
                platform=platform, deep=deep, text=text)  # fmt: skip


def _audit_one(path: Path, job: dict) -> AuditResult:
    from fbt_audit.pipeline.api import audit

    r = audit(path, job["table"], select=job["select"], ignore=job["ignore"], returns=job["returns"],
              symbols=job["symbols"], platform=job.get("platform", "all"), deep=job.get("deep"))  # fmt: skip
    text = job.get("text")
    return rendered(r, *text) if text is not None else detach(r, job["sources"])


def _failure(path: Path, e: Exception) -> str:
    if isinstance(e, AuditError):
        return str(e)
    return f"{path}: internal error: {type(e).__name__}: {e}".replace("\n", " ")  # one line, as every failure


def _run(chunk: list[tuple[int, Path]]) -> list[tuple[int, AuditResult | None, str | None]]:
    """Audit a chunk of modules: (index, result or None, failure or None) per module."""
    out = []
    for i, path in chunk:
        try:
            out.append((i, _audit_one(path, _job), None))
        except Exception as e:  # noqa: BLE001 - one bad module is a failure line; the others complete
            out.append((i, None, _failure(path, e)))
    return out


def _task(chunk: list[tuple[int, Path]]) -> bytes:
    """A worker's chunk (_run), pickled in one go without the table and rules (the parent puts its own back)."""
    out = _run(chunk)
    for _i, r, _err in out:
        if r is not None:
            r.table, r.rules = None, None
    return dumps(out)


def _chunks(items: list[tuple[int, Path]], jobs: int, sizes: dict[int, int | None] | None = None,
            ) -> list[list[tuple[int, Path]]]:  # fmt: skip
    """Largest files first (the long ones start early), in chunks of up to MAX_CHUNK modules and about
    CHUNK_BYTES of files (amdgpu.ko goes alone: a worker holds one chunk's results at a time). `sizes`: the
    size of each item (by index) the directory scan found; the others are stat'ed."""
    sizes = sizes or {}

    def size(i: int, p: Path) -> int:
        n = sizes.get(i)
        if n is not None:
            return n
        try:
            return os.stat(p).st_size
        except OSError:
            return 0

    sized = sorted(((size(i, p), i, p) for i, p in items), key=lambda t: (-t[0], t[1]))
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
    platform: str = "all",
    deep=None,
    text: tuple[str, bool] | None = None,
) -> tuple[Results, list[str]]:
    """Audit every input PATH... names (directories: every module under them), modules across `jobs`
    worker processes, anything else (vmlinux, vmlinuz) in this one. Returns the results in input order
    (a Results list, whose `failures` the SARIF report shows) and one line per input that failed; the
    others still complete. A lone file named on the command line that fails raises instead, so that
    its error is the run's one line. `sources`: look up DWARF source lines (sarif, github) in the
    worker, which has the image. `text` (show, colour): the modules are for the text report alone, which
    the worker makes of them (rendered); nothing else can be read of those results. The output is the same
    for every `jobs`."""
    from fbt_audit.judge.registry import select as select_rules
    from fbt_audit.pipeline.api import audit

    inputs, problems = expand(paths)
    if not inputs and len(problems) == 1 and len(paths) == 1:
        raise InputError(problems[0])
    if len(inputs) == 1 and inputs[0].listed and not problems:
        r = audit(inputs[0].path, table, select=select, ignore=ignore, returns=returns, symbols=symbols,
                  platform=platform, deep=deep)  # fmt: skip
        return Results([r]), []
    jobs = max(1, jobs or os.cpu_count() or 1)
    rules = select_rules(select, ignore)
    opts = {"table": table, "select": select, "ignore": ignore, "returns": returns, "symbols": symbols,
            "sources": sources, "platform": platform, "deep": deep, "text": text}  # fmt: skip
    got: dict[int, AuditResult] = {}
    failed: dict[int, str] = {}
    modules = [(i, inp.path) for i, inp in enumerate(inputs) if inp.module]
    local = [(i, inp.path) for i, inp in enumerate(inputs) if not inp.module]
    if jobs == 1 or len(modules) < 2:
        local, modules = sorted(local + modules), []
    crew = bar = None
    try:
        if modules:
            sizes = {i: inputs[i].size for i, _p in modules}
            chunks, crew = _start(modules, jobs, opts, sizes)  # forks the workers: before tqdm starts its thread
        bar = _bar(len(inputs), progress)
        since = 0  # modules audited here since the last collection
        for i, path in local:  # a vmlinux keeps its whole Kernel, as a single audit does; a module is detached
            try:
                r = audit(path, table, select=select, ignore=ignore, returns=returns, symbols=symbols,
                          platform=platform, deep=deep)  # fmt: skip
                got[i] = r if not inputs[i].module else rendered(r, *text) if text else detach(r, sources)
            except Exception as e:  # noqa: BLE001 - one bad input is a failure line; the others complete
                if not isinstance(e, AuditError) and os.environ.get("FBT_AUDIT_DEBUG"):
                    raise
                failed[i] = _failure(path, e)
            # One pass frees what an audit left in cycles, and freezing the survivors keeps the next pass to
            # the next image's objects (a vmlinux makes a million of them); after modules, one pass per
            # COLLECT_EVERY of them (a pass per module was a quarter of a 6.1 tree's -j 1 time).
            since += 1
            if not inputs[i].module or since >= COLLECT_EVERY:
                gc.collect()
                gc.freeze()
                since = 0
            if bar is not None:
                bar.update(1)
        if modules:
            _share(chunks, crew, got, failed, table, rules, bar)
    finally:
        if crew is not None:
            crew.close()
        if bar is not None:
            bar.close()
    results = [got[i] for i in sorted(got)]
    failures = problems + [failed[i] for i in sorted(failed)]
    return Results(results, failures), failures


def _start(modules: list[tuple[int, Path]], jobs: int, opts: dict, sizes: dict[int, int | None] | None = None):
    """The chunks of modules (largest first) and the Crew that audits them: jobs - 1 forked workers and this
    process, each taking the next chunk not taken (_share), so that -j N runs N processes that audit, and this
    process's own modules are neither pickled nor unpickled (a worker's cost ~60 us a module)."""
    from fbt_audit.pipeline.crew import MAX_TICKETS, Crew

    _prepare(opts)  # this process audits modules too; a forked worker shares what it made
    args = (opts["table"], opts["select"], opts["ignore"], opts["returns"], opts["symbols"], opts["sources"],
            opts["platform"], opts["deep"], opts["text"])  # fmt: skip
    _job.update(opts)  # what _setup gives each worker, for this process's own chunks
    chunks = _chunks(modules, jobs, sizes)
    while len(chunks) > MAX_TICKETS:  # a tree of 250,000 modules: chunks twice as large
        chunks = [chunks[k] + chunks[k + 1] if k + 1 < len(chunks) else chunks[k] for k in range(0, len(chunks), 2)]
    workers = min(jobs - 1, len(chunks))
    return chunks, Crew(len(chunks), workers, lambda k: _task(chunks[k]), lambda: _setup(*args))


def _prepare(opts: dict) -> None:
    """What every worker would import and build on its first module, done once here before the fork so that the
    workers share it (~100 ms each: the decoders, the length tables, the rules, the judge, the text report). Not
    capstone's package (25 ms before the fork): of the 6.1 and 6.12 trees only aesni-intel.ko needs its detail
    decoder, which the process that meets it imports then (decode.insn._capstone)."""
    import fbt_audit.judge.rows  # noqa: F401
    import fbt_audit.patchpoints.entry  # noqa: F401
    import fbt_audit.sites.annotate  # noqa: F401
    from fbt_audit.decode import insn
    from fbt_audit.judge.judge import judge_for
    from fbt_audit.judge.registry import select as select_rules

    try:
        import fbt_audit.decode.lengths  # noqa: F401

        insn._capstone(lite=True)
    except ImportError:  # numpy < 2 or no capstone: each worker meets the same on its own
        pass
    judge_for(opts["table"], select_rules(opts["select"], opts["ignore"]))
    if opts["text"] is not None:
        import fbt_audit.report.text  # noqa: F401


def _share(chunks: list, crew, got: dict, failed: dict, table: EmulationTable, rules: list, bar) -> None:
    """The chunks audited by the workers and by this process (crew.Crew): this process audits each chunk it takes,
    and between two collects what the workers have sent; at the end it waits for the rest. A worker's chunk that
    never came back (the worker died) is one failure line per module."""
    from fbt_audit.pipeline.crew import RESULT

    sent: set[int] = set()

    def collect(records: list) -> None:
        for k, kind, data in records:
            sent.add(k)
            chunk = chunks[k]
            if kind == RESULT:
                rows = pickle.loads(data)
            else:
                rows = [(i, None, f"{path}: worker process failed: {data.decode()}") for i, path in chunk]
            _take(rows, chunk, got, failed, table, rules, bar)

    for k in crew.turns():
        _take(_run(chunks[k]), chunks[k], got, failed, table, rules, bar)
        collect(crew.poll())
    collect(crew.finish())
    lost, why = crew.lost(sent)
    for k in lost:
        _take([(i, None, f"{path}: worker process failed: {why}") for i, path in chunks[k]], chunks[k], got, failed,
              table, rules, bar)  # fmt: skip


def _take(rows: list, chunk: list, got: dict, failed: dict, table: EmulationTable, rules: list, bar) -> None:
    for i, r, err in rows:
        if r is not None:
            r.table, r.rules = table, rules
            got[i] = r
        else:
            failed[i] = err
    if bar is not None:
        bar.update(len(chunk))
