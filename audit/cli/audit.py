"""audit.py: the audit verb (also what `fbt-audit PATH...` runs): options -> one AuditSettings -> run -> exit code."""

from __future__ import annotations

from pathlib import Path

import click

from fbt_audit.cli.common import FAIL_ON, FORMATS
from fbt_audit.cli.run import AuditSettings, run_audit


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
