"""cli.py: the `fbt-audit verify` verb: arm kmod/'s probes in a QEMU-booted kernel and report what the kernel said."""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import click

from fbt_audit.verify.deps import InputError, UsageError

FORMATS = ("text", "json")


@click.command("verify")
@click.argument("kernel", metavar="KERNEL")
@click.option("--table", "table_name", default="reference", show_default=True,
              help="The table kmod/ is built with and the audit judges by: reference or legacy-2011.")
@click.option("--only", multiple=True, metavar="FUNC",
              help="Arm this function's entry whatever its verdict (repeatable, or comma-separated).")
@click.option("--sample", type=int, metavar="N", help="Arm a random sample of N of the selected patchpoints.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of --sample.")
@click.option("--cpu", default="max", show_default=True, help="QEMU -cpu model (e.g. qemu64,-cx16).")
@click.option("--smp", type=click.IntRange(1, 64), default=1, show_default=True, help="QEMU -smp.")
@click.option("--hunt", is_flag=True,
              help="Start from what reference calls safe plus every PUSHF entry; on a complaint, bisect by opcode "
              "nibble, byte, then halves over successive boots to the smallest failing set.")
@click.option("--workload", metavar="CMD", help="A shell command run in the guest instead of the built-in loop.")
@click.option("--rounds", type=click.IntRange(1), default=5, show_default=True, help="Rounds of the built-in loop.")
@click.option("--timeout", type=click.FloatRange(10), default=600, show_default=True,
              help="Seconds a boot may take before it counts as a hang.")
@click.option("--workdir", type=click.Path(path_type=Path, file_okay=False),
              help="Keep the build, serial logs and boot files here (default: a new directory under /tmp).")
@click.option("--oracle", is_flag=True,
              help="Instead of arming: ask the booted kernel's register_kprobe() (kmod/oracle/, disabled probes) "
              "about every text symbol (or --only / --sample of the audit's entries) and compare with the audit "
              "under the release's kprobes-* table; exit 1 below --min-agreement.")
@click.option("--platform", type=click.Choice(("all", "native", "xen-pv", "up")), default="native",
              show_default=True, help="With --oracle: the boot-time forms the audit judges (QEMU boots native).")
@click.option("--save", type=click.Path(path_type=Path, dir_okay=False),
              help="With --oracle: write the answers as tests/data/oracle-<release>.txt does.")
