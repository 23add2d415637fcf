"""common.py: what the verbs share: format and level names, rule-id lists from the command line, merging --hits."""

from __future__ import annotations

FORMATS = ("text", "json", "sarif", "list", "denylist", "github", "html")
FAIL_ON = ("none", "note", "warning", "error")


def split_ids(values: tuple[str, ...]) -> list[str] | None:
    out = [v.strip() for value in values for v in value.split(",") if v.strip()]
    return out or None


def merge_hits(files, results):
    """--hits: merge the files' counts into the results' probes; unmatched rows go to stderr (count + sample)."""
    if not files:
        return None
    from fbt_audit.investigate.hits import load, merge

    merged = merge(load(list(files)), results)
    note = merged.notification()
    if note:
        import click  # here: the plain audit's start does without click (cli/start.py)

        click.echo(f"fbt-audit: {note}", err=True)
    return merged
