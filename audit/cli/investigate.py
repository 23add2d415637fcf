"""investigate.py: the investigator's verbs: rank, map, bisect."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from fbt_audit.cli.common import merge_hits, split_ids
from fbt_audit.model.errors import UsageError


def _common(f):
    f = click.option("--ignore", multiple=True, metavar="IDS", help="Skip these rules: ids or prefixes.")(f)
    f = click.option("--select", multiple=True, metavar="IDS", help="Only these rules: ids or prefixes.")(f)
    f = click.option(
        "--hits",
        "hits_files",
        multiple=True,
        type=click.Path(path_type=Path),
        metavar="FILE",
        help="A /proc/dtrace/fbt dump or ftrace trace_stat/function* files (or their directory) (repeatable).",
    )(f)
    f = click.option("--table", "table_spec", default="reference", show_default=True, metavar="NAME|PATH")(f)
    f = click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path, dir_okay=False))(f)
    return f


def _audit(paths, table_spec, select, ignore):
    import gc

    from fbt_audit.pipeline.api import audit, load_table

    gc.disable()
    table = load_table(table_spec)
    return [audit(p, table, select=split_ids(select), ignore=split_ids(ignore)) for p in paths]


def _write(out: str, output: Path | None) -> None:
    if output:
        output.write_text(out)
    else:
        sys.stdout.write(out)


@click.command("rank")
@_common
@click.option("-n", "--limit", type=int, help="Show only the first N.")
@click.option(
    "--at-least",
    type=click.Choice(("refused", "deny", "unsafe")),
    default="refused",
    show_default=True,
    help="Worst verdict to rank from: refused ranks every patchpoint that is not safe; deny and unsafe "
    "leave out what a tracer refuses to probe.",
)
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False), help="Write the ranking here.")
def rank_cmd(paths, table_spec, hits_files, select, ignore, limit, at_least, output):
    """Rank the patchpoints that are not safe, rarest first: hit at least once (fewest hits first), then
    the never-hit ones. The candidates for a failure that happens once in a million probes."""
    from fbt_audit.investigate.rank import render_rank
    from fbt_audit.model.core import Verdict

    results = _audit(paths, table_spec, select, ignore)
    merged = merge_hits(hits_files, results)
    _write(render_rank(results, merged.counts if merged else None, limit, Verdict[at_least.upper()]), output)


@click.command("map")
@_common
@click.option("--json", "as_json", is_flag=True, help="Write the map's data as JSON instead of the HTML page.")
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False), help="Write the page here.")
def map_cmd(paths, table_spec, hits_files, select, ignore, as_json, output):
    """The opcode map: a self-contained HTML page with a 16x16 grid of the first byte at every patchpoint
    (count, hits, worst verdict by colour; click a cell for its patchpoints). --json: the same data."""
    results = _audit(paths, table_spec, select, ignore)
    merged = merge_hits(hits_files, results)
    counts = merged.counts if merged else None
    if as_json:
        from fbt_audit.report.opmap import render_json

        _write(render_json(results, counts), output)
    else:
        from fbt_audit.report.html import render_map

        _write(render_map(results, counts), output)


@click.command("bisect")
@_common
@click.option(
    "--by",
    type=click.Choice(("nibble", "byte", "rule", "module")),
    default="nibble",
    show_default=True,
    help="Split key: first byte's high nibble (then byte, then patchpoint), exact byte, rule, module.",
)
@click.option(
    "--population",
    type=click.Choice(("probed", "suspect", "all")),
    default="probed",
    show_default=True,
    help="probed: every patchpoint the table does not refuse; suspect: not safe; all.",
)
@click.option(
    "--state",
    type=click.Path(path_type=Path, dir_okay=False),
    help="State file holding the options and the verdicts so far (created when missing).",
)
@click.option(
    "--verdict",
    type=click.Choice(("crashed", "clean")),
    help="How the run with the last enable list went; appended to --state.",
)
@click.option("--step", type=int, help="Write step N again (keeps the first N-1 verdicts of --state, drops the rest).")
@click.option(
    "--verdicts",
    "verdict_list",
    metavar="V,V,...",
    help="All verdicts so far, instead of a state file: crashed,clean,...",
)
@click.option(
    "-o",
    "--output-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("."),
    show_default=True,
    help="Where enable.txt and disable.txt (denylist format) go.",
)
def bisect_cmd(paths, table_spec, hits_files, select, ignore, by, population, state, verdict, step, verdict_list,
               output_dir):  # fmt: skip
    """Bisection sets for an on-machine hunt, as in the seed (0xFn, 0xEn, ... down to 0x9n): write the
    enable list (run with only these probes) and the disable list, both in the denylist format. Answer
    each run with --verdict crashed|clean and the next halves follow; --state keeps the bookkeeping."""
    from fbt_audit.investigate import bisect as bs

    if verdict_list is not None and state is not None:
        raise UsageError("bisect: give --verdicts or --state, not both")
    if verdict_list is None and state is None and (verdict or step):
        raise UsageError("bisect: --verdict and --step need --state")
    results = _audit(paths, table_spec, select, ignore)
    ident = {
        "version": bs.STATE_VERSION,
        "by": by,
        "population": population,
        "table": results[0].table.name,
        "images": [r.kernel.build_id or r.kernel.display for r in results],
    }
    if verdict_list is not None:
        verdicts = [v.strip() for v in verdict_list.split(",") if v.strip()]
    elif state is not None and state.exists():
        data = bs.read_state(state)
        for k in ("by", "population", "table", "images"):
            if data.get(k) != ident[k]:
                raise UsageError(f"{state}: made for {k} {data.get(k)!r}, not {ident[k]!r}; use another --state")
        verdicts = list(data["verdicts"])
    else:
        verdicts = []
    if step is not None:
        if not 1 <= step <= len(verdicts) + 1:
            raise UsageError(f"bisect --step {step}: steps 1..{len(verdicts) + 1} exist")
        verdicts = verdicts[: step - 1]
    if verdict:
        verdicts.append(verdict)
    st = bs.walk(results, by, verdicts, population)
    if state is not None:
        bs.write_state(state, {**ident, "verdicts": verdicts})
    lines = bs.describe(st)
    if st.found:
        lines.extend(f"  {j.pp.probe_name} {j.pp.name}+0x{j.pp.symoff:x} {j.pp.insn.raw.hex()} {j.pp.insn.text} "
                     f"[{j.verdict.label}]" for j in bs.suspects(st))  # fmt: skip
    else:
        enable, disable = bs.lists(results, st, population)
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "enable.txt").write_text(enable)
        (output_dir / "disable.txt").write_text(disable)
        lines.append(f"wrote {output_dir / 'enable.txt'} and {output_dir / 'disable.txt'}")
    sys.stdout.write("\n".join(lines) + "\n")
