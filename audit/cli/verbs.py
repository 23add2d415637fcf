"""verbs.py: the small verbs: table, rules, explain, check-list."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from fbt_audit.model.errors import AuditError


@click.command("table")
@click.argument("spec", default="reference", metavar="[NAME|PATH]")
def table_cmd(spec):
    """Print an emulation table: header policy, then one row per entry, first match wins."""
    from fbt_audit.pipeline.api import load_table
    from fbt_audit.report.table_text import format_table

    sys.stdout.write(format_table(load_table(spec)))


@click.command("rules")
@click.option("--markdown", is_flag=True, help="Print docs/rules.md: every rule's whole doc, as Markdown.")
def rules_cmd(markdown):
    """List every rule: id, level, status and what it finds."""
    from fbt_audit.judge.registry import REGISTRY

    if markdown:
        from fbt_audit.judge.rulesdoc import markdown as page

        sys.stdout.write(page())
        return
    for rid, (status, cls) in REGISTRY.items():
        click.echo(f"{rid}  {cls.level.sarif:<7}  {status.name.lower():<10}  {cls.name:<28}  {cls.summary}")


@click.command("explain")
@click.argument("rule_id")
def explain_cmd(rule_id):
    """Show a rule's documentation: what it finds, why it is unsafe, an example, the fix."""
    from fbt_audit.judge.registry import REGISTRY

    entry = REGISTRY.get(rule_id.upper())
    if entry is None:
        raise AuditError(f"no rule {rule_id}; `fbt-audit rules` lists them")
    cls = entry[1]
    click.echo(f"{cls.id} {cls.name} [{cls.level.sarif}]\n")
    click.echo(cls.doc())


@click.command("check-list")
@click.argument("list_path", metavar="LIST", type=click.Path(path_type=Path, dir_okay=False))
@click.argument("image", metavar="IMAGE", type=click.Path(path_type=Path, dir_okay=False))
def check_list_cmd(list_path, image):
    """Check that a probe-safety list (or denylist) was made for IMAGE's build: exit 0 if its build id
    matches, 2 with one line if not."""
    from fbt_audit.gate.checklist import check

    click.echo(check(list_path, image))
