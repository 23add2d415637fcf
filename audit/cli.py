"""cli.py: the fbt-audit command line, a thin click shell over fbt_audit.api; errors are one line, exit 2."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from . import __version__
from .errors import AuditError, one_line
from .model import Level

FORMATS = ("text", "json", "sarif", "list", "denylist", "github", "html")
FAIL_ON = ("none", "note", "warning", "error")
VERBS = ("audit", "table", "rules", "explain", "check-list", "rank", "map", "bisect")


def _split(values: tuple[str, ...]) -> list[str] | None:
    out = [v.strip() for value in values for v in value.split(",") if v.strip()]
    return out or None


class DefaultGroup(click.Group):
    """`fbt-audit PATH...` means `fbt-audit audit PATH...`: any first word that is not a verb is a path."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h", "--version"):
            args = ["audit", *args]
        elif not args:
            args = ["audit"]
        return super().parse_args(ctx, args)

    def format_usage(self, ctx, formatter):
        formatter.write_usage("fbt-audit", "[OPTIONS] PATH...  |  fbt-audit VERB [ARGS]...")


@click.group(
    cls=DefaultGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="fbt-audit")
def main():
    """Audit the function-entry patchpoints of an x86-64 Linux kernel for an int3-based FBT tracer.

    An FBT provider plants int3 on the first instruction of a kernel function; its trap handler must
    emulate or single-step the displaced instruction. fbt-audit decodes the instruction at every
    patchpoint and judges it against the emulation table compiled into the C FBT module (kmod/).

    \b
    Examples:
      fbt-audit vmlinux                          audit against the reference table
      fbt-audit vmlinux --table legacy-2011      dtrace4linux 2011: every PUSHF entry is unsafe
      fbt-audit kvm.ko --format list             the per-kernel probe-safety list
      fbt-audit /boot/vmlinuz-6.1.0-56-amd64     a stripped image: symbols from its own kallsyms
      fbt-audit vmlinuz --kallsyms ks.txt        ... or from a /proc/kallsyms dump (KASLR taken off)
      fbt-audit /lib/modules/$(uname -r) -j 4    every module of a tree, in parallel
      fbt-audit                                  the running kernel, when its image can be found
      fbt-audit vmlinux --format sarif -o out.sarif
      fbt-audit vmlinux --baseline last.sarif    the release gate: exit 1 only for new findings
      fbt-audit check-list fbt.list vmlinux      does the list belong to this build?
      fbt-audit table reference                  print an emulation table
      fbt-audit rules ; fbt-audit explain FBT102 what each rule finds and why

    \b
    Exit codes: 0 nothing at or above --fail-on, 1 findings, 2 tool or usage error.
    A file named like a verb is reached as ./table.
    """


