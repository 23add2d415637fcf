"""audit.py: the audit verb (also what `fbt-audit PATH...` runs): options -> one AuditSettings -> run -> exit code."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import click

from fbt_audit.cli.common import FAIL_ON, FORMATS, merge_hits, split_ids
from fbt_audit.model.core import Level


@click.command("audit")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path, dir_okay=True))
@click.option(
    "--table",
    "table_spec",
    default="reference",
    show_default=True,
    metavar="NAME|PATH",
    help="Emulation table: a named table (reference, legacy-2011, kprobes-6.1, kprobes-6.12, kprobes, "
    "kprobes-6.1-optprobe) "
    "or any ELF carrying the .fbt_emu_table section, such as a built fbt.ko.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="text",
    show_default=True,
    help="text: one line per finding; json: versioned schema; sarif: GitHub code scanning; "
    "list: the probe-safety list, one row per patchpoint; denylist: module:function+0xoff per "
    "patchpoint that is not safe; github: workflow annotations; html: summary, rules, findings and the "
    "opcode map in one self-contained page.",
)
@click.option(
    "--hits",
    "hits_files",
    multiple=True,
    type=click.Path(path_type=Path),
    metavar="FILE",
    help="Runtime hit counts: a /proc/dtrace/fbt dump, or ftrace trace_stat/function* files (or their "
    "directory), summed; merged by module:function:entry|return into every format (repeatable).",
)
@click.option(
    "--sort",
    type=click.Choice(("address", "rarity")),
    default="address",
    show_default=True,
    help="Text findings by address, or by rarity as `fbt-audit rank`: hit at least once fewest first, then never hit.",
)
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False), help="Write the report here.")
@click.option(
    "--fail-on",
    type=click.Choice(FAIL_ON),
    default="error",
    show_default=True,
    help="Exit 1 when a finding at or above this level exists (error=unsafe, warning=deny, note=refused).",
)
@click.option(
    "--show",
    type=click.Choice(("error", "warning", "note", "all")),
    default=None,
    help="The least severe findings listed: text lists errors line by line by default and summarises the rest "
    "per rule; sarif carries errors and warnings by default (note adds notes; all also findings on __pfx_/__cfi_ "
    "padding). Exit codes follow --fail-on, not --show.",
)
@click.option("--select", multiple=True, metavar="IDS", help="Only these rules: ids or prefixes (FBT1, FBT102).")
@click.option("--ignore", multiple=True, metavar="IDS", help="Skip these rules: ids or prefixes.")
@click.option(
    "--statistics", is_flag=True, help="Add per-rule counts and kernel-table entry counts to the text report."
)
@click.option(
    "--returns",
    is_flag=True,
    help="Also audit return patchpoints (ret, ret imm16, jmp __x86_return_thunk; name ends :return), found by "
    "a linear decode of all text cross-checked with .return_sites. Off by default: entry-only audits stay fast.",
)
@click.option(
    "--platform",
    type=click.Choice(("all", "native", "xen-pv", "up")),
    default="all",
    show_default=True,
    help="Which boot-time forms can be live: all (every form any boot leaves, worst wins); native (bare metal, "
    "KVM: paravirt calls patched direct, Xen-only alternatives dead, .smp_locks prefixes fixed at boot); xen-pv "
    "(a Xen PV guest); up (native booted with one CPU present and more possible: .smp_locks rewritten at run "
    "time). The list's live column and SARIF name the platform.",
)
@click.option(
    "--deep",
    is_flag=True,
    help="Deep analysis. The flagged flags patchpoints (FBT101-103: pushf, popf, cli, sti, iret): the paths of "
    "the pushed flags word to where it is consumed (popf, iret, pop reg, a copy), as evidence on the finding "
    "(SARIF codeFlows; a line in text and json). With the [deep] extra (angr), value tracking proves or refutes "
    "each path; without it the stack walk alone says where the word goes. Their verdicts do not change. Also: one "
    "sweep of every direct branch (FBT115 under a table with a patch window, such as kprobes-6.1-optprobe) and "
    "FBT207 from the image's own call graph instead of audit/data/handler-path.txt.",
)
@click.option(
    "--deep-only",
    "deep_only",
    multiple=True,
    metavar="FUNC",
    help="--deep for these functions only (repeatable), whatever their findings.",
)
@click.option(
    "--baseline",
    type=click.Path(path_type=Path, dir_okay=False),
    help="An earlier SARIF: results get baselineState, and only new or updated ones count for --fail-on.",
)
@click.option(
    "--allowlist",
    type=click.Path(path_type=Path, dir_okay=False),
    help="TOML of accepted findings (rule, module:function, justification): left out of SARIF and --fail-on.",
)
@click.option("--source-root", metavar="DIR", help="Build path of the kernel source: cut off DWARF paths.")
@click.option(
    "--path-prefix-map",
    multiple=True,
    metavar="OLD=NEW",
    help="Rewrite DWARF paths starting with OLD to start with NEW (repeatable; the first match wins).",
)
@click.option(
    "--system-map",
    type=click.Path(path_type=Path, dir_okay=False),
    metavar="FILE",
    help="Symbols for a stripped image (vmlinuz, objcopy -S vmlinux): the System.map of the same build. "
    "An image's own .symtab always wins.",
)
@click.option(
    "--kallsyms",
    type=click.Path(path_type=Path, dir_okay=False),
    metavar="FILE",
    help="Symbols from a /proc/kallsyms dump of the running build (read as root: without CAP_SYSLOG every "
    "address is 0). The KASLR offset is taken off using _text. Without --system-map or --kallsyms, a "
    "stripped image's embedded kallsyms tables are used.",
)
@click.option(
    "--kallsyms-module",
    metavar="NAME",
    help="With --kallsyms: keep the symbols of module NAME ([NAME] in the dump) instead of the kernel's.",
)
@click.option(
    "-j",
    "--jobs",
    type=click.IntRange(min=1),
    default=None,
    help="Processes that audit module trees and multiple inputs, this one among them (-j 2: it and one forked "
    "worker) [default: the number of CPUs]. The output is the same for every value.",
)
@click.option(
    "--keep-going",
    is_flag=True,
    help="An input that cannot be read stays a tool notification (SARIF, stderr) and the exit code reflects "
    "findings only; without it, any failed input exits 2 after the report is written.",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Progress bar on stderr [default: when stderr is a terminal].",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Settings file (default: fbt-audit.toml, or [tool.fbt-audit] in pyproject.toml, here or above).",
)
@click.pass_context
def audit_cmd(ctx: click.Context, **params) -> None:
    """Audit PATH... and report unsafe patchpoints.

    PATH is a vmlinux, a vmlinuz (bzImage: gzip, xz, zstd, lz4, bzip2 or lzma), a module (.ko, .ko.xz,
    .ko.zst, .ko.gz) or a directory such as /lib/modules/RELEASE, whose modules are all audited in
    parallel. With no PATH, the running kernel is audited when its image can be found."""
    run_audit(AuditSettings.from_command(ctx, params))


@dataclass(frozen=True)
class AuditSettings:
    """Every option of the audit verb, after the settings file filled in what the command line left at its
    default (flags given on the command line win)."""

    paths: tuple[Path, ...]
    table_spec: str
    fmt: str
    output: Path | None
    fail_on: str
    show: str | None
    select: list[str] | None
    ignore: list[str] | None
    statistics: bool
    returns: bool
    platform: str
    deep: bool
    deep_only: tuple[str, ...]
    baseline: Path | None
    allowlist: Path | None
    source_root: str | None
    path_prefix_map: tuple[str, ...]
    hits_files: tuple[Path, ...]
    sort: str
    system_map: Path | None
    kallsyms: Path | None
    kallsyms_module: str | None
    jobs: int | None
    keep_going: bool
    progress: bool

    @classmethod
    def from_command(cls, ctx: click.Context, params: dict) -> AuditSettings:
        from fbt_audit.cli import settings as config

        file = config.load(params.pop("config_path"))
        if file.values:
            params = config.merge(ctx, file, params)
        params["select"], params["ignore"] = split_ids(params["select"]), split_ids(params["ignore"])
        params["progress"] = sys.stderr.isatty() if params["progress"] is None else params["progress"]
        params["deep_only"] = tuple(params.get("deep_only") or ())
        for key in ("baseline", "allowlist"):  # a settings file gives them as strings
            params[key] = Path(params[key]) if params[key] is not None else None
        return cls(**params)


def run_audit(s: AuditSettings) -> None:
    """Audit, render, write, then exit with the code --fail-on and the gate decide."""
    import gc

    from fbt_audit.gate.baseline import Gate

    # A one-shot process: the cyclic collector could only rescan the audit's acyclic objects (see
    # patchpoints.entry.gc_paused), and one pass over them after the audit costs as much as rendering the
    # list. Between images audited in this process, pipeline/batch.py runs one pass and freezes the survivors.
    gc.disable()
    if s.output is not None:
        _check_writable(s.output)
    if s.sort == "rarity" and s.fmt != "text":
        raise click.UsageError("--sort rarity orders the text report; `fbt-audit rank` prints the ranking as a table")
    results, failures = _audit(s)
    gate = Gate.for_cli(results, s.baseline, s.allowlist, s.show)
    out = _render(s, results, gate)
    if s.output:
        try:
            s.output.write_text(out)
        except OSError as e:
            raise click.UsageError(f"-o {s.output}: cannot write: {e.strerror or e}") from None
    else:
        sys.stdout.write(out)
    for failure in failures:
        click.echo(f"fbt-audit: error: {failure}", err=True)
    if failures and not s.keep_going:
        sys.exit(2)
    sys.exit(_exit_code(s, results, gate))


def _check_writable(path: Path) -> None:
    """-o must be writable before minutes of auditing are spent: a usage error (exit 2) at once otherwise."""
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise click.UsageError(f"-o {path}: is a directory")
    if path.exists():
        if not path.is_file() or not os.access(path, os.W_OK):
            raise click.UsageError(f"-o {path}: not a regular file this user can write")
    elif not parent.is_dir():
        raise click.UsageError(f"-o {path}: the directory {parent} does not exist")
    elif not os.access(parent, os.W_OK | os.X_OK):
        raise click.UsageError(f"-o {path}: the directory {parent} is not writable")
    fs = _filesystem(path if path.exists() else parent)
    if fs in _PSEUDO_FS:  # root passes access(); the write would fail after the audit
        raise click.UsageError(f"-o {path}: on a {fs} file system, not a report file")


_PSEUDO_FS = {"proc", "sysfs", "debugfs", "tracefs", "securityfs", "cgroup", "cgroup2", "configfs", "bpf"}


def _filesystem(path: Path) -> str:
    """The type of the file system holding path (the longest mount point of /proc/self/mounts above it)."""
    best, kind = "", ""
    real = str(path.resolve())
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return ""
    for line in mounts:
        parts = line.split()
        if len(parts) >= 3:
            mnt = parts[1].replace("\\040", " ")
            if (real == mnt or real.startswith(mnt.rstrip("/") + "/")) and len(mnt) > len(best):
                best, kind = mnt, parts[2]
    return kind


def _audit(s: AuditSettings):
    from fbt_audit.input.loader import SymbolOptions
    from fbt_audit.pipeline.api import load_table
    from fbt_audit.pipeline.batch import run_batch

    symbols = SymbolOptions(s.system_map, s.kallsyms, s.kallsyms_module)
    paths = s.paths
    if not paths:
        from fbt_audit.input.running import running_kernel

        path, symbols = running_kernel(symbols)
        paths = (path,)
    table = load_table(s.table_spec)
    deep = _deep_options(s)
    results, failures = run_batch(
        paths, table, select=s.select, ignore=s.ignore, returns=s.returns, symbols=symbols, jobs=s.jobs,
        progress=s.progress, sources=s.fmt in ("sarif", "github"), platform=s.platform, deep=deep,
        text=_text_only(s, deep),
    )  # fmt: skip
    if deep is not None:
        _deep_notes(s, results)
    for r in results:
        source = getattr(r.kernel, "symbol_source", ".symtab")
        if source != ".symtab":
            click.echo(f"fbt-audit: {r.kernel.display}: symbols from {source}", err=True)
    return results, failures


def _text_only(s: AuditSettings, deep) -> tuple[str, bool] | None:
    """(show, colour) when the modules' results serve the plain text report alone, which a tree's workers then
    make (report.text.TextDigest); None when anything reads more of them (hits, rarity, a gate, --deep)."""
    if s.fmt != "text" or s.hits_files or s.sort == "rarity" or s.baseline or s.allowlist or deep is not None:
        return None
    return s.show or "error", _colour(s)


def _colour(s: AuditSettings) -> bool:
    """The text report in colour: written to a terminal, NO_COLOR unset."""
    return s.output is None and sys.stdout.isatty() and not os.environ.get("NO_COLOR")


def _deep_options(s: AuditSettings):
    """--deep / --deep-only as the pipeline's DeepOptions (None: off)."""
    if not s.deep and not s.deep_only:
        return None
    from fbt_audit.deep.run import DeepOptions

    return DeepOptions(only=s.deep_only)


