"""cli.py: the fbt-audit command line, a thin click shell over fbt_audit.api; errors are one line, exit 2."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from . import __version__
from .errors import AuditError
from .model import Level

FORMATS = ("text", "json", "sarif", "list")
FAIL_ON = ("none", "note", "warning", "error")
VERBS = ("audit", "table", "rules", "explain")


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
      fbt-audit vmlinux --format sarif -o out.sarif
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
    help="Emulation table: a named table (reference, legacy-2011) or any ELF carrying "
    "the .fbt_emu_table section, such as a built fbt.ko.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="text",
    show_default=True,
    help="text: one line per finding; json: versioned schema; sarif: GitHub code scanning; "
    "list: the probe-safety list, one row per patchpoint.",
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
@click.option("--statistics", is_flag=True, help="Add per-rule counts to the text report.")
def audit_cmd(paths, table_spec, fmt, output, fail_on, select, ignore, statistics):
    """Audit PATH... (vmlinux or .ko) and report unsafe patchpoints."""
    from .api import audit, load_table
    from .report import jsonout, listing, sarif, text

    if not paths:
        raise click.UsageError(
            "give a vmlinux or a .ko to audit, e.g. fbt-audit /usr/lib/debug/boot/vmlinux-$(uname -r)"
        )
    table = load_table(table_spec)
    results = []
    for p in paths:
        if sys.stderr.isatty():
            click.echo(f"fbt-audit: auditing {p} ...", err=True)
        results.append(audit(p, table, select=_split(select), ignore=_split(ignore)))
    render = {
        "text": lambda r: text.render_text(r, statistics),
        "json": jsonout.render_json,
        "sarif": sarif.render_sarif,
        "list": listing.render_list,
    }[fmt]
    out = render(results)
    if output:
        output.write_text(out)
    else:
        sys.stdout.write(out)
    if fail_on != "none":
        threshold = Level[fail_on.upper()]
        if any(f.level >= threshold for r in results for j in r.judgements for f in j.findings):
            sys.exit(1)


@main.command("table")
@click.argument("spec", default="reference", metavar="[NAME|PATH]")
def table_cmd(spec):
    """Print an emulation table: header policy, then one row per entry, first match wins."""
    from .api import load_table
    from .report.table_text import format_table

    sys.stdout.write(format_table(load_table(spec)))


@main.command("rules")
def rules_cmd():
    """List every rule: id, level, status and what it finds."""
    from .registry import REGISTRY

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
        click.echo(f"fbt-audit: internal error: {type(e).__name__}: {e} (FBT_AUDIT_DEBUG=1 shows more)", err=True)
        return 2
    return 0


def entry() -> None:
    sys.exit(run())