@main.command("audit")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path, dir_okay=True))
@click.option(
    "--table",
    "table_spec",
    default="reference",
    show_default=True,
    metavar="NAME|PATH",
    help="Emulation table: a named table (reference, legacy-2011, kprobes-6.1, kprobes-6.12, kprobes) "
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
    help="Worker processes for module trees and multiple inputs [default: the number of CPUs]. "
    "The output is the same for every value.",
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
def audit_cmd(
    ctx, paths, table_spec, fmt, output, fail_on, select, ignore, statistics, returns, baseline, allowlist, source_root,
    path_prefix_map, config_path, hits_files, sort, system_map, kallsyms, kallsyms_module, jobs, keep_going, progress,
):  # fmt: skip
    """Audit PATH... and report unsafe patchpoints.

    PATH is a vmlinux, a vmlinuz (bzImage: gzip, xz, zstd, lz4, bzip2 or lzma), a module (.ko, .ko.xz,
    .ko.zst, .ko.gz) or a directory such as /lib/modules/RELEASE, whose modules are all audited in
    parallel. With no PATH, the running kernel is audited when its image can be found."""
    import gc

    from . import config

    settings = config.load(config_path)
    if settings.values:
        merged = config.merge(ctx, settings, ctx.params)
        table_spec, fmt, fail_on = merged["table_spec"], merged["fmt"], merged["fail_on"]
        select, ignore, statistics = merged["select"], merged["ignore"], merged["statistics"]
        baseline, allowlist = merged["baseline"], merged["allowlist"]
        source_root, path_prefix_map = merged["source_root"], merged["path_prefix_map"]

    from .api import load_table

    # A one-shot process: the cyclic collector could only rescan the audit's acyclic objects (see
    # enumerate.gc_paused), and one pass over them after the audit costs as much as rendering the list.
    # Between images audited in this process, batch.py runs one pass and freezes the survivors.
    gc.disable()
    from .loader import SymbolOptions

    symbols = SymbolOptions(system_map, kallsyms, kallsyms_module)
    if not paths:
        from .running import running_kernel

        path, symbols = running_kernel(symbols)
        paths = (path,)
    table = load_table(table_spec)
    from .batch import run_batch

    results, failures = run_batch(
        paths, table, select=_split(select), ignore=_split(ignore), returns=returns, symbols=symbols,
        jobs=jobs, progress=sys.stderr.isatty() if progress is None else progress, sources=fmt in ("sarif", "github"),
    )  # fmt: skip
    for r in results:
        source = getattr(r.kernel, "symbol_source", ".symtab")
        if source != ".symtab":
            click.echo(f"fbt-audit: {r.kernel.display}: symbols from {source}", err=True)
    from .baseline import Gate

    gate = Gate.for_cli(results, baseline, allowlist)
    if sort == "rarity" and fmt != "text":
        raise click.UsageError("--sort rarity orders the text report; `fbt-audit rank` prints the ranking as a table")
    merged_hits = _merge_hits(hits_files, results)
    if merged_hits is not None or fmt == "html" or sort == "rarity":
        from .report.hitsout import render_merged

        out = render_merged(fmt, results, merged_hits, statistics, gate, source_root, path_prefix_map, sort)
    elif fmt == "text":
        from .report.text import render_text

        out = render_text(results, statistics)
    elif fmt == "json":
        from .report.jsonout import render_json

        out = render_json(results)
    elif fmt in ("sarif", "github", "denylist"):
        from .report.gate_formats import render_gated

        out = render_gated(fmt, results, gate, source_root, path_prefix_map, statistics)
    else:
        from .report.listing import render_list

        out = render_list(results)
    if output:
        output.write_text(out)
    else:
        sys.stdout.write(out)
    for failure in failures:
        click.echo(f"fbt-audit: error: {failure}", err=True)
    if failures and not keep_going:
        sys.exit(2)
    if gate.active:
        gate.report_stderr()
        if fail_on != "none" and gate.fails(Level[fail_on.upper()]):
            sys.exit(1)
    elif fail_on != "none":
        threshold = Level[fail_on.upper()]
        if any(f.level >= threshold for r in results for j in r.judgements for f in j.findings):
            sys.exit(1)


def _merge_hits(files, results):
    """--hits: merge the files' counts into the results' probes; unmatched rows go to stderr (count + sample)."""
    if not files:
        return None
    from .hits import load, merge

    merged = merge(load(list(files)), results)
    note = merged.notification()
    if note:
        click.echo(f"fbt-audit: {note}", err=True)
    return merged


@main.command("table")
@click.argument("spec", default="reference", metavar="[NAME|PATH]")
def table_cmd(spec):
    """Print an emulation table: header policy, then one row per entry, first match wins."""
    from .api import load_table
    from .report.table_text import format_table

    sys.stdout.write(format_table(load_table(spec)))


@main.command("rules")
@click.option("--markdown", is_flag=True, help="Print docs/rules.md: every rule's whole doc, as Markdown.")
def rules_cmd(markdown):
    """List every rule: id, level, status and what it finds."""
    from .registry import REGISTRY

    if markdown:
        from .rulesdoc import markdown as page

        sys.stdout.write(page())
        return
    for rid, (status, cls) in REGISTRY.items():
        click.echo(f"{rid}  {cls.level.sarif:<7}  {status.name.lower():<10}  {cls.name:<28}  {cls.summary}")


@main.command("explain")
@click.argument("rule_id")
def explain_cmd(rule_id):
    """Show a rule's documentation: what it finds, why it is unsafe, an example, the fix."""
    from .registry import REGISTRY

    entry = REGISTRY.get(rule_id.upper())
    if entry is None:
        raise AuditError(f"no rule {rule_id}; `fbt-audit rules` lists them")
    cls = entry[1]
    click.echo(f"{cls.id} {cls.name} [{cls.level.sarif}]\n")
    click.echo(cls.doc())


@main.command("check-list")
@click.argument("list_path", metavar="LIST", type=click.Path(path_type=Path, dir_okay=False))
@click.argument("image", metavar="IMAGE", type=click.Path(path_type=Path, dir_okay=False))
def check_list_cmd(list_path, image):
    """Check that a probe-safety list (or denylist) was made for IMAGE's build: exit 0 if its build id
    matches, 2 with one line if not."""
    from .checklist import check

    click.echo(check(list_path, image))


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and map every failure to an exit code; never let a traceback reach the user."""
    try:
        main.main(args=argv, prog_name="fbt-audit", standalone_mode=False)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.ClickException as e:  # usage errors: click would exit 1 for some of them
        click.echo(f"fbt-audit: error: {e.format_message()}", err=True)
        return 2
    except click.exceptions.Abort:
        click.echo("fbt-audit: aborted", err=True)
        return 2
    except AuditError as e:
        click.echo(f"fbt-audit: error: {e}", err=True)
        return e.exit_code
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        click.echo("fbt-audit: interrupted", err=True)
        return 130
    except Exception as e:  # a bug, not bad input: still one line, and a way to see more
        if os.environ.get("FBT_AUDIT_DEBUG"):
            raise
        msg = one_line(f"{type(e).__name__}: {e}")
        click.echo(f"fbt-audit: internal error: {msg} (FBT_AUDIT_DEBUG=1 shows more)", err=True)
        return 2
    return 0


def entry() -> None:
    code = run()
    # Leave without tearing the heap down: freeing a vmlinux audit's million objects one by one takes
    # longer than rendering them (mypy exits the same way). Only the buffered output needs a flush.
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, ValueError):  # a reader that went away, or a closed stream
            pass
    os._exit(code)


from . import hunt_cli  # noqa: E402,F401  (registers rank, map and bisect on `main`)
from .verify.cli import verify_cmd  # noqa: E402  (fbt-audit verify: issue 12)

main.add_command(verify_cmd)
