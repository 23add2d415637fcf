"""run.py: the audit verb's settings and run (AuditSettings -> audit, render, write, exit code), without click: what
`fbt-audit PATH` runs straight from the console entry (cli/start.py) when the command line has nothing to parse."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fbt_audit.cli.common import merge_hits, split_ids
from fbt_audit.model.core import Level


def _say(message: str) -> None:
    """click.echo to stderr, imported when there is something to say (a plain audit says nothing there)."""
    import click

    click.echo(message, err=True)


def _usage(message: str) -> Exception:
    """click's UsageError, which cli.main reports as one line, exit 2."""
    import click

    return click.UsageError(message)


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
    def from_command(cls, ctx: Any, params: dict) -> AuditSettings:
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

    @classmethod
    def plain(cls, path: str, jobs: int | None = None) -> AuditSettings | None:
        """`fbt-audit PATH` alone (or with `-j jobs`): what from_command makes of it, each other option at its default
        (tests/test_cli_plain.py compares the two); None when a settings file gives values (they merge through click's
        parameter sources)."""
        from fbt_audit.cli import settings as config

        if config.load(None).values:
            return None
        return cls(paths=(Path(path),), table_spec="reference", fmt="text", output=None, fail_on="error", show=None,
                   select=None, ignore=None, statistics=False, returns=False, platform="all", deep=False, deep_only=(),
                   baseline=None, allowlist=None, source_root=None, path_prefix_map=(), hits_files=(), sort="address",
                   system_map=None, kallsyms=None, kallsyms_module=None, jobs=jobs, keep_going=False,
                   progress=sys.stderr.isatty())  # fmt: skip


def run_audit(s: AuditSettings) -> None:
    """Audit, render, write, then exit with the code --fail-on and the gate decide."""
    import gc

    # A one-shot process: the cyclic collector could only rescan the audit's acyclic objects (see
    # patchpoints.entry.gc_paused), and one pass over them after the audit costs as much as rendering the
    # list. Between images audited in this process, pipeline/batch.py runs one pass and freezes the survivors.
    gc.disable()
    if s.output is not None:
        _check_writable(s.output)
    if s.sort == "rarity" and s.fmt != "text":
        raise _usage("--sort rarity orders the text report; `fbt-audit rank` prints the ranking as a table")
    results, failures = _audit(s)
    gate = None  # without a baseline or an allowlist the gate is inactive: gate/ is not imported for it
    if s.baseline or s.allowlist:
        from fbt_audit.gate.baseline import Gate

        gate = Gate.for_cli(results, s.baseline, s.allowlist, s.show)
    out = _render(s, results, gate)
    if s.output:
        try:
            s.output.write_text(out)
        except OSError as e:
            raise _usage(f"-o {s.output}: cannot write: {e.strerror or e}") from None
    else:
        sys.stdout.write(out)
    for failure in failures:
        _say(f"fbt-audit: error: {failure}")
    if failures and not s.keep_going:
        sys.exit(2)
    sys.exit(_exit_code(s, results, gate))


def _check_writable(path: Path) -> None:
    """-o must be writable before minutes of auditing are spent: a usage error (exit 2) at once otherwise."""
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise _usage(f"-o {path}: is a directory")
    if path.exists():
        if not path.is_file() or not os.access(path, os.W_OK):
            raise _usage(f"-o {path}: not a regular file this user can write")
    elif not parent.is_dir():
        raise _usage(f"-o {path}: the directory {parent} does not exist")
    elif not os.access(parent, os.W_OK | os.X_OK):
        raise _usage(f"-o {path}: the directory {parent} is not writable")
    fs = _filesystem(path if path.exists() else parent)
    if fs in _PSEUDO_FS:  # root passes access(); the write would fail after the audit
        raise _usage(f"-o {path}: on a {fs} file system, not a report file")


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
            _say(f"fbt-audit: {r.kernel.display}: symbols from {source}")
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
        _say(f"fbt-audit: --deep: {values.EXTRA_HINT}; the flags paths come from the stack walk alone")
    if s.deep_only:
        analysed = [j.pp for r in results for j in r.judgements if (j.pp.addr, j.pp.site) in r.evidence]
        found = {n for pp in analysed for n in (pp.name, *pp.aliases)}
        for name in s.deep_only:
            if name not in found:
                _say(f"fbt-audit: --deep-only {name}: no entry patchpoint of that name")


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
        if gate is not None and gate.active:
            gate.report_stderr()
        return 0
    threshold = Level[s.fail_on.upper()]
    if gate is not None and gate.active:
        gate.report_stderr()
        return 1 if gate.fails(threshold) else 0
    return 1 if any((w := r.worst_finding()) is not None and w >= threshold for r in results) else 0