@click.option("--min-agreement", type=click.FloatRange(0, 1), default=0.999, show_default=True,
              help="With --oracle: the agreement below which the exit code is 1.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="text", show_default=True)
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False), help="Write the report here.")
def verify_cmd(kernel, table_name, only, sample, seed, cpu, smp, hunt, workload, rounds, timeout, workdir, oracle,
               platform, save, min_agreement, fmt, output):
    """Prove verdicts by execution: build kmod/ with --table for KERNEL (a locked release such as
    6.1.0-56-amd64, or an unpacked linux-image-* directory), boot it under QEMU with a busybox initramfs,
    arm the selected patchpoints (default: those the audit calls safe), run a workload, and classify the
    kernel log (oops, BUG, WARNING, irq-state, lockup, hang). Exit 0 no complaint, 1 a complaint, 2 tool error.
    """
    from fbt_audit.verify import qemu, run
    from fbt_audit.verify.deps import audit
    from fbt_audit.verify.hunt import hunt as do_hunt
    from fbt_audit.verify.report import Report, render_json, render_text

    if sample is not None and sample < 1:
        raise UsageError("verify --sample: must be at least 1")
    if oracle:
        only = [f.strip() for v in only for f in v.split(",") if f.strip()]
        sys.exit(_oracle(kernel, only, sample, seed, cpu, workdir, platform, save, min_agreement, output))
    if table_name not in qemu.KMOD_TABLES:
        raise UsageError(f"verify --table {table_name}: kmod/ compiles in only {', '.join(qemu.KMOD_TABLES)}")
    t, workdir = _prepare(kernel, workdir, "fbt-verify-", "fbt-audit verify: boots and serial logs")
    fbt_ko = qemu.build_kmod(t.release, table_name, workdir / "kmod")
    result = audit(t.image, table_name)
    ref = audit(t.image, "reference") if hunt and table_name != "reference" else None
    only = [f.strip() for v in only for f in v.split(",") if f.strip()]
    chosen, forced = run.select(result, only=only or None, sample=sample, seed=seed, hunt=hunt, safe_under=ref)
    if not chosen:
        raise InputError("verify: nothing selected to arm")
    setup = run.Setup(t, fbt_ko, workdir, cpu, smp, timeout, workload, rounds)
    rep = Report(t.release, table_name, qemu.accel(), cpu, smp,
                 table_entries=[(e.mnemonic, e.handling.name.lower()) for e in result.table.entries])
    start = time.monotonic()
    first = run.run_boot(setup, result, chosen, forced)
    rep.boots.append(first)
    rep.probes = first.probes
    if hunt and first.complaint:
        # what the first boot armed; when it died before saying, what the table places (emulate or step)
        armed = {p.patchpoint for p in first.armed}
        population = [j for j in chosen if j.pp.addr in armed] if armed else [
            j for j in chosen if j.handling in ("emulate", "step")]

        def boot(enable):
            b = run.run_boot(setup, result, enable, True)
            rep.boots.append(b)
            click.echo(f"fbt-audit verify: boot {b.number}: {len(enable)} armed: "
                       f"{'complaint' if b.complaint else 'clean'}", err=True)
            return b

        rep.hunt = do_hunt(result, population, boot)
    elif hunt:
        from fbt_audit.verify.hunt import Hunt

        rep.hunt = Hunt(found=True)
    click.echo(f"fbt-audit verify: {len(rep.boots)} boot(s) in {time.monotonic() - start:.0f} s", err=True)
    out = render_json(rep) if fmt == "json" else render_text(rep)
    if output:
        output.write_text(out)
    else:
        sys.stdout.write(out)
    sys.exit(1 if rep.complaint else 0)


def _prepare(kernel, workdir, prefix: str, what: str):
    """What every boot needs first: the host tools, the locked kernel, a work directory (said on stderr)."""
    from fbt_audit.verify import initramfs, target

    missing = initramfs.have_tools()
    if missing:
        raise InputError(f"verify: {missing}")
    t = target.resolve(kernel)
    if workdir is None:
        workdir = Path(tempfile.mkdtemp(prefix=prefix))
    workdir.mkdir(parents=True, exist_ok=True)
    click.echo(f"{what} in {workdir}", err=True)
    return t, workdir


def _oracle(kernel, only, sample, seed, cpu, workdir, platform, save, min_agreement, output) -> int:
    """verify --oracle: one boot asking register_kprobe(), compared with the audit; the exit code."""
    from fbt_audit.verify import oracle
    from fbt_audit.verify.deps import audit

    t, workdir = _prepare(kernel, workdir, "fbt-oracle-", "fbt-audit verify --oracle: boot and serial log")
    table = oracle.kprobes_table(t.release)
    result = audit(t.image, table, platform=platform)
    symbols = oracle.choose(result, only=only or None, sample=sample, seed=seed)
    start = time.monotonic()
    answers = oracle.ask(t, workdir, symbols, cpu=cpu)
    click.echo(f"fbt-audit verify --oracle: {len(answers)} answers in {time.monotonic() - start:.0f} s", err=True)
    if save:
        oracle.save(save, t.release, result.kernel.build_id or "-", answers)
    cmp = oracle.compare(result, answers)
    out = oracle.render(cmp, t.release, table, platform)
    if output:
        output.write_text(out)
    else:
        sys.stdout.write(out)
    return 0 if cmp.ratio >= min_agreement else 1
