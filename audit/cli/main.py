"""main.py: the fbt-audit command group (`fbt-audit PATH...` is the audit verb); every failure is one line, exit 2."""

from __future__ import annotations

import gc
import os

import click

from fbt_audit import __version__
from fbt_audit.model.errors import AuditError, one_line

# Each verb's module and command, imported when the verb runs or help lists it: `fbt-audit PATH` imports the audit
# alone, not verify's (tempfile, shutil) nor the other verbs'.
LAZY = {
    "audit": ("fbt_audit.cli.audit", "audit_cmd"),
    "table": ("fbt_audit.cli.verbs", "table_cmd"),
    "rules": ("fbt_audit.cli.verbs", "rules_cmd"),
    "explain": ("fbt_audit.cli.verbs", "explain_cmd"),
    "check-list": ("fbt_audit.cli.verbs", "check_list_cmd"),
    "rank": ("fbt_audit.cli.investigate", "rank_cmd"),
    "map": ("fbt_audit.cli.investigate", "map_cmd"),
    "bisect": ("fbt_audit.cli.investigate", "bisect_cmd"),
    "verify": ("fbt_audit.verify.cli", "verify_cmd"),  # the verdicts proved by execution under QEMU
}


class DefaultGroup(click.Group):
    """`fbt-audit PATH...` means `fbt-audit audit PATH...`: any first word that is not a verb is a path."""

    def parse_args(self, ctx, args):
        if args and args[0] not in LAZY and args[0] not in ("--help", "-h", "--version"):
            args = ["audit", *args]
        elif not args:
            args = ["audit"]
        return super().parse_args(ctx, args)

    def list_commands(self, ctx):
        return sorted({*self.commands, *LAZY})

    def get_command(self, ctx, name):
        if name != "audit":
            gc.enable()  # off since start.entry: the audit keeps it off, the other verbs run with it
        if name not in self.commands and name in LAZY:
            import importlib

            module, attr = LAZY[name]
            self.add_command(getattr(importlib.import_module(module), attr), name)
        return self.commands.get(name)

    def format_usage(self, ctx, formatter):
        formatter.write_usage("fbt-audit", "[OPTIONS] PATH...  |  fbt-audit VERB [ARGS]...")

    # The options users reach for first, shown by `fbt-audit --help`; `fbt-audit audit --help` has them all.
    MAIN_OPTIONS = ("table_spec", "fmt", "output", "fail_on", "show", "baseline", "select", "ignore", "statistics",
                    "returns", "jobs")  # fmt: skip

    def format_options(self, ctx, formatter):
        """The group's own options, then the audit's main options (what `fbt-audit PATH...` takes), then verbs."""
        click.Command.format_options(self, ctx, formatter)
        audit = self.get_command(ctx, "audit")
        if audit is not None:
            sub = click.Context(audit, info_name="audit", parent=ctx)
            by_name = {p.name: p for p in audit.get_params(sub)}
            rows = [r for n in self.MAIN_OPTIONS if n in by_name and (r := by_name[n].get_help_record(sub))]
            if rows:
                with formatter.section("Audit options (fbt-audit PATH... [OPTIONS]; all: fbt-audit audit --help)"):
                    formatter.write_dl(rows)
        self.format_commands(ctx, formatter)


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


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and map every failure to an exit code; never let a traceback reach the user."""
    try:
        main.main(args=argv, prog_name="fbt-audit", standalone_mode=False)
    except BaseException as e:  # noqa: BLE001  exit_code re-raises what it does not map
        return exit_code(e)
    return 0


def exit_code(e: BaseException) -> int:
    """The exit code of a run that raised e, its one line said on stderr; e itself raised again if unmapped."""
    if isinstance(e, SystemExit):
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    if isinstance(e, click.exceptions.Exit):
        return e.exit_code
    if isinstance(e, click.ClickException):  # usage errors: click would exit 1 for some of them
        click.echo(f"fbt-audit: error: {e.format_message()}", err=True)
        return 2
    if isinstance(e, click.exceptions.Abort):
        click.echo("fbt-audit: aborted", err=True)
        return 2
    if isinstance(e, AuditError):
        click.echo(f"fbt-audit: error: {e}", err=True)
        return e.exit_code
    if isinstance(e, BrokenPipeError):
        return 0
    if isinstance(e, KeyboardInterrupt):
        click.echo("fbt-audit: interrupted", err=True)
        return 130
    if isinstance(e, Exception) and not os.environ.get("FBT_AUDIT_DEBUG"):  # a bug, not bad input: still one line
        msg = one_line(f"{type(e).__name__}: {e}")
        click.echo(f"fbt-audit: internal error: {msg} (FBT_AUDIT_DEBUG=1 shows more)", err=True)
        return 2
    raise e