def _deep_notes(s: AuditSettings, results) -> None:
    """Says once when flags paths were walked but angr is not installed to prove them, and each --deep-only name
    that matched nothing (never silently skipped)."""
    from fbt_audit.deep import values

    if any(r.evidence for r in results) and not values.available():
        click.echo(f"fbt-audit: --deep: {values.EXTRA_HINT}; the flags paths come from the stack walk alone", err=True)
    if s.deep_only:
        analysed = [j.pp for r in results for j in r.judgements if (j.pp.addr, j.pp.site) in r.evidence]
        found = {n for pp in analysed for n in (pp.name, *pp.aliases)}
        for name in s.deep_only:
            if name not in found:
                click.echo(f"fbt-audit: --deep-only {name}: no entry patchpoint of that name", err=True)


def _render(s: AuditSettings, results, gate) -> str:
    from fbt_audit.report.formats import render

    merged = merge_hits(s.hits_files, results)
    hits = merged.for_report() if merged is not None else None
    order = None
    if s.sort == "rarity":
        from fbt_audit.investigate.rank import ranked

        order = [(r, j) for r, j, _ in ranked(results, hits.counts if hits is not None else {})]
    paths = None
    if s.fmt in ("sarif", "github"):
        from fbt_audit.input.dwarf import PathMap

        paths = PathMap.parse(s.path_prefix_map or (), s.source_root)
    return render(s.fmt, results, statistics=s.statistics, gate=gate, paths=paths, hits=hits, order=order, show=s.show,
                  colour=_colour(s))  # fmt: skip


def _exit_code(s: AuditSettings, results, gate) -> int:
    if s.fail_on == "none":
        if gate.active:
            gate.report_stderr()
        return 0
    threshold = Level[s.fail_on.upper()]
    if gate.active:
        gate.report_stderr()
        return 1 if gate.fails(threshold) else 0
    return 1 if any((w := r.worst_finding()) is not None and w >= threshold for r in results) else 0
